"""Stage `make leaderboard`: localization, faithfulness and shortcut scores of every method, variant and
control row, and the leaderboard with the sanity stage's randomization verdicts.

Reads model/best.pt, eval/predictions.csv, the packed cache, the evidence masks (`data.masks_dir`) and
sanity/randomization.csv (the stage graph runs `make sanity` first). Writes sanity/localization.csv (one
row per map source, relevance variant and patch), sanity/localization_summary.csv (mean and
patient-clustered bootstrap 95% CI per score), sanity/localization.md, sanity/leaderboard.md|csv and
figures/sanity_localization_examples.png, figures/chapter_05_method_leaderboard.png. Maps come from the
explain driver with `explain.*`, LIME samples and RISE masks capped (`leaderboard.lime_num_samples`,
`rise_num_masks`), each variant's overrides as the method's keyword arguments.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from idc.errors import DataError
from idc.explain.driver import capped, dataset_reference, patch_batch
from idc.explain.select import test_patches
from idc.inputs import load_run
from idc.leaderboard.board import build_leaderboard, check_settings, markdown, read_randomization
from idc.leaderboard.plots import plot_leaderboard, plot_localization_examples
from idc.leaderboard.scoring import (FAITHFUL_VARIANT, SCORES, score_frames, score_source, select_faithfulness_patches,
                                     select_localization_patches, summarize)
from idc.leaderboard.sources import lime_kernel_sizes, map_sources, mean_superpixel_size, source_maps
from idc.markdown import frame_table
from idc.model import build_model
from idc.paths import RunPaths
from idc.scores.randomization import randomize_cascading
from idc.utils import write_csv_atomic, write_text_atomic, wrote
from idc.viz.style import save_figure_atomic

log = logging.getLogger("idc")


def _skip(paths: RunPaths, reason: str) -> None:
    wrote(write_text_atomic(paths.localization_md, f"# Localization and faithfulness\n\nSkipped: {reason}\n"),
          "localization skipped")


def scored_patches(cfg, preds: pd.DataFrame):
    """(rows, evidence masks, cue masks) of the patches to score, or a str saying why there are none."""
    lb = cfg.leaderboard
    if cfg.data.masks_dir is None:  # the real set: no ground truth to localize against; faithfulness needs none
        rows = select_faithfulness_patches(preds, int(lb.num_patches), int(lb.seed))
        return (rows, None, None) if len(rows) else "the test split has no IDC-positive patch to score."
    masks_dir = Path(cfg.data.masks_dir)
    if not masks_dir.is_dir():
        raise DataError(f"data.masks_dir={masks_dir} does not exist; it is written by `make data` for the "
                        "synthetic set. Set data.masks_dir=null for data without masks.")
    rows, masks, cues = select_localization_patches(preds, masks_dir, int(lb.num_patches), int(lb.seed),
                                                    size=int(cfg.data.patch_size))
    return (rows, masks, cues) if len(rows) else "no IDC-positive test patch has a mask that is neither empty nor full."


def localization_markdown(table: pd.DataFrame, n: int, lb, sizes: Dict[float, float], has_masks: bool = True) -> str:
    """sanity/localization.md: the summary's means (the leaderboard gives the CIs)."""
    cols = ["method", "kind", "variant", "n"] + [c for c in SCORES if c in table]
    sp = "; ".join(f"kernel_size {k:g}: {v:.0f} px" for k, v in sizes.items())
    scored = ("scored against the IDC-nuclei evidence mask. Means over patches; the leaderboard "
              "(`sanity/leaderboard.md`) gives the patient-clustered 95% CIs. Sorted by pixel AUROC." if has_masks else
              "faithfulness only: this data set has no pixel ground truth (`data.masks_dir` is null, as for the real "
              "Kaggle set), so there are no localization scores. Means over patches; the leaderboard "
              "(`sanity/leaderboard.md`) gives the patient-clustered 95% CIs.")
    return "\n".join([
        "# Localization and faithfulness" if has_masks else "# Faithfulness (no pixel ground truth)",
        "",
        f"{n} IDC-positive test patches, maps for the IDC class, unclipped, " + scored,
        "",
        frame_table(table[[c for c in cols if c in table]]),
        "",
        f"Pointing game tolerance {lb.pointing_tolerance} px; top-k = {lb.top_k_fraction:g} of the pixels; deletion fill "
        f"`{lb.deletion_fill}`; insertion from a blur (sigma {lb.blur_sigma:g}). "
        + (f"Mean LIME superpixel size: {sp}. " if sp else "") + "See docs/attribution-evaluation.md.",
        "",
    ])


