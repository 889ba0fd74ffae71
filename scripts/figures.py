"""Entry point of the figures stage: `python scripts/figures.py [hydra overrides]` (see README)."""
from idc.cli import stage_main

main = stage_main("figures")

if __name__ == "__main__":
    main()
