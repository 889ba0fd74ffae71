"""Which test patches to explain: explicit rows (the book's [142, 41291]), image ids, or the most
confident patches per outcome (tp / tn / fp / fn) for `make explain`; a balanced, seeded subset spread over patients (`select_balanced`, `round_robin`) for the sanity and
leaderboard stages, which score the evaluation cohort (`idc.data.cohort`)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from idc.errors import ConfigError
from idc.validate import check_range

OUTCOMES = ("tp", "tn", "fp", "fn")


def add_outcomes(pred: pd.DataFrame) -> pd.DataFrame:
    t, p = pred["target"].to_numpy(), pred["pred"].to_numpy()
    outcome = np.select([(t == 1) & (p == 1), (t == 0) & (p == 0), (t == 0) & (p == 1)], ["tp", "tn", "fp"], "fn")
    return pred.assign(outcome=outcome, row=np.arange(len(pred)))


def most_confident(pred: pd.DataFrame, outcome: str, k: int) -> pd.DataFrame:
    """The k patches of an outcome whose prediction is the most confident (P(pred class) highest)."""
    sub = pred[pred["outcome"] == outcome]
    confidence = np.where(sub["pred"] == 1, sub["proba"], 1 - sub["proba"])
    return sub.iloc[np.argsort(-confidence, kind="stable")[:k]]


def select_patches(pred: pd.DataFrame, rows=(), image_ids=(), select=None) -> pd.DataFrame:
    """Selected rows of eval/predictions.csv (with `outcome` and `row`), in a stable order."""
    pred = add_outcomes(pred)
    if len(rows):
        bad = [int(r) for r in rows if not 0 <= int(r) < len(pred)]
        if bad:
            raise ConfigError(f"explain.patches={bad} out of range: eval/predictions.csv has rows 0..{len(pred) - 1} "
                              "(the book's rows 142 and 41291 exist only on the full Kaggle test split)")
        return pred.iloc[[int(r) for r in rows]]
    if len(image_ids):
        idx = pd.Index(pred["image_id"])
        missing = [i for i in image_ids if i not in idx]
        if missing:
            raise ConfigError(f"explain.image_ids {missing[:3]} are not in eval/predictions.csv (the evaluated split)")
        return pred.set_index("image_id", drop=False).loc[list(image_ids)].reset_index(drop=True)
    select = dict(select or {})
    unknown = set(select) - set(OUTCOMES)
    if unknown:
        raise ConfigError(f"explain.select has unknown outcomes {sorted(unknown)}; use tp, tn, fp, fn")
    for outcome, count in select.items():
        check_range(f"explain.select.{outcome}", count, 0, None, False, False, False)
    # Always start with one confident IDC-negative and one IDC-positive patch: the book's 2x2 figures.
    parts = [most_confident(pred, "tn", 1), most_confident(pred, "tp", 1)]
    parts += [most_confident(pred, o, int(select.get(o, 0))) for o in OUTCOMES]
    chosen = pd.concat(parts).drop_duplicates("row")
    if chosen.empty:
        raise ConfigError("no patches selected: eval/predictions.csv is empty or explain.select asks for none")
    return chosen


def book_pair(chosen: pd.DataFrame) -> list[int]:
    """Positions (in `chosen`) of the first IDC-negative and the first IDC-positive patch."""
    pair = []
    for label in (0, 1):
        hits = np.flatnonzero(chosen["target"].to_numpy() == label)
        if len(hits):
            pair.append(int(hits[0]))
    return pair


def round_robin(df: pd.DataFrame, seed: int, reverse: bool = False) -> np.ndarray:
    """The index of `df` in the order that spreads a prefix over as many patients as possible: patients in a
    seeded random order (reversed with `reverse`), each patient's rows shuffled, one row per patient per round.
    Without a `patient_id` column every row is its own patient (a seeded shuffle)."""
    rng = np.random.default_rng(seed)
    pid = df["patient_id"].to_numpy() if "patient_id" in df else np.arange(len(df))
    patients = rng.permutation(np.unique(pid))
    if reverse:
        patients = patients[::-1]
    shuffled = rng.permutation(len(df))
    turn = pd.Series(pid[shuffled]).groupby(pid[shuffled], sort=False).cumcount().to_numpy()  # round of each row
    place = pd.Series(np.arange(len(patients)), index=patients).reindex(pid[shuffled]).to_numpy()
    return np.asarray(df.index)[shuffled[np.lexsort((place, turn))]]


def select_balanced(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """Up to `n` rows, half IDC-positive and half negative where possible, reproducibly by `seed`, spread
    over as many patients as possible (a verdict needs patients, not patches): positives go round the
    patients in a seeded order, negatives round the same patients from the other end, so n rows from n
    patients with both classes come from n different patients."""
    pos = round_robin(df[df["target"] == 1], seed)
    neg = round_robin(df[df["target"] == 0], seed, reverse=True)
    n_pos = min(len(pos), max(n - len(neg), n // 2))
    n_neg = min(len(neg), n - n_pos)
    return df.loc[np.sort(np.concatenate([pos[:n_pos], neg[:n_neg]]))]
