"""Data randomization's precondition (idc.sanity.memorization): both paths on tiny data."""
import numpy as np
import pytest

from idc.sanity.memorization import memorization_note, memorization_subset, random_labels_model
from idc.utils import recording_outputs

from tests.helpers import compose_cfg


def test_subset_is_fixed_train_only_and_keeps_class_shares():
    split = np.array(["train"] * 30 + ["test"] * 10)
    targets = np.array([1] * 10 + [0] * 20 + [1] * 10)
    rows, labels = memorization_subset(split, targets, 12, seed=3)
    assert len(rows) == 12 and (split[rows] == "train").all()
    assert labels.sum() == targets[rows].sum()  # a permutation: same class shares
    again = memorization_subset(split, targets, 12, seed=3)
    assert np.array_equal(rows, again[0]) and np.array_equal(labels, again[1])


def _run(tiny_evaluated, tiny_data_dir, *overrides):
    from idc.data import load_patches
    from idc.data.cache import load_or_build_cache
    from idc.paths import RunPaths

    cfg = compose_cfg(tiny_evaluated, *overrides, data_dir=tiny_data_dir)
    paths = RunPaths.from_cfg(cfg)
    patches = load_patches(paths)
    images = load_or_build_cache(patches, cfg.data.root, paths.cache_dir, size=cfg.data.patch_size)
    return random_labels_model(cfg, paths, patches, images, "cpu")


@pytest.mark.slow
def test_memorizes_a_few_patches_valid_path(tiny_evaluated, tiny_data_dir, tmp_path):
    run = f"run.dir={tmp_path / 'run'}"
    import shutil
    shutil.copytree(tiny_evaluated, tmp_path / "run")
    model, record = _run(tmp_path / "run", tiny_data_dir, run, "sanity.random_labels_patches=16",
                         "sanity.random_labels_batch_size=8", "sanity.random_labels_epochs=40",
                         "sanity.random_labels_lr=0.003")
    assert record["memorized"] and record["train_accuracy"] >= 0.95 and record["epochs"] <= 40
    assert record["n"] == 16 and 0.5 <= record["majority_rate"] <= 1
    assert 0 <= record["test_accuracy"] <= 1 and not model.training
    assert record["history"][-1]["train_accuracy"] == record["train_accuracy"]
    assert memorization_note(record).startswith("Data randomization valid:")
    assert not any(m.p > 0 for m in model.modules() if hasattr(m, "p") and isinstance(m.p, float))  # no dropout
    with recording_outputs() as vouched:  # a second sanity run reuses the model and vouches for what it kept,
        _, again = _run(tmp_path / "run", tiny_data_dir, run, "sanity.random_labels_patches=16",  # so the stage
                        "sanity.random_labels_batch_size=8", "sanity.random_labels_epochs=40",  # writes its record
                        "sanity.random_labels_lr=0.003")
    assert again == record
    assert {str(tmp_path / "run" / "sanity" / "random_labels.json"),
            str(tmp_path / "run" / "sanity" / "random_labels_model" / "model.pt")} <= vouched


@pytest.mark.slow
def test_cap_reached_invalid_path(tiny_evaluated, tiny_data_dir, tmp_path):
    import shutil
    shutil.copytree(tiny_evaluated, tmp_path / "run")
    _, record = _run(tmp_path / "run", tiny_data_dir, f"run.dir={tmp_path / 'run'}", "sanity.random_labels_patches=64",
                     "sanity.random_labels_epochs=1", "sanity.random_labels_lr=0.0001")
    assert not record["memorized"] and record["epochs"] == 1 and record["train_accuracy"] < 0.95
    note = memorization_note(record)
    assert note.startswith("Data randomization INVALID: reached") and "cap of 1 epochs" in note
