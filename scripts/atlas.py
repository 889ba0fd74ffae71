"""Entry point of the atlas stage (attribution landscapes): `python scripts/atlas.py [hydra overrides]`."""
from idc.cli import stage_main

main = stage_main("atlas")

if __name__ == "__main__":
    main()
