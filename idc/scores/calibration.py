"""How often a verdict is wrong when there is nothing to find: a seeded simulation under the null.

Null data shaped like the leaderboard's: `n_patches` (128) per-patch values spread over k patients of
unequal size (each patient's share of the patches drawn from Dirichlet(1), at least one patch each);
value = patient effect + patch noise, intra-patient correlation `icc` (0.5), true mean 0. For the
leaderboard's "beats" the values are differences (method - control) and the verdict is wrong when the
CI's lower end is above 0; for the sanity stage's "pass" the values are similarities whose true mean
is the threshold (0.5) and the verdict is wrong when the CI's upper end is below it.

Intervals compared: `t` = `idc.scores.inference.t_bounds` on the patient means (what `t_interval`, the
verdicts' interval, computes; vectorized over the replicates), `bootstrap` = the percentile cluster
bootstrap the verdicts used before issue 23 (`idc.scores.bootstrap.cluster_bootstrap`, 1,000 resamples).

    python -m idc.scores.calibration [reps]

prints the table of docs/attribution-evaluation.md ("Calibration"); tests/test_inference.py runs the same
simulation for the t-interval at the default cohort size and at 10 patients.
"""
from __future__ import annotations

import sys
import time
from typing import Sequence, Tuple

import numpy as np

from idc.markdown import markdown_table
from idc.scores.bootstrap import cluster_bootstrap
from idc.scores.inference import MIN_PATIENTS, t_bounds

KINDS = ("normal", "left_skewed")


def null_samples(rng: np.random.Generator, n_patients: int, reps: int, n_patches: int = 128, icc: float = 0.5,
                 kind: str = "normal") -> Tuple[np.ndarray, np.ndarray]:
    """(values [reps, n_patches], patient of each patch [reps, n_patches]) with true mean 0. `kind`: normal
    effects and noise, or `left_skewed` (1 - Exp(1), skewness -2: a long tail of patches far below the mean)."""
    if not 1 <= n_patients <= n_patches:
        raise ValueError(f"n_patients={n_patients} must be in 1..n_patches={n_patches}")
    shares = rng.dirichlet(np.ones(n_patients), size=reps)
    sizes = 1 + rng.multinomial(n_patches - n_patients, shares)  # [reps, k], at least one patch each
    clusters = np.stack([np.repeat(np.arange(n_patients), s) for s in sizes])
    if kind == "normal":
        effect, noise = rng.normal(size=(reps, n_patients)), rng.normal(size=(reps, n_patches))
    elif kind == "left_skewed":
        effect, noise = 1 - rng.exponential(size=(reps, n_patients)), 1 - rng.exponential(size=(reps, n_patches))
    else:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    values = np.sqrt(icc) * np.take_along_axis(effect, clusters, axis=1) + np.sqrt(1 - icc) * noise
    return values, clusters


def batch_patient_means(values: np.ndarray, clusters: np.ndarray, n_patients: int) -> np.ndarray:
    """[reps, k] mean per patient of each replicate."""
    flat = (clusters + n_patients * np.arange(len(values))[:, None]).ravel()
    sums = np.bincount(flat, weights=values.ravel(), minlength=values.size // values.shape[1] * n_patients)
    return (sums / np.bincount(flat, minlength=sums.size)).reshape(len(values), n_patients)


def false_positive_rate(method: str, n_patients: int, reps: int = 1000, seed: int = 0, side: str = "beats",
                        threshold: float = 0.5, **sample) -> float:
    """Share of `reps` null samples on which the verdict comes out positive, for the interval `method`
    (`t` or `bootstrap`): side `beats` = CI low > 0; side `pass` = CI high < `threshold` (the values shifted
    to a true mean of `threshold`)."""
    if side not in ("beats", "pass") or method not in ("t", "bootstrap"):
        raise ValueError(f"side must be 'beats' or 'pass' (got {side!r}), method 't' or 'bootstrap' (got {method!r})")
    values, clusters = null_samples(np.random.default_rng([seed, n_patients]), n_patients, reps, **sample)
    values = values + (threshold if side == "pass" else 0.0)
    if method == "t":
        _, low, high, _ = t_bounds(batch_patient_means(values, clusters, n_patients))
    else:
        est = [cluster_bootstrap(v, c, n_boot=1000, seed=0) for v, c in zip(values, clusters)]
        low, high = np.array([e.ci_low for e in est]), np.array([e.ci_high for e in est])
    hits = low > 0 if side == "beats" else high < threshold
    return float(np.mean(hits))


def calibration_table(patients: Sequence[int] = (2, 3, 5, 10, 20, 24), reps: int = 1000, precise: int = 20000,
                      seed: int = 0) -> str:
    """Markdown: false "beats" and "pass" rates by patient count at nominal 2.5%: before (percentile cluster
    bootstrap) and after (t-interval on patient means) on the same `reps` samples, the t-interval again on
    `precise` samples (Monte-Carlo sd 0.1%), and under left skew."""
    rows = []
    for k in patients:
        cells = []
        for side in ("beats", "pass"):
            cells += [false_positive_rate("bootstrap", k, reps, seed, side=side), false_positive_rate("t", k, reps, seed, side=side),
                      false_positive_rate("t", k, precise, seed + 1, side=side)]
        cells.append(false_positive_rate("t", k, precise, seed + 1, kind="left_skewed"))
        verdict = "yes / no, pass / fail" if k >= MIN_PATIENTS else "too few patients"
        rows.append([k] + [f"{100 * r:.1f}%" for r in cells] + [verdict])
    header = ["patients"] + [f"{side}: {what}" for side in ("beats", "pass") for what in
                             ("before (bootstrap)", "after (t)", f"after (t), {precise:,} reps")]
    return markdown_table(header + [f"beats: after (t), left-skewed, {precise:,} reps", "verdict shown"], rows)


def main(argv: Sequence[str] = ()) -> None:
    reps = int(argv[0]) if argv else 1000
    tic = time.perf_counter()
    print(calibration_table(reps=reps))
    print(f"\n{reps} replicates per cell unless stated, 128 patches over patients of unequal size, ICC 0.5, normal "
          f"unless stated, seeds 0 (before / after) and 1 (20,000 reps); {time.perf_counter() - tic:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
