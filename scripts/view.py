"""Entry point of the viewer stage: `python scripts/view.py [hydra overrides]` (see docs/viewer.md)."""
from idc.cli import stage_main

main = stage_main("view")

if __name__ == "__main__":
    main()
