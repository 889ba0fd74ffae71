"""Training through the public entry points: outputs, SIGKILL + resume, DDP (gloo), NaN stop."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from idc.errors import CheckpointError
from tests.helpers import REPO, compose_cfg, copy_run, run_script

SHORT = ["train.epochs=2", "train.max_batches=3", "train.batch_size=16", "train.eval_batch_size=128"]


def script(run_dir, data_dir, *overrides, launcher=(sys.executable,), env=None):
    return run_script(REPO / "scripts" / "train.py", run_dir, data_dir, *SHORT, *overrides, launcher=launcher, env=env)


def test_train_writes_checkpoints_and_history(tiny_trained):
    hist = pd.read_csv(tiny_trained / "model" / "history.csv")
    assert {"train_loss", "train_acc", "val_loss", "val_f1", "val_precision", "val_recall", "test_loss"} <= set(hist)
    assert (tiny_trained / "model" / "best.pt").exists() and (tiny_trained / "model" / "last.pt").exists()
    steps = pd.read_csv(tiny_trained / "model" / "history_steps.csv")
    assert len(steps) >= 1 and steps["loss"].notna().all()
    assert not list((tiny_trained / "model").glob(".*"))  # no temp files left behind


def test_sigkill_then_resume_equals_unbroken_run(tiny_prepared, tiny_data_dir, tmp_path):
    unbroken = copy_run(tiny_prepared, tmp_path / "unbroken")
    assert script(unbroken, tiny_data_dir).returncode == 0
    broken = copy_run(tiny_prepared, tmp_path / "broken")
    crash = REPO / "tests" / "helpers" / "crash_train.py"  # SIGKILL after 5 steps: mid epoch 2
    killed = run_script(crash, broken, tiny_data_dir, *SHORT, env={"IDC_TEST_CRASH_AFTER_STEPS": "5"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert pd.read_csv(broken / "model" / "history.csv")["epoch"].tolist() == [0]
    resumed = script(broken, tiny_data_dir, "train.resume=true")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    a = pd.read_csv(unbroken / "model" / "history.csv").drop(columns=["seconds", "images_per_s"])
    b = pd.read_csv(broken / "model" / "history.csv").drop(columns=["seconds", "images_per_s"])
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(pd.read_csv(unbroken / "model" / "history_steps.csv"),
                                  pd.read_csv(broken / "model" / "history_steps.csv"))
    wa = torch.load(unbroken / "model" / "last.pt", weights_only=True)["model"]
    wb = torch.load(broken / "model" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_ddp_two_processes_gloo(tiny_prepared, tiny_data_dir, tmp_path):
    run = copy_run(tiny_prepared, tmp_path / "ddp")
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    with socket.socket() as sock:  # a free port: a fixed one collides with another test run on the machine
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = script(run, tiny_data_dir, "train.epochs=1", launcher=(torchrun, "--nproc_per_node=2", f"--master_port={port}"))
    assert out.returncode == 0, out.stderr[-3000:]
    hist = pd.read_csv(run / "model" / "history.csv")
    assert len(hist) == 1  # written once, by rank 0
    assert (run / "model" / "best.pt").exists()
    text = out.stdout + out.stderr
    assert sum("wrote" in line and "last.pt" in line for line in text.splitlines()) == 1, text[-3000:]
    # each rank ran max_batches=3 batches of 16: the epoch saw 2 x 48 images
    steps = pd.read_csv(run / "model" / "history_steps.csv")
    assert (steps["split"] == "train").sum() == 3


def test_nan_loss_stops_with_a_clear_error(tiny_prepared, tiny_data_dir, tmp_path):
    run = copy_run(tiny_prepared, tmp_path / "nan")
    out = script(run, tiny_data_dir, "train.lr=1e30", "train.max_batches=20", "train.epochs=1")
    text = out.stdout + out.stderr
    assert out.returncode == 2, text[-2000:]
    assert "non-finite training loss" in text and "Lower train.lr" in text
    assert "Traceback" not in text


def test_resume_refuses_other_data(tiny_trained, tiny_data_dir, tmp_path):
    from idc import train

    run = copy_run(tiny_trained, tmp_path / "other")
    csv = run / "data" / "patches.csv"
    df = pd.read_csv(csv)
    df.iloc[:-1].to_csv(csv, index=False)
    (run / ".stages" / "prepare_data.json").unlink()  # edited on purpose: used as it is without make's record
    with pytest.raises(CheckpointError, match="another data/patches.csv"):
        train.run(compose_cfg(run, "train.resume=true", data_dir=tiny_data_dir))


def test_mistyped_key_fails_with_hydra_message(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_data.py"), "data.nmu_patients=3"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "nmu_patients" in text and "Traceback" not in text


@pytest.mark.parametrize("balance", ["class_weights", "sampler"])
def test_balancing_options_train(tiny_prepared, tiny_data_dir, tmp_path, balance):
    from idc import train

    run = copy_run(tiny_prepared, tmp_path / balance)
    summary = train.run(compose_cfg(run, f"train.balance={balance}", "train.max_batches=2", data_dir=tiny_data_dir))
    assert summary["epochs"] == 1 and 0.0 <= summary["train_acc"] <= 1.0
    assert (run / "model" / "best.pt").exists()


def test_unknown_balance_is_a_config_error(tiny_prepared, tiny_data_dir, tmp_path):
    from idc import train
    from idc.errors import ConfigError

    run = copy_run(tiny_prepared, tmp_path / "bad")
    with pytest.raises(ConfigError, match="train.balance"):
        train.run(compose_cfg(run, "train.balance=oversample", data_dir=tiny_data_dir))


def test_history_steps_hold_running_means_per_split(tiny_trained):
    steps = pd.read_csv(tiny_trained / "model" / "history_steps.csv")
    assert set(steps["split"]) == {"train", "val", "test"}
    for (_, _), part in steps.groupby(["split", "epoch"]):
        expected = part["loss"].expanding().mean()  # equal batches except the last: close, not equal
        assert np.allclose(part["running_loss"].iloc[:-1], expected.iloc[:-1], rtol=1e-6)
        assert part["step"].is_monotonic_increasing


def test_step_meter_reads_back_in_blocks_and_flags_non_finite():
    from idc.train import StepMeter

    m = StepMeter("train", epoch=0, first_step=10, sync_every=3)
    assert m.add(torch.tensor(1.0), 2, torch.tensor(2)) is None and m.rows == []  # still on the device
    assert m.add(torch.tensor(3.0), 2, torch.tensor(1)) is None
    assert m.add(torch.tensor(2.0), 4, torch.tensor(0)) is None and len(m.rows) == 3
    assert [r["step"] for r in m.rows] == [11, 12, 13] and m.correct == 3 and m.seen == 8
    assert m.mean_loss == pytest.approx((2 + 6 + 8) / 8) and m.rows[1]["running_loss"] == pytest.approx(2.0)
    assert m.add(torch.tensor(float("nan")), 2) is None  # not read back yet
    step, value = m.flush()
    assert step == 14 and np.isnan(value) and m.seen == 8  # the bad batch is not counted


def test_rng_state_survives_a_weights_only_checkpoint(tmp_path):
    import random

    from idc.model import read_checkpoint, save_checkpoint
    from idc.train import restore_rng, rng_state

    torch.manual_seed(3), np.random.seed(4), random.seed(5)
    save_checkpoint(tmp_path / "c.pt", {"model": {}, "model_cfg": {}, "epoch": 0, "rng": rng_state()})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    restore_rng(read_checkpoint(tmp_path / "c.pt")["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_fit_reports_train_accuracy_and_records_the_data_hash(tiny_prepared, tiny_data_dir, tmp_path):
    from idc import train

    run = copy_run(tiny_prepared, tmp_path / "fit")
    cfg = compose_cfg(run, "train.max_batches=2", data_dir=tiny_data_dir)
    summary = train.fit(cfg, run / "model")
    assert 0.0 <= summary["train_acc"] <= 1.0 and summary["epochs"] == 1
    ckpt = torch.load(run / "model" / "last.pt", weights_only=True)
    assert ckpt["data_hash"] == summary["data_hash"]
