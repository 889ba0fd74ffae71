"""The label-map part of the leaderboard (issue 22, items 3-5): where the data set's sidecars carry a label
map (generator v7: IDC and decoy nuclei, a nucleus id per pixel; docs/data.md), the scored patches get

- their label maps and nucleus ids as the model sees them: the headline localization scores (nuclear
  AUROC and relevance mass on IDC vs decoy nuclei, `idc.scores.nuclei`) are computed on them;
- the **evidence check** (`idc.data.evidence.counterfactual_probabilities`): P(IDC) as is, with every IDC
  nucleus removed, every decoy removed, the benign nests' own nuclei removed, and an equal area of
  non-nuclear tissue replaced, on the scored patches that hold both IDC and decoy nuclei; "verified"
  when removing the IDC nuclei lowers P(IDC) clearly more than removing the decoys
  (`idc.scores.nuclei.evidence_verification`: t-intervals on the patient means, "too few patients" below 5).
  Otherwise the localization verdicts read "invalid: the model does not rely on the marked evidence";
- the **nucleus-level ground truth of this model** (`idc.data.evidence.nucleus_drops`): on the first
  `leaderboard.nucleus_patches` scored patches (one patient at a time), the drop of the IDC logit when each
  single nucleus is removed. Each map is scored by the rank correlation between its relevance summed per
  nucleus and these drops (`nucleus_rank`); this does not assume that the model uses the marked evidence,
  so it is not gated by the evidence check.

Forward passes only (no gradients). Data without a label map (the real set, a hand-made mask) has none of it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np
import pandas as pd
from tqdm import tqdm

from idc.data.cells import DECOY_KINDS, IDC, KINDS
from idc.data.counterfactual import load_truths
from idc.data.evidence import counterfactual_probabilities, model_view_truth, nucleus_drops
from idc.markdown import frame_table
from idc.scores.inference import MIN_PATIENTS, t_interval
from idc.scores.nuclei import Verification, evidence_verification
from idc.utils import Laps

log = logging.getLogger("idc")

# (row title, per-patch P(IDC) column whose drop from `p_as_is` it is; None: P(IDC) as is itself)
COUNTERFACTUAL_ROWS = (
    ("P(IDC) as is", None),
    ("drop: every IDC nucleus removed", "p_no_idc"),
    ("drop: every decoy removed", "p_no_decoy"),
    ("drop: equal area of non-nuclear tissue replaced", "p_tissue"),
    ("drop: the benign nests' own nuclei removed", "p_no_benign"),
)
DIFFERENCE_ROW = "difference: IDC drop - decoy drop"
BEYOND_TISSUE_ROW = "difference: IDC drop - equal-area tissue drop"


@dataclass
class NuclearTruth:
    """The label-map ground truth of the scored patches (model view) and what the model makes of it."""

    labels: np.ndarray  # uint8 [n, 50, 50]: 0 background, 1 IDC nucleus, 2 decoy nucleus
    ids: np.ndarray  # int32 [n, 50, 50]: nucleus id (0 = none)
    drops: List[Optional[tuple]]  # per patch: (nucleus ids, IDC-logit drops), None beyond nucleus_patches
    drop_table: pd.DataFrame  # one row per nucleus: image_id, patient_id, nucleus, kind, drop
    patches: pd.DataFrame  # one row per patch: image_id, patient_id, idc_and_decoys, p_* (counterfactual P(IDC))
    verification: Verification


def has_label_map(masks_dir: Path, patient_id: int) -> bool:
    """True when the patient's sidecar holds a label map (generator v7); a hand-made mask (real data) has none."""
    with np.load(Path(masks_dir) / f"{int(patient_id)}.npz") as z:
        return "labels" in z.files


def nuclear_truth(model, rows: pd.DataFrame, root: Path, masks_dir: Path, lb, device, timing: dict) -> NuclearTruth:
    """Label maps, counterfactual P(IDC), the evidence verdict and per-nucleus drops of the scored `rows`.
    `lb`: the leaderboard settings (nucleus_patches, seed); wall seconds go to `timing`."""
    clock = Laps(timing)
    labels, ids = model_view_truth(rows, masks_dir)
    truths = load_truths(rows, root, masks_dir)
    log.info("label map: read the sidecars of %d patients under %s and %d patch PNGs under %s",
             rows["patient_id"].nunique(), masks_dir, len(rows), root)
    clock.lap("label maps and counterfactual truth")
    cf = counterfactual_probabilities(model, truths, seed=int(lb.seed), device=device)
    both = np.array([len(t.nuclei((IDC,))) > 0 and len(t.nuclei(DECOY_KINDS)) > 0 for t in truths], bool)
    patches = pd.concat([rows[["image_id", "patient_id"]].reset_index(drop=True),
                         cf.assign(idc_and_decoys=both)], axis=1)
    sub = patches[both]
    verification = evidence_verification(sub["p_as_is"], sub["p_no_idc"], sub["p_no_decoy"], sub["patient_id"].to_numpy(),
                                         p_tissue=sub["p_tissue"])
    log.info("evidence check on %d of %d scored patches (those with IDC and decoy nuclei): %s", int(both.sum()),
             len(rows), verification.reason())
    clock.lap("counterfactuals")
    k = min(len(truths), max(int(lb.nucleus_patches), 0))
    frames, drops = [], [None] * len(truths)
    for i in tqdm(range(k), desc="per-nucleus drops", unit="patch"):
        d = nucleus_drops(model, truths[i], device=device)
        drops[i] = (d["nucleus"].to_numpy(), d["drop"].to_numpy())
        frames.append(d.assign(image_id=rows["image_id"].iloc[i], patient_id=rows["patient_id"].iloc[i]))
    columns = ["image_id", "patient_id", "nucleus", "kind", "drop"]
    table = pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
    table["kind"] = table["kind"].map(KINDS)
    log.info("per-nucleus drops: %d nuclei on %d patches (cap leaderboard.nucleus_patches=%d)", len(table), k,
             int(lb.nucleus_patches))
    clock.lap("per-nucleus drops")
    return NuclearTruth(labels, ids, drops, table, patches, verification)


