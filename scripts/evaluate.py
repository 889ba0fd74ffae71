"""Entry point of the evaluate stage: `python scripts/evaluate.py [hydra overrides]` (see README)."""
from idc.cli import stage_main

main = stage_main("evaluate")

if __name__ == "__main__":
    main()
