"""The answer to "which attribution method should I use?": the table of `sanity/leaderboard.md` and
`sanity/leaderboard.csv` (the stage, `idc.leaderboard.stage`, writes them and the forest plot).

Rows: every method (and variant), each method's maps from the fully randomized model, and the
model-free control rows. Columns: the sanity stage's randomization verdicts (`sanity/randomization.csv`;
"not run" where absent), the localization scores, the faithfulness AUCs and the shortcut mass, each as
mean [patient-clustered bootstrap 95% CI].

A method **beats a control** on a score when the patient-clustered bootstrap 95% CI of the paired
per-patch difference (method minus control, sign flipped for deletion where lower is better) lies
above 0. The controls of a method are the three model-free maps and its own randomized-model maps.
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
from idc.leaderboard.scoring import FAITHFULNESS_SCORES as FAITHFULNESS
from idc.leaderboard.scoring import SHORTCUT_SCORES as SHORTCUT
from idc.leaderboard.sources import RANDOMIZED_SUFFIX
from idc.markdown import frame_table
from idc.paths import RunPaths
from idc.scores.bootstrap import paired_difference
from idc.scores.localization import LOCALIZATION_SCORES, VARIANTS

log = logging.getLogger("idc")

RANDOMIZATION_TESTS = {  # test in sanity/randomization.csv -> column title
    "mprt_cascading": "MPRT (cascading)",
    "mprt_independent": "MPRT (independent)",
    "smprt": "sMPRT",
    "emprt": "eMPRT",
    "data_randomization": "data randomization",
}
SCORE_TITLES = {
    "pointing_game": "pointing game",
    "relevance_mass": "relevance mass",
    "relevance_rank": "relevance rank",
    "pixel_auroc": "pixel AUROC",
    "top_k": "top-k intersection",
    "deletion": "deletion AUC (lower better)",
    "insertion": "insertion AUC",
    "road": "ROAD",
    "cue_mass": "shortcut: mass on cue",
    "evidence_mass_cue_patches": "shortcut: mass on evidence",
}
LOWER_IS_BETTER = {"deletion"}


def cell(mean: float, lo: float, hi: float) -> str:
    if not np.isfinite(mean):
        return "-"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{mean:.2f}"
    return f"{mean:.2f} [{lo:.2f}, {hi:.2f}]"


def controls_of(method: str, methods: List[str], kinds: Dict[str, str]) -> List[str]:
    """The control rows a method must beat: every model-free control and its own randomized-model row."""
    own = method + RANDOMIZED_SUFFIX
    return [m for m in methods if kinds[m] == "control"] + ([own] if own in kinds else [])


def beats_controls(per_patch: pd.DataFrame, method: str, controls: List[str], score: str, n_boot: int, seed: int) -> bool:
    """True when the paired clustered-bootstrap CI of (method - control) on `score` is above 0 for every control."""
    sign = -1.0 if score in LOWER_IS_BETTER else 1.0
    mine = per_patch[per_patch["method"] == method].set_index("image_id")
    for control in controls:
        theirs = per_patch[per_patch["method"] == control].set_index("image_id")
        common = mine.index.intersection(theirs.index)
        est = paired_difference(sign * mine.loc[common, score].to_numpy(), sign * theirs.loc[common, score].to_numpy(),
                                mine.loc[common, "patient_id"].to_numpy(), n_boot=n_boot, seed=seed)
        if not (np.isfinite(est.ci_low) and est.ci_low > 0):
            return False
    return True


def wins_cell(wins: List[str], scored: List[str]) -> str:
    """'k/n (score, ...)': how many of the scored columns a method beats every control on, and which
    (titles without their parenthesized notes, e.g. 'deletion AUC')."""
    names = ", ".join(SCORE_TITLES[c].split(" (")[0] for c in wins)
    return f"{len(wins)}/{len(scored)}" + (f" ({names})" if wins else "")


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
            out[title] = f"{r['verdict']} ({cell(float(r['value']), float(r['ci_low']), float(r['ci_high']))})"
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


def check_settings(lb) -> None:
    """`leaderboard.variant` and `leaderboard.sort` name a relevance variant and a score (checked before any work)."""
    variant, sort = str(lb.variant), str(lb.sort)
    if variant not in VARIANTS or sort not in LOCALIZATION_SCORES + FAITHFULNESS:
        raise ConfigError(f"leaderboard.variant must be one of {VARIANTS} (got {variant!r}) and "
                          f"leaderboard.sort one of {LOCALIZATION_SCORES + FAITHFULNESS} (got {sort!r})")


def sort_score(lb, table: pd.DataFrame) -> str:
    """`leaderboard.sort`, or deletion where that score was not measured (no masks: the real set)."""
    check_settings(lb)
    sort = str(lb.sort)
    if sort in table and table[sort].notna().any():
        return sort
    log.info("leaderboard: %s was not measured (no pixel ground truth, or ROAD off); sorting by %s", sort, NO_MASK_SORT)
    return NO_MASK_SORT


def build_leaderboard(lb, per_patch: pd.DataFrame, table: pd.DataFrame, rand: Optional[pd.DataFrame]) -> pd.DataFrame:
    """One row per source: kind, randomization verdicts, each score's cell, the control verdicts, sort key.
    `lb`: the leaderboard settings (variant, sort, bootstrap, seed, shortcut_run_dir)."""
    variant, sort = str(lb.variant), sort_score(lb, table)
    pp = per_patch[per_patch["variant"] == variant]
    tab = table[table["variant"] == variant].set_index("method")
    short = shortcut_table(lb.shortcut_run_dir, table)
    short = short[short["variant"] == variant].set_index("method")
    kinds = tab["kind"].to_dict()
    names = list(tab.index)
    by_title = {m.title: k for k, m in METHODS.items()}
    scored = [c for c in LOCALIZATION_SCORES + FAITHFULNESS if c in tab and tab[c].notna().any()]  # ROAD may be off
    n_patients = pp["patient_id"].nunique()
    rows = []
    for name in names:
        row = {"row": name, "kind": kinds[name]}
        row.update(randomization_cells(rand, [name, by_title.get(name, name)]) if kinds[name] == "method"
                   else {t: "-" for t in RANDOMIZATION_TESTS.values()})
        for c in scored:
            row[SCORE_TITLES[c]] = cell(tab.at[name, c], tab.at[name, f"{c}_ci_low"], tab.at[name, f"{c}_ci_high"])
        for c in SHORTCUT:
            ok = c in short and name in short.index
            row[SCORE_TITLES[c]] = cell(short.at[name, c], short.at[name, f"{c}_ci_low"], short.at[name, f"{c}_ci_high"]) \
                if ok else "not run"
        if kinds[name] == "method" and n_patients < 2:  # one cluster: no CI, so no verdict either way
            row["beats every control"] = row["scores where it beats every control"] = \
                f"invalid ({n_patients} patient: no CI)"
        elif kinds[name] == "method":
            controls = controls_of(name, names, kinds)
            wins = [c for c in scored if beats_controls(pp, name, controls, c, int(lb.bootstrap), int(lb.seed))]
            row["beats every control"] = "yes" if sort in wins else "**no**"
            row["scores where it beats every control"] = wins_cell(wins, scored)
        else:
            row["beats every control"] = row["scores where it beats every control"] = "(control)"
        row["_sort"] = float(tab.at[name, sort])
        rows.append(row)
    board = pd.DataFrame(rows).sort_values("_sort", ascending=sort in LOWER_IS_BETTER, kind="stable")
    board = board.drop(columns="_sort").reset_index(drop=True)
    board.attrs["sort"] = sort  # the score the rows are sorted and judged by (markdown names it)
    return board


def markdown(board: pd.DataFrame, lb, data_name: str, n: int, n_patients: int,
             superpixel_sizes: Dict[float, float]) -> str:
    """sanity/leaderboard.md: what was scored and how, the board, and which methods beat every control."""
    sort = board.attrs.get("sort", str(lb.sort))
    winners = list(board.loc[(board["kind"] == "method") & (board["beats every control"] == "yes"), "row"])
    sp = "; ".join(f"quickshift kernel_size {k:g} -> {v:.0f} px" for k, v in superpixel_sizes.items())
    masks = any(SCORE_TITLES[c] in board for c in LOCALIZATION_SCORES)
    return "\n".join([
        "# Which attribution method should I use? (leaderboard)",
        "",
        f"{n} IDC-positive test patches from {n_patients} patients (data `{data_name}`), maps for the IDC "
        f"class, {lb.variant} relevance, unclipped. Each cell: mean [patient-clustered bootstrap 95% CI, "
        f"{lb.bootstrap} replicates]."
        + ("" if masks else " This data set has no pixel ground truth (`data.masks_dir` is null, as the real Kaggle "
                            "set), so there are no localization columns: faithfulness only."),
        f"Sorted by {SCORE_TITLES[sort]} (mean, best first), controls included. **beats every control**: "
        f"the paired 95% CI of (method - control) on {SCORE_TITLES[sort]} is above 0 for the uniform random "
        "map, the edge map |x - blur(x)|, image darkness and the method's own maps from the fully randomized model; "
        "the next column counts the scores on which it does so.",
        "",
        frame_table(board),
        "",
        (f"Methods that beat every control on {SCORE_TITLES[sort]}: " + (", ".join(winners) if winners else "none") + "."
         if n_patients >= 2 else f"Which method beats the controls cannot be decided here: the patches come from "
         f"{n_patients} patient, so there is no patient-clustered CI (use a set with more test patients)."),
        "",
        f"Pointing game tolerance {lb.pointing_tolerance} px; top-k = {lb.top_k_fraction:g} of the pixels; deletion "
        f"fills with `{lb.deletion_fill}`; insertion starts from a blur (sigma {lb.blur_sigma:g} px); ROAD = "
        "pytorch-grad-cam's ROADCombined. Randomization verdicts come from `sanity/randomization.csv`."
        + (f" Mean LIME superpixel size: {sp}." if sp else ""),
        "CAM resolution: layer4 is a 2x2 grid at 50x50 px and layer3 4x4, upsampled bilinearly. "
        "See docs/attribution-evaluation.md.",
        "",
    ])