def counterfactual_table(truth: NuclearTruth) -> pd.DataFrame:
    """The evidence check as rows: mean of the patient means, 95% t-interval, n patches, n patients (on the
    patches with IDC and decoy nuclei)."""
    sub = truth.patches[truth.patches["idc_and_decoys"]]
    pid, p = sub["patient_id"].to_numpy(), sub["p_as_is"].to_numpy()
    values = {title: (p if col is None else p - sub[col].to_numpy()) for title, col in COUNTERFACTUAL_ROWS}
    values[DIFFERENCE_ROW] = (sub["p_no_decoy"] - sub["p_no_idc"]).to_numpy()  # (p - no_idc) - (p - no_decoy)
    values[BEYOND_TISSUE_ROW] = (sub["p_tissue"] - sub["p_no_idc"]).to_numpy()  # (p - no_idc) - (p - tissue)
    rows = []
    for title, v in values.items():
        e = t_interval(v, pid)
        rows.append(dict(row=title, mean=e.mean, ci_low=e.ci_low, ci_high=e.ci_high, n=e.n, n_patients=e.n_clusters))
    return pd.DataFrame(rows)


def drops_by_kind(table: pd.DataFrame) -> pd.DataFrame:
    """Mean IDC-logit drop per nucleus kind (nuclei, mean of the patient means, 95% t-interval)."""
    rows = []
    for kind, grp in table.groupby("kind", sort=True):
        e = t_interval(grp["drop"].to_numpy(np.float64), grp["patient_id"].to_numpy())
        rows.append({"nucleus kind": kind, "nuclei": len(grp), "patients": e.n_clusters,
                     "mean drop [95% CI]": _fmt(e.mean, e.ci_low, e.ci_high)})
    return pd.DataFrame(rows)


def _fmt(mean: float, lo: float, hi: float) -> str:
    if not np.isfinite(mean):
        return "-"
    return f"{mean:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else "")


def evidence_markdown(truth: NuclearTruth, table: pd.DataFrame) -> List[str]:
    """The sections of leaderboard.md on the evidence check and on the per-nucleus drops."""
    shown = table.assign(**{"mean [95% CI]": [_fmt(*r) for r in table[["mean", "ci_low", "ci_high"]].to_numpy()]})
    v, d = truth.verification, truth.drop_table
    gate = ("the localization verdicts above are shown as measured" if v.verified else
            f"the localization verdicts above read \"{v.localization_verdict()}\"")
    lines = [
        "## Does the model rely on the marked evidence? (counterfactuals)",
        "",
        "Each scored patch that holds both IDC and decoy nuclei is redrawn from the generator's nucleus-free rendering "
        "(an in-distribution counterfactual, not a grey hole) and put through the model. Drop = P(IDC) as is minus "
        "P(IDC) of the counterfactual; mean of the patient means [95% t-interval, k - 1 df], n patches, n patients. "
        f"The evidence counts as verified when, with at least {MIN_PATIENTS} patients, the lower ends of the IDC "
        "drop's and of both differences' intervals lie above 0 (removing the IDC nuclei lowers P(IDC), by more than "
        "removing the decoys and by more than replacing an equal area of non-nuclear tissue: three one-sided t-tests "
        "at 2.5%, all must reject).",
        "",
        frame_table(shown[["row", "mean [95% CI]", "n", "n_patients"]].rename(columns={"n": "n patches",
                                                                                       "n_patients": "n patients"})),
        "",
        f"**Evidence: {v.reason()}**; {gate}. Localization scores against the label map say something about the "
        "model only where it relies on the marked evidence; the nucleus-level scores below do not assume that.",
        "",
        "## Nucleus-level ground truth of this model",
        "",
    ]
    if not len(d):
        return lines + ["Not measured (`leaderboard.nucleus_patches=0`).", ""]
    patches = d["image_id"].nunique()
    return lines + [
        f"On {patches} scored patches (`leaderboard.nucleus_patches`), each nucleus with a pixel in the patch was "
        f"removed alone ({len(d)} nuclei, {len(d) / patches:.1f} per patch) and the drop of the IDC logit "
        "log P(IDC) / P(benign) recorded (`sanity/nucleus_drops.csv`). The column nucleus rank correlation is, per "
        "patch, the Spearman correlation between a map's relevance summed over each nucleus and these drops (0 for a "
        "map constant over the nuclei; NaN with fewer than 3 nuclei or constant drops), then the mean of the patient "
        "means. It asks which nuclei *this model* uses, whatever the label map says.",
        "",
        frame_table(drops_by_kind(d)),
        "",
    ]

