"""Localization, faithfulness and shortcut scores of every method and control row (`make leaderboard`).

On data with pixel ground truth (`data.masks_dir`, the synthetic sets) every eligible IDC-positive
test patch (a non-trivial evidence mask; at most `sanity.localization_patches`) is explained for the
IDC class by each method in `sanity.localization_methods` and each variant in `sanity.variants`
(e.g. Grad-CAM at layer3, LIME with finer superpixels), through the one explain driver. Scored the
same way: the control rows (`idc.sanity.controls`) and, per method, its maps from the fully
randomized model (`sanity.randomized_controls`).

Writes `sanity/localization.csv` (one row per map source, relevance variant and patch),
`sanity/localization_summary.csv` (mean and patient-clustered bootstrap 95% CI per score) and
`sanity/localization.md`; `idc.sanity.leaderboard` turns them into the leaderboard.

On data without pixel ground truth (`data.masks_dir=null`, as the real Kaggle set) there is nothing to
localize against, but faithfulness needs no mask: up to `sanity.localization_patches` IDC-positive test
patches are scored on deletion, insertion and ROAD only, against the same control rows.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from idc.errors import ConfigError, DataError
from idc.paths import RunPaths
from idc.sanity.bootstrap import cluster_bootstrap
from idc.sanity.controls import CONTROL_TITLES, model_free_controls
from idc.sanity.faithfulness import faithfulness_scores, road_scores
from idc.sanity.localization import LOCALIZATION_SCORES, VARIANTS, localization_scores, relevance_mass_accuracy, relevance_variants
from idc.utils import save_figure_atomic, write_csv_atomic, write_text_atomic, wrote

log = logging.getLogger("idc")

FAITHFULNESS_SCORES = ("deletion", "insertion", "road")
SHORTCUT_SCORES = ("cue_mass", "evidence_mass_cue_patches")
SCORES = LOCALIZATION_SCORES + FAITHFULNESS_SCORES + SHORTCUT_SCORES
FAITHFUL_VARIANT = "positive"  # deletion/insertion/ROAD/shortcut mass rank pixels by evidence FOR IDC
RANDOM_BASELINE = CONTROL_TITLES["random"]
RANDOMIZED_SUFFIX = " [randomized model]"


@dataclass(frozen=True)
class MapSource:
    """One row of the leaderboard: a method (with explain overrides) or a control."""

    title: str
    kind: str  # method | randomized | control
    method: Optional[str] = None
    overrides: Tuple[Tuple[str, str], ...] = ()


def parse_variant(spec: str, explain_cfg) -> Tuple[str, Tuple[Tuple[str, str], ...]]:
    """'gradcam:cam_layer=layer3,batch_size=8' -> ('gradcam', (('cam_layer', 'layer3'), ...))."""
    method, _, rest = str(spec).partition(":")
    pairs = []
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key.strip() not in explain_cfg:
            raise ConfigError(f"sanity.variants: {spec!r} must read method:key=value[,key=value] with keys of "
                              f"`explain` (e.g. gradcam:cam_layer=layer3); {key.strip()!r} is not one")
        pairs.append((key.strip(), value.strip()))
    if not pairs:
        raise ConfigError(f"sanity.variants: {spec!r} names no explain override (e.g. gradcam:cam_layer=layer3)")
    return method.strip(), tuple(pairs)


def map_sources(s, explain_cfg, titles: Dict[str, str]) -> List[MapSource]:
    """Methods, their variants, each one's randomized-model control, then the model-free controls."""
    rows = [MapSource(titles[m], "method", m) for m in (s.localization_methods or s.methods)]
    for spec in s.variants:
        method, overrides = parse_variant(spec, explain_cfg)
        if method not in titles:
            raise ConfigError(f"sanity.variants: unknown method {method!r} in {spec!r}; choose from {sorted(titles)}")
        label = ", ".join(f"{k}={v}" for k, v in overrides)
        rows.append(MapSource(f"{titles[method]} ({label})", "method", method, overrides))
    if s.randomized_controls:
        rows += [MapSource(r.title + RANDOMIZED_SUFFIX, "randomized", r.method, r.overrides) for r in list(rows)]
    return rows + [MapSource(t, "control") for t in CONTROL_TITLES.values()]


