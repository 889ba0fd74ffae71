"""Stage `make leaderboard`: localization, faithfulness and shortcut scores of every method, variant and
control row, and the leaderboard with the sanity stage's randomization verdicts.

Reads model/best.pt, the evaluation cohort (data/cohort.csv with its images and evidence masks,
`idc.data.cohort`; `leaderboard.split=val`: the validation split instead) and sanity/randomization.csv (the
stage graph runs `make sanity` first). Writes sanity/localization.csv (one row per map source, relevance
variant and patch), sanity/localization_summary.csv (mean of the patient means and 95% t-interval per
score), sanity/localization.md, sanity/leaderboard.md|csv, sanity/leaderboard_tests.csv (every method x
control test of the primary scores, Holm-corrected), on data with a label map (generator v7,
`idc.leaderboard.nuclei`) sanity/counterfactuals.csv (the evidence check), sanity/counterfactual_patches.csv
and sanity/nucleus_drops.csv (and, with `leaderboard.stain_scale`/`stain_shift` above 0, each map's stain
invariance: `idc.leaderboard.invariance`), sanity/leaderboard_timing.json (wall seconds per phase
and the images through the network, read by `make bench`) and figures/sanity_localization_examples.png,
figures/chapter_05_method_leaderboard.png. Maps come from the
explain driver with `explain.*`, LIME samples and RISE masks capped (`leaderboard.lime_num_samples`,
`rise_num_masks`), each variant's overrides as the method's keyword arguments.
"""
from __future__ import annotations

import logging
import time
from typing import Dict, Optional

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from idc.data.cohort import Cohort, load_cohort, split_cohort
from idc.errors import ConfigError, DataError
from idc.explain.driver import capped, dataset_reference, patch_batch
from idc.inputs import load_run
from idc.leaderboard.board import build_leaderboard, check_settings, markdown, read_randomization
from idc.leaderboard.invariance import stain_facts, stain_markdown, stain_pairs, stain_scores
from idc.leaderboard.nuclei import NuclearTruth, counterfactual_table, evidence_markdown, has_label_map, nuclear_truth
from idc.leaderboard.plots import plot_leaderboard, plot_localization_examples
from idc.leaderboard.scoring import (FAITHFUL_VARIANT, PER_PATCH_FACTS, SCORES, score_frames, score_source,
                                     select_faithfulness_patches, select_localization_patches, summarize)
from idc.leaderboard.sources import lime_kernel_sizes, map_sources, mean_superpixel_size, source_maps
from idc.markdown import frame_table
from idc.model import build_model, counting_images, inference_layout
from idc.paths import RunPaths
from idc.scores.randomization import randomize_cascading
from idc.utils import Laps, write_csv_atomic, write_json_atomic, write_text_atomic, wrote
from idc.viz.style import save_figure_atomic

log = logging.getLogger("idc")


def _skip(paths: RunPaths, reason: str) -> None:
    wrote(write_text_atomic(paths.localization_md, f"# Localization and faithfulness\n\nSkipped: {reason}\n"),
          "localization skipped")


SPLITS = ("cohort", "val")


def cohort_of(cfg, run) -> Cohort:
    """The patients scored: the evaluation cohort, or the validation split (`leaderboard.split=val`)."""
    split = str(cfg.leaderboard.split)
    if split not in SPLITS:
        raise ConfigError(f"leaderboard.split must be one of {SPLITS}, got {split!r}")
    if split == "val":
        return split_cohort(cfg, run.patches, run.images, "val")
    return load_cohort(cfg, run.paths, run.patches, run.images)


def scored_patches(cfg, cohort: Cohort):
    """(rows, evidence masks, cue masks) of the patches to score, or a str saying why there are none."""
    lb, preds = cfg.leaderboard, cohort.patches
    if cohort.masks_dir is None:  # the real set: no ground truth to localize against; faithfulness needs none
        rows = select_faithfulness_patches(preds, int(lb.num_patches), int(lb.seed))
        return (rows, None, None) if len(rows) else f"the {cohort.source} has no IDC-positive patch to score."
    masks_dir = cohort.masks_dir
    if not masks_dir.is_dir():
        raise DataError(f"data.masks_dir={masks_dir} does not exist; it is written by `make data` for the "
                        "synthetic set. Set data.masks_dir=null for data without masks.")
    rows, masks, cues = select_localization_patches(preds, masks_dir, int(lb.num_patches), int(lb.seed),
                                                    size=int(cfg.data.patch_size))
    return (rows, masks, cues) if len(rows) else "no IDC-positive test patch has a mask that is neither empty nor full."


