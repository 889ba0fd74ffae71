"""Entry point of the prepare_data stage: `python scripts/prepare_data.py [hydra overrides]` (see README)."""
from idc.cli import stage_main

main = stage_main("prepare_data")

if __name__ == "__main__":
    main()
