"""Stage `make visualize`: the chapter-10 figures (`idc.explain.chapter10`) for the patches of the last
`make explain`. Reads model/best.pt, data/patches.csv, the packed cache and explain/index.csv; writes
explain/visualize/activations.png, filters_<layer>.png and gradcam_overlay.png."""
from __future__ import annotations

import numpy as np

from idc.data import cache_rows
from idc.explain.chapter10 import draw
from idc.inputs import check_fresh, load_run
from idc.integrity import read_csv


def run(cfg) -> list:
    run = load_run(cfg, needs=("patches", "images", "model"))
    paths = run.paths
    check_fresh(paths, "explain", str(paths.explain_index_csv))
    index = read_csv(paths.explain_index_csv)
    rows = cache_rows(run.patches, index["image_id"], str(paths.explain_index_csv))
    return draw(cfg, paths, run.model, np.asarray(run.images[rows]), index, run.device)
