"""Has a model learned the planted shortcut? Scores on the cue-aligned and cue-opposed test patches.

On `data=synthetic_shortcut` the test patients carry the ink-dot cue at the same rate in both classes,
so the test set splits into patches where the cue agrees with the training association (positive with
the dot, negative without: "aligned") and where it contradicts it ("opposed"). A model that uses the
nuclei scores alike on both; a model that uses the dot scores higher on the aligned ones. The verdict
(`cue_reliance`) is a t-interval on the per-patient aligned-minus-opposed ROC-AUC difference.

    python -m idc.data.shortcut outputs/synthetic_shortcut data/synthetic_shortcut/patch_info.csv
"""
from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from idc.metrics import binary_scores, ranking_scores
from idc.scores.inference import enough_patients, t_interval, too_few


def cue_subsets(predictions: pd.DataFrame, patch_info: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{'all', 'aligned', 'opposed'}: the predictions joined with the per-patch cue flag."""
    df = predictions.merge(patch_info[["image_id", "cue"]], on="image_id", how="left", validate="one_to_one")
    if df["cue"].isna().any():
        raise ValueError("predictions list patches that patch_info.csv does not: not the same synthetic set")
    aligned = df["cue"].astype(int) == df["target"].astype(int)
    return {"all": df, "aligned": df[aligned], "opposed": df[~aligned]}


def patient_bootstrap(patients, y, statistic, n: int = 1000, seed: int = 0) -> list[float]:
    """`statistic(idx)` on `n` resamples of whole patients (patches of a patient are not independent; patients
    in order of first appearance), skipping resamples whose labels `y` hold one class only."""
    rng, patients, y = np.random.default_rng(seed), np.asarray(patients), np.asarray(y)
    groups = [np.flatnonzero(patients == pid) for pid in pd.unique(patients)]
    stats = []
    for _ in range(n):
        idx = np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))])
        if 0 < y[idx].sum() < len(idx):
            stats.append(statistic(idx))
    return stats


def patient_bootstrap_ci(df: pd.DataFrame, n: int = 1000, seed: int = 0) -> list[float]:
    """95% percentile interval of ROC-AUC, resampling whole patients (`patient_bootstrap`)."""
    y, p = df["target"].to_numpy(), df["proba"].to_numpy()
    stats = patient_bootstrap(df["patient_id"].to_numpy(), y, lambda idx: roc_auc_score(y[idx], p[idx]), n, seed)
    return [float(np.quantile(stats, 0.025)), float(np.quantile(stats, 0.975))] if stats else [float("nan")] * 2


def per_patient_auc(df: pd.DataFrame, proba: str = "proba") -> pd.Series:
    """ROC-AUC of column `proba` per patient (index: patient id), for the patients whose patches hold both classes."""
    return pd.Series({pid: roc_auc_score(g["target"], g[proba]) for pid, g in df.groupby("patient_id")
                      if g["target"].nunique() == 2}, dtype=float)


def cue_reliance(predictions: pd.DataFrame, patch_info: pd.DataFrame) -> dict:
    """Does the model rely on the cue? Per test patient, ROC-AUC on its cue-aligned patches minus ROC-AUC on
    its cue-opposed ones (a patient counts where each subset holds both classes); the mean over patients with
    its t-interval (k - 1 df, the interval every verdict uses: docs/attribution-evaluation.md). "relies on the
    cue" when the interval lies above 0, "no evidence of reliance" otherwise, "too few patients" below 5."""
    subsets = cue_subsets(predictions, patch_info)
    aucs = {name: per_patient_auc(subsets[name]) for name in ("aligned", "opposed")}
    patients = sorted(pd.unique(subsets["all"]["patient_id"]))
    diffs = {pid: aucs["aligned"][pid] - aucs["opposed"][pid] for pid in patients
             if pid in aucs["aligned"] and pid in aucs["opposed"]}
    skipped = [pid for pid in patients if pid not in diffs]
    est = t_interval(list(diffs.values()), list(diffs))
    if not enough_patients(est.n_clusters):
        verdict = too_few(est.n_clusters)
    else:
        verdict = "relies on the cue" if est.ci_low > 0 else "no evidence of reliance"
    return {"roc_auc_aligned_minus_opposed": est.mean, "ci95": [est.ci_low, est.ci_high], "patients": est.n_clusters,
            "per_patient": {str(k): float(v) for k, v in diffs.items()},
            "patients_skipped": [str(p) for p in skipped], "verdict": verdict}


def shortcut_scores(predictions: pd.DataFrame, patch_info: pd.DataFrame, n_boot: int = 1000) -> dict:
    out = {"reliance": cue_reliance(predictions, patch_info)}
    for name, sub in cue_subsets(predictions, patch_info).items():
        y = sub["target"].to_numpy()
        out[name] = {"n": int(len(sub)), "positives": int(y.sum()), "cue_rate": float(sub["cue"].mean()),
                     **ranking_scores(y, sub["proba"]), **binary_scores(y, sub["pred"]),
                     "roc_auc_ci95_by_patient": patient_bootstrap_ci(sub, n_boot)}
    return out


if __name__ == "__main__":
    run_dir, info = sys.argv[1], sys.argv[2]
    scores = shortcut_scores(pd.read_csv(f"{run_dir}/eval/predictions.csv"), pd.read_csv(info))
    print(json.dumps(scores, indent=1))