def explain_cfg_with(explain_cfg, overrides) -> object:
    sub = copy.deepcopy(explain_cfg)
    for key, value in overrides:
        try:
            sub[key] = value  # the structured schema converts and type-checks the value
        except Exception as err:
            raise ConfigError(f"sanity.variants: explain.{key}={value!r} is not valid: {err}") from err
    return sub


# ---------------------------------------------------------------- patches
def select_localization_patches(preds: pd.DataFrame, masks_dir: Path, n: int, seed: int, size: int = 50):
    """Up to `n` IDC-positive patches whose evidence mask is neither empty nor full, in random (seeded)
    order, with their bool evidence masks and cue masks (None unless the set has a `cue` layer)."""
    from idc.data.synthetic import load_masks, patch_mask

    pos = preds[preds["target"] == 1]
    order = np.random.default_rng(seed).permutation(len(pos))
    slides: Dict[int, dict] = {}
    keep, masks, cues, skipped = [], [], [], 0
    for i in order:
        row = pos.iloc[i]
        pid = int(row["patient_id"])
        if pid not in slides:
            slides[pid] = load_masks(masks_dir, pid)
        m = patch_mask(slides[pid]["mask"], int(row["x"]), int(row["y"]), size=size).astype(bool)
        if not 0 < m.sum() < m.size:
            skipped += 1
            continue
        keep.append(pos.index[i])
        masks.append(m)
        if "cue" in slides[pid]:
            cues.append(patch_mask(slides[pid]["cue"], int(row["x"]), int(row["y"]), size=size).astype(bool))
        if len(keep) == n:
            break
    log.info("localization: %d IDC-positive test patches with a non-trivial evidence mask (cap %d; %d skipped "
             "with an empty or full mask)", len(keep), n, skipped)
    stack = (lambda a: np.stack(a) if a else np.zeros((0, size, size), bool))
    return preds.loc[keep], stack(masks), (stack(cues) if cues and len(cues) == len(keep) else None)


def select_faithfulness_patches(preds: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """Up to `n` IDC-positive patches in random (seeded) order: the patches of a set without masks."""
    pos = preds[preds["target"] == 1]
    order = np.random.default_rng(seed).permutation(len(pos))[:n]
    log.info("faithfulness only (no pixel ground truth): %d IDC-positive test patches (cap %d)", len(order), n)
    return pos.iloc[order]


# ---------------------------------------------------------------- scoring
def score_source(model, x, target, maps_by_variant: Dict[str, np.ndarray], masks, cues, s) -> Dict[str, Dict[str, np.ndarray]]:
    """{variant: {score: [n]}} for one source's maps; `masks` None (no pixel ground truth): faithfulness only."""
    out = {}
    for variant, maps in maps_by_variant.items():
        scores = {}
        if masks is not None:
            top_k = max(1, int(round(float(s.top_k_fraction) * masks[0].size)))
            scores = localization_scores(maps, masks, tolerance=int(s.pointing_tolerance), top_k=top_k)
        if variant == FAITHFUL_VARIANT:
            scores.update(faithfulness_scores(model, x, maps, target, fill=str(s.deletion_fill),
                                              sigma=float(s.blur_sigma), road=False, seed=int(s.seed)))
            if s.road:  # ROAD's imputation costs seconds per patch on a CPU: the first `road_patches` only
                k = min(len(maps), int(s.road_patches))
                scores["road"] = np.full(len(maps), np.nan)
                if k:
                    scores["road"][:k] = road_scores(model, x[:k], maps[:k], target[:k], seed=int(s.seed))
            if cues is not None:
                carries = cues.any(axis=(1, 2))
                for name, m in (("cue_mass", cues), ("evidence_mass_cue_patches", masks)):
                    v = np.full(len(maps), np.nan)
                    if carries.any():
                        v[carries] = relevance_mass_accuracy(maps[carries], m[carries])
                    scores[name] = v
        out[variant] = scores
    return out


def source_maps(src: MapSource, model, random_model, imgs, target, cfg, device, reference=None) -> Dict[str, np.ndarray]:
    """{variant: non-negative [n, H, W] maps} of one source (methods through the one explain driver)."""
    from idc.explain.driver import compute_maps

    if src.kind == "control":
        m = model_free_controls(imgs, int(cfg.sanity.seed))[src.title]
        return {v: m for v in VARIANTS}
    net = random_model if src.kind == "randomized" else model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg.sanity.seed))  # noisy methods draw the same noise for every model
        raw, _ = compute_maps(net, imgs, target, [src.method], explain_cfg_with(cfg.explain, src.overrides), device,
                              reference=reference)
    return relevance_variants(raw[src.method])


