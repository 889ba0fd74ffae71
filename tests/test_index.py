"""Kaggle indexer: name parsing, layout checks, counted skips, and the real two-patient sample."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from PIL import Image

from idc.data.index import index_patches, index_with_report, parse_name
from idc.errors import DataError
from tests.helpers import SHARED_SAMPLE, compose_cfg, requires_sample
from tests.helpers.kaggle import corrupt_pixels, kaggle_tree, write_png


def test_parse_name():
    assert parse_name("8863_idx5_x1251_y51_class0.png") == {"patient_id": 8863, "x": 1251, "y": 51, "target": 0}
    assert parse_name("8863_idx5_x1251_y51_class2.png") is None
    assert parse_name("8863_x1251_y51_class1.png") is None


def test_index_well_formed(tmp_path):
    df, report = index_with_report(kaggle_tree(tmp_path))
    assert len(df) == 18 and set(df["patient_id"]) == {10, 11, 12}
    assert list(df.columns) == ["image_id", "patient_id", "x", "y", "target", "width", "height"]
    assert df["image_id"].iloc[0].startswith("10/") and (df["target"].isin([0, 1])).all()
    assert sum(report.counts()["skipped"].values()) == 0


def test_bad_inputs_are_counted_not_dropped_silently(tmp_path, caplog):
    root = kaggle_tree(tmp_path)
    write_png(root / "10" / "0" / "garbage.png")  # bad name
    write_png(root / "10" / "0" / "10_idx5_x1_y1_class1.png")  # class folder mismatch
    write_png(root / "11" / "1" / "99_idx5_x1_y1_class1.png")  # patient folder mismatch
    (root / "12" / "1" / "12_idx5_x501_y1_class1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # unreadable
    good = root / "12" / "0" / "12_idx5_x551_y1_class0.png"
    write_png(good)
    good.write_bytes(good.read_bytes()[:60])  # truncated
    write_png(root / "11" / "0" / "11_idx5_x601_y1_class0.png", mode="L")  # non-RGB: kept
    write_png(root / "11" / "0" / "11_idx5_x651_y1_class0.png", size=(41, 50))  # edge patch: kept
    df, report = index_with_report(root)
    skipped = report.counts()["skipped"]
    assert skipped == {"bad_name": 1, "class_folder_mismatch": 1, "patient_folder_mismatch": 1, "unreadable": 1,
                       "truncated": 1, "coordinate_out_of_range": 0, "conflicting_labels": 0,
                       "unreadable_entry": 0, "too_large": 0}
    assert report.counts()["non_rgb_converted"] == {"L": 1}
    assert report.counts()["non_50x50_kept"] == {"41x50": 1}
    assert len(df) == 20
    assert "unreadable" in caplog.text and "truncated" in caplog.text


def test_verify_decodes_and_the_cache_names_undecodable_files(tmp_path):
    from idc.data.cache import load_or_build_cache

    root = kaggle_tree(tmp_path / "set", patients=(10, 11))
    bad = write_png(root / "10" / "0" / "10_idx5_x901_y1_class0.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 50, 3), np.uint8)).save(bad)
    corrupt_pixels(bad)
    _, report = index_with_report(root, verify=True)
    assert report.counts()["skipped"]["unreadable"] + report.counts()["skipped"]["truncated"] == 1
    df = index_patches(root)  # header-only: the file looks whole
    assert "10/0/10_idx5_x901_y1_class0.png" in set(df["image_id"])
    with pytest.raises(DataError, match="10_idx5_x901_y1_class0.png"):
        load_or_build_cache(df, root, tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.npy"))


def test_single_class_patient_is_accepted(tmp_path):
    root = kaggle_tree(tmp_path, patients=(10, 11))
    write_png(root / "12" / "0" / "12_idx5_x1_y1_class0.png")  # patient 12 has no class-1 folder
    df = index_patches(root)
    assert (df["patient_id"] == 12).sum() == 1


@pytest.mark.parametrize("make, match", [
    (lambda p: p / "nope", "does not exist"),
    (lambda p: p, "no patient folders"),
    (lambda p: (p / "10" / "0").mkdir(parents=True) or p, "no patch files"),
    (lambda p: write_png(p / "10" / "0" / "x.png").parent.parent.parent, "no readable, well-named patches"),
])
def test_bad_roots_give_one_clear_error(tmp_path, make, match):
    root = make(tmp_path)
    with pytest.raises(DataError, match=match) as err:
        index_patches(root)
    assert "data.root=" in str(err.value) and "_idx5_x<X>_y<Y>_class<C>.png" in str(err.value)


def test_num_patients_limits_sorted_patients(tmp_path):
    df = index_patches(kaggle_tree(tmp_path, patients=(30, 4, 12)), num_patients=2)
    assert set(df["patient_id"]) == {4, 12}


@requires_sample
def test_real_sample_index():
    df, report = index_with_report(SHARED_SAMPLE)
    assert len(df) == 1691
    counts = df.groupby(["patient_id", "target"]).size().to_dict()
    assert counts == {(8863, 0): 772, (8863, 1): 207, (8865, 0): 657, (8865, 1): 55}
    assert sum(report.odd_size.values()) == 4


@requires_sample
def test_prepare_data_on_real_sample(tmp_path):
    from idc import prepare_data

    cfg = compose_cfg(tmp_path, "data=kaggle", f"data.root={SHARED_SAMPLE}", "data.masks_dir=null")
    df = prepare_data.run(cfg)
    assert len(df) == 1691 and set(df["split"]) == {"train", "val", "test"}
    assert df.groupby("split")["patient_id"].nunique()["train"] == 1


def test_full_size_layout_structure(tmp_path):
    """279 patient folders as in the real set (ids 8863..16896, coordinates up to x4000 y3000), some with
    one class folder only; the files are hard links to one PNG, so the tree is cheap to build."""
    rng = np.random.default_rng(0)
    src = write_png(tmp_path / "one.png")
    root = tmp_path / "IDC_regular_ps50_idx5"
    pids = np.sort(rng.choice(np.arange(8863, 16897), 279, replace=False))
    expected = []
    for i, pid in enumerate(pids):
        classes = (0,) if i % 10 == 0 else (0, 1)
        for c in classes:
            d = root / str(pid) / str(c)
            d.mkdir(parents=True)
            for x, y in zip(1 + 50 * rng.integers(0, 80, 4), 1 + 50 * rng.integers(0, 60, 4)):
                name = f"{pid}_idx5_x{x}_y{y}_class{c}.png"
                if not (d / name).exists():
                    (d / name).hardlink_to(src)
                    expected.append((int(pid), int(x), int(y), c))
    positions = Counter((pid, x, y) for pid, x, y, _ in expected)  # random draws may put one position
    expected = [e for e in expected if positions[e[:3]] == 1]  # under both classes: neither is kept
    df = index_patches(root)
    assert len(df) == len(expected) and df["patient_id"].nunique() == 279
    got = set(map(tuple, df[["patient_id", "x", "y", "target"]].to_numpy().tolist()))
    assert got == set(expected)
    assert (df["patient_id"].diff().dropna() >= 0).all()  # sorted by patient
    assert set(index_patches(root, num_patients=5)["patient_id"]) == set(int(p) for p in pids[:5])


def test_coordinates_beyond_the_limit_are_a_counted_skip(tmp_path, caplog):
    """Issue 14.1: a well-formed name with x=90000 made the stitched figures allocate 24 GB."""
    root = kaggle_tree(tmp_path, patients=(10, 11))
    write_png(root / "10" / "1" / "10_idx5_x90001_y51_class1.png")
    df, report = index_with_report(root, max_coordinate=20000)
    assert report.counts()["skipped"]["coordinate_out_of_range"] == 1 and len(df) == 12
    assert "data.max_coordinate=20000" in caplog.text
    assert len(index_patches(root, max_coordinate=100000)) == 13  # a larger limit keeps it


def test_same_position_under_both_classes_keeps_neither(tmp_path, caplog):
    """Issue 14.5: patient 10's (1, 1) was listed under both classes and kept twice."""
    root = kaggle_tree(tmp_path, patients=(10, 11))
    write_png(root / "10" / "1" / "10_idx5_x1_y1_class1.png")  # kaggle_tree has 10_idx5_x1_y1_class0.png
    df, report = index_with_report(root)
    assert report.counts()["skipped"]["conflicting_labels"] == 2
    assert not ((df["patient_id"] == 10) & (df["x"] == 1) & (df["y"] == 1)).any() and len(df) == 11
    assert "conflicting_labels" in caplog.text and "neither file is kept" in caplog.text


def test_a_patient_whose_files_are_all_bad_gets_its_own_line(tmp_path, caplog):
    """Issue 14.5: patient 12 disappeared with no per-patient line."""
    root = kaggle_tree(tmp_path, patients=(10, 11))
    (root / "12" / "0").mkdir(parents=True)
    for k in range(3):
        (root / "12" / "0" / f"12_idx5_x{1 + 50 * k}_y1_class0.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (root / "13" / "1").mkdir(parents=True)  # an empty patient folder
    df, report = index_with_report(root)
    assert set(df["patient_id"]) == {10, 11}
    assert report.counts()["patients_left_out"] == {"12": {"unreadable": 3}, "13": {"no_patch_files": 0}}
    assert "patient 12 left out: none of its files is usable (unreadable: 3)" in caplog.text
    assert "patient 13 left out" in caplog.text
