"""The site-shift table (docs/data.md, "Site shift"): test ROC-AUC of evaluated runs on a site-shift cohort,
each with a 95% patient-bootstrap interval (`idc.data.shortcut.patient_bootstrap_ci`: whole patients
resampled, 1,000 replicates, seed 0), the test patients and patches, and the remedy each run trained with
(read from its own records: data.stain_normalize, train.augment.hed_scale / hed_shift).

    python -m idc.data.site_shift none=outputs/sites_none macenko=outputs/sites_macenko ...

Each argument is `label=run_dir` of a run through `make evaluate`; the table is printed as markdown.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from idc.data.shortcut import patient_bootstrap_ci
from idc.markdown import markdown_table
from idc.metrics import ranking_scores
from idc.paths import BY_KEY

HEADER = ["run", "tested on", "data.stain_normalize", "HED jitter (scale / shift)", "patients / patches (IDC+)",
          "test ROC-AUC [95% CI]", "AP"]


def remedy(run_dir: Path) -> tuple[str, str]:
    """(stain normalization, HED jitter) as the run's train record holds them."""
    config = json.loads((run_dir / ".stages" / "train.json").read_text())["config"]
    aug = config["train"]["augment"]
    jitter = f"{aug['hed_scale']:g} / {aug['hed_shift']:g}" if aug["hed_scale"] or aug["hed_shift"] else "off"
    return str(config.get("data.stain_normalize") or "off"), jitter


def tested_on(run_dir: Path) -> str:
    """Which patients the test split holds: the held-out site, or the patient split over every site."""
    summary = json.loads((run_dir / BY_KEY["summary_json"].rel).read_text())
    shift = summary.get("site_shift") or {}
    if shift.get("test_site") is not None:
        return f"site {shift['test_site']} (unseen)"
    sites = ", ".join(shift.get("sites", {})) or "one"
    return f"seen sites ({sites})"


def row(label: str, run_dir: Path, n_boot: int = 1000) -> list:
    pred = pd.read_csv(run_dir / BY_KEY["predictions_csv"].rel)
    scores = ranking_scores(pred["target"].to_numpy(), pred["proba"].to_numpy())
    low, high = patient_bootstrap_ci(pred, n_boot)
    return [label, tested_on(run_dir), *remedy(run_dir),
            f"{pred['patient_id'].nunique()} / {len(pred):,} ({int(pred['target'].sum()):,})",
            f"{scores['roc_auc']:.3f} [{low:.3f}, {high:.3f}]", f"{scores['average_precision']:.3f}"]


def site_shift_table(runs: dict, n_boot: int = 1000) -> str:
    """Markdown table, one row per `{label: run_dir}` in order."""
    rows = [row(label, Path(d), n_boot) for label, d in tqdm(runs.items(), desc="site-shift runs", unit="run")]
    return markdown_table(HEADER, rows, align="llllrrr")


if __name__ == "__main__":
    pairs = [a.split("=", 1) for a in sys.argv[1:]]
    if not pairs or any(len(p) != 2 for p in pairs):
        sys.exit("usage: python -m idc.data.site_shift LABEL=RUN_DIR [LABEL=RUN_DIR ...] (runs through make evaluate)")
    print(site_shift_table(dict(pairs)))