def write_leaderboard(cfg, paths: RunPaths, per_patch: pd.DataFrame, table: pd.DataFrame,
                      superpixel_sizes: Dict[float, float]) -> pd.DataFrame:
    """Write sanity/leaderboard.{md,csv} and figures/chapter_05_method_leaderboard.png; return the board."""
    lb = cfg.leaderboard
    board = build_leaderboard(lb, per_patch, table, read_randomization(paths.randomization_csv))
    first = per_patch[per_patch["method"] == per_patch["method"].iloc[0]]
    first = first[first["variant"] == first["variant"].iloc[0]]
    wrote(write_csv_atomic(board, paths.leaderboard_csv), "leaderboard")
    md = markdown(board, lb, str(cfg.data.name), len(first), first["patient_id"].nunique(), superpixel_sizes)
    wrote(write_text_atomic(paths.leaderboard_md, md), "leaderboard")
    fig = plot_leaderboard(table, list(board["row"]), str(lb.variant))
    wrote(save_figure_atomic(fig, paths.figure("chapter_05_method_leaderboard")), "method leaderboard figure")
    return board


def score_all(cfg, run, sources, selection) -> tuple:
    """(per-patch scores of every source, the non-randomized sources' faithful maps, the uint8 patches)."""
    lb = cfg.leaderboard
    rows, masks, cues = selection
    ecfg = capped(cfg.explain, lime_num_samples=lb.lime_num_samples, rise_num_masks=lb.rise_num_masks)
    reference = dataset_reference(run.images, run.patches, int(ecfg.ig_expected_k), int(ecfg.seed))
    imgs, x, _ = patch_batch(run.images, rows, run.device)
    target = np.ones(len(rows), dtype=np.int64)  # explain the IDC class on IDC-positive patches
    s = cfg.sanity  # the randomized-model rows use the sanity stage's fully randomized model

    def factory():
        return build_model({**run.checkpoint["model_cfg"], "weights": None})

    random_model = randomize_cascading(run.model, list(s.cascade), len(s.cascade), int(s.seed), str(s.reinit), factory)
    frames, examples = [], {}
    for src in tqdm(sources, desc="localization and faithfulness", unit="source"):
        maps = source_maps(src, run.model, random_model, imgs, target, ecfg, run.device, int(lb.seed), reference)
        if src.kind != "randomized":
            examples[src.title] = maps[FAITHFUL_VARIANT]
        scores = score_source(run.model, x, torch.as_tensor(target), maps, masks, cues, lb)
        frames += score_frames(src, rows, masks, scores)
    return pd.concat(frames, ignore_index=True), examples, imgs


def run(cfg) -> Optional[pd.DataFrame]:
    """Score every method, variant and control row; write the tables, the leaderboard and the figures.
    Returns the per-source summary, or None when skipped (sanity/localization.md says why)."""
    lb, paths = cfg.leaderboard, RunPaths.from_cfg(cfg)
    if not lb.enabled:
        _skip(paths, "disabled by `leaderboard.enabled=false`.")
        return None
    check_settings(lb)
    sources = map_sources(list(lb.methods), list(lb.variants), bool(lb.randomized_controls))
    run = load_run(cfg, needs=("patches", "images", "model", "predictions"))
    selection = scored_patches(cfg, test_patches(run.predictions, run.patches, str(paths.predictions_csv)))
    if isinstance(selection, str):
        _skip(paths, selection)
        return None
    tic = time.perf_counter()
    per_patch, examples, imgs = score_all(cfg, run, sources, selection)
    rows, masks = selection[0], selection[1]
    wrote(write_csv_atomic(per_patch, paths.localization_csv), "per-patch localization scores")
    table = summarize(per_patch, n_boot=int(lb.bootstrap), seed=int(lb.seed))
    wrote(write_csv_atomic(table, paths.localization_summary_csv), "localization summary")
    fig = plot_localization_examples(imgs, masks, {k: v / max(v.max(), 1e-12) for k, v in examples.items()})
    wrote(save_figure_atomic(fig, paths.figure("sanity_localization_examples")), "localization examples")
    sizes = {k: mean_superpixel_size(imgs, float(k), int(cfg.explain.seed))
             for k in lime_kernel_sizes(cfg.explain.lime_kernel_size, sources)}
    md = localization_markdown(table, len(rows), lb, sizes, masks is not None)
    wrote(write_text_atomic(paths.localization_md, md), "localization table")
    write_leaderboard(cfg, paths, per_patch, table, sizes)
    log.info("leaderboard: localization, faithfulness and leaderboard took %.1f s", time.perf_counter() - tic)
    return table
