"""Table 5.2 (sanity/table_5_2.md): the book's verdicts beside ours, with CIs, degenerate maps and how
far the randomized models' logits moved. Built from the tidy frames the stage writes as CSV."""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import pandas as pd

from idc.markdown import markdown_table
from idc.scores.inference import MIN_PATIENTS

# Table 5.2 as the book quotes it from Adebayo et al. 2018: (title, model randomization, data randomization).
BOOK_TABLE_5_2: Dict[str, Tuple[str, str, str]] = {
    "vanilla_backprop": ("vanilla backprop", "pass", "pass"),
    "guided_backprop": ("guided backprop", "fail", "fail"),
    "integrated_gradients": ("integrated gradients", "fail", "fail"),
    "smoothgrad": ("SmoothGrad", "fail", "pass"),
    "gradcam": ("Grad-CAM", "pass", "pass"),
    "guided_gradcam": ("guided Grad-CAM", "fail", "fail"),
}
COLUMNS = [("mprt_cascading", "MPRT cascading"), ("mprt_independent", "MPRT independent"),
           ("smprt", "sMPRT"), ("emprt", "eMPRT"), ("data_randomization", "data randomization"),
           ("data_randomization_recipe", "data randomization vs recipe control")]


def cell(row) -> str:
    """`0.123 [0.05, 0.20] pass (n 24/24)` (+ `, k const` when k map pairs had a constant map)."""
    if row is None:
        return "not run"
    if np.isnan(row["value"]):
        text = f"n/a (no usable patch) {row['verdict']}"
    else:
        ci = "no CI" if np.isnan(row["ci_low"]) else f"{row['ci_low']:.3f}, {row['ci_high']:.3f}"
        text = f"{row['value']:.3f} [{ci}] {row['verdict']} (n {int(row['n'])}/{int(row['n_patients'])})"
    return text + (f", {int(row['n_degenerate'])} const" if row["n_degenerate"] else "")


def verdict_table(verdicts: pd.DataFrame, methods, titles: Dict[str, str]) -> str:
    header = ["method", "book: model"] + [name for _, name in COLUMNS[:4]] + ["book: data"] + [n for _, n in COLUMNS[4:]]
    by = {(r["method"], r["test"]): r for r in verdicts.to_dict("records")}
    rows = []
    for m in methods:
        book = BOOK_TABLE_5_2.get(m)
        name = book[0] if book else titles.get(m, m)
        cells = [name, book[1] if book else "-"] + [cell(by.get((m, t))) for t, _ in COLUMNS[:4]]
        rows.append(cells + [book[2] if book else "-"] + [cell(by.get((m, t))) for t, _ in COLUMNS[4:]])
    return markdown_table(header, rows)


def per_depth_table(logits: pd.DataFrame, metrics: pd.DataFrame, methods, titles, metric: str) -> str:
    """Cascading steps: how far the logits moved beside each method's mean similarity."""
    casc = logits[logits["test"] == "mprt_cascading"].sort_values("depth")
    sims = metrics[(metrics["test"] == "mprt_cascading") & (metrics["metric"] == metric)]
    sims = sims.set_index(["method", "depth"])["value"]
    header = ["depth", "randomized up to", "mean abs logit change", "prediction agreement"] + [titles[m] for m in methods]
    rows = [[r["depth"], r["block"], f"{r['mean_abs_logit_change']:.3f}", f"{100 * r['prediction_agreement']:.0f}%"]
            + [f"{sims[(m, r['depth'])]:.2f}" if (m, r["depth"]) in sims.index else "-" for m in methods]
            for r in casc.to_dict("records")]
    return markdown_table(header, rows)


def logit_table(logits: pd.DataFrame) -> str:
    other = logits[logits["test"] != "mprt_cascading"]
    rows = [[r["test"], r["block"], f"{r['mean_abs_logit_change']:.3f}", f"{100 * r['prediction_agreement']:.0f}%"]
            for r in other.to_dict("records")]
    return markdown_table(["model", "randomized", "mean abs logit change", "prediction agreement"], rows)


def table_5_2(verdicts: pd.DataFrame, metrics: pd.DataFrame, logits: pd.DataFrame, methods, titles, *,
              threshold: float, metric: str, n_patches: int, n_patients: int, memorization: str, settings: str,
              cohort: str = "") -> str:
    few = f" (fewer than {MIN_PATIENTS}: every verdict reads \"too few patients\")" if n_patients < MIN_PATIENTS else ""
    return "\n".join([
        "# Table 5.2: sanity checks of the attribution maps, the book's verdicts and ours",
        "",
        f"{n_patches} patches from {n_patients} patient{'s' if n_patients != 1 else ''}"
        + (f" of {cohort}" if cohort else "") + f"{few}. Similarity = Spearman rank correlation of absolute "
        f"maps ({metric}) between the trained model's map and the randomized (or random-label) model's map: the mean "
        "of the patient means with a 95% t-interval (k - 1 degrees of freedom over the k patients; patches of one "
        "patient are not independent); n = patches/patients.",
        "",
        f"**Rule.** MPRT cascading / independent, sMPRT and data randomization: the per-patch similarity is averaged "
        f"over the test's randomization steps (cascade depths 1..K, or the K blocks alone); the method **passes** "
        f"(its map changed) when the upper end of the CI is below {threshold:g}, else it fails. eMPRT: the relative "
        "rise of the map's histogram entropy from the trained to the fully randomized model, H(random)/H(trained) - 1; "
        "it passes when the lower end of the CI is above 0. Data randomization is **invalid** when the random-label "
        "model did not memorize its labels; *vs recipe control* compares the random-label model with a model trained "
        "by the same recipe on the true labels (the real model also differs in its recipe). Every test with patches "
        f"from fewer than {MIN_PATIENTS} patients reads **too few patients** (the interval is calibrated from there on: "
        "a false pass at most ~2.5% of the time, docs/attribution-evaluation.md). "
        "`k const`: map pairs in which a map was constant (similarity then "
        "1 if both are, else 0).",
        "",
        f"{memorization}",
        "",
        verdict_table(verdicts, methods, titles),
        "",
        "## Cascading randomization per depth: how far the model moved, beside each method's mean similarity",
        "",
        per_depth_table(logits, metrics, methods, titles, metric),
        "",
        "## Independent randomization and the random-label model",
        "",
        logit_table(logits),
        "",
        settings,
        "",
        "All similarity measures (Spearman signed and absolute, SSIM, HOG) per depth with CIs: sanity/metrics.csv; "
        "verdicts: sanity/randomization.csv; the definitions and where sMPRT/eMPRT disagree with MPRT: docs/sanity.md.",
        "",
    ])
