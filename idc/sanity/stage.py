"""Sanity stage (`make sanity`): model and data randomization tests (Adebayo et al. 2018; sMPRT and
eMPRT, Hedström et al. 2023) and Table 5.2. Localization, faithfulness and the method leaderboard are
the next stage (`make leaderboard`, `idc.leaderboard`), which reads this stage's verdicts.

Reads the trained model (model/best.pt), the evaluation cohort (data/cohort.csv and its images:
`idc.data.cohort`) and the training patches; writes `sanity/table_5_2.md`, `sanity/randomization.csv` (one
verdict per method and test), `sanity/metrics.csv` (every measure per step, with CIs), `sanity/logit_change.csv`,
`sanity/random_labels.json` (+ the model under `sanity/random_labels_model/`), `sanity/recipe_control.json`
(+ `sanity/recipe_control_model/`: the memorization recipe on the true labels), `sanity/timing.json`
(wall seconds per phase) and figures `figures/sanity_*.png`. Maps come from the explain driver
(`idc.explain.driver.compute_maps`); the randomized copies and similarity measures from `idc.scores`.
Method and measure choices are documented in docs/sanity.md.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List

import numpy as np
import pandas as pd
from tqdm import tqdm

from idc.data.cohort import load_cohort
from idc.data.dataset import normalize_batch
from idc.errors import ConfigError, DataError
from idc.explain.driver import CAPPED_KEYS, capped, compute_maps, dataset_reference, to_grayscale
from idc.explain.methods import METHODS
from idc.explain.select import select_balanced
from idc.inputs import load_run
from idc.model import build_model, counting_images, inference_layout
from idc.sanity.memorization import memorization_note, random_labels_model, recipe_control_model, recipe_note
from idc.sanity.plots import write_sanity_figures
from idc.sanity.table import table_5_2
from idc.sanity.verdicts import RANDOMIZATION_COLUMNS, patient_ci, per_patch_means, summarize_test
from idc.scores.randomization import (REINIT_SCHEMES, cascade_models, logit_change, logits_of, randomize_independent,
                                      uncovered_parameters)
from idc.scores.similarity import METRICS, constant_maps, entropy_rise, map_similarities
from idc.utils import write_csv_atomic, write_json_atomic, write_text_atomic, wrote

log = logging.getLogger("idc")

TABLE_METRIC = "spearman_abs"  # the measure the verdicts use
METRICS_COLUMNS = ["method", "test", "depth", "block", "metric", "value", "std", "ci_low", "ci_high", "n", "n_patients",
                   "n_degenerate"]
Maps = Dict[str, np.ndarray]  # method -> raw maps


# ---------------------------------------------------------------- inputs
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
    return to_grayscale(a), to_grayscale(b)


def aggregate(sims: pd.DataFrame) -> pd.DataFrame:
    """metrics.csv: per (method, test, step, measure) the mean of the patient means, the sd over patches and
    the 95% t-interval."""
    rows = []
    for (method, test, depth, block, metric), g in sims.groupby(["method", "test", "depth", "block", "metric"], sort=False):
        mean, low, high, k = patient_ci(g["value"], g["patient_id"])
        rows.append(dict(method=method, test=test, depth=depth, block=block, metric=metric, value=mean,
                         std=float(g["value"].std(ddof=0)), ci_low=low, ci_high=high, n=len(g), n_patients=k,
                         n_degenerate=int(g["degenerate"].sum())))
    return pd.DataFrame(rows, columns=METRICS_COLUMNS)


def logit_row(test: str, depth: int, block: str, ref_logits, model, x) -> dict:
    return dict(test=test, depth=depth, block=block, n=len(x), **logit_change(ref_logits, logits_of(model, x)))


# ---------------------------------------------------------------- stage
def _validate(cfg) -> None:
    s = cfg.sanity
    unknown = [m for m in s.methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"sanity.methods: unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    if not s.cascade:
        raise ConfigError("sanity.cascade is empty; list the blocks to randomize, top first (e.g. [fc, layer4, ...])")
    if s.reinit not in REINIT_SCHEMES:
        raise ConfigError(f"sanity.reinit={s.reinit!r} is not known; choose from {list(REINIT_SCHEMES)}")
    if not 1 <= s.hog_pixels_per_cell <= cfg.data.patch_size // 2:
        raise ConfigError(f"sanity.hog_pixels_per_cell={s.hog_pixels_per_cell} must be in 1..{cfg.data.patch_size // 2}")
    for key in ("num_patches", "smprt_samples", "smprt_patches", "random_labels_patches", "random_labels_epochs"):
        if int(s[key]) < 1:
            raise ConfigError(f"sanity.{key}={s[key]} must be >= 1")
    if not 0 < s.random_labels_target <= 1:
        raise ConfigError(f"sanity.random_labels_target={s.random_labels_target} must be in (0, 1]")


def explain_settings(cfg):
    """The explain config the sanity maps use: explain.* with LIME samples and RISE masks capped at
    sanity.lime_num_samples / rise_num_masks (null = no cap)."""
    return capped(cfg.explain, **{k: cfg.sanity[k] for k in CAPPED_KEYS})


@dataclass
class Sample:
    """The sanity patches, how to map them with any model, and how to randomize the trained one."""

    chosen: pd.DataFrame
    imgs: np.ndarray  # uint8 NHWC
    targets: np.ndarray
    patients: np.ndarray
    x: object  # normalized NCHW tensor
    maps: Callable  # maps(model, images=imgs, targets=targets) -> Maps
    randomized: Callable  # randomized(fn, *args) -> fn(model, *args, seed, scheme, factory)
    cohort: str = ""  # which patients, in words (Table 5.2 names them)
    timing: Dict[str, float] = field(default_factory=dict)
    clock: List[float] = field(default_factory=lambda: [time.perf_counter()])

    def lap(self, phase: str) -> None:
        """Wall seconds per phase -> sanity/timing.json (make bench reads it)."""
        now = time.perf_counter()
        self.timing[phase] = round(now - self.clock[0], 1)
        self.clock[0] = now
        log.info("sanity: %s took %.1f s", phase, self.timing[phase])


def sample(cfg, inputs, ecfg) -> Sample:
    """Choose the balanced sanity patches and bind the map and randomization settings to them."""
    s, model, device, images = cfg.sanity, inputs.model, inputs.device, inputs.images
    seed, scheme, methods = int(s.seed), str(s.reinit), list(s.methods)
    cohort = load_cohort(cfg, inputs.paths, inputs.patches, images)
    chosen = select_balanced(cohort.patches, int(s.num_patches), seed)
    if chosen.empty:
        raise DataError(f"{inputs.paths.cohort_csv} has no patches; re-run `make data` (the {cohort.source} is empty)")
    imgs = np.ascontiguousarray(cohort.images[chosen["row"].to_numpy()])
    targets, patients = chosen["target"].to_numpy(np.int64), chosen["patient_id"].to_numpy()
    reference = dataset_reference(images, inputs.patches, int(ecfg.ig_expected_k), int(ecfg.seed))
    log.info("sanity: %d patches (%d IDC-positive) from %d patients of %s; methods %s; reinit %s",
             len(chosen), int(targets.sum()), len(set(patients)), cohort.description, methods, scheme)

    def maps(m, ims=imgs, tg=targets) -> Maps:
        return compute_maps(m, ims, tg, methods, ecfg, device, reference=reference)[0]

    def factory():
        return build_model({**inputs.checkpoint["model_cfg"], "weights": None})

    def randomized(fn, *args):
        return fn(model, *args, seed, scheme, factory)

    return Sample(chosen, imgs, targets, patients, normalize_batch(imgs, device=device), maps, randomized,
                  cohort=cohort.description)


def check_cascade(model, cascade: List[str]) -> None:
    try:  # an unknown name fails before any work
        uncovered = uncovered_parameters(model, cascade)
    except ValueError as err:
        raise ConfigError(f"sanity.cascade: {err}") from err
    if uncovered:
        log.warning("sanity.cascade leaves %d parameter tensors trained at full depth, e.g. %s", len(uncovered), uncovered[:3])


def model_randomization(cfg, model, smp: Sample, ref: Maps, ref_logits) -> tuple:
    """MPRT cascading and independent: (similarity rows, logit rows, example columns, maps per depth)."""
    cascade, ppc = list(cfg.sanity.cascade), int(cfg.sanity.hog_pixels_per_cell)
    sims, logit_rows, examples, depth_maps = [], [], [], {}
    for depth, rmodel in tqdm(smp.randomized(cascade_models, cascade), total=len(cascade), desc="MPRT cascading"):
        label = ("+" if depth > 1 else "") + cascade[depth - 1]
        logit_rows.append(logit_row("mprt_cascading", depth, label, ref_logits, rmodel, smp.x))
        depth_maps[depth] = smp.maps(rmodel)
        sims += similarity_rows(ref, depth_maps[depth], "mprt_cascading", depth, label, smp.patients, ppc)
        examples.append((label, depth_maps[depth]))
    for i, block in enumerate(tqdm(cascade, desc="MPRT independent"), start=1):
        rmodel = smp.randomized(randomize_independent, block)
        logit_rows.append(logit_row("mprt_independent", i, block, ref_logits, rmodel, smp.x))
        other = depth_maps[1] if i == 1 else smp.maps(rmodel)  # block 1 alone = cascade depth 1 (same seed)
        sims += similarity_rows(ref, other, "mprt_independent", i, block, smp.patients, ppc)
    return sims, logit_rows, examples, depth_maps


def run(cfg) -> dict:
    """The sanity checks (module doc); sanity/timing.json also counts the images through the network."""
    with counting_images() as passes:
        return _run(cfg, passes)


def _run(cfg, passes: dict) -> dict:
    s = cfg.sanity
    _validate(cfg)
    inputs = load_run(cfg, needs=("patches", "images", "model"))
    inputs.model = inference_layout(inputs.model)
    paths, model, cascade, methods = inputs.paths, inputs.model, list(s.cascade), list(s.methods)
    ecfg = explain_settings(cfg)
    smp = sample(cfg, inputs, ecfg)
    check_cascade(model, cascade)
    ppc = int(s.hog_pixels_per_cell)
    ref_logits = logits_of(model, smp.x)
    ref = smp.maps(model)
    sims, logit_rows, examples, depth_maps = model_randomization(cfg, model, smp, ref, ref_logits)
    examples.insert(0, ("original", ref))
    smp.lap("model randomization (MPRT cascading and independent)")
    sub = select_balanced(smp.chosen.reset_index(drop=True), int(s.smprt_patches), int(s.seed)).index.to_numpy()
    sims += smprt_rows(cfg, model, smp.randomized, smp.maps, smp.imgs[sub], smp.targets[sub], smp.patients[sub], ppc)
    smp.lap("smooth MPRT")
    rows, record, recipe, rl_maps = data_randomization(cfg, inputs, smp, ref, ref_logits, logit_rows)
    sims += rows
    examples.append(("random labels", rl_maps))
    smp.lap("data randomization (memorization, recipe control and maps)")

    sims = pd.DataFrame(sims)
    metrics = aggregate(sims)
    logits = pd.DataFrame(logit_rows)
    verdicts = verdict_frame(sims, ref, depth_maps[len(cascade)], smp.patients, record, cfg)
    settings = (f"Maps: explain.* with {', '.join(f'{k}={ecfg[k]}' for k in CAPPED_KEYS)}, "
                f"ig_steps={ecfg.ig_steps}, smoothgrad_samples={ecfg.smoothgrad_samples}; target = the true class; re-initialization: {s.reinit}; cascade {cascade}; "
                f"sMPRT: {s.smprt_samples} noisy copies (sd {s.smprt_noise:g} x range) of "
                f"{len(sub)} of the patches (half IDC-positive where possible), bottom-up; eMPRT: {s.emprt_bins}-bin entropy.")
    table = table_5_2(verdicts, metrics, logits, methods, {k: m.title for k, m in METHODS.items()},
                      threshold=float(s.threshold), metric=TABLE_METRIC, n_patches=len(smp.chosen),
                      n_patients=len(set(smp.patients)), cohort=smp.cohort, settings=settings,
                      memorization=memorization_note(record) + "\n\n" + recipe_note(recipe, recipe_similarity(metrics)))
    wrote(write_csv_atomic(metrics, paths.sanity_metrics_csv), f"{len(metrics)} similarity rows")
    wrote(write_csv_atomic(logits, paths.logit_change_csv), "logit change per randomized model")
    wrote(write_csv_atomic(verdicts, paths.randomization_csv), "verdicts per method and test")
    wrote(write_text_atomic(paths.table_5_2, table), "Table 5.2")
    gray_examples = [(label, {m: (raw, to_grayscale(raw)) for m, raw in maps.items()}) for label, maps in examples]
    figures = write_sanity_figures(paths, metrics, cascade, {k: m.title for k, m in METHODS.items()},
                                   float(s.threshold), smp.imgs[0], gray_examples)
    smp.lap("tables and figures")
    smp.timing["total"] = round(sum(smp.timing.values()), 1)
    wrote(write_json_atomic(paths.sanity_timing_json, {**smp.timing, "network_images": dict(passes)}),
          "wall seconds per phase, images through the network")
    log.info("sanity: localization, faithfulness and the method leaderboard are the next stage: `make leaderboard`")
    return dict(metrics=metrics, verdicts=verdicts, logits=logits, table_5_2=table, random_labels=record,
                recipe_control=recipe, figures=figures)


def data_randomization(cfg, inputs, smp: Sample, ref: Maps, ref_logits, logit_rows: List[dict]) -> tuple:
    """The random-label model and its recipe control (the same recipe on the true labels, as many epochs):
    (similarity rows, random-label record, recipe record, random-label maps). Rows: `data_randomization`
    (random labels vs the trained model), `data_randomization_recipe` (random labels vs the recipe control)
    and `recipe_control` (the recipe control vs the trained model: how far the recipe alone moves the maps)."""
    ppc, patches, images, device = int(cfg.sanity.hog_pixels_per_cell), inputs.patches, inputs.images, inputs.device
    rl_model, record = random_labels_model(cfg, inputs.paths, patches, images, device)
    recipe_model, recipe = recipe_control_model(cfg, inputs.paths, patches, images, device, int(record["epochs"]))
    rl_model, recipe_model = inference_layout(rl_model), inference_layout(recipe_model)
    logit_rows.append(logit_row("data_randomization", 0, "random labels", ref_logits, rl_model, smp.x))
    logit_rows.append(logit_row("recipe_control", 0, "recipe control (true labels)", ref_logits, recipe_model, smp.x))
    rl_maps, recipe_maps = smp.maps(rl_model), smp.maps(recipe_model)
    rows = similarity_rows(ref, rl_maps, "data_randomization", 0, "random labels", smp.patients, ppc)
    rows += similarity_rows(recipe_maps, rl_maps, "data_randomization_recipe", 0, "random labels vs recipe control",
                            smp.patients, ppc)
    rows += similarity_rows(ref, recipe_maps, "recipe_control", 0, "recipe control", smp.patients, ppc)
    return rows, record, recipe, rl_maps


def recipe_similarity(metrics: pd.DataFrame) -> str:
    """How similar the recipe control's maps are to the trained model's (mean over methods), in words."""
    m = metrics[(metrics["test"] == "recipe_control") & (metrics["metric"] == TABLE_METRIC)]
    if m.empty:
        return "no maps compared."
    return (f"its maps' similarity to the trained model's, mean over methods: {m['value'].mean():.2f} (Spearman of "
            "absolute maps; 1 = the recipe alone leaves the maps unchanged).")


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
    args = dict(threshold=float(s.threshold))
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
    for test in ("data_randomization", "data_randomization_recipe"):
        frames.append(summarize_test(per_patch_means(sims, test, TABLE_METRIC), test, invalid=invalid, **args))
    return pd.concat(frames, ignore_index=True)[RANDOMIZATION_COLUMNS]
