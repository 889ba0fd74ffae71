"""Localization and faithfulness part of the sanity stage (synthetic data with IDC-nuclei masks).

Writes `sanity/localization.md` (one row per method plus a random-map baseline, best pixel AUROC
first) and `sanity/localization.csv` (one row per method and patch). On data without pixel ground
truth (`data.masks_dir` null, e.g. the Kaggle set) the md says why the scores were skipped.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import pandas as pd

from idc.errors import DataError
from idc.sanity.localization import random_maps, score_maps
from idc.paths import RunPaths
from idc.sanity.plots import LOCALIZATION_FIGURE, plot_localization_examples
from idc.utils import save_figure_atomic, write_csv_atomic, write_text_atomic, wrote

log = logging.getLogger("idc")

SCORES = ["pixel_auroc", "pointing_game", "energy_inside", "mask_fraction", "deletion_auc", "road"]
RANDOM_BASELINE = "random map (baseline)"


def select_localization_patches(
    preds: pd.DataFrame, masks_dir: Path, n: int, seed: int, size: int = 50
) -> Tuple[pd.DataFrame, np.ndarray]:
    """Up to `n` IDC-positive patches whose mask is neither empty nor full, with their bool masks."""
    from idc.data.synthetic import load_masks, patch_mask

    pos = preds[preds["target"] == 1]
    order = np.random.default_rng(seed).permutation(len(pos))
    slide_masks: Dict[int, np.ndarray] = {}
    keep, masks = [], []
    for i in order:
        row = pos.iloc[i]
        pid = int(row["patient_id"])
        if pid not in slide_masks:
            slide_masks[pid] = load_masks(masks_dir, pid)["mask"]
        m = np.asarray(patch_mask(slide_masks[pid], int(row["x"]), int(row["y"]), size=size), dtype=bool)
        if 0 < m.sum() < m.size:
            keep.append(pos.index[i])
            masks.append(m)
        if len(keep) == n:
            break
    log.info("localization: %d IDC-positive test patches with a non-trivial mask (asked for %d)", len(keep), n)
    return preds.loc[keep], np.stack(masks) if masks else np.zeros((0, size, size), bool)


def summarize(scores: pd.DataFrame) -> pd.DataFrame:
    """Per-method means of the per-patch scores, best pixel AUROC first."""
    cols = [c for c in SCORES if c in scores]
    table = scores.groupby("method", sort=False)[cols].mean()
    table.insert(0, "n", scores.groupby("method", sort=False).size())
    return table.sort_values("pixel_auroc", ascending=False).reset_index()


def markdown_table(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "---|" * len(table.columns)
    body = [
        "| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |"
        for row in table.itertuples(index=False)
    ]
    return "\n".join([header, rule, *body])


def _note(path: Path, reason: str) -> None:
    text = f"# Localization and faithfulness\n\nSkipped: {reason}\n"
    wrote(write_text_atomic(path, text), "localization skipped")


def run_localization(cfg, paths: RunPaths, model, preds: pd.DataFrame, images, titles, device,
                     reference=None) -> Optional[pd.DataFrame]:
    """Score every sanity method (and random maps) against the IDC-nuclei masks; None if skipped.
    `reference`: the data set's reference patches (idc.explain.driver.dataset_reference) for RISE/IG."""
    from idc.explain.driver import compute_maps, patch_batch, to_grayscale

    s = cfg.sanity
    md_path = paths.sanity_dir / "localization.md"
    if not s.localization:
        _note(md_path, "disabled by `sanity.localization=false`.")
        return None
    if cfg.data.masks_dir is None:
        _note(md_path, "this data set has no pixel ground truth (`data.masks_dir` is null, as for the real "
                       "Kaggle set); localization needs the synthetic set's IDC-nuclei masks.")
        return None
    masks_dir = Path(cfg.data.masks_dir)
    if not masks_dir.is_dir():
        raise DataError(f"data.masks_dir={masks_dir} does not exist; it is written by `make data` for the "
                        "synthetic set. Set data.masks_dir=null for data without masks.")
    rows, masks = select_localization_patches(preds, masks_dir, int(s.localization_patches), int(s.seed),
                                              size=int(cfg.data.patch_size))
    if len(rows) == 0:
        _note(md_path, "no IDC-positive test patch has a mask that is neither empty nor full.")
        return None
    imgs, x, target = patch_batch(images, rows, device)
    raws, _ = compute_maps(model, imgs, rows["target"].to_numpy(), list(s.localization_methods or s.methods),
                           cfg.explain, device, reference=reference)
    grays = {titles[m]: to_grayscale(raw) for m, raw in raws.items()}
    grays[RANDOM_BASELINE] = random_maps(masks.shape, int(s.seed))
    frames = []
    for name, gray in grays.items():
        scores = score_maps(model, x, target, gray, masks, tolerance=int(s.pointing_tolerance),
                            baseline=str(s.deletion_baseline), road=bool(s.road), seed=int(s.seed))
        frame = pd.DataFrame(scores)
        frame.insert(0, "image_id", rows["image_id"].to_numpy())
        frame.insert(0, "method", name)
        frame["mask_fraction"] = masks.mean(axis=(1, 2))
        frames.append(frame)
    per_patch = pd.concat(frames, ignore_index=True)
    fig = plot_localization_examples(imgs, masks, grays)
    wrote(save_figure_atomic(fig, paths.figures_dir / f"{LOCALIZATION_FIGURE}.png"), "localization examples")
    wrote(write_csv_atomic(per_patch, paths.sanity_dir / "localization.csv"), "per-patch localization scores")
    table = summarize(per_patch)
    wrote(write_text_atomic(md_path, _markdown(table, len(rows), s)), "localization table")
    return table


def _markdown(table: pd.DataFrame, n: int, s) -> str:
    road = "ROAD combined score (pytorch-grad-cam; higher = more faithful); " if s.road else ""
    return "\n".join([
        "# Localization and faithfulness",
        "",
        f"{n} IDC-positive test patches of the synthetic set, each method's grey map (target: IDC) scored "
        "against the patch's IDC-nuclei mask. Sorted by pixel AUROC.",
        "",
        markdown_table(table),
        "",
        "Columns: pixel AUROC of the map as a mask classifier (0.5 = chance); pointing game = share of maps whose "
        f"maximum lies within {s.pointing_tolerance} px of the mask; energy inside = share of the map's mass inside "
        "the mask (chance level = mask fraction, the mask's share of the patch); deletion AUC = area under "
        f"P(IDC) while the most relevant pixels are replaced by a {s.deletion_baseline} baseline (lower = more "
        f"faithful); {road}see docs/sanity.md.",
        "",
    ])