def localization_markdown(table: pd.DataFrame, n: int, lb, sizes: Dict[float, float], has_masks: bool = True) -> str:
    """sanity/localization.md: the summary's means (the leaderboard gives the CIs)."""
    cols = ["method", "kind", "variant", "n", "n_patients", "n_empty"] + [c for c in SCORES if c in table]
    sp = "; ".join(f"kernel_size {k:g}: {v:.0f} px" for k, v in sizes.items())
    label_map = "nuclear_auroc" in table and table["nuclear_auroc"].notna().any()
    scored = ("scored against the IDC-nuclei evidence mask" + (" and, among nuclear pixels, against the label map "
              "(IDC vs decoy nuclei) and this model's per-nucleus drops" if label_map else "") + ". Means of the "
              "patient means; the leaderboard (`sanity/leaderboard.md`) gives the 95% CIs. Sorted by "
              + ("nuclear AUROC." if label_map else "pixel AUROC.") if has_masks else
              "faithfulness only: this data set has no pixel ground truth (`data.masks_dir` is null, as for the real "
              "Kaggle set), so there are no localization scores. Means of the patient means; the leaderboard "
              "(`sanity/leaderboard.md`) gives the 95% CIs.")
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


def chance_levels(per_patch: pd.DataFrame) -> Dict[str, float]:
    """Mean chance level of the localization scores over the scored patches (one source's rows)."""
    first = per_patch[per_patch["method"] == per_patch["method"].iloc[0]].drop_duplicates("image_id")
    if "pointing_chance" not in first or first["mask_fraction"].isna().all():
        return {}
    out = {"pointing_game": float(first["pointing_chance"].mean()), "mask_fraction": float(first["mask_fraction"].mean())}
    if "nuclear_chance" in first and first["nuclear_chance"].notna().any():
        out["nuclear_mass"] = float(first["nuclear_chance"].mean())
    return out


def write_nuclear_truth(paths: RunPaths, truth: Optional[NuclearTruth]) -> Optional[pd.DataFrame]:
    """sanity/counterfactuals.csv, counterfactual_patches.csv and nucleus_drops.csv of data with a label map
    (the evidence check's table is returned); without one, stale copies from an earlier run are removed."""
    files = (paths.counterfactuals_csv, paths.counterfactual_patches_csv, paths.nucleus_drops_csv)
    if truth is None:
        for f in files:
            f.unlink(missing_ok=True)
        return None
    table = counterfactual_table(truth)
    wrote(write_csv_atomic(table, files[0]), "counterfactual evidence check")
    wrote(write_csv_atomic(truth.patches, files[1]), "counterfactual P(IDC) per patch")
    wrote(write_csv_atomic(truth.drop_table, files[2]), "per-nucleus logit drops")
    return table


def write_leaderboard(cfg, paths: RunPaths, per_patch: pd.DataFrame, table: pd.DataFrame,
                      superpixel_sizes: Dict[float, float], cohort: Cohort,
                      truth: Optional[NuclearTruth] = None) -> pd.DataFrame:
    """Write sanity/leaderboard.{md,csv}, sanity/leaderboard_tests.csv and figures/chapter_05_method_leaderboard.png
    (with a label map, `truth`: the evidence check's files and sections too); return the board."""
    lb = cfg.leaderboard
    cf_table = write_nuclear_truth(paths, truth)
    evidence = truth.verification.localization_verdict() if truth is not None else None
    board, tests, agree = build_leaderboard(lb, per_patch, table, read_randomization(paths.randomization_csv), evidence)
    first = per_patch[per_patch["method"] == per_patch["method"].iloc[0]].drop_duplicates("image_id")
    wrote(write_csv_atomic(board, paths.leaderboard_csv), "leaderboard")
    wrote(write_csv_atomic(tests, paths.leaderboard_tests_csv), f"{len(tests)} method x control tests (Holm)")
    facts = dict(data_name=str(cfg.data.name), cohort=cohort.description, n=len(first),
                 n_patients=first["patient_id"].nunique(), superpixel_sizes=superpixel_sizes, agreement=agree,
                 chance=chance_levels(per_patch), pairs=int(tests.groupby("question").size().max()) if len(tests) else 0,
                 evidence_lines=evidence_markdown(truth, cf_table) if truth is not None else [],
                 stain_lines=stain_markdown(lb, per_patch[per_patch["variant"] == str(lb.variant)]))
    wrote(write_text_atomic(paths.leaderboard_md, markdown(board, lb, facts)), "leaderboard")
    fig = plot_leaderboard(table, list(board["row"]), str(lb.variant))
    wrote(save_figure_atomic(fig, paths.figure("chapter_05_method_leaderboard")), "method leaderboard figure")
    return board


