"""Sanity stage (`make sanity`): model and data randomization tests (Adebayo et al. 2018; sMPRT and
eMPRT, Hedström et al. 2023) and Table 5.2. Localization, faithfulness and the method leaderboard are
the next stage (`make leaderboard`, `idc.sanity.leaderboard`), which reads this stage's verdicts.

Reads the trained model (model/best.pt), the test predictions and the packed patch cache; writes
`sanity/table_5_2.md`, `sanity/randomization.csv` (one verdict per method and test),
`sanity/metrics.csv` (every measure per step, with CIs), `sanity/logit_change.csv`,
`sanity/random_labels.json`, `sanity/timing.json` (wall seconds per phase) and figures
`figures/sanity_*.png`. Maps come from the explain driver (`idc.explain.driver.compute_maps`).
Method and measure choices are documented in docs/sanity.md.
"""
from __future__ import annotations

import logging
import time
from typing import Dict, List

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from tqdm import tqdm

from idc.errors import ConfigError, DataError
from idc.sanity import plots as sanity_plots
from idc.sanity.memorization import memorization_note, random_labels_model
from idc.sanity.randomization import (REINIT_SCHEMES, cascade_models, logit_change, logits_of,
                                      randomize_independent, uncovered_parameters)
from idc.sanity.similarity import METRICS, constant_maps, entropy_rise, map_similarities
from idc.sanity.table import table_5_2
from idc.sanity.verdicts import RANDOMIZATION_COLUMNS, cluster_bootstrap_ci, per_patch_means, summarize_test
from idc.utils import write_csv_atomic, write_json_atomic, write_text_atomic, wrote

log = logging.getLogger("idc")

TABLE_METRIC = "spearman_abs"  # the measure the verdicts use
METRICS_COLUMNS = ["method", "test", "depth", "block", "metric", "value", "std", "ci_low", "ci_high", "n", "n_degenerate"]
Maps = Dict[str, np.ndarray]  # method -> raw maps


# ---------------------------------------------------------------- inputs
def test_patches(run) -> pd.DataFrame:
    """Evaluated test patches (eval/predictions.csv) with `row` = their index in the packed cache."""
    from idc.data import cache_rows

    preds = run.predictions
    preds["row"] = cache_rows(run.patches, preds["image_id"], str(run.paths.predictions_csv))
    return preds


