"""The answer to "which attribution method should I use?": the table of `sanity/leaderboard.md` and
`sanity/leaderboard.csv` (the stage, `idc.leaderboard.stage`, writes them, the per-pair tests
`sanity/leaderboard_tests.csv` and the forest plot).

Rows: every method (and variant), each method's maps from the fully randomized model, and the
model-free control rows. Columns: n (patches / patients), per question (localization, faithfulness) the
verdict "beats every control" on its pre-declared primary score (Holm-corrected, `idc.leaderboard.verdicts`),
that score and the method's rank with its bootstrap interval; then the secondary scores (mean [95% CI], no
verdict; the last, stain invariance, with its flag "follows the stain more than the model",
`idc.leaderboard.verdicts.stain_flags`), the number of all-zero maps, the shortcut mass and the sanity stage's
randomization verdicts (`sanity/randomization.csv`; "not run" where absent). Every mean is the mean of the patient means with a
t-interval (k - 1 df); a cell whose n differs from its row's shows its own n.
Rows are sorted by the mean of `leaderboard.sort` (best first; deletion where that score was not measured,
e.g. data without masks), controls included, so a control that outranks a method is visible at once.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from idc.errors import ConfigError
from idc.explain.methods import METHODS
from idc.integrity import read_csv
from idc.leaderboard.invariance import check_stain_settings
from idc.leaderboard.scoring import FAITHFULNESS_SCORES as FAITHFULNESS
from idc.leaderboard.scoring import NUCLEAR_SCORES as NUCLEAR
from idc.leaderboard.scoring import NUCLEUS_SCORES as NUCLEUS
from idc.leaderboard.scoring import SHORTCUT_SCORES as SHORTCUT
from idc.leaderboard.scoring import STAIN_SCORES as STAIN
from idc.leaderboard.verdicts import (LOWER_IS_BETTER, agreement, method_verdicts, primary_scores,
                                      question_tests, ranks, stain_flags)
from idc.markdown import frame_table
from idc.paths import RunPaths
from idc.scores.inference import MIN_PATIENTS
from idc.scores.localization import LOCALIZATION_SCORES, VARIANTS

log = logging.getLogger("idc")

RANDOMIZATION_TESTS = {  # test in sanity/randomization.csv -> column title
    "mprt_cascading": "MPRT (cascading)",
    "mprt_independent": "MPRT (independent)",
    "smprt": "sMPRT",
    "emprt": "eMPRT",
    "data_randomization": "data randomization",
    "data_randomization_recipe": "data randomization vs recipe control",
}
SCORE_TITLES = {
    "nuclear_auroc": "nuclear AUROC (IDC vs decoy nuclei)",
    "nuclear_mass": "relevance mass on IDC vs decoy nuclei",
    "pointing_game": "pointing game",
    "relevance_mass": "relevance mass",
    "relevance_rank": "relevance rank",
    "pixel_auroc": "pixel AUROC",
    "top_k": "top-k intersection",
    "deletion": "deletion AUC (lower better)",
    "insertion": "insertion AUC (from blur)",
    "insertion_mean": "insertion AUC (from mean colour)",
    "road": "ROAD",
    "nucleus_rank": "nucleus rank correlation (model's drops)",
    "stain_invariance": "stain invariance (map vs stain-perturbed copy)",
    "cue_mass": "shortcut: mass on cue",
    "evidence_mass_cue_patches": "shortcut: mass on evidence",
}


def _n(n, k) -> str:
    return f"{int(n)}/{int(k)}"


def cell(mean: float, lo: float, hi: float, n: Optional[str] = None) -> str:
    """`mean [lo, hi]`, `+ (n p/k)` when given (a cell whose n differs from its row's)."""
    if not np.isfinite(mean):
        return "-"
    text = f"{mean:.2f}" if not (np.isfinite(lo) and np.isfinite(hi)) else f"{mean:.2f} [{lo:.2f}, {hi:.2f}]"
    return text + (f" (n {n})" if n else "")


def score_cell(tab: pd.DataFrame, name: str, c: str, row_n: str) -> str:
    n = _n(tab.at[name, f"{c}_n"], tab.at[name, f"{c}_k"]) if f"{c}_n" in tab else None
    return cell(tab.at[name, c], tab.at[name, f"{c}_ci_low"], tab.at[name, f"{c}_ci_high"], n if n != row_n else None)


def read_randomization(path: Path) -> Optional[pd.DataFrame]:
    if not path.exists():
        log.info("leaderboard: %s not found; randomization columns say 'not run' (make sanity writes it)", path)
        return None
    log.info("read %s", path)
    return read_csv(path)


def randomization_cells(rand: Optional[pd.DataFrame], keys: List[str]) -> Dict[str, str]:
    out = {}
    for test, title in RANDOMIZATION_TESTS.items():
        out[title] = "not run"
        if rand is None:
            continue
        hit = rand[(rand["test"] == test) & rand["method"].isin(keys)]
        if len(hit):
            r = hit.iloc[0]
            n = _n(r["n"], r["n_patients"]) if "n_patients" in r else None
            out[title] = f"{r['verdict']} ({cell(float(r['value']), float(r['ci_low']), float(r['ci_high']), n)})"
    return out


def shortcut_table(shortcut_run_dir: Optional[str], table: pd.DataFrame) -> pd.DataFrame:
    """Shortcut columns: this run's (if its data has a cue layer) or those of `leaderboard.shortcut_run_dir`."""
    if shortcut_run_dir:
        path = RunPaths(Path(shortcut_run_dir)).localization_summary_csv
        if not path.exists():
            raise ConfigError(f"leaderboard.shortcut_run_dir: {path} not found; run `make leaderboard ARGS=\"data=synthetic_shortcut\"` "
                              "first, or set leaderboard.shortcut_run_dir=null")
        log.info("read %s", path)
        return read_csv(path)
    return table


NO_MASK_SORT = "deletion"  # the sort score where the data has no pixel ground truth (ROAD runs on fewer patches)
BOARD_SCORES = NUCLEAR + LOCALIZATION_SCORES + FAITHFULNESS + NUCLEUS + STAIN  # the board's score columns, in order
STAIN_FLAG = "follows the stain more than the model (map - features [95% CI])"
SORTS = ("primary",) + BOARD_SCORES  # primary: the first question's primary score


def check_settings(lb) -> None:
    """`leaderboard.variant` and `leaderboard.sort` name a relevance variant and a score, and the stain keys are in
    range (checked before any work)."""
    check_stain_settings(lb)
    variant, sort = str(lb.variant), str(lb.sort)
    if variant not in VARIANTS or sort not in SORTS:
        raise ConfigError(f"leaderboard.variant must be one of {VARIANTS} (got {variant!r}) and "
                          f"leaderboard.sort one of {SORTS} (got {sort!r})")


def sort_score(lb, table: pd.DataFrame, primary: Dict[str, str]) -> str:
    """`leaderboard.sort` (`primary`: the first question's primary score, localization where measured), or
    deletion where that score was not measured (no masks: the real set)."""
    check_settings(lb)
    sort = str(lb.sort) if str(lb.sort) != "primary" else next(iter(primary.values()), NO_MASK_SORT)
    if sort in table and table[sort].notna().any():
        return sort
    log.info("leaderboard: %s was not measured (no pixel ground truth, or ROAD off); sorting by %s", sort, NO_MASK_SORT)
    return NO_MASK_SORT


def rank_cell(r: pd.DataFrame, name: str) -> str:
    if name not in r.index or not np.isfinite(r.at[name, "rank"]):
        return "-"
    lo, hi = r.at[name, "rank_low"], r.at[name, "rank_high"]
    return f"{r.at[name, 'rank']:g}" + (f" [{lo:g}, {hi:g}]" if np.isfinite(lo) else "")


def board_row(name: str, kind: str, tab: pd.DataFrame, ctx: dict) -> dict:
    """One row of the board: n, per question the verdict, primary score and rank, the secondary scores,
    the all-zero maps, the shortcut mass and the randomization verdicts."""
    row_n = _n(tab.at[name, "n"], tab.at[name, "n_patients"])
    row = {"row": name, "kind": kind, "n (patches/patients)": row_n}
    for q, score in ctx["primary"].items():
        row[f"{q}: beats every control"] = ctx["verdicts"][q].get(name, "(control)" if kind != "method" else "-")
        row[f"{SCORE_TITLES[score]} (primary)"] = score_cell(tab, name, score, row_n)
        row[f"{q} rank [95% CI]"] = rank_cell(ctx["ranks"][q], name) if kind == "method" else "-"
    for c in ctx["secondary"]:
        row[SCORE_TITLES[c]] = score_cell(tab, name, c, row_n)
    if ctx["stain"]:
        row[STAIN_FLAG] = ctx["stain"].get(name, "-")
    row["all-zero maps"] = f"{int(tab.at[name, 'n_empty'])}/{int(tab.at[name, 'n'])}" if "n_empty" in tab else "-"
    short = ctx["short"]
    for c in SHORTCUT:
        ok = c in short and name in short.index
        row[SCORE_TITLES[c]] = cell(short.at[name, c], short.at[name, f"{c}_ci_low"], short.at[name, f"{c}_ci_high"]) \
            if ok else "not run"
    row.update(randomization_cells(ctx["rand"], [name, ctx["by_title"].get(name, name)]) if kind == "method"
               else {t: "-" for t in RANDOMIZATION_TESTS.values()})
    return row


def build_leaderboard(lb, per_patch: pd.DataFrame, table: pd.DataFrame, rand: Optional[pd.DataFrame],
                      evidence: Optional[str] = None):
    """(board, tests, agreement): one board row per source (`board_row`), sorted by `leaderboard.sort`; every
    (method, control) test of each question's primary score (`sanity/leaderboard_tests.csv`); Krippendorff's
    alpha per score. `lb`: the leaderboard settings (variant, sort, bootstrap, seed, shortcut_run_dir).
    `evidence`: what every method's localization verdict reads instead of yes / no when the counterfactual
    evidence check did not verify the label map (`Verification.localization_verdict`; None: as measured)."""
    variant = str(lb.variant)
    pp = per_patch[per_patch["variant"] == variant]
    tab = table[table["variant"] == variant].set_index("method")
    kinds = tab["kind"].to_dict()
    methods = [m for m, k in kinds.items() if k == "method"]
    scored = [c for c in BOARD_SCORES if c in tab and tab[c].notna().any()]  # ROAD may be off
    primary = primary_scores(scored)
    sort = sort_score(lb, table, primary)
    tests = pd.concat([question_tests(pp, kinds, q, s) for q, s in primary.items()], ignore_index=True)
    short = shortcut_table(lb.shortcut_run_dir, table)
    verdicts = {q: method_verdicts(tests[tests["question"] == q]) for q in primary}
    if evidence and "localization" in verdicts:
        verdicts["localization"] = {m: evidence for m in verdicts["localization"]}
    ctx = dict(primary=primary, secondary=[c for c in scored if c not in primary.values()], rand=rand,
               verdicts=verdicts,
               ranks={q: ranks(pp, methods, s, int(lb.bootstrap), int(lb.seed)) for q, s in primary.items()},
               short=short[short["variant"] == variant].set_index("method"),
               by_title={m.title: k for k, m in METHODS.items()}, stain=stain_flags(pp, methods))
    board = pd.DataFrame([board_row(name, kinds[name], tab, ctx) for name in tab.index])
    board["_sort"] = [float(tab.at[name, sort]) for name in tab.index]
    board = board.sort_values("_sort", ascending=sort in LOWER_IS_BETTER, kind="stable")
    board = board.drop(columns="_sort").reset_index(drop=True)
    board.attrs.update(sort=sort, primary=primary, evidence=evidence)  # what the rows are sorted by and judged on
    return board, tests, agreement(pp, methods, scored)


def verdict_lines(board: pd.DataFrame, primary: Dict[str, str], n_patients: int,
                  evidence: Optional[str] = None) -> List[str]:
    """One line per question: the methods that beat every control, or why nothing can be decided (`evidence`:
    what the localization verdicts read when the label map's evidence was not verified)."""
    if n_patients < MIN_PATIENTS:
        return [f"Which method beats the controls cannot be decided here: the patches come from {n_patients} "
                f"patient(s), fewer than the {MIN_PATIENTS} a calibrated verdict needs (use a set with more patients)."]
    lines = []
    for q, score in primary.items():
        col = f"{q}: beats every control"
        if q == "localization" and evidence:
            lines.append(f"- **{q}** ({SCORE_TITLES[score]}): no verdict, {evidence} (the counterfactual check below).")
            continue
        winners = list(board.loc[(board["kind"] == "method") & (board[col] == "yes"), "row"])
        lines.append(f"- **{q}** ({SCORE_TITLES[score]}): " + (", ".join(winners) if winners else "no method")
                     + " beats every control.")
    return lines


def markdown(board: pd.DataFrame, lb, facts: dict) -> str:
    """sanity/leaderboard.md: what was scored and how, the board, the verdicts, ranking agreement, chance levels.
    `facts`: data_name, cohort (description), n, n_patients, superpixel_sizes, agreement, chance (dict), pairs (the
    tests of one question: Holm's family), optionally evidence_lines (the label map's sections, `idc.leaderboard.nuclei`)
    and stain_lines (the stain-invariance paragraph, `idc.leaderboard.invariance.stain_markdown`)."""
    sort, primary = board.attrs.get("sort", str(lb.sort)), board.attrs.get("primary", {})
    sp = "; ".join(f"quickshift kernel_size {k:g} -> {v:.0f} px" for k, v in facts["superpixel_sizes"].items())
    masks = "localization" in primary
    declared = "; ".join(f"{q}: {SCORE_TITLES[s]}" for q, s in primary.items())
    alpha = facts["agreement"].assign(score=lambda a: a["score"].map(SCORE_TITLES),
                                      alpha=lambda a: a["alpha"].map(lambda v: "-" if not np.isfinite(v) else f"{v:.2f}"))
    chance = facts.get("chance", {})
    label_map = "nuclear_auroc" in primary.values()
    return "\n".join([
        "# Which attribution method should I use? (leaderboard)",
        "",
        f"{facts['n']} IDC-positive patches from {facts['n_patients']} patients of {facts['cohort']} (data "
        f"`{facts['data_name']}`), maps for the IDC "
        f"class, {lb.variant} relevance, unclipped. Each cell: mean of the patient means [95% t-interval, k - 1 df]; "
        "n = patches/patients, and a cell whose n differs from its row's shows its own."
        + ("" if masks else " This data set has no pixel ground truth (`data.masks_dir` is null, as the real Kaggle "
                            "set), so there are no localization columns: faithfulness only."),
        "",
        f"**Verdicts.** One primary score per question, declared before any number was seen ({declared}); every "
        "other score is secondary: mean and CI, no verdict. A method **beats every control** when the one-sided "
        "paired t-test on the patient means of (method - control) rejects at 2.5% for each of its controls (the "
        "uniform random map, the edge map |x - blur(x)|, image darkness, "
        + ("image darkness blurred to a nucleus (sigma 2 px), " if label_map else "")
        + "and its own maps from the fully randomized model), with Holm's correction across every method and control "
        f"of the question ({facts['pairs']} tests); "
        f"below {MIN_PATIENTS} patients the verdict is \"too few patients\". Rank: among the methods on the primary "
        f"score, 1 = best, with a 95% interval from {lb.bootstrap} patient-bootstrap replicates. Rows are sorted by "
        f"{SCORE_TITLES[sort]} (best first), controls included.",
        "",
        frame_table(board),
        "",
        *verdict_lines(board, primary, facts["n_patients"], board.attrs.get("evidence")),
        "",
        *facts.get("stain_lines", []),
        *facts.get("evidence_lines", []),
        "## How consistently each score ranks the methods",
        "",
        "Each patient ranks the methods by its own mean score; Krippendorff's alpha (ordinal) of those rankings: 1 = "
        "every patient orders the methods alike, 0 = no more agreement than chance (Gevaert et al. 2024).",
        "",
        frame_table(alpha.rename(columns={"alpha": "Krippendorff's alpha"})),
        "",
        (f"Chance levels: pointing game {chance['pointing_game']:.2f} (the mean share of the patch inside the mask grown "
         f"by {lb.pointing_tolerance} px), relevance mass, rank and top-k {chance['mask_fraction']:.2f} (the mean mask "
         "fraction), pixel AUROC 0.5. " if "pointing_game" in chance else "")
        + (f"Nuclear AUROC 0.5; relevance mass on IDC vs decoy nuclei {chance['nuclear_mass']:.2f} (the mean IDC share "
           "of the nuclear pixels); nucleus rank correlation 0. " if "nuclear_mass" in chance else "")
        + f"Pointing game tolerance {lb.pointing_tolerance} px; top-k = {lb.top_k_fraction:g} of the pixels; deletion "
        f"fills with `{lb.deletion_fill}`; insertion starts from a blur (sigma {lb.blur_sigma:g} px) and, as a second "
        "start, from the image's mean colour; ROAD = pytorch-grad-cam's ROADCombined on the seeded dense ranking of "
        "the map. All-zero maps count 0 relevance mass. Randomization verdicts come from `sanity/randomization.csv`."
        + (f" Mean LIME superpixel size: {sp}." if sp else ""),
        "CAM resolution: layer4 is a 2x2 grid at 50x50 px and layer3 4x4, upsampled bilinearly; CAMs are scored "
        "unscaled (the ReLU'd CAM). See docs/attribution-evaluation.md.",
        "",
    ])