def score_all(cfg, run, cohort: Cohort, sources, selection, timing: Dict[str, float],
              nuclear: Optional[NuclearTruth] = None) -> tuple:
    """(per-patch scores of every source, the non-randomized sources' faithful maps, the uint8 patches);
    wall seconds per phase (each source's maps, each kind of score) are added to `timing`. `nuclear`: the
    label map's truth of the scored patches (data with a label map), for the nuclear scores."""
    clock, lb = Laps(timing), cfg.leaderboard
    rows, masks, cues = selection
    ecfg = capped(cfg.explain, lime_num_samples=lb.lime_num_samples, rise_num_masks=lb.rise_num_masks)
    reference = dataset_reference(run.images, run.patches, int(ecfg.ig_expected_k), int(ecfg.seed))
    imgs, x, _ = patch_batch(cohort.images, rows, run.device)
    target = np.ones(len(rows), dtype=np.int64)  # explain the IDC class on IDC-positive patches
    s = cfg.sanity  # the randomized-model rows use the sanity stage's fully randomized model

    def factory():
        return build_model({**run.checkpoint["model_cfg"], "weights": None})

    random_model = randomize_cascading(run.model, list(s.cascade), len(s.cascade), int(s.seed), str(s.reinit), factory)
    frames, examples = [], {}
    clock.lap("patches, reference images, randomized model")
    pairs = stain_pairs(run.model, imgs, lb, int(ecfg.batch_size), run.device)
    if pairs is not None:
        clock.lap("stain-perturbed copies")
    for src in tqdm(sources, desc="localization and faithfulness", unit="source"):
        maps = source_maps(src, run.model, random_model, imgs, target, ecfg, run.device, int(lb.seed), reference)
        clock.lap(f"maps: {src.title}")
        if src.kind != "randomized":
            examples[src.title] = maps[FAITHFUL_VARIANT]
        stain = {}
        if pairs is not None:  # the same source's maps of the stain-perturbed copies
            stain = stain_scores(src.kind, maps, pairs, lambda im, seed: source_maps(
                src, run.model, random_model, im, target[:len(im)], ecfg, run.device, seed, reference), int(lb.seed))
            clock.lap(f"stain-perturbed maps: {src.title}")
        scores = score_source(run.model, x, torch.as_tensor(target), maps, masks, cues, lb, timing, nuclear)
        for variant, by_score in scores.items():  # the variants that have scores (no masks: the faithful one)
            if variant in stain and set(by_score) - set(PER_PATCH_FACTS):
                by_score.update(stain_invariance=stain[variant], **stain_facts(pairs, len(rows)))
        frames += score_frames(src, rows, masks, scores)
        clock.last = time.perf_counter()  # score_source charged its own phases
    return pd.concat(frames, ignore_index=True), examples, imgs


def run(cfg) -> Optional[pd.DataFrame]:
    """Score every method, variant and control row; write the tables, the leaderboard and the figures.
    Returns the per-source summary, or None when skipped (sanity/localization.md says why)."""
    lb, paths = cfg.leaderboard, RunPaths.from_cfg(cfg)
    if not lb.enabled:
        _skip(paths, "disabled by `leaderboard.enabled=false`.")
        return None
    check_settings(lb)
    map_sources(list(lb.methods), list(lb.variants), bool(lb.randomized_controls))  # a bad name fails before any work
    run = load_run(cfg, needs=("patches", "images", "model"))
    run.model = inference_layout(run.model)
    cohort = cohort_of(cfg, run)
    selection = scored_patches(cfg, cohort)
    if isinstance(selection, str):
        _skip(paths, selection)
        return None
    rows, masks = selection[0], selection[1]
    label_map = masks is not None and has_label_map(cohort.masks_dir, int(rows["patient_id"].iloc[0]))
    sources = map_sources(list(lb.methods), list(lb.variants), bool(lb.randomized_controls), label_map)
    tic, timing, truth = time.perf_counter(), {}, None
    with counting_images() as passes:
        if label_map:  # forward passes only: the counterfactual evidence check and the per-nucleus drops
            truth = nuclear_truth(run.model, rows, cohort.root, cohort.masks_dir, lb, run.device, timing)
        per_patch, examples, imgs = score_all(cfg, run, cohort, sources, selection, timing, truth)
    clock = Laps(timing)
    wrote(write_csv_atomic(per_patch, paths.localization_csv), "per-patch localization scores")
    table = summarize(per_patch)
    wrote(write_csv_atomic(table, paths.localization_summary_csv), "localization summary")
    fig = plot_localization_examples(imgs, masks, {k: v / max(v.max(), 1e-12) for k, v in examples.items()})
    wrote(save_figure_atomic(fig, paths.figure("sanity_localization_examples")), "localization examples")
    sizes = {k: mean_superpixel_size(imgs, float(k), int(cfg.explain.seed))
             for k in lime_kernel_sizes(cfg.explain.lime_kernel_size, sources)}
    md = localization_markdown(table, len(rows), lb, sizes, masks is not None)
    wrote(write_text_atomic(paths.localization_md, md), "localization table")
    write_leaderboard(cfg, paths, per_patch, table, sizes, cohort, truth)
    clock.lap("tables, verdicts and figures")
    timing = {k: round(v, 1) for k, v in timing.items()}
    timing["total"] = round(time.perf_counter() - tic, 1)
    wrote(write_json_atomic(paths.leaderboard_timing_json, {**timing, "network_images": dict(passes)}),
          "wall seconds per phase, images through the network")
    log.info("leaderboard: localization, faithfulness and leaderboard took %.1f s", timing["total"])
    return table
