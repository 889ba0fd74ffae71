"""Entry point of the report stage: `python scripts/report.py [hydra overrides]` (see README)."""
from idc.cli import stage_main

main = stage_main("report")

if __name__ == "__main__":
    main()
