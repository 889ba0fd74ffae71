"""Entry point of the visualize stage: `python scripts/visualize.py [hydra overrides]` (see README)."""
from idc.cli import stage_main

main = stage_main("visualize")

if __name__ == "__main__":
    main()
