"""Entry point of the leaderboard stage (localization, faithfulness, method leaderboard):
`python scripts/leaderboard.py [hydra overrides]` (see README)."""
from idc.cli import stage_main

main = stage_main("leaderboard")

if __name__ == "__main__":
    main()