def mean_superpixel_size(images: np.ndarray, kernel_size: float, seed: int) -> float:
    """Mean LIME superpixel area in pixels: LIME's own quickshift segmentation at this kernel size."""
    from lime.wrappers.scikit_image import SegmentationAlgorithm

    seg = SegmentationAlgorithm("quickshift", kernel_size=kernel_size, max_dist=200, ratio=0.2, random_seed=seed)
    return float(np.mean([img.shape[0] * img.shape[1] / len(np.unique(seg(np.asarray(img)))) for img in images]))


def summarize(per_patch: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per source (and relevance variant): n and the mean of every score; with a `patient_id` column also
    `<score>_ci_low/_ci_high`, the patient-clustered bootstrap 95% CI. Best pixel AUROC first."""
    keys = [k for k in ("method", "kind", "variant") if k in per_patch]
    cols = [c for c in SCORES if c in per_patch]
    rows = []
    for key, grp in per_patch.groupby(keys, sort=False):
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)), n=len(grp))
        for c in cols:
            if "patient_id" in grp:
                est = cluster_bootstrap(grp[c].to_numpy(), grp["patient_id"].to_numpy(), n_boot=n_boot, seed=seed)
                row.update({c: est.mean, f"{c}_ci_low": est.ci_low, f"{c}_ci_high": est.ci_high, f"{c}_n": est.n})
            else:
                row[c] = float(grp[c].mean())
        rows.append(row)
    table = pd.DataFrame(rows)
    if "pixel_auroc" in table:
        table = table.sort_values("pixel_auroc", ascending=False, kind="stable")
    return table.reset_index(drop=True)


def markdown_table(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "---|" * len(table.columns)
    body = [
        "| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v).replace("|", "\\|") for v in row) + " |"
        for row in table.itertuples(index=False)
    ]
    return "\n".join([header, rule, *body])


def _note(path: Path, reason: str) -> None:
    wrote(write_text_atomic(path, f"# Localization and faithfulness\n\nSkipped: {reason}\n"), "localization skipped")


def run_localization(cfg, paths: RunPaths, model, preds: pd.DataFrame, images, titles, device,
                     reference=None, factory=None) -> Optional[pd.DataFrame]:
    """Score every method, variant and control row against the evidence masks; None if skipped.
    `reference`: the data set's reference patches (idc.explain.driver.dataset_reference) for RISE/IG;
    `factory`: builds a fresh network for `sanity.reinit=model_init` (the randomized-model control rows)."""
    from idc.sanity.leaderboard import write_leaderboard
    from idc.sanity.plots import LOCALIZATION_FIGURE, plot_localization_examples
    from idc.sanity.randomization import randomize_cascading
    from idc.explain.driver import patch_batch

    s = cfg.sanity
    md_path = paths.sanity_dir / "localization.md"
    if not s.localization:
        _note(md_path, "disabled by `sanity.localization=false`.")
        return None
    sources = map_sources(s, cfg.explain, titles)
    if cfg.data.masks_dir is None:  # the real set: no ground truth to localize against; faithfulness needs none
        rows, masks, cues = select_faithfulness_patches(preds, int(s.localization_patches), int(s.seed)), None, None
        if len(rows) == 0:
            _note(md_path, "the test split has no IDC-positive patch to score.")
            return None
    else:
        masks_dir = Path(cfg.data.masks_dir)
        if not masks_dir.is_dir():
            raise DataError(f"data.masks_dir={masks_dir} does not exist; it is written by `make data` for the "
                            "synthetic set. Set data.masks_dir=null for data without masks.")
        rows, masks, cues = select_localization_patches(preds, masks_dir, int(s.localization_patches), int(s.seed),
                                                        size=int(cfg.data.patch_size))
        if len(rows) == 0:
            _note(md_path, "no IDC-positive test patch has a mask that is neither empty nor full.")
            return None
    imgs, x, _ = patch_batch(images, rows, device)
    target = np.ones(len(rows), dtype=np.int64)  # explain the IDC class on IDC-positive patches
    random_model = randomize_cascading(model, list(s.cascade), len(s.cascade), int(s.seed), str(s.reinit), factory)
    frames, examples = [], {}
    for src in tqdm(sources, desc="localization and faithfulness", unit="source"):
        maps = source_maps(src, model, random_model, imgs, target, cfg, device, reference)
        examples[src.title] = maps[FAITHFUL_VARIANT]
        for variant, scores in score_source(model, x, torch.as_tensor(target), maps, masks, cues, s).items():
            if not scores:  # no masks: only the faithfulness variant has scores
                continue
            frame = pd.DataFrame(scores)
            frame.insert(0, "mask_fraction", masks.mean(axis=(1, 2)) if masks is not None else np.nan)
            frame.insert(0, "patient_id", rows["patient_id"].to_numpy())
            frame.insert(0, "image_id", rows["image_id"].to_numpy())
            frame.insert(0, "variant", variant)
            frame.insert(0, "kind", src.kind)
            frame.insert(0, "method", src.title)
            frames.append(frame)
    per_patch = pd.concat(frames, ignore_index=True)
    wrote(write_csv_atomic(per_patch, paths.sanity_dir / "localization.csv"), "per-patch localization scores")
    table = summarize(per_patch, n_boot=int(s.bootstrap_samples), seed=int(s.seed))
    wrote(write_csv_atomic(table, paths.sanity_dir / "localization_summary.csv"), "localization summary")
    shown = {k: v for k, v in examples.items() if not k.endswith(RANDOMIZED_SUFFIX)}
    fig = plot_localization_examples(imgs, masks, {k: v / max(v.max(), 1e-12) for k, v in shown.items()})
    wrote(save_figure_atomic(fig, paths.figures_dir / f"{LOCALIZATION_FIGURE}.png"), "localization examples")
    sizes = {k: mean_superpixel_size(imgs, float(k), int(cfg.explain.seed)) for k in _lime_kernel_sizes(cfg, sources)}
    wrote(write_text_atomic(md_path, _markdown(table, len(rows), s, sizes, masks is not None)), "localization table")
    write_leaderboard(cfg, paths, per_patch, table, superpixel_sizes=sizes)
    return table


def _lime_kernel_sizes(cfg, sources: Sequence[MapSource]) -> List[float]:
    if "lime_kernel_size" not in cfg.explain:
        return []
    sizes = {float(cfg.explain.lime_kernel_size)} if any(s.method == "lime" and not s.overrides for s in sources) else set()
    sizes |= {float(v) for s in sources if s.method == "lime" for k, v in s.overrides if k == "lime_kernel_size"}
    return sorted(sizes)


def _markdown(table: pd.DataFrame, n: int, s, sizes: Dict[float, float], has_masks: bool = True) -> str:
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
        markdown_table(table[[c for c in cols if c in table]]),
        "",
        f"Pointing game tolerance {s.pointing_tolerance} px; top-k = {s.top_k_fraction:g} of the pixels; deletion fill "
        f"`{s.deletion_fill}`; insertion from a blur (sigma {s.blur_sigma:g}). "
        + (f"Mean LIME superpixel size: {sp}. " if sp else "") + "See docs/attribution-evaluation.md.",
        "",
    ])
