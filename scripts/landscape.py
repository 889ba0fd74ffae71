"""Entry point of the landscape stage: `python scripts/landscape.py [hydra overrides]` (see README)."""
from idc.cli import stage_main

main = stage_main("landscape")

if __name__ == "__main__":
    main()
