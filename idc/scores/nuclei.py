"""Nucleus-level scores for data with a label map (IDC vs decoy nuclei) and counterfactuals (plain
functions on arrays; the synthetic set's ground truth, generator v7, docs/data.md).

Among nuclear pixels only, darkness and edges cannot tell IDC nuclei from decoys (lymphocytes,
entrapped benign epithelium, stromal nuclei: as dark and edged), so these scores measure whether a map
finds the *evidence*, not dark things:

- `nuclear_auroc`: ROC AUC of the map as a classifier of IDC-nucleus vs decoy-nucleus pixels (0.5 chance);
- `nuclear_mass`: share of the relevance on nuclei that lies on IDC nuclei (chance: `idc_area_share`);
- `nucleus_relevance` + `nucleus_rank_correlation`: a map's relevance summed per nucleus against the
  drop of the model's IDC logit when that nucleus alone is removed (Spearman, per patch): a ground truth
  for this very model, which does not assume that it uses the marked evidence;
- `evidence_verification`: does removing the IDC nuclei lower P(IDC) clearly more than removing the
  decoys (t-interval on the patient means; below 5 patients: "too few patients")? If not, localization
  against the label map says nothing about the model.

Maps are non-negative relevance [n, H, W] (e.g. `relevance_variants(raw)["positive"]`); label maps are
[n, H, W] ints with 1 = IDC nucleus, 2 = decoy nucleus, anything else = not a nucleus.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.stats import rankdata, spearmanr

from idc.scores.inference import MIN_PATIENTS, Estimate, enough_patients, t_interval, too_few

IDC_LABEL, DECOY_LABEL = 1, 2
DECOY_TOLERANCE = 0.05  # the generator's gate: removing every decoy moves mean P(IDC) by at most this
EVIDENCE_INVALID = "invalid: the model does not rely on the marked evidence"


def _maps_and_labels(maps, labels) -> tuple[np.ndarray, np.ndarray]:
    maps, labels = np.asarray(maps, np.float64), np.asarray(labels)
    if maps.shape != labels.shape or maps.ndim != 3:
        raise ValueError(f"maps and label maps must both be [n, H, W]; got {maps.shape} and {labels.shape}")
    if not np.isfinite(maps).all():
        raise ValueError("maps contain NaN or inf")
    return maps, labels


def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann-Whitney ROC AUC of scores `pos` against `neg` (ties count one half)."""
    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def nuclear_auroc(maps, labels) -> np.ndarray:
    """[n] ROC AUC of each map's values on IDC-nucleus pixels against decoy-nucleus pixels; background
    pixels are left out. NaN where a patch has no IDC or no decoy pixel."""
    maps, labels = _maps_and_labels(maps, labels)
    out = np.full(len(maps), np.nan)
    for i, (m, lab) in enumerate(zip(maps, labels)):
        pos, neg = m[lab == IDC_LABEL], m[lab == DECOY_LABEL]
        if len(pos) and len(neg):
            out[i] = _auroc(pos, neg)
    return out


def nuclear_mass(maps, labels) -> np.ndarray:
    """[n] share of the relevance on nuclear pixels that lies on IDC nuclei: sum(IDC) / sum(IDC + decoy).
    Chance (a map blind to the difference) is `idc_area_share`. NaN where a patch lacks either kind or
    the map puts no relevance on nuclei."""
    maps, labels = _maps_and_labels(maps, labels)
    if (maps < 0).any():
        raise ValueError("relevance mass needs non-negative maps; use relevance_variants() first")
    on_idc = (maps * (labels == IDC_LABEL)).sum(axis=(1, 2))
    on_decoy = (maps * (labels == DECOY_LABEL)).sum(axis=(1, 2))
    both = (labels == IDC_LABEL).any(axis=(1, 2)) & (labels == DECOY_LABEL).any(axis=(1, 2))
    total = on_idc + on_decoy
    ok = both & (total > 0)
    return np.where(ok, on_idc / np.where(ok, total, 1.0), np.nan)


