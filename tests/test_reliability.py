"""Issue 14: every bad input and fault ends in one clear line (exit 2) or a counted, logged skip.

One test (or more) per numbered defect; docs/reliability.md lists what each covers. Stage runs go
through `idc.cli.run_stage` (the entry layer of every script) in process, and through the scripts
where Hydra itself is involved (its log folder under run.dir).
"""
from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from idc.cli import CONFIG_DIR
from idc.errors import CheckpointError
from tests.helpers import REPO, TINY, compose_cfg, copy_run, stage_error
from tests.helpers.kaggle import corrupt_pixels, kaggle_tree, write_png


def script(name: str, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(REPO / "scripts" / f"{name}.py"), *TINY, *overrides], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


# 1. memory bound on stitching ------------------------------------------------------------------

def test_far_coordinates_keep_the_eda_figures_within_a_bounded_memory(tmp_path):
    """x=y=90000 made the EDA tissue figure allocate a 90k x 90k x 3 canvas (24 GB); with the limit
    raised past it, the slide is drawn downsampled and the stage stays within a few hundred MB (measured:
    256 MB, most of it matplotlib's float copy of the 2048 px canvas)."""
    from idc import prepare_data

    root = kaggle_tree(tmp_path / "set", patients=(10, 11, 12, 13, 14), per_class=2)
    write_png(root / "10" / "1" / "10_idx5_x90001_y90001_class1.png")
    cfg = compose_cfg(tmp_path / "run", "data=kaggle", f"data.root={root}", "data.masks_dir=null",
                      "data.max_coordinate=100000")
    tracemalloc.start()
    try:
        df = prepare_data.run(cfg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (df["x"] == 90001).sum() == 1
    assert (tmp_path / "run" / "figures" / "chapter_05_patient_tissue_slice.png").stat().st_size > 5000
    assert peak < 400e6, peak


# 2. false success: ranges at config time; "wrote" only for files that exist ---------------------

@pytest.mark.parametrize("override, key", [
    ("train.epochs=0", "train.epochs"), ("train.epochs=-1", "train.epochs"), ("train.max_batches=0", "train.max_batches"),
    ("train.batch_size=0", "train.batch_size"), ("train.lr=0", "train.lr"), ("data.test_size=1.0", "data.test_size"),
    ("explain.shard_index=3", "explain.shard_index"),
])
def test_out_of_range_values_are_one_line_naming_key_and_range(tmp_path, caplog, override, key):
    msg = stage_error("train", compose_cfg(tmp_path, override), caplog)
    assert msg.startswith(f"train: {key}=") and ("use a value" in msg or "use 0 .." in msg)
    assert not (tmp_path / "model").exists()


def test_wrote_is_logged_only_for_files_that_exist(tmp_path, caplog):
    from idc.utils import wrote

    caplog.set_level(logging.INFO, logger="idc")
    (tmp_path / "a.csv").write_text("x\n")
    wrote(tmp_path / "a.csv")
    wrote(tmp_path / "best.pt")
    assert f"wrote {tmp_path / 'a.csv'}" in caplog.text and f"wrote {tmp_path / 'best.pt'}" not in caplog.text
    assert f"did not write {tmp_path / 'best.pt'}" in caplog.text


def test_epochs_0_from_the_command_line_exits_2_and_same_second_runs_get_their_own_log_dirs(tmp_path):
    """Two runs started together (same second) with train.epochs=0: each exits 2 with one line and no
    'wrote', and each has its own Hydra log folder (named with its pid)."""
    runs = [script("train", f"run.dir={tmp_path}", "train.epochs=0") for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in runs]
    for p, out in zip(runs, outs):
        assert p.returncode == 2, out[-2000:]
        assert "train.epochs=0 is out of range: use a value >= 1" in out
        assert "Traceback" not in out and "wrote" not in out
    logs = sorted(d.name for d in (tmp_path / "logs" / "train").iterdir())
    assert sorted(name.rsplit("_", 1)[1] for name in logs) == sorted(str(p.pid) for p in runs)


# 3. patches larger than 50x50 -------------------------------------------------------------------

def test_larger_smaller_and_odd_tiles_stitch_with_aligned_labels_and_probabilities():
    """A 60x60 patch crashed the EDA figure and the landscape (tissue and label canvases differed)."""
    from idc.landscape import landscape_figure
    from idc.stitch import tissue_and_idc

    rng = np.random.default_rng(0)
    sizes = [(60, 60), (50, 50), (35, 41), (50, 50), (57, 43)]  # (h, w)
    tiles = [rng.integers(0, 200, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    sub = pd.DataFrame({"x": [1, 51, 101, 1, 51], "y": [1, 1, 1, 51, 51], "target": [1, 0, 1, 0, 1],
                        "width": [w for _, w in sizes], "height": [h for h, _ in sizes]})
    canvas, tinted = tissue_and_idc(sub, tiles)
    assert canvas.shape == tinted.shape == (101, 151, 3)
    assert np.array_equal(canvas[1:51, 1:51], tiles[0][:50, :50])  # larger: cropped to its top-left 50x50
    assert np.array_equal(canvas[1:51, 51:101], tiles[1])  # the neighbour is not overwritten
    assert np.array_equal(canvas[1:36, 101:142], tiles[2]) and (canvas[36:51, 101:151] == 255).all()
    assert np.array_equal(canvas[51:101, 51:94], tiles[4][:50])  # taller than 50: cropped; narrower: as is
    assert (tinted[10, 10] != canvas[10, 10]).any() and (tinted[10, 60] == canvas[10, 60]).all()
    fig = landscape_figure(sub, tiles, np.linspace(0, 1, len(sub)), 7)
    assert fig.axes[2].images[0].get_array().shape == canvas.shape[:2]


# 4. one line instead of a traceback -------------------------------------------------------------

def test_kaggle_without_root_is_one_line(tmp_path, caplog):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["data=kaggle", f"run.dir={tmp_path}"])
    msg = stage_error("prepare_data", cfg, caplog)
    assert "data.root is not set" in msg and "data.root=/path/to/IDC_regular_ps50_idx5" in msg


@pytest.mark.parametrize("device, match", [
    ("gpu", "device=gpu is not known; use auto, cpu, cuda"),
    pytest.param("cuda", "CUDA is not available here; use device=auto or device=cpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_unusable_device_is_one_line(tmp_path, caplog, device, match):
    assert match in stage_error("evaluate", compose_cfg(tmp_path, f"device={device}"), caplog)


def test_unwritable_run_dir_is_one_line_before_hydra_makes_its_log_dir(tmp_path):
    (tmp_path / "a_file").write_text("")
    p = script("prepare_data", f"run.dir={tmp_path / 'a_file' / 'run'}")
    out = p.communicate(timeout=300)[0]
    assert p.returncode == 2, out[-2000:]
    assert "run.dir: cannot write in" in out and "Traceback" not in out and len(out.strip().splitlines()) == 1


def test_unwritable_model_dir_fails_before_training(tiny_prepared, tiny_data_dir, tmp_path, caplog):
    run = copy_run(tiny_prepared, tmp_path / "run")
    (run / "model").write_text("")  # a file where the model folder should be
    caplog.set_level(logging.INFO, logger="idc")
    msg = stage_error("train", compose_cfg(run, data_dir=tiny_data_dir), caplog)
    assert "run.dir: cannot write in" in msg and "model" in msg
    assert f"read {run / 'data' / 'patches.csv'}" not in caplog.text  # before reading data, not after an epoch


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes through permissions")
def test_read_only_model_dir_fails_before_training(tmp_path, caplog):
    (tmp_path / "model").mkdir()
    (tmp_path / "model").chmod(0o555)
    try:
        assert "cannot write in" in stage_error("train", compose_cfg(tmp_path), caplog)
    finally:
        (tmp_path / "model").chmod(0o755)


# 5. data problems that passed silently ----------------------------------------------------------

def test_single_class_val_split_warns_and_picks_best_by_val_loss(tiny_prepared, tiny_data_dir, tmp_path, caplog):
    from idc import train

    run = copy_run(tiny_prepared, tmp_path / "run")
    csv = run / "data" / "patches.csv"
    df = pd.read_csv(csv)
    df.loc[df["split"] == "val", "target"] = 0  # val holds IDC-negative patches only: F1 undefined
    df.to_csv(csv, index=False)
    (run / ".stages" / "prepare_data.json").unlink()  # edited on purpose: used as it is without make's record
    caplog.set_level(logging.INFO, logger="idc")
    train.run(compose_cfg(run, "train.epochs=2", "train.max_batches=1", "train.batch_size=16",
                          data_dir=tiny_data_dir))
    assert "val split holds one class only" in caplog.text and "lowest val loss" in caplog.text
    best = torch.load(run / "model" / "best.pt", weights_only=True)
    hist = pd.read_csv(run / "model" / "history.csv")
    assert best["best_by"] == "val_loss" and best["epoch"] == int(hist.loc[hist["val_loss"].idxmin(), "epoch"])


def test_summary_warns_about_a_single_class_split():
    from idc.prepare_data import single_class_warnings

    split = {"patches": 10, "patients": 1, "idc_negative": 10, "idc_positive": 0}
    both = {"patches": 10, "patients": 2, "idc_negative": 6, "idc_positive": 4}
    out = single_class_warnings({"train": both, "val": split, "test": both})
    assert len(out) == 1 and out[0].startswith("the val split holds only IDC-negative patches")


# 6. leftovers -----------------------------------------------------------------------------------

def test_kill_9_during_checkpoint_save_leaves_a_temp_file_the_next_start_removes(tmp_path, caplog):
    from idc.utils import _temp_tag
    from idc.validate import preflight

    model_dir = tmp_path / "model"
    code = (
        "import os, signal, torch\n"
        "from idc.model import save_checkpoint\n"
        "real = torch.save\n"
        "def save_then_die(obj, f, *a, **k):\n"
        "    real(obj, f, *a, **k)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "torch.save = save_then_die\n"
        f"save_checkpoint({str(model_dir / 'best.pt')!r}, {{'model': {{}}, 'model_cfg': {{}}, 'epoch': 0}})\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert out.returncode == -9
    left = list(model_dir.glob(".best.pt.*"))
    assert len(left) == 1 and not (model_dir / "best.pt").exists()
    live = model_dir / f".last.pt.{_temp_tag()}abcd1234.pt.tmp"  # a save in progress in a live process
    live.write_bytes(b"")
    preflight(compose_cfg(tmp_path))
    assert not left[0].exists() and live.exists()
    assert "removed 1 stale temp file(s)" in caplog.text


def test_failed_cache_leaves_no_complete_looking_index(tmp_path, caplog):
    root = kaggle_tree(tmp_path / "set", patients=(10, 11, 12, 13, 14), per_class=2)
    bad = write_png(root / "10" / "0" / "10_idx5_x901_y1_class0.png")
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 50, 3), np.uint8)).save(bad)
    corrupt_pixels(bad)
    cfg = compose_cfg(tmp_path / "run", "data=kaggle", f"data.root={root}", "data.masks_dir=null")
    assert "cannot be decoded" in stage_error("prepare_data", cfg, caplog)
    data = tmp_path / "run" / "data"
    assert not (data / "patches.csv").exists() and not (data / "summary.json").exists()
    assert not list(data.rglob("*.npy"))


# 8. checkpoint messages, file modes -------------------------------------------------------------

def test_checkpoint_errors_never_advise_weights_only_false(tmp_path, capsys):
    from idc.model import load_model

    class Payload:
        def __reduce__(self):
            return print, ("code from the checkpoint ran",)

    evil, garbage = tmp_path / "evil.pt", tmp_path / "garbage.pt"
    torch.save({"model": Payload(), "model_cfg": {}, "epoch": 0}, evil)
    garbage.write_bytes(b"not a checkpoint at all")
    for path, reason in [(evil, "refused for safety"), (garbage, "damaged or not a PyTorch checkpoint")]:
        with pytest.raises(CheckpointError) as err:
            load_model(path)
        assert reason in str(err.value) and "weights_only" not in str(err.value)
    assert "code from the checkpoint ran" not in capsys.readouterr().out


def test_resume_errors_say_delete_last_pt_or_resume_false(tiny_trained, tiny_data_dir, tmp_path):
    from idc import train

    run = copy_run(tiny_trained, tmp_path / "run")
    (run / "model" / "last.pt").write_bytes(b"torn")
    with pytest.raises(CheckpointError) as err:
        train.run(compose_cfg(run, "train.resume=true", data_dir=tiny_data_dir))
    msg = str(err.value)
    assert f"delete {run / 'model' / 'last.pt'} or set train.resume=false" in msg and "make train" not in msg


def test_resume_with_another_model_config_is_a_checkpoint_error(tiny_trained, tiny_data_dir, tmp_path):
    from idc import train

    run = copy_run(tiny_trained, tmp_path / "run")
    with pytest.raises(CheckpointError, match="does not fit the configured model.*train.resume=false"):
        train.run(compose_cfg(run, "train.resume=true", "model.head=[64]", data_dir=tiny_data_dir))


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_artifacts_follow_the_umask(tmp_path, umask, mode):
    from idc.utils import write_json_atomic

    old = os.umask(umask)
    try:
        path = write_json_atomic(tmp_path / "summary.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode and json.loads(path.read_text()) == {"a": 1}