def select_balanced(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """Up to `n` rows, half IDC-positive and half negative where possible, reproducibly by `seed`."""
    rng = np.random.default_rng(seed)
    pos = np.array(df.index[df["target"] == 1])
    neg = np.array(df.index[df["target"] == 0])
    n_pos = min(len(pos), max(n - len(neg), n // 2))
    n_neg = min(len(neg), n - n_pos)
    picked = np.concatenate([rng.permutation(pos)[:n_pos], rng.permutation(neg)[:n_neg]])
    return df.loc[np.sort(picked)]


def noisy_copies(images: np.ndarray, n: int, noise: float, seed: int) -> np.ndarray:
    """[n * len(images)] uint8 copies with Gaussian noise of sd `noise` x each patch's value range
    (Quantus's sMPRT noise), rounded and clipped to 0..255; copy j of patch i is row j * len + i."""
    rng = np.random.default_rng(seed)
    imgs = np.asarray(images, dtype=np.float64)
    sd = noise * np.ptp(imgs.reshape(len(imgs), -1), axis=1)[:, None, None, None]
    out = [np.clip(np.rint(imgs + rng.normal(size=imgs.shape) * sd), 0, 255) for _ in range(n)]
    return np.concatenate(out).astype(np.uint8)


# ---------------------------------------------------------------- comparisons
def similarity_rows(ref: Maps, other: Maps, test: str, depth: int, block: str, patients, hog_ppc: int) -> List[dict]:
    """Per patch and measure: the similarity of each method's map, and whether a map was constant."""
    rows = []
    for method, raw in ref.items():
        sims = map_similarities(raw, other[method], *_grays(raw, other[method]), hog_pixels_per_cell=hog_ppc)
        degenerate = constant_maps(raw) | constant_maps(other[method])
        for metric in METRICS:
            for i, v in enumerate(sims[metric]):
                rows.append(dict(method=method, test=test, depth=depth, block=block, metric=metric, patch=i,
                                 patient_id=patients[i], value=float(v), degenerate=bool(degenerate[i])))
    return rows


def _grays(a, b):
    from idc.explain.driver import to_grayscale

    return to_grayscale(a), to_grayscale(b)


def aggregate(sims: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    """metrics.csv: per (method, test, step, measure) the mean over patches, its sd and patient CI."""
    rows = []
    for (method, test, depth, block, metric), g in sims.groupby(["method", "test", "depth", "block", "metric"], sort=False):
        mean, low, high = cluster_bootstrap_ci(g["value"], g["patient_id"], n_boot, seed)
        rows.append(dict(method=method, test=test, depth=depth, block=block, metric=metric, value=mean,
                         std=float(g["value"].std(ddof=0)), ci_low=low, ci_high=high, n=len(g),
                         n_degenerate=int(g["degenerate"].sum())))
    return pd.DataFrame(rows, columns=METRICS_COLUMNS)


def logit_row(test: str, depth: int, block: str, ref_logits, model, x) -> dict:
    return dict(test=test, depth=depth, block=block, n=len(x), **logit_change(ref_logits, logits_of(model, x)))


# ---------------------------------------------------------------- stage
def _validate(cfg, titles: Dict[str, str]) -> None:
    s = cfg.sanity
    unknown = [m for m in list(s.methods) + list(s.localization_methods or []) if m not in titles]
    if unknown:
        raise ConfigError(f"sanity.methods / sanity.localization_methods: unknown method(s) {unknown}; "
                          f"choose from {sorted(titles)}")
    if not s.cascade:
        raise ConfigError("sanity.cascade is empty; list the blocks to randomize, top first (e.g. [fc, layer4, ...])")
    if s.reinit not in REINIT_SCHEMES:
        raise ConfigError(f"sanity.reinit={s.reinit!r} is not known; choose from {list(REINIT_SCHEMES)}")
    if not 1 <= s.hog_pixels_per_cell <= cfg.data.patch_size // 2:
        raise ConfigError(f"sanity.hog_pixels_per_cell={s.hog_pixels_per_cell} must be in 1..{cfg.data.patch_size // 2}")
    for key in ("num_patches", "smprt_samples", "smprt_patches", "random_labels_patches", "random_labels_epochs", "bootstrap"):
        if int(s[key]) < 1:
            raise ConfigError(f"sanity.{key}={s[key]} must be >= 1")
    if not 0 < s.random_labels_target <= 1:
        raise ConfigError(f"sanity.random_labels_target={s.random_labels_target} must be in (0, 1]")


SANITY_EXPLAIN_KEYS = ("lime_num_samples", "rise_num_masks")  # sanity.<key> caps explain.<key> unless null


def explain_settings(cfg):
    """The explain config the sanity maps use: explain.* with LIME samples and RISE masks capped at
    sanity.lime_num_samples / rise_num_masks (null = no cap)."""
    overrides = {k: min(int(cfg.sanity[k]), int(cfg.explain[k])) for k in SANITY_EXPLAIN_KEYS if cfg.sanity[k] is not None}
    return OmegaConf.merge(cfg.explain, overrides)


def run(cfg) -> dict:
    from idc.explain import METHODS
    from idc.data.dataset import normalize_batch
    from idc.explain.driver import compute_maps, dataset_reference, to_grayscale
    from idc.inputs import load_run
    from idc.model import build_model

    s = cfg.sanity
    titles = {k: m.title for k, m in METHODS.items()}
    _validate(cfg, titles)
    inputs = load_run(cfg, needs=("patches", "images", "model", "predictions"))
    paths, model, device, images = inputs.paths, inputs.model, inputs.device, inputs.images
    patches, ckpt = inputs.patches, inputs.checkpoint
    scheme, seed, cascade, methods = str(s.reinit), int(s.seed), list(s.cascade), list(s.methods)

    def factory():
        return build_model({**ckpt["model_cfg"], "weights": None})

    preds = test_patches(inputs)
    chosen = select_balanced(preds, int(s.num_patches), seed)
    if chosen.empty:
        raise DataError(f"{paths.predictions_csv} has no test patches; re-run `make evaluate` on a non-empty test split")
    imgs = np.ascontiguousarray(images[chosen["row"].to_numpy()])
    targets = chosen["target"].to_numpy(np.int64)
    patients = chosen["patient_id"].to_numpy()
    x = normalize_batch(imgs, device=device)
    ecfg = explain_settings(cfg)
    reference = dataset_reference(images, patches, int(ecfg.ig_expected_k), int(ecfg.seed))
    log.info("sanity: %d test patches (%d IDC-positive) from %d patients; methods %s; reinit %s",
             len(chosen), int(targets.sum()), len(set(patients)), methods, scheme)

    def maps_of(m, ims=imgs, tg=targets) -> Maps:
        return compute_maps(m, ims, tg, methods, ecfg, device, reference=reference)[0]

    try:  # an unknown name fails before any work
        uncovered = uncovered_parameters(model, cascade)
    except ValueError as err:
        raise ConfigError(f"sanity.cascade: {err}") from err
    if uncovered:
        log.warning("sanity.cascade leaves %d parameter tensors trained at full depth, e.g. %s", len(uncovered), uncovered[:3])

    def randomized(fn, *args):
        return fn(model, *args, seed, scheme, factory)

    clock = [time.perf_counter()]
    timing = {}

    def lap(phase: str) -> None:  # wall seconds per phase -> sanity/timing.json (make bench reads it)
        now = time.perf_counter()
        timing[phase] = round(now - clock[0], 1)
        clock[0] = now
        log.info("sanity: %s took %.1f s", phase, timing[phase])

    ppc = int(s.hog_pixels_per_cell)
    ref_logits = logits_of(model, x)
    ref = maps_of(model)
    sims, logit_rows, examples = [], [], [("original", ref)]
    depth_maps = {}
    for depth, rmodel in tqdm(randomized(cascade_models, cascade), total=len(cascade), desc="MPRT cascading"):
        label = ("+" if depth > 1 else "") + cascade[depth - 1]
        logit_rows.append(logit_row("mprt_cascading", depth, label, ref_logits, rmodel, x))
        depth_maps[depth] = maps_of(rmodel)
        sims += similarity_rows(ref, depth_maps[depth], "mprt_cascading", depth, label, patients, ppc)
        examples.append((label, depth_maps[depth]))
    for i, block in enumerate(tqdm(cascade, desc="MPRT independent"), start=1):
        rmodel = randomized(randomize_independent, block)
        logit_rows.append(logit_row("mprt_independent", i, block, ref_logits, rmodel, x))
        other = depth_maps[1] if i == 1 else maps_of(rmodel)  # block 1 alone = cascade depth 1 (same seed)
        sims += similarity_rows(ref, other, "mprt_independent", i, block, patients, ppc)
    lap("model randomization (MPRT cascading and independent)")
    sub = select_balanced(chosen.reset_index(drop=True), int(s.smprt_patches), seed).index.to_numpy()
    sims += smprt_rows(cfg, model, randomized, maps_of, imgs[sub], targets[sub], patients[sub], ppc)
    lap("smooth MPRT")
    rl_model, record = random_labels_model(cfg, paths, patches, images, device)
    logit_rows.append(logit_row("data_randomization", 0, "random labels", ref_logits, rl_model, x))
    rl_maps = maps_of(rl_model)
    sims += similarity_rows(ref, rl_maps, "data_randomization", 0, "random labels", patients, ppc)
    examples.append(("random labels", rl_maps))
    lap("data randomization (memorization and maps)")

    sims = pd.DataFrame(sims)
    metrics = aggregate(sims, int(s.bootstrap), seed)
    logits = pd.DataFrame(logit_rows)
    verdicts = verdict_frame(sims, ref, depth_maps[len(cascade)], patients, record, cfg)
    n_pat = len(set(patients))
    settings = (f"Maps: explain.* with {', '.join(f'{k}={ecfg[k]}' for k in SANITY_EXPLAIN_KEYS)}, "
                f"ig_steps={ecfg.ig_steps}, smoothgrad_samples={ecfg.smoothgrad_samples}; target = the true class; re-initialization: {scheme}; cascade {cascade}; "
                f"sMPRT: {s.smprt_samples} noisy copies (sd {s.smprt_noise:g} x range) of "
                f"{len(sub)} of the patches (half IDC-positive where possible), bottom-up; eMPRT: {s.emprt_bins}-bin entropy.")
    table = table_5_2(verdicts, metrics, logits, methods, titles, threshold=float(s.threshold), metric=TABLE_METRIC,
                      n_patches=len(chosen), n_patients=n_pat, memorization=memorization_note(record), settings=settings)
    out = paths.sanity_dir
    wrote(write_csv_atomic(metrics, paths.sanity_metrics_csv), f"{len(metrics)} similarity rows")
    wrote(write_csv_atomic(logits, out / "logit_change.csv"), "logit change per randomized model")
    wrote(write_csv_atomic(verdicts, paths.randomization_csv), "verdicts per method and test")
    wrote(write_text_atomic(paths.table_5_2, table), "Table 5.2")
    gray_examples = [(label, {m: (raw, to_grayscale(raw)) for m, raw in maps.items()}) for label, maps in examples]
    figures = sanity_plots.write_sanity_figures(paths.figures_dir, metrics, cascade, titles, float(s.threshold),
                                                imgs[0], gray_examples)
    lap("tables and figures")
    timing["total"] = round(sum(timing.values()), 1)
    wrote(write_json_atomic(out / "timing.json", timing), "wall seconds per phase")
    log.info("sanity: localization, faithfulness and the method leaderboard are the next stage: `make leaderboard`")
    return dict(metrics=metrics, verdicts=verdicts, logits=logits, table_5_2=table, random_labels=record,
                figures=figures)


def smprt_rows(cfg, model, randomized, maps_of, imgs, targets, patients, ppc) -> List[dict]:
    """Smooth MPRT: each model's map averaged over noisy copies of the patch, bottom-up cascade."""
    s = cfg.sanity
    n, k = len(imgs), int(s.smprt_samples)
    noisy = noisy_copies(imgs, k, float(s.smprt_noise), int(s.seed))
    tg = np.tile(targets, k)

    def smooth(m) -> Maps:
        return {meth: raw.reshape(k, n, *raw.shape[1:]).mean(0) for meth, raw in maps_of(m, noisy, tg).items()}

    bottom_up = list(reversed(list(s.cascade)))
    ref, rows = smooth(model), []
    for depth, rmodel in tqdm(randomized(cascade_models, bottom_up), total=len(bottom_up), desc="sMPRT (bottom-up)"):
        label = ("+" if depth > 1 else "") + bottom_up[depth - 1]
        other = smooth(rmodel)
        rows += similarity_rows(ref, other, "smprt", depth, label, patients, ppc)
    return rows


def verdict_frame(sims: pd.DataFrame, ref: Maps, full: Maps, patients, record: dict, cfg) -> pd.DataFrame:
    """randomization.csv: one row per method and test (columns RANDOMIZATION_COLUMNS)."""
    s = cfg.sanity
    args = dict(threshold=float(s.threshold), n_boot=int(s.bootstrap), seed=int(s.seed))
    frames = [summarize_test(per_patch_means(sims, t, TABLE_METRIC), t, **args)
              for t in ("mprt_cascading", "mprt_independent", "smprt")]
    emprt = []
    for method, raw in ref.items():
        rise = entropy_rise(raw, full[method], int(s.emprt_bins))
        degenerate = constant_maps(raw) | constant_maps(full[method])
        emprt += [dict(method=method, patch=i, patient_id=patients[i], value=v, n_degenerate=int(d))
                  for i, (v, d) in enumerate(zip(rise, degenerate))]
    frames.append(summarize_test(pd.DataFrame(emprt), "emprt", **args))
    invalid = None if record["memorized"] else f"invalid (reached {100 * record['train_accuracy']:.1f}%)"
    frames.append(summarize_test(per_patch_means(sims, "data_randomization", TABLE_METRIC), "data_randomization",
                                 invalid=invalid, **args))
    return pd.concat(frames, ignore_index=True)[RANDOMIZATION_COLUMNS]
