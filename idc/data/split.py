"""Patient-level split, as the book: no patient's patches in two of train / val / test."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from idc.errors import DataError

log = logging.getLogger("idc")

SPLITS = ("train", "val", "test")


def split_patient_ids(patient_ids, seed: int = 24, test_size: float = 0.4, val_share: float = 0.5):
    """train_test_split on the sorted unique ids, then the held-out ids again into val / test."""
    ids = np.array(sorted(set(int(p) for p in patient_ids)))
    if len(ids) < 2:
        raise DataError(
            f"a patient-level split needs at least 2 patients, the index has {len(ids)}; "
            "use more patients (data.num_patients) or a larger data set"
        )
    train_ids, held_ids = train_test_split(ids, test_size=test_size, random_state=seed)
    if len(held_ids) < 2:  # tiny sets: keep one patient each for val and test
        train_ids, held_ids = ids[:-2], ids[-2:]
    val_ids, test_ids = train_test_split(held_ids, test_size=1 - val_share, random_state=seed)
    return {"train": np.sort(train_ids), "val": np.sort(val_ids), "test": np.sort(test_ids)}


def split_patients(df: pd.DataFrame, seed: int = 24, test_size: float = 0.4, val_share: float = 0.5) -> pd.DataFrame:
    """Return a copy of `df` with a `split` column; asserts that the splits share no patient."""
    out = df.copy()
    if out["patient_id"].nunique() == 2:
        return _split_two_patients(out, seed, test_size)
    groups = split_patient_ids(df["patient_id"].unique(), seed, test_size, val_share)
    owner = {int(p): name for name, ids in groups.items() for p in ids}
    out["split"] = out["patient_id"].map(owner)
    assert_disjoint(out)
    return out


def _split_two_patients(df: pd.DataFrame, seed: int, test_size: float) -> pd.DataFrame:
    """Two patients (e.g. the real two-patient sample): one trains; the other's slide is cut in two
    halves (along x or y, whichever leaves IDC-positive patches on both sides), one half for validation
    and one for testing: spatially disjoint, but val and test share that patient. Logged loudly."""
    ids = np.array(sorted(df["patient_id"].unique()))
    train_id, held_id = train_test_split(ids, test_size=test_size, random_state=seed)
    held = (df["patient_id"] == held_id[0]).to_numpy()

    def halves(axis: str):
        cut = np.median(df.loc[held, axis])
        first = held & (df[axis] <= cut).to_numpy()
        pos = df["target"].to_numpy() == 1
        return min((first & pos).sum(), (held & ~first & pos).sum()), axis, cut, first

    _, axis, cut, first = max(halves("y"), halves("x"), key=lambda h: h[0])
    df["split"] = np.where(~held, "train", np.where(first, "val", "test"))
    log.warning(
        "only 2 patients: patient %d trains; patient %d is cut in two by slide position (%s <= %d: val, else test), "
        "so val and test share a patient. Use >= 3 patients for a patient-level split.",
        train_id[0], held_id[0], axis, cut,
    )
    return df


def assert_disjoint(df: pd.DataFrame) -> None:
    """Fail loudly if a patient's patches are in two splits or a patch has no split."""
    per_patient = df.groupby("patient_id")["split"].nunique()
    shared = per_patient[per_patient > 1]
    if len(shared):
        raise AssertionError(f"patients in more than one split: {list(shared.index[:10])}")
    if df["split"].isna().any():
        raise AssertionError("some patches have no split")
