"""Entry point of the sanity stage: `python scripts/sanity.py [hydra overrides]` (see README)."""
from idc.cli import stage_main

main = stage_main("sanity")

if __name__ == "__main__":
    main()
