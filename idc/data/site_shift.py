"""The site-shift table (docs/data.md, "Site shift"): the ROC-AUC of evaluated runs on a site-shift cohort, on
the split `make evaluate` scored (the test split; the val split with evaluate.split=val), each with a 95%
patient-bootstrap interval (`idc.data.shortcut.patient_bootstrap_ci`: whole patients resampled, 1,000
replicates, seed 0), its patients and patches, and the remedy each run trained with (read from its own
records: data.stain_normalize, train.augment.hed_scale / hed_shift). The last column is each run's ROC-AUC
minus the first run's on the same patches, with a paired patient-bootstrap interval (`paired_difference`):
what a remedy recovers over no remedy, with the patients' noise shared. That interval is descriptive (a
percentile bootstrap is too narrow at 10 patients); the verdict is the last column's exact two-sided sign test
over the patients (`sign_test`: per patient, the run's ROC-AUC minus the first run's), whose false-positive
rate is at most its level at any patient count.

    python -m idc.data.site_shift none=outputs/sites_none macenko=outputs/sites_macenko ...

Each argument is `label=run_dir` of a run through `make evaluate`; the table is printed as markdown.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from idc.data.shortcut import patient_bootstrap, patient_bootstrap_ci, per_patient_auc
from idc.markdown import markdown_table
from idc.metrics import ranking_scores
from idc.paths import BY_KEY

HEADER = ["run", "evaluated on", "data.stain_normalize", "HED jitter (scale / shift)", "patients / patches (IDC+)",
          "ROC-AUC [95% CI]", "AP", "ROC-AUC minus the first row's [95% CI, paired]",
          "patients higher / compared (sign test p; median per patient)"]


def remedy(run_dir: Path) -> tuple[str, str]:
    """(stain normalization, HED jitter) as the run's train record holds them."""
    config = json.loads((run_dir / ".stages" / "train.json").read_text())["config"]
    aug = config["train"]["augment"]
    jitter = f"{aug['hed_scale']:g} / {aug['hed_shift']:g}" if aug["hed_scale"] or aug["hed_shift"] else "off"
    return str(config.get("data.stain_normalize") or "off"), jitter


def tested_on(run_dir: Path) -> str:
    """Which patients were evaluated: the held-out site's (test split), or patients of the sites seen in
    training (the test split of the patient split over every site, or the val split)."""
    shift = json.loads((run_dir / BY_KEY["summary_json"].rel).read_text()).get("site_shift") or {}
    metrics = run_dir / BY_KEY["metrics_json"].rel
    split = json.loads(metrics.read_text()).get("split", "test") if metrics.exists() else "test"
    test_site = shift.get("test_site")
    if split == "test" and test_site is not None:
        return f"test split: site {test_site} (unseen)"
    seen = ", ".join(s for s in shift.get("sites", {}) if s != test_site) or "one"
    return f"{split} split: seen sites ({seen})"


def paired_difference(base: pd.DataFrame, pred: pd.DataFrame, n_boot: int = 1000, seed: int = 0):
    """(ROC-AUC of `pred` minus that of `base`, 2.5% and 97.5% quantiles) on the same patches, each replicate
    resampling whole patients once for both models (the two share the patients' noise); None when the two
    runs scored different patches."""
    if len(base) != len(pred) or set(base["image_id"]) != set(pred["image_id"]):
        return None
    m = base[["image_id", "patient_id", "target", "proba"]].merge(pred[["image_id", "proba"]], on="image_id",
                                                                   suffixes=("_a", "_b"))
    y, a, b = m["target"].to_numpy(), m["proba_a"].to_numpy(), m["proba_b"].to_numpy()
    diffs = patient_bootstrap(m["patient_id"].to_numpy(), y,
                              lambda idx: roc_auc_score(y[idx], b[idx]) - roc_auc_score(y[idx], a[idx]), n_boot, seed)
    return roc_auc_score(y, b) - roc_auc_score(y, a), float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))


def sign_test(base: pd.DataFrame, pred: pd.DataFrame):
    """(patients where `pred` has the higher ROC-AUC, patients compared, two-sided exact sign-test p, median
    per-patient difference) on the same patches: per patient holding both classes, `pred`'s ROC-AUC minus
    `base`'s; ties are left out, as the sign test does. None when the two runs scored different patches."""
    if len(base) != len(pred) or set(base["image_id"]) != set(pred["image_id"]):
        return None
    m = base[["image_id", "patient_id", "target", "proba"]].merge(pred[["image_id", "proba"]], on="image_id",
                                                                   suffixes=("_a", "_b"))
    diffs = (per_patient_auc(m, "proba_b") - per_patient_auc(m, "proba_a")).to_numpy()
    higher, compared = int((diffs > 0).sum()), int((diffs != 0).sum())
    p = binomtest(higher, compared, 0.5).pvalue if compared else float("nan")
    return higher, compared, float(p), float(np.median(diffs)) if len(diffs) else float("nan")


def row(label: str, run_dir: Path, base: pd.DataFrame, n_boot: int = 1000) -> list:
    pred = pd.read_csv(run_dir / BY_KEY["predictions_csv"].rel)
    scores = ranking_scores(pred["target"].to_numpy(), pred["proba"].to_numpy())
    low, high = patient_bootstrap_ci(pred, n_boot)
    diff = paired_difference(base, pred, n_boot) if base is not None else None
    sign = sign_test(base, pred) if base is not None else None
    return [label, tested_on(run_dir), *remedy(run_dir),
            f"{pred['patient_id'].nunique()} / {len(pred):,} ({int(pred['target'].sum()):,})",
            f"{scores['roc_auc']:.3f} [{low:.3f}, {high:.3f}]", f"{scores['average_precision']:.3f}",
            f"{diff[0]:+.3f} [{diff[1]:+.3f}, {diff[2]:+.3f}]" if diff else "",
            f"{sign[0]} / {sign[1]} (p = {sign[2]:.3f}; {sign[3]:+.3f})" if sign else ""]


def site_shift_table(runs: dict, n_boot: int = 1000) -> str:
    """Markdown table, one row per `{label: run_dir}` in order; the last column compares each run with the first
    where both scored the same patches (another split or set: empty)."""
    runs = {label: Path(d) for label, d in runs.items()}
    base = pd.read_csv(next(iter(runs.values())) / BY_KEY["predictions_csv"].rel)
    rows = [row(label, d, None if i == 0 else base, n_boot)
            for i, (label, d) in enumerate(tqdm(runs.items(), desc="site-shift runs", unit="run"))]
    return markdown_table(HEADER, rows, align="llllrrrrr")


if __name__ == "__main__":
    pairs = [a.split("=", 1) for a in sys.argv[1:]]
    if not pairs or any(len(p) != 2 for p in pairs):
        sys.exit("usage: python -m idc.data.site_shift LABEL=RUN_DIR [LABEL=RUN_DIR ...] (runs through make evaluate)")
    print(site_shift_table(dict(pairs)))
