"""Run tracking (`train.logger=tensorboard`): the event files of train, evaluate and landscape hold the
scalars per step and per epoch, the PR curve and the landscape figures, read back with TensorBoard's own
reader (no server)."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from idc.paths import declared
from tests.helpers import compose_cfg, copy_run


def events(folder) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_events_hold_the_scalars_pr_curve_and_landscapes(tiny_prepared, tiny_data_dir, tmp_path):
    from idc.pipeline import build

    run = copy_run(tiny_prepared, tmp_path / "run")
    cfg = compose_cfg(run, "train.logger=tensorboard", "train.max_batches=3", "train.batch_size=16",
                      "train.eval_batch_size=256", "landscape.num_patients=1", data_dir=tiny_data_dir)
    build("landscape", cfg)  # train, evaluate, landscape

    train = events(run / "tensorboard" / "train")
    history = pd.read_csv(run / "model" / "history.csv")
    steps = pd.read_csv(run / "model" / "history_steps.csv")
    for col in ("train_loss", "train_acc", "val_loss", "val_f1", "val_precision", "val_recall", "test_loss"):
        got = [(e.step, e.value) for e in train.Scalars(f"epoch/{col}")]
        assert got == [(1, pytest.approx(history[col].iloc[0], rel=1e-6))], col  # per epoch, step = epoch number
    for split in ("train", "val", "test"):
        rows = steps[steps["split"] == split]
        got = train.Scalars(f"step/{split}_loss")
        assert [e.step for e in got] == rows["step"].tolist() and len(got) >= 1, split  # one per step
        assert [e.value for e in got] == pytest.approx(rows["loss"].tolist(), rel=1e-6)
    assert len(train.Scalars("step/train_loss")) == 3

    evaluate = events(run / "tensorboard" / "evaluate")
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert "test/pr_curve" in evaluate.Tags()["tensors"]
    assert evaluate.Scalars("test/average_precision")[0].value == pytest.approx(metrics["cnn"]["average_precision"])
    assert evaluate.Scalars("test/always_positive/precision")[0].value == pytest.approx(metrics["baseline"]["precision"])

    landscape = events(run / "tensorboard" / "landscape")
    (tag,) = landscape.Tags()["images"]
    assert tag.startswith("landscape/patient_") and (run / "figures" / f"landscape_{tag.split('_')[-1]}.png").exists()
    files = [p.relative_to(run).as_posix() for p in (run / "tensorboard").rglob("*") if p.is_file()]
    assert len(files) == 3 and all(declared(f) for f in files)  # one event file per stage, each declared


def test_csv_is_the_default_and_writes_no_events(tiny_evaluated):
    assert compose_cfg(tiny_evaluated).train.logger == "csv"
    assert not (tiny_evaluated / "tensorboard").exists()
