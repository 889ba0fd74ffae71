"""Which patches the leaderboard scores, each map source's scores on them, and the summary per source.

The patches are IDC-positive patches of the evaluation cohort (`idc.data.cohort`: generated patients never
trained on, or the test split), taken one patient at a time (`idc.explain.select.round_robin`) so that the
patches spread over as many patients as possible: a verdict needs patients, not patches. On data with pixel
ground truth (`data.masks_dir`, the synthetic sets) every eligible patch (a non-trivial evidence mask; at
most `leaderboard.num_patches`) is scored against its evidence mask (localization), on faithfulness
(deletion, insertion from two starts, ROAD) and, where the set plants a cue, on the relevance mass on that
cue (shortcut). Where the evidence masks come with a label map (generator v7: IDC vs decoy nuclei,
`idc.leaderboard.nuclei`) every map is also scored among nuclear pixels (nuclear AUROC, relevance mass on IDC
vs decoy nuclei: the headline localization scores) and against this model's per-nucleus logit drops
(nucleus rank correlation). On data without pixel ground truth (`data.masks_dir=null`, as the real Kaggle set) up to
`leaderboard.num_patches` IDC-positive patches are scored on faithfulness only. Every scored variant
of the first `leaderboard.stain_patches` patches is also scored on stain invariance
(`idc.leaderboard.invariance`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pandas as pd

from idc.data.synthetic import load_masks, patch_mask
from idc.explain.select import round_robin
from idc.leaderboard.invariance import STAIN_FACTS
from idc.scores.faithfulness import faithfulness_scores, road_scores
from idc.scores.inference import t_interval
from idc.scores.localization import LOCALIZATION_SCORES, localization_scores, pointing_chance, relevance_mass_accuracy
from idc.scores.nuclei import idc_area_share, nuclear_auroc, nuclear_mass, nucleus_rank_scores
from idc.utils import Laps

log = logging.getLogger("idc")

FAITHFULNESS_SCORES = ("deletion", "insertion", "insertion_mean", "road")
SHORTCUT_SCORES = ("cue_mass", "evidence_mass_cue_patches")
NUCLEAR_SCORES = ("nuclear_auroc", "nuclear_mass")  # among nuclear pixels, against the label map (headline)
NUCLEUS_SCORES = ("nucleus_rank",)  # against this model's per-nucleus logit drops
STAIN_SCORES = ("stain_invariance",)  # a map against its map on a stain-perturbed copy (idc.leaderboard.invariance)
SCORES = NUCLEAR_SCORES + LOCALIZATION_SCORES + FAITHFULNESS_SCORES + NUCLEUS_SCORES + STAIN_SCORES + SHORTCUT_SCORES
PER_PATCH_FACTS = ("empty_map", "pointing_chance", "nuclear_chance") + STAIN_FACTS  # per patch, beside the
# scores: a map that is 0 everywhere, the pointing game's chance level (the share of the patch inside the
# tolerance-dilated mask), nuclear mass's (the IDC share of the nuclear pixels), and the stain pair's |dP(IDC)|
# and the model's feature similarity
FAITHFUL_VARIANT = "positive"  # deletion/insertion/ROAD/shortcut mass rank pixels by evidence FOR IDC


# ---------------------------------------------------------------- patches
def select_localization_patches(preds: pd.DataFrame, masks_dir: Path, n: int, seed: int, size: int = 50):
    """Up to `n` IDC-positive patches whose evidence mask is neither empty nor full, one patient at a time
    (seeded), with their bool evidence masks and cue masks (None unless the set has a `cue` layer)."""
    pos = preds[preds["target"] == 1]
    slides: Dict[int, dict] = {}
    keep, masks, cues, skipped = [], [], [], 0
    for i in round_robin(pos, seed):
        row = pos.loc[i]
        pid = int(row["patient_id"])
        if pid not in slides:
            slides[pid] = load_masks(masks_dir, pid)
        m = patch_mask(slides[pid]["mask"], int(row["x"]), int(row["y"]), size=size).astype(bool)
        if not 0 < m.sum() < m.size:
            skipped += 1
            continue
        keep.append(i)
        masks.append(m)
        if "cue" in slides[pid]:
            cues.append(patch_mask(slides[pid]["cue"], int(row["x"]), int(row["y"]), size=size).astype(bool))
        if len(keep) == n:
            break
    log.info("localization: %d IDC-positive patches of %d patients with a non-trivial evidence mask (cap %d; %d "
             "skipped with an empty or full mask)", len(keep), preds.loc[keep, "patient_id"].nunique(), n, skipped)
    stack = (lambda a: np.stack(a) if a else np.zeros((0, size, size), bool))
    return preds.loc[keep], stack(masks), (stack(cues) if cues and len(cues) == len(keep) else None)


def select_faithfulness_patches(preds: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """Up to `n` IDC-positive patches, one patient at a time (seeded): the patches of a set without masks."""
    pos = preds[preds["target"] == 1]
    chosen = pos.loc[round_robin(pos, seed)[:n]]
    log.info("faithfulness only (no pixel ground truth): %d IDC-positive patches of %d patients (cap %d)", len(chosen),
             chosen["patient_id"].nunique(), n)
    return chosen


# ---------------------------------------------------------------- scoring
def shortcut_scores(maps: np.ndarray, masks: np.ndarray, cues: np.ndarray) -> Dict[str, np.ndarray]:
    """Relevance mass on the planted cue and on the evidence, on the patches that carry a cue (NaN elsewhere)."""
    carries = cues.any(axis=(1, 2))
    out = {}
    for name, m in (("cue_mass", cues), ("evidence_mass_cue_patches", masks)):
        v = np.full(len(maps), np.nan)
        if carries.any():
            v[carries] = relevance_mass_accuracy(maps[carries], m[carries])
        out[name] = v
    return out


def nuclear_scores(maps: np.ndarray, nuclear) -> Dict[str, np.ndarray]:
    """Nuclear AUROC, relevance mass on IDC vs decoy nuclei (with its chance level) and the nucleus rank
    correlation with the model's drops (NaN beyond leaderboard.nucleus_patches) of one variant's maps;
    `nuclear`: the `idc.leaderboard.nuclei.NuclearTruth` of the scored patches."""
    return {"nuclear_auroc": nuclear_auroc(maps, nuclear.labels), "nuclear_mass": nuclear_mass(maps, nuclear.labels),
            "nuclear_chance": idc_area_share(nuclear.labels),
            "nucleus_rank": nucleus_rank_scores(maps, nuclear.ids, nuclear.drops)}


def score_source(model, x, target, maps_by_variant: Dict[str, np.ndarray], masks, cues, lb,
                 timing: Optional[Dict[str, float]] = None, nuclear=None) -> Dict[str, Dict[str, np.ndarray]]:
    """{variant: {score: [n]}} for one source's maps (with `empty_map` and, given masks, `pointing_chance`);
    `masks` None (no pixel ground truth): faithfulness only, on the faithful variant; `nuclear` (a
    `NuclearTruth`, data with a label map): the nuclear scores too (`nuclear_scores`).
    `lb`: the leaderboard settings (pointing_tolerance, top_k_fraction, deletion_fill, blur_sigma, road,
    road_patches, seed). `timing`, when given, accumulates the wall seconds of localization,
    deletion + insertion and ROAD (the stage's timing.json)."""
    out, clock = {}, Laps(timing if timing is not None else {})
    for variant, maps in maps_by_variant.items():
        scores = {"empty_map": (maps.reshape(len(maps), -1).max(axis=1) <= 0).astype(np.float64)}
        if masks is not None:
            top_k = max(1, int(round(float(lb.top_k_fraction) * masks[0].size)))
            scores.update(localization_scores(maps, masks, tolerance=int(lb.pointing_tolerance), top_k=top_k))
            scores["pointing_chance"] = pointing_chance(masks, int(lb.pointing_tolerance))
        if nuclear is not None:
            scores.update(nuclear_scores(maps, nuclear))
        clock.lap("localization scores")
        if variant == FAITHFUL_VARIANT:
            scores.update(faithfulness_scores(model, x, maps, target, fill=str(lb.deletion_fill),
                                              sigma=float(lb.blur_sigma), road=False, seed=int(lb.seed)))
            clock.lap("deletion and insertion (2 starts)")
            if lb.road:  # ROAD's imputation costs seconds per patch on a CPU: the first `road_patches` only
                k = min(len(maps), int(lb.road_patches))
                scores["road"] = np.full(len(maps), np.nan)
                if k:
                    scores["road"][:k] = road_scores(model, x[:k], maps[:k], target[:k], seed=int(lb.seed))
                clock.lap("ROAD")
            if cues is not None:
                scores.update(shortcut_scores(maps, masks, cues))
        out[variant] = scores
    return out


def score_frames(src, rows: pd.DataFrame, masks: Optional[np.ndarray], scores: Dict[str, Dict[str, np.ndarray]]) -> list:
    """One per-patch frame per relevance variant of a source (method, kind, variant, image_id, patient_id,
    mask_fraction, then the scores); a variant without scores (no masks: all but the faithful one) has none."""
    frames = []
    for variant, by_score in scores.items():
        if set(by_score) <= set(PER_PATCH_FACTS):  # no score on this variant (no masks: all but the faithful one)
            continue
        frame = pd.DataFrame(by_score)
        frame.insert(0, "mask_fraction", masks.mean(axis=(1, 2)) if masks is not None else np.nan)
        frame.insert(0, "patient_id", rows["patient_id"].to_numpy())
        frame.insert(0, "image_id", rows["image_id"].to_numpy())
        frame.insert(0, "variant", variant)
        frame.insert(0, "kind", src.kind)
        frame.insert(0, "method", src.title)
        frames.append(frame)
    return frames


def summarize(per_patch: pd.DataFrame) -> pd.DataFrame:
    """Per source (and relevance variant): n (patches), n_patients, n_empty (all-zero maps) and every score;
    with a `patient_id` column each score is the mean of its patient means with `<score>_ci_low/_ci_high`
    (t-interval, k - 1 df: `idc.scores.inference.t_interval`), `<score>_n` patches and `<score>_k` patients
    with a value; without, the plain mean. Best nuclear AUROC first (pixel AUROC without a label map)."""
    keys = [k for k in ("method", "kind", "variant") if k in per_patch]
    cols = [c for c in SCORES if c in per_patch]
    rows = []
    for key, grp in per_patch.groupby(keys, sort=False):
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)), n=len(grp))
        if "patient_id" in grp:
            row["n_patients"] = int(grp["patient_id"].nunique())
        if "empty_map" in grp:
            row["n_empty"] = int(grp["empty_map"].sum())
        for c in cols:
            if "patient_id" in grp:
                est = t_interval(grp[c].to_numpy(), grp["patient_id"].to_numpy())
                row.update({c: est.mean, f"{c}_ci_low": est.ci_low, f"{c}_ci_high": est.ci_high, f"{c}_n": est.n,
                            f"{c}_k": est.n_clusters})
            else:
                row[c] = float(grp[c].mean())
        rows.append(row)
    table = pd.DataFrame(rows)
    best = next((c for c in ("nuclear_auroc", "pixel_auroc") if c in table and table[c].notna().any()), None)
    if best:
        table = table.sort_values(best, ascending=False, kind="stable")
    return table.reset_index(drop=True)