def idc_area_share(labels) -> np.ndarray:
    """[n] share of the nuclear pixels that are IDC nuclei: `nuclear_mass` of a constant map (chance).
    NaN where a patch lacks either kind."""
    labels = np.asarray(labels)
    idc = (labels == IDC_LABEL).sum(axis=(1, 2)).astype(np.float64)
    decoy = (labels == DECOY_LABEL).sum(axis=(1, 2))
    return np.where((idc > 0) & (decoy > 0), idc / np.maximum(idc + decoy, 1), np.nan)


def nucleus_relevance(relevance_map, nucleus_ids, nuclei) -> np.ndarray:
    """[len(nuclei)] the map summed over each nucleus's pixels (one patch: map and ids [H, W]); a nucleus
    with no pixel in the patch sums to 0."""
    relevance_map, nucleus_ids = np.asarray(relevance_map, np.float64), np.asarray(nucleus_ids)
    if relevance_map.shape != nucleus_ids.shape:
        raise ValueError(f"map {relevance_map.shape} and nucleus ids {nucleus_ids.shape} differ in shape")
    nuclei = np.asarray(nuclei, np.int64)
    if not len(nuclei):
        return np.zeros(0)
    order = np.argsort(nuclei)
    flat = nucleus_ids.ravel().astype(np.int64)
    slot = np.minimum(np.searchsorted(nuclei[order], flat), len(nuclei) - 1)
    hit = nuclei[order][slot] == flat
    sums = np.bincount(slot[hit], weights=relevance_map.ravel()[hit], minlength=len(nuclei))
    out = np.empty(len(nuclei))
    out[order] = sums
    return out


def nucleus_rank_correlation(relevance, drops, min_nuclei: int = 3) -> float:
    """Spearman correlation between per-nucleus relevance and per-nucleus logit drops of one patch
    (1: the map ranks the nuclei as removing them hurts the model). NaN with fewer than `min_nuclei`
    nuclei or constant drops (no ranking to agree with). A map constant over the nuclei (e.g. all zero)
    ranks nothing: 0, the expected correlation when its ties are broken at random (so an empty map
    counts as uninformative, as its relevance mass counts 0, instead of dropping out)."""
    relevance, drops = np.asarray(relevance, np.float64), np.asarray(drops, np.float64)
    if relevance.shape != drops.shape or relevance.ndim != 1:
        raise ValueError(f"relevance and drops must be 1-d of equal length; got {relevance.shape}, {drops.shape}")
    if len(relevance) < min_nuclei or np.ptp(drops) == 0:
        return float("nan")
    if np.ptp(relevance) == 0:
        return 0.0
    return float(spearmanr(relevance, drops).statistic)


def nucleus_rank_scores(maps, nucleus_ids, drops) -> np.ndarray:
    """[n] `nucleus_rank_correlation` of each map [n, H, W] (relevance summed per nucleus over `nucleus_ids`
    [n, H, W]) with its patch's per-nucleus logit drops: `drops[i]` is (nucleus ids, drops) of patch i, or
    None where they were not measured (NaN)."""
    maps, nucleus_ids = np.asarray(maps), np.asarray(nucleus_ids)
    if maps.shape != nucleus_ids.shape or len(maps) != len(drops):
        raise ValueError(f"maps {maps.shape}, nucleus ids {nucleus_ids.shape} and {len(drops)} drop sets must agree")
    out = np.full(len(maps), np.nan)
    for i, d in enumerate(drops):
        if d is not None:
            nuclei, values = d
            out[i] = nucleus_rank_correlation(nucleus_relevance(maps[i], nucleus_ids[i], nuclei), values)
    return out


