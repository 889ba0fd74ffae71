"""The leaderboard's stain-invariance column (issue 25; the scores are `idc.scores.invariance`).

The first `leaderboard.stain_patches` scored patches (one patient at a time, as every scored patch) get a
seeded HED-jittered copy (`leaderboard.stain_scale`, `stain_shift`; Tellez's HED-light 0.05 / 0.05 by
default, drawn with `leaderboard.seed`). Pairs whose P(IDC) moved by more than `leaderboard.stain_max_change`
are dropped (the model did not treat the copies alike) and counted; the same pairs serve every row. Every
map source (method, variant, randomized-model row, control) is computed again on the copies for the same
class (IDC), through the same driver with the same seeds, in the same batch positions as its first maps:
a method's own randomness (SmoothGrad's noise, LIME's samples, RISE's masks) is then the same on both
copies and does not count as stain sensitivity. The controls: edges, darkness and blurred darkness are
computed on the copy (they follow the colour); the uniform random map is redrawn with a fresh seed (an
unrelated map: the floor, about 0). The reference for the flag (`idc.leaderboard.verdicts.stain_flags`) is
the rank similarity of the model's own penultimate features (the input of its last linear layer, which the
prediction is a linear function of) on the same pairs.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import pandas as pd
import torch
from torch import nn

from idc.errors import ConfigError
from idc.model import predict
from idc.scores.inference import t_interval
from idc.scores.invariance import feature_invariance, stable_pairs, stain_invariance, stain_perturbed

log = logging.getLogger("idc")

STAIN_FACTS = ("stain_delta_p", "feature_invariance")  # per patch, the same for every source (NaN outside the sample)


@dataclass(frozen=True)
class StainPairs:
    """The stain-perturbed copies of the first `k` scored patches and what the model made of them."""

    originals: np.ndarray  # [k] uint8 NHWC: the scored patches' first k
    images: np.ndarray  # [k] uint8 NHWC: their stain-perturbed copies
    keep: np.ndarray  # [k] bool: |dP(IDC)| <= leaderboard.stain_max_change
    delta_p: np.ndarray  # [k] |P(IDC) of the copy - P(IDC) of the patch|
    features: np.ndarray  # [k] rank similarity of the model's penultimate features between the two
    aligned: bool  # the k patches are whole explain batches of the n scored (or all n): their first maps are reused

    @property
    def k(self) -> int:
        return len(self.images)


def check_stain_settings(lb) -> None:
    """The stain keys are in range (checked before any work)."""
    if float(lb.stain_scale) < 0 or float(lb.stain_shift) < 0 or int(lb.stain_patches) < 0 \
            or not 0 <= float(lb.stain_max_change) <= 1:
        raise ConfigError("leaderboard.stain_scale, stain_shift and stain_patches must be >= 0 and stain_max_change "
                          f"in [0, 1]; got {lb.stain_scale}, {lb.stain_shift}, {lb.stain_patches}, "
                          f"{lb.stain_max_change}")


def stain_enabled(lb) -> bool:
    return (float(lb.stain_scale) > 0 or float(lb.stain_shift) > 0) and int(lb.stain_patches) > 0


def predict_with_features(model: nn.Module, images: np.ndarray, device) -> Tuple[np.ndarray, np.ndarray]:
    """(probabilities [n, classes], features [n, d]) in one pass: the features are the input of the model's
    last linear layer (what its logits are a linear function of)."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    out: List[torch.Tensor] = []
    handle = last.register_forward_hook(lambda _m, args, _o: out.append(args[0].detach().float().cpu()))
    try:
        probs = predict(model, images, device=device, desc=None)
    finally:
        handle.remove()
    return probs, torch.cat(out).numpy()


def stain_pairs(model: nn.Module, images: np.ndarray, lb, batch_size: int, device) -> Optional[StainPairs]:
    """The perturbed copies of the first `leaderboard.stain_patches` of the scored uint8 `images`, with the
    pair filter and the features' similarity; None when the column is off."""
    if not stain_enabled(lb):
        return None
    n, k = len(images), min(int(lb.stain_patches), len(images))
    originals = np.ascontiguousarray(images[:k])
    copies, _ = stain_perturbed(originals, float(lb.stain_scale), float(lb.stain_shift), int(lb.seed))
    probs, feats = predict_with_features(model, np.concatenate([originals, copies]), device)
    p = probs[:, 1]
    delta = np.abs(p[k:] - p[:k])
    keep = stable_pairs(p[:k], p[k:], float(lb.stain_max_change))
    log.info("stain invariance: %d of %d pairs kept (|dP(IDC)| <= %g), %d dropped", keep.sum(), k,
             float(lb.stain_max_change), k - keep.sum())
    return StainPairs(originals, copies, keep, delta, feature_invariance(feats[:k], feats[k:]),
                      aligned=k == n or k % max(1, int(batch_size)) == 0)


