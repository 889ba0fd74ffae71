"""Entry point of the explain stage: `python scripts/explain.py [hydra overrides]` (see README)."""
from idc.cli import stage_main

main = stage_main("explain")

if __name__ == "__main__":
    main()
