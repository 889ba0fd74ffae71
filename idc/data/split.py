"""Patient-level split, as the book: no patient's patches in two of train / val / test. A site-shift cohort
(`data.test_site`) tests on one site's patients and trains and validates on the others' (`split_by_site`)."""
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


def split_by_site(patient_sites: dict, test_site: str, seed: int = 24, test_size: float = 0.4,
                  val_share: float = 0.5) -> dict:
    """Site-shift split: test = every patient of `test_site` (a site never seen in training); each other
    site's patients are split train / val with train_test_split(random_state=seed), val taking the book's
    share of train + val (test_size * val_share / (1 - test_size * (1 - val_share)): 20 / 80 = 25%), so
    val holds patients of every training site that has two or more. `patient_sites`: {patient id: site}."""
    val_fraction = test_size * val_share / (1 - test_size * (1 - val_share))
    by_site: dict = {}
    for pid, site in sorted((int(p), str(s)) for p, s in patient_sites.items()):
        by_site.setdefault(site, []).append(pid)
    if str(test_site) not in by_site:
        raise DataError(f"data.test_site={test_site} has no patients in the index (its sites: {sorted(by_site)})")
    groups = {"train": [], "val": [], "test": by_site.pop(str(test_site))}
    for ids in by_site.values():
        if len(ids) < 2:
            groups["train"] += ids
            continue
        train_ids, val_ids = train_test_split(np.array(ids), test_size=val_fraction, random_state=seed)
        groups["train"] += train_ids.tolist()
        groups["val"] += val_ids.tolist()
    if not groups["train"] or not groups["val"]:
        raise DataError(f"data.test_site={test_site} leaves {sum(map(len, by_site.values()))} patient(s) at the other "
                        "sites, too few for a train and a val split; use more patients (data.num_patients)")
    return {name: np.sort(np.array(ids, dtype=np.int64)) for name, ids in groups.items()}


def split_patients(df: pd.DataFrame, seed: int = 24, test_size: float = 0.4, val_share: float = 0.5,
                   patient_sites: dict | None = None, test_site: str | None = None) -> pd.DataFrame:
    """Return a copy of `df` with a `split` column; asserts that the splits share no patient. With
    `test_site` (and `patient_sites`, {patient id: site}): the site-shift split (`split_by_site`)."""
    out = df.copy()
    if test_site is not None:
        present = {int(p) for p in df["patient_id"].unique()}
        groups = split_by_site({p: s for p, s in (patient_sites or {}).items() if int(p) in present}, test_site,
                               seed, test_size, val_share)
    elif out["patient_id"].nunique() == 2:
        return _split_two_patients(out, seed, test_size)
    else:
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
