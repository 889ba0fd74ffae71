"""The leaderboard's verdicts: one pre-declared primary score per question, "beats every control" decided
on it with Holm's correction across methods and controls, and how reliably each score ranks the methods.

**Primary scores** (`primary_scores`: the one place they are declared, before any number is seen):
- *localization* (data with pixel ground truth): the first score of `LOCALIZATION_PRIMARY` that the data set
  provides. Where the set carries a label map (generator v7, issue 22) that is the **nuclear AUROC** (the map
  as a classifier of IDC-nucleus against decoy-nucleus pixels, among nuclear pixels only), a score darkness
  and edges cannot win; where it has only an evidence mask (a hand-made one), relevance rank accuracy (the
  share of the K most relevant pixels inside the mask, K = the mask's size). Both need no threshold, ignore
  the map's scale (unlike relevance mass) and look at every evidence pixel (unlike the pointing game's
  single maximum). On a label map these verdicts stand only where the counterfactual evidence check
  verifies that the model relies on the marked evidence (`idc.leaderboard.nuclei`); else they read "invalid".
- *model's nuclei* (data with a label map): the nucleus rank correlation, each map's relevance per nucleus
  against the drop of this model's IDC logit when that nucleus alone is removed. It does not assume that
  the model uses the marked evidence, so no evidence check gates it.
- *faithfulness*: deletion AUC (`FAITHFULNESS_PRIMARY`). It is measured on every scored patch (ROAD only
  on the first `leaderboard.road_patches`, for its cost), it shares no baseline with any method
  (insertion starts from a blur, which is IG's baseline under `explain.ig_baseline=blur`, so insertion
  favours that IG by construction), and it is the score that the real set without masks is sorted by.
Every other score is secondary: shown with its CI and n, without a verdict.

**Beats every control**: for each method and each of its controls (the model-free maps: random, edges,
darkness and, with a label map, darkness blurred to a nucleus; and the method's own maps from the fully
randomized model) the one-sided paired t-test on the patient means of
(method - control) (sign flipped where lower is better, `idc.scores.inference.paired_t`); Holm's step-down
procedure over every (method, control) pair of the question at family-wise 2.5% (one-sided, the lower end
of a 95% CI); a method beats every control when all its pairs are rejected. Below
`idc.scores.inference.MIN_PATIENTS` patients: "too few patients", never yes or no.

**Follows the stain more than the model** (`stain_flags`, a flag beside the secondary stain-invariance
column, `idc.scores.invariance`): per method, the one-sided paired t-test on the patient means of (the model's
own penultimate-feature rank similarity - the map's rank similarity) between each patch and its stain-perturbed
copy, Holm-corrected across the methods at family-wise 2.5%: "yes" where the map changed more than the
features the prediction is computed from. Below `MIN_PATIENTS` patients: "too few patients".

**Rank reliability**: each method's rank on a score with a patient-bootstrap interval, and Krippendorff's
alpha (ordinal) of the per-patient rankings of the methods (Gevaert et al. 2024): how consistently the
patients order the methods on that score.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Tuple

import numpy as np
import pandas as pd

from idc.leaderboard.sources import RANDOMIZED_SUFFIX
from idc.scores.inference import (ALPHA, enough_patients, holm, paired_t, patient_table, rank_intervals,
                                  ranking_agreement, too_few)

LOCALIZATION_PRIMARY: Tuple[str, ...] = ("nuclear_auroc", "relevance_rank")  # the first measured one is primary
FAITHFULNESS_PRIMARY: Tuple[str, ...] = ("deletion",)
NUCLEI_PRIMARY: Tuple[str, ...] = ("nucleus_rank",)
QUESTIONS: Dict[str, Tuple[str, ...]] = {"localization": LOCALIZATION_PRIMARY, "faithfulness": FAITHFULNESS_PRIMARY,
                                         "model's nuclei": NUCLEI_PRIMARY}
LOWER_IS_BETTER = {"deletion"}
TEST_COLUMNS = ["question", "score", "method", "control", "difference", "ci_low", "ci_high", "p", "n", "n_patients",
                "beaten"]


def primary_scores(measured: Iterable[str]) -> Dict[str, str]:
    """{question: its primary score} for the questions this data set can answer (`measured`: the scores
    with values). The declaration itself is `QUESTIONS` above."""
    have = set(measured)
    return {q: next(s for s in prefs if s in have) for q, prefs in QUESTIONS.items() if have.intersection(prefs)}


def controls_of(method: str, kinds: Dict[str, str]) -> List[str]:
    """The control rows a method must beat: every model-free control and its own randomized-model row."""
    own = method + RANDOMIZED_SUFFIX
    return [m for m, k in kinds.items() if k == "control"] + ([own] if own in kinds else [])


def pair_test(per_patch: pd.DataFrame, method: str, control: str, score: str) -> dict:
    """Paired t on the patches both rows scored: difference (better = positive), CI, one-sided p, n."""
    sign = -1.0 if score in LOWER_IS_BETTER else 1.0
    mine = per_patch[per_patch["method"] == method].set_index("image_id")
    theirs = per_patch[per_patch["method"] == control].set_index("image_id")
    common = mine.index.intersection(theirs.index)
    est = paired_t(sign * mine.loc[common, score].to_numpy(), sign * theirs.loc[common, score].to_numpy(),
                   mine.loc[common, "patient_id"].to_numpy())
    return dict(difference=est.mean, ci_low=est.ci_low, ci_high=est.ci_high, p=est.p_greater, n=est.n,
                n_patients=est.n_clusters)


def question_tests(per_patch: pd.DataFrame, kinds: Dict[str, str], question: str, score: str) -> pd.DataFrame:
    """Every (method, control) test of one question on its primary score, Holm-corrected: TEST_COLUMNS."""
    rows = [dict(question=question, score=score, method=m, control=c, **pair_test(per_patch, m, c, score))
            for m, kind in kinds.items() if kind == "method" for c in controls_of(m, kinds)]
    tests = pd.DataFrame(rows, columns=TEST_COLUMNS[:-1])
    ok = np.array([enough_patients(k) for k in tests["n_patients"]], dtype=bool)
    beaten = np.zeros(len(tests), dtype=bool)
    beaten[ok] = holm(tests.loc[ok, "p"].to_numpy(), ALPHA)
    return tests.assign(beaten=beaten)


def method_verdicts(tests: pd.DataFrame) -> Dict[str, str]:
    """{method: 'yes' | 'no (not beaten: ...)' | 'too few patients (k < 5)'} from `question_tests`."""
    out = {}
    for method, t in tests.groupby("method", sort=False):
        k = int(t["n_patients"].min())
        if not enough_patients(k):
            out[method] = too_few(k)
        elif t["beaten"].all():
            out[method] = "yes"
        else:
            names = ", ".join(c.replace("control: ", "").replace(method, "own").strip()
                              for c in t.loc[~t["beaten"], "control"])
            out[method] = f"no (not beaten: {names})"
    return out


def stain_flags(per_patch: pd.DataFrame, methods: List[str]) -> Dict[str, str]:
    """{method: 'yes (d [lo, hi])' | 'no (d [lo, hi])' | 'too few patients (k < 5)'}, d = mean of the patient
    means of (map's stain invariance - the model's feature invariance) with its 95% t-interval; "yes": the
    features' similarity is higher, one-sided at 2.5% after Holm across `methods`. {} when not measured."""
    if "stain_invariance" not in per_patch or not per_patch["stain_invariance"].notna().any():
        return {}
    ests = {}
    for m in methods:
        mine = per_patch[(per_patch["method"] == m) & per_patch["stain_invariance"].notna()]
        ests[m] = paired_t(mine["feature_invariance"].to_numpy(), mine["stain_invariance"].to_numpy(),
                           mine["patient_id"].to_numpy())
    ok = [m for m in methods if enough_patients(ests[m].n_clusters)]
    flagged = dict(zip(ok, holm(np.array([ests[m].p_greater for m in ok]), ALPHA)))
    out = {}
    for m, est in ests.items():
        diff = f"{-est.mean:.2f} [{-est.ci_high:.2f}, {-est.ci_low:.2f}]"
        out[m] = (("yes" if flagged[m] else "no") + f" ({diff})") if m in flagged else too_few(est.n_clusters)
    return out


def ranks(per_patch: pd.DataFrame, methods: List[str], score: str, n_boot: int, seed: int) -> pd.DataFrame:
    """Each method's rank on `score` (1 = best) with its patient-bootstrap 95% interval."""
    table = patient_table(per_patch[per_patch["method"].isin(methods)], score)
    return rank_intervals(table[[m for m in methods if m in table]], score not in LOWER_IS_BETTER, n_boot, seed)


def agreement(per_patch: pd.DataFrame, methods: List[str], scores: Iterable[str]) -> pd.DataFrame:
    """Per score: Krippendorff's alpha of the patients' rankings of the methods, and the patients used."""
    sub = per_patch[per_patch["method"].isin(methods)]
    rows = []
    for score in scores:
        table = patient_table(sub, score).dropna(axis=0, how="all")
        rows.append(dict(score=score, alpha=ranking_agreement(table, score not in LOWER_IS_BETTER),
                         patients=len(table), methods=table.shape[1]))
    return pd.DataFrame(rows, columns=["score", "alpha", "patients", "methods"])
