"""Patient-level split: disjoint, the book's proportions, deterministic from the seed."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from idc.data.split import assert_disjoint, split_patient_ids, split_patients
from idc.errors import DataError


def table(n_patients=50, per=20, seed=0):
    rng = np.random.default_rng(seed)
    pids = np.repeat(np.arange(1000, 1000 + n_patients), per)
    return pd.DataFrame({"patient_id": pids, "target": rng.integers(0, 2, len(pids))})


def test_split_is_patient_disjoint_60_20_20():
    out = split_patients(table(50))
    per = out.groupby("split")["patient_id"].nunique()
    assert per.to_dict() == {"test": 10, "train": 30, "val": 10}
    assert out.groupby("patient_id")["split"].nunique().max() == 1


def test_split_matches_sklearn_book_recipe():
    from sklearn.model_selection import train_test_split

    ids = np.arange(1000, 1050)
    train, held = train_test_split(ids, test_size=0.4, random_state=24)
    val, test = train_test_split(held, test_size=0.5, random_state=24)
    groups = split_patient_ids(ids)
    assert set(groups["train"]) == set(train) and set(groups["val"]) == set(val) and set(groups["test"]) == set(test)


def test_split_deterministic_and_seed_sensitive():
    a, b, c = split_patients(table(), seed=24), split_patients(table(), seed=24), split_patients(table(), seed=7)
    assert a["split"].equals(b["split"]) and not a["split"].equals(c["split"])


def test_tiny_sets_get_every_split():
    out = split_patients(table(3))
    assert set(out["split"]) == {"train", "val", "test"}


def test_two_patients_split_the_held_out_slide():
    df = table(2, per=40).assign(x=np.tile(np.arange(40) * 50 + 1, 2), y=1)
    out = split_patients(df)
    assert set(out["split"]) == {"train", "val", "test"}
    assert out.loc[out["split"] == "train", "patient_id"].nunique() == 1


def test_one_patient_is_an_error():
    with pytest.raises(DataError, match="at least 2 patients"):
        split_patients(table(1))


def test_assert_disjoint_catches_overlap():
    df = pd.DataFrame({"patient_id": [1, 1], "split": ["train", "test"]})
    with pytest.raises(AssertionError, match="more than one split"):
        assert_disjoint(df)