def stain_scores(kind: str, maps: Dict[str, np.ndarray], pairs: StainPairs,
                 map_fn: Callable[[np.ndarray, int], Dict[str, np.ndarray]], seed: int) -> Dict[str, np.ndarray]:
    """{variant: [n] stain invariance (NaN outside the kept pairs)} of one source whose maps of the n scored
    patches are `maps` ({variant: [n, H, W]}); `map_fn(images, seed)` maps other patches the same way.
    A control's random map is redrawn (seed + 1); where the k patches are not whole batches of the n (a
    stochastic method would draw other noise for them), their first maps are recomputed on the k alone."""
    perturbed = map_fn(pairs.images, seed + 1 if kind == "control" else seed)
    first = {v: m[:pairs.k] for v, m in maps.items()} if pairs.aligned or kind == "control" \
        else map_fn(pairs.originals, seed)
    out = {}
    for variant, m in maps.items():
        inv = np.full(len(m), np.nan)
        kept = np.flatnonzero(pairs.keep)
        inv[kept] = stain_invariance(first[variant][kept], perturbed[variant][kept])
        out[variant] = inv
    return out


def stain_facts(pairs: StainPairs, n: int) -> Dict[str, np.ndarray]:
    """{fact: [n]}: |dP(IDC)| and the features' similarity of the sampled pairs (NaN elsewhere; the features
    NaN for dropped pairs too, so that the flag compares on the kept pairs only)."""
    delta, feats = np.full(n, np.nan), np.full(n, np.nan)
    delta[:pairs.k] = pairs.delta_p
    feats[np.flatnonzero(pairs.keep)] = pairs.features[pairs.keep]
    return {"stain_delta_p": delta, "feature_invariance": feats}


def stain_markdown(lb, per_patch: pd.DataFrame) -> List[str]:
    """The leaderboard's paragraph on the stain-invariance column ([] when it was not measured)."""
    if "stain_delta_p" not in per_patch or not per_patch["stain_delta_p"].notna().any():
        return []
    first = per_patch[per_patch["method"] == per_patch["method"].iloc[0]].drop_duplicates("image_id")
    sampled = first[first["stain_delta_p"].notna()]
    kept = sampled[sampled["feature_invariance"].notna()]
    est = t_interval(kept["feature_invariance"].to_numpy(), kept["patient_id"].to_numpy())
    feats = f"{est.mean:.4f}" + (f" [{est.ci_low:.4f}, {est.ci_high:.4f}]" if np.isfinite(est.ci_low) else "")
    return [
        f"**Stain invariance** (secondary; input invariance, Kindermans et al. 2019): the first {len(sampled)} scored "
        f"patches and a copy of each with HED stain jitter (alpha ~ U(1 - {float(lb.stain_scale):g}, 1 + "
        f"{float(lb.stain_scale):g}), beta ~ U(-{float(lb.stain_shift):g}, {float(lb.stain_shift):g}) in optical "
        f"density per stain, seed {int(lb.seed)}); {len(kept)} pairs whose P(IDC) moved by at most "
        f"{float(lb.stain_max_change):g} are scored ({len(sampled) - len(kept)} dropped, the largest move "
        f"{sampled['stain_delta_p'].max():.3f}), from {kept['patient_id'].nunique()} patients. Score: Spearman rank "
        "correlation of a map with its map on the copy (same class, same seeds), 1 = unchanged; the random map "
        "is redrawn on the copy (the floor), edges and darkness are computed on it. The model's own penultimate "
        f"features keep their ranks at {feats} (mean of the patient means [95% CI]); **follows the stain more than "
        "the model**: \"yes\" where a method's map is less similar than those features (one-sided paired t-test on "
        "the patient means at 2.5%, Holm across the methods); the cell gives map - features [95% CI].",
        "",
    ]
