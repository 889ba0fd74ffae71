"""Entry point of the train stage: `python scripts/train.py [hydra overrides]` (see README)."""
from idc.cli import stage_main

main = stage_main("train")

if __name__ == "__main__":
    main()