class Verification(NamedTuple):
    """Counterfactual evidence check over a set of IDC-positive patches: mean drops in P(IDC), each the mean
    of the patient means with its t-interval (k - 1 df, `idc.scores.inference.t_interval`)."""
    p_as_is: Estimate  # mean P(IDC) of the patches as they are
    drop_idc: Estimate  # mean P(as is) - P(IDC nuclei removed)
    drop_decoy: Estimate  # mean P(as is) - P(decoys removed)
    drop_tissue: Estimate | None  # mean P(as is) - P(equal area of non-nuclear tissue replaced)
    difference: Estimate  # mean drop_idc - drop_decoy, per patch
    verified: bool  # enough patients, and the CIs of drop_idc, the difference and beyond_tissue lie above 0 / `margin`
    beyond_tissue: Estimate | None = None  # mean drop_idc - drop_tissue, per patch (None: no tissue control)
    decoy_tolerance: float = DECOY_TOLERANCE  # |drop_decoy| beyond this is reported as reliance on decoys

    @property
    def enough_patients(self) -> bool:
        return enough_patients(min(self.difference.n_clusters, self.drop_idc.n_clusters))

    def localization_verdict(self) -> str | None:
        """What a localization verdict against the label map reads instead of yes / no: None when the evidence
        is verified, else `EVIDENCE_INVALID` or "too few patients (k < 5) to verify the evidence"."""
        if self.verified:
            return None
        return EVIDENCE_INVALID if self.enough_patients else too_few(self.difference.n_clusters) + " to verify the evidence"

    def reason(self) -> str:
        """One line: why the evidence counts as verified or not (and whether the decoys sway the model)."""
        d, i = self.difference, self.drop_idc
        if not self.enough_patients:
            return f"{too_few(d.n_clusters)}: the evidence cannot be verified (no verdict below {MIN_PATIENTS} patients)"
        if not self.verified:
            line = (f"{EVIDENCE_INVALID} (removing the IDC nuclei lowers P(IDC) by {i.mean:.2f} [{i.ci_low:.2f}, "
                    f"{i.ci_high:.2f}]; minus the decoys' drop: {d.mean:.2f} [{d.ci_low:.2f}, {d.ci_high:.2f}]")
            if self.beyond_tissue is not None:
                b = self.beyond_tissue
                line += (f"; minus the drop when an equal area of non-nuclear tissue is replaced: {b.mean:.2f} "
                         f"[{b.ci_low:.2f}, {b.ci_high:.2f}]")
            return line + ")"
        line = (f"verified: removing the IDC nuclei lowers P(IDC) by {i.mean:.2f} against {self.drop_decoy.mean:.2f} "
                f"for the decoys (difference {d.mean:.2f} [{d.ci_low:.2f}, {d.ci_high:.2f}])")
        if abs(self.drop_decoy.mean) > self.decoy_tolerance:
            line += (f"; the decoys sway the model too (removing them {'raises' if self.drop_decoy.mean < 0 else 'lowers'}"
                     f" P(IDC) by {abs(self.drop_decoy.mean):.2f})")
        return line


def evidence_verification(p_as_is, p_no_idc, p_no_decoy, patients, p_tissue=None, margin: float = 0.0) -> Verification:
    """Counterfactual P(IDC) per patch (as is, IDC nuclei removed, decoys removed, optionally an equal
    area of non-nuclear tissue replaced; NaN: not measured on that patch) -> mean drops with t-intervals on
    the patient means. `verified` when there are at least `MIN_PATIENTS` patients, the CI of the IDC-removed
    drop lies above 0 (removing the evidence lowers P(IDC)), the CI of (IDC-removed drop - decoy-removed
    drop) lies wholly above `margin` and, where `p_tissue` is given, the CI of (IDC-removed drop - drop when
    an equal area of non-nuclear tissue is replaced) lies above 0 (the drop is more than any paste of that
    size does). Each condition is a one-sided t-test at 2.5% on the patient means and all must reject (an
    intersection-union test), so a false "verified" is no more frequent than one t-test's false "beats"
    (`idc.scores.calibration`: 2.3-2.7% at 5-24 patients)."""
    p = np.asarray(p_as_is, np.float64)
    drop_idc = p - np.asarray(p_no_idc, np.float64)
    drop_decoy = p - np.asarray(p_no_decoy, np.float64)
    difference = t_interval(drop_idc - drop_decoy, patients, null=margin)
    idc = t_interval(drop_idc, patients)
    enough = enough_patients(min(difference.n_clusters, idc.n_clusters))
    tissue = None if p_tissue is None else p - np.asarray(p_tissue, np.float64)
    beyond = None if tissue is None else t_interval(drop_idc - tissue, patients)
    return Verification(
        p_as_is=t_interval(p, patients),
        drop_idc=idc,
        drop_decoy=t_interval(drop_decoy, patients),
        drop_tissue=None if tissue is None else t_interval(tissue, patients),
        difference=difference,
        verified=bool(enough and difference.ci_low > margin and idc.ci_low > 0 and (beyond is None or beyond.ci_low > 0)),
        beyond_tissue=beyond)
