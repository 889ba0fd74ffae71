"""Issue 24: the integrity of a run directory. Outputs that were edited, cut or made by another model are
never taken as valid; damaged files, a full disk, unreadable folders and the leftovers of killed runs
end in one line or a counted skip. docs/reliability.md names the test of each case (rows 46-66).

New names of the code under test are imported inside the tests, so that each test fails on its own
(not at collection) where the behaviour is missing.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from idc import pipeline
from idc.errors import CheckpointError, IdcError
from idc.paths import RunPaths
from tests.helpers import REPO, compose_cfg, copy_run, fill, small_tmpfs, stage_error
from tests.helpers.kaggle import kaggle_tree, png_header, write_png

EXPLAIN = ["explain.methods=[gradcam]", "explain.visualize=false", "explain.patches=[0,1]"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------- sharded explain

def test_one_shard_writes_no_record_so_the_next_shard_is_not_up_to_date(tiny_evaluated, tiny_data_dir, tmp_path):
    """Over an earlier explain output, shard 0 of a run with a new method list wrote the stage record
    (claiming the new config for the old maps.npz) and every later shard said "up to date"."""
    run = copy_run(tiny_evaluated, tmp_path / "run")
    pipeline.build("explain", compose_cfg(run, *EXPLAIN, data_dir=tiny_data_dir))
    record = run / ".stages" / "explain.json"
    before = record.read_bytes()
    sharded = [*EXPLAIN, "explain.methods=[gradcam,vanilla_backprop]", "explain.num_shards=2"]
    assert list(pipeline.build("explain", compose_cfg(run, *sharded, "explain.shard_index=0", data_dir=tiny_data_dir))) == ["explain"]
    assert record.read_bytes() == before  # maps.npz is still the old run's: so is the record
    assert list(pipeline.build("explain", compose_cfg(run, *sharded, "explain.shard_index=1", data_dir=tiny_data_dir))) == ["explain"]
    with np.load(run / "explain" / "maps.npz") as z:
        assert {"gradcam/gray", "vanilla_backprop/gray"} <= set(z.files)
    assert json.loads(record.read_text())["config"]["explain"]["methods"] == ["gradcam", "vanilla_backprop"]


def test_merge_refuses_a_shard_made_by_another_model(tiny_evaluated, tiny_data_dir, tmp_path, caplog):
    """Shard 0, a retrain, shard 1: "merged 2 shards" with shard 0's rows from the old model (P(IDC) 0.373
    against 0.451). Here shard 0's provenance says it was made from another best.pt, as after a retrain
    (the retrain itself: tests/test_pipeline.py::test_retrained_model_makes_predictions_stale)."""
    from idc.explain import stage

    run = copy_run(tiny_evaluated, tmp_path / "run")
    sharded = [*EXPLAIN, "explain.num_shards=2"]
    stage.run(compose_cfg(run, *sharded, "explain.shard_index=0", data_dir=tiny_data_dir))
    meta = run / "explain" / "shards" / "0-of-2" / "shard.json"
    shard = json.loads(meta.read_text())
    shard["provenance"]["inputs"]["model/best.pt"] = "0" * 64
    meta.write_text(json.dumps(shard))
    msg = stage_error("explain", compose_cfg(run, *sharded, "explain.shard_index=1", data_dir=tiny_data_dir), caplog)
    assert msg == ("explain: explain shard 0-of-2 was made from another model/best.pt than the current one (re-made "
                   "since): the shards cannot be merged. Re-run it with explain.num_shards=2 explain.shard_index=0 "
                   "(same overrides)")
    assert not (run / "explain" / "maps.npz").exists()


def test_an_empty_shard_is_an_empty_valid_shard_and_the_merge_works(tiny_evaluated, tiny_data_dir, tmp_path):
    """More shards than patches: `cannot reshape array of size 0` (and a Hydra sweep lost its other jobs)."""
    from idc.explain import stage

    run = copy_run(tiny_evaluated, tmp_path / "run")
    common = ["explain.methods=[gradcam,vanilla_backprop]", "explain.visualize=false", "explain.patches=[0]",
              "explain.num_shards=2"]
    stage.run(compose_cfg(run, *common, "explain.shard_index=1", data_dir=tiny_data_dir))  # nothing to explain
    empty = run / "explain" / "shards" / "1-of-2"
    with np.load(empty / "maps.npz") as z:
        assert z["gradcam/gray"].shape == (0, 50, 50) and z["vanilla_backprop/raw"].shape[0] == 0
    assert len(pd.read_csv(empty / "index.csv")) == 0 and (empty / "shard.json").exists()
    stage.run(compose_cfg(run, *common, "explain.shard_index=0", data_dir=tiny_data_dir))
    with np.load(run / "explain" / "maps.npz") as z:
        assert z["gradcam/gray"].shape == (1, 50, 50) and z["vanilla_backprop/raw"].shape == (1, 3, 50, 50)


# ---------------------------------------------------------------- edited or cut outputs

def test_a_cut_patches_csv_is_named_and_rebuilt_by_make_data_not_trained_on(tiny_trained, tiny_data_dir, tmp_path,
                                                                            caplog):
    """patches.csv cut to 300 rows: train retrained on it, overwrote best.pt and deleted the full cache."""
    run = copy_run(tiny_trained, tmp_path / "run")
    csv, best = run / "data" / "patches.csv", run / "model" / "best.pt"
    whole, model, caches = csv.read_bytes(), sha(best), sorted((run / "data" / "cache").iterdir())
    pd.read_csv(csv).head(300).to_csv(csv, index=False)
    msg = stage_error("train", compose_cfg(run, "run.auto=false", data_dir=tiny_data_dir), caplog)
    assert "data/patches.csv was changed after `make data` wrote it (hand-edited, cut or replaced)" in msg
    assert "Run `make data`" in msg
    caplog.clear()
    assert list(pipeline.build("train", compose_cfg(run, data_dir=tiny_data_dir))) == ["prepare_data"]
    assert "data/patches.csv was changed after `make data` wrote it" in caplog.text  # said before rebuilding it
    assert csv.read_bytes() == whole and sha(best) == model and sorted((run / "data" / "cache").iterdir()) == caches
    assert not (run / "model" / "best.prev.pt").exists()  # no retrain


def test_cut_predictions_are_refused_not_explained(tiny_evaluated, tiny_data_dir, tmp_path, caplog):
    """predictions.csv cut after 100 of 401 rows: explain used it silently, rc 0."""
    from idc.explain import stage

    run = copy_run(tiny_evaluated, tmp_path / "run")
    pred = run / "eval" / "predictions.csv"
    df = pd.read_csv(pred)
    df.head(len(df) // 2).to_csv(pred, index=False)
    with pytest.raises(IdcError, match=r"eval/predictions.csv was changed after `make evaluate` wrote it"):
        stage.run(compose_cfg(run, *EXPLAIN, data_dir=tiny_data_dir))
    msg = stage_error("explain", compose_cfg(run, *EXPLAIN, "run.auto=false", data_dir=tiny_data_dir), caplog)
    assert "eval/predictions.csv was changed after `make evaluate` wrote it" in msg and "Run `make evaluate`" in msg
    assert not (run / "explain").exists()


# ---------------------------------------------------------------- damaged files: one line each

def test_a_cut_cache_is_one_line_and_make_data_rebuilds_it(tiny_prepared, tiny_data_dir, tmp_path):
    """A truncated packed cache: `mmap length is greater than file size`."""
    from idc.inputs import load_run

    run = copy_run(tiny_prepared, tmp_path / "run")
    cache = next((run / "data" / "cache").glob("patches-*.npy"))
    whole = cache.read_bytes()
    cache.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(IdcError, match=rf"{cache.name} is damaged \(cut: 3.3 of 6.5 MB\); delete it .* `make data`"):
        load_run(compose_cfg(run, data_dir=tiny_data_dir), needs=("patches", "images"))
    assert list(pipeline.build("prepare_data", compose_cfg(run, data_dir=tiny_data_dir))) == ["prepare_data"]
    assert cache.read_bytes() == whole


def test_a_cut_maps_npz_is_one_line_in_the_viewer(tmp_path):
    """A cut maps.npz: `BadZipFile` in the viewer."""
    from idc.viewer.inputs import load_inputs

    paths = RunPaths(tmp_path)
    paths.data_dir.mkdir()
    pd.DataFrame({"image_id": ["1/0/a.png"], "patient_id": [1], "x": [1], "y": [1], "target": [0],
                  "split": ["test"]}).to_csv(paths.patches_csv, index=False)
    paths.explain_dir.mkdir()
    pd.DataFrame({"image_id": ["1/0/a.png"], "patient_id": [1], "target": [0], "pred": [0], "proba": [0.1],
                  "outcome": ["tn"], "explained_class": [0]}).to_csv(paths.explain_index_csv, index=False)
    np.savez(paths.maps_npz, **{"gradcam/gray": np.random.default_rng(0).random((1, 50, 50), np.float32)})
    paths.maps_npz.write_bytes(paths.maps_npz.read_bytes()[:5000])
    with pytest.raises(IdcError, match=r"explain/maps.npz is damaged \(not a complete .npz file.*run `make explain`"):
        load_inputs(paths)


def test_predictions_cut_mid_line_are_one_line_without_a_record(tiny_evaluated, tiny_data_dir, tmp_path):
    """predictions.csv cut mid-line: a raw traceback (or NaN probabilities used)."""
    from idc.inputs import load_run

    run = copy_run(tiny_evaluated, tmp_path / "run")
    pred = run / "eval" / "predictions.csv"
    text = pred.read_text()
    pred.write_text(text[: text.index("\n", len(text) // 2) + 12])  # inside the next row's image_id
    (run / ".stages" / "evaluate.json").unlink()  # written outside make: only the reader can tell
    with pytest.raises(IdcError, match=r"predictions.csv is damaged \(line \d+ is incomplete: cut mid-line or edited\); "
                                       r"run `make evaluate`"):
        load_run(compose_cfg(run, *EXPLAIN, data_dir=tiny_data_dir), needs=("patches", "predictions"))


def test_an_empty_patches_csv_is_one_line(tmp_path):
    """An emptied patches.csv: pandas' `EmptyDataError`."""
    from idc.data import load_patches

    paths = RunPaths(tmp_path)
    paths.data_dir.mkdir()
    paths.patches_csv.write_text("")
    with pytest.raises(IdcError, match=r"data/patches.csv is damaged \(it is empty\); run `make data`"):
        load_patches(paths)


def test_a_cut_mask_is_one_line(tmp_path):
    """A cut mask sidecar: `BadZipFile` in load_masks."""
    from idc.data.synthetic import load_masks

    path = tmp_path / "masks" / "12.npz"
    path.parent.mkdir()
    np.savez_compressed(path, mask=np.random.default_rng(0).random((200, 200)) > 0.5)
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(IdcError, match=r"12.npz is damaged \(.*\); the synthetic set is incomplete: delete .*masks "
                                       r"\(idc generated it\) and run `make data ARGS=run.force=true`"):
        load_masks(path.parent, 12)


def test_nan_weights_probabilities_or_maps_are_refused_before_anything_is_written(tiny_evaluated, tiny_data_dir,
                                                                                   tmp_path, monkeypatch):
    """A checkpoint with NaN weights was accepted and predictions.csv rewritten with NaN probabilities."""
    from idc import evaluate
    from idc.explain import stage
    from idc.model import save_checkpoint

    run = copy_run(tiny_evaluated, tmp_path / "run")
    best, pred = run / "model" / "best.pt", run / "eval" / "predictions.csv"
    before = pred.read_bytes()
    ckpt = torch.load(best, weights_only=True)
    ckpt["model"]["conv1.weight"].view(-1)[0] = float("nan")
    with pytest.raises(CheckpointError, match="refusing to write .*nan.pt: the weights hold NaN or infinite values"):
        save_checkpoint(tmp_path / "nan.pt", ckpt)
    assert not (tmp_path / "nan.pt").exists()
    torch.save(ckpt, best)
    (run / ".stages" / "train.json").unlink()  # outside make, the weights themselves must be checked
    cfg = compose_cfg(run, *EXPLAIN, data_dir=tiny_data_dir)
    with pytest.raises(CheckpointError, match=r"best.pt holds NaN or infinite weights \(conv1.weight\)"):
        evaluate.run(cfg)
    shutil.copyfile(tiny_evaluated / "model" / "best.pt", best)  # finite weights, NaN outputs:
    monkeypatch.setattr(evaluate, "predict", lambda model, images, rows, **kw: np.full((len(rows), 2), np.nan))
    with pytest.raises(IdcError, match=r"P\(IDC\) of .*best.pt on the test split hold \d+ NaN or infinite value"):
        evaluate.run(cfg)
    assert pred.read_bytes() == before
    monkeypatch.setattr(stage, "compute_maps", lambda model, images, *a, **kw: ({"gradcam": np.full((len(images), 50, 50), np.inf)}, {}))
    with pytest.raises(IdcError, match=r"explain: the gradcam maps hold \d+ NaN or infinite value"):
        stage.run(cfg)
    assert not (run / "explain" / "maps.npz").exists()


# ---------------------------------------------------------------- a full disk

def test_a_full_disk_while_train_saves_a_checkpoint_is_one_line_and_leaves_no_partial_file(tmp_path):
    """A full disk gave a traceback in torch.save (train's checkpoints go through save_checkpoint)."""
    from idc.model import build_model, save_checkpoint

    payload = {"model": build_model({}).state_dict(), "model_cfg": {}, "epoch": 0}  # 46 MB
    with small_tmpfs(tmp_path / "model", "16m") as model_dir:
        with pytest.raises(IdcError) as err:
            save_checkpoint(model_dir / "best.pt", payload)
        assert re.fullmatch(rf"disk full while writing {model_dir}/best.pt; free [23]\d MB on {model_dir} \(the file "
                            r"needs about 47 MB, 1\d.\d MB are free\) and re-run", str(err.value)), err.value
        assert list(model_dir.iterdir()) == []


def test_a_full_disk_in_explain_is_one_line_and_leaves_no_partial_file(tiny_evaluated, tiny_data_dir, tmp_path, caplog):
    """A full disk gave a traceback in explain (no temp file was left: that stays so)."""
    run = copy_run(tiny_evaluated, tmp_path / "run")
    with small_tmpfs(run / "explain", "1m") as explain_dir:
        fill(explain_dir / "filler")
        msg = stage_error("explain", compose_cfg(run, *EXPLAIN, data_dir=tiny_data_dir), caplog)
        assert re.match(rf"explain: disk full while writing {explain_dir}/maps.npz; free \d+ MB", msg), msg
        assert [p.name for p in explain_dir.iterdir()] == ["filler"]


def test_a_full_disk_while_the_cache_is_packed_is_one_line_not_a_sigbus(tmp_path):
    """The packed cache is a memory map: without its blocks reserved first, a disk that fills while its
    pages are written kills the process with SIGBUS (a subprocess here, so that it cannot kill pytest)."""
    root = kaggle_tree(tmp_path / "set")
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        (disk / "filler").write_bytes(bytes((1 << 20) - (1 << 16)))  # 64 KiB left; the cache needs 135 KB
        out = python("from idc.data.index import index_patches\nfrom idc.data.cache import load_or_build_cache\n"
                     f"root = {str(root)!r}\ntry:\n    load_or_build_cache(index_patches(root), root, {str(disk / 'cache')!r})\n"
                     "except Exception as err:\n    print(type(err).__name__, err)\n")
        assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
        assert re.search(r"DiskFullError disk full while writing .*/cache/patches-\w+.npy; free 1 MB on ", out.stdout)
        assert list((disk / "cache").iterdir()) == []


# ---------------------------------------------------------------- indexing

def test_unreadable_directory_entries_are_counted_skips(tmp_path, monkeypatch):
    """A patient folder that is a symlink loop (`OSError Errno 40`) stopped the whole index."""
    from idc.data.index import index_with_report

    root = kaggle_tree(tmp_path / "set")
    os.symlink("99", root / "99")  # a patient folder that is a symlink loop
    os.symlink("loop", root / "10" / "loop")  # and a class folder
    scandir = os.scandir

    def no_permission(path):  # root reads through permissions: a folder it may not list is simulated
        if str(path).endswith(os.sep + os.path.join("11", "1")):
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", no_permission)
    df, report = index_with_report(root)
    skipped = report.counts()["skipped"]
    assert skipped["unreadable_entry"] == 3 and sum(skipped.values()) == 3
    assert len(df) == 15 and set(df["patient_id"]) == {10, 11, 12}


def test_summary_counts_jpeg_named_png_and_pixel_identical_patches(tmp_path):
    """JPEG data in a .png and pixel-identical duplicates were not counted."""
    from idc import prepare_data

    root = tmp_path / "set"
    for k, pid in enumerate((10, 11, 12, 13, 14)):
        for c in (0, 1):
            for j in (0, 1):
                write_png(root / str(pid) / str(c) / f"{pid}_idx5_x{1 + 50 * j}_y{1 + 50 * c}_class{c}.png",
                          value=20 * k + 10 * c + 3 * j)
    write_png(root / "10" / "0" / "10_idx5_x501_y1_class0.png", value=0)  # the twin of 10/0/10_idx5_x1_y1
    Image.fromarray(np.full((50, 50, 3), 200, np.uint8)).save(root / "11" / "1" / "11_idx5_x501_y51_class1.png",
                                                              format="JPEG")
    cfg = compose_cfg(tmp_path / "run", "data=kaggle", f"data.root={root}", "data.masks_dir=null",
                      "data.eda_figures=false")
    prepare_data.run(cfg)
    summary = json.loads((tmp_path / "run" / "data" / "summary.json").read_text())
    assert summary["not_png_kept"] == {"JPEG": 1} and summary["patches"] == 22
    assert summary["identical_pixels"]["files"] == 2 and summary["identical_pixels"]["groups"] == 1
    assert sorted(summary["identical_pixels"]["examples"][0]) == ["10/0/10_idx5_x1_y1_class0.png",
                                                                  "10/0/10_idx5_x501_y1_class0.png"]


@pytest.mark.parametrize("verify", [False, True])
def test_a_decompression_bomb_is_skipped_as_too_large(tmp_path, verify):
    """A decompression-bomb PNG was kept by the header check and reported as corrupt by the packing."""
    from idc.data.index import index_with_report

    root = kaggle_tree(tmp_path)
    png_header(root / "10" / "0" / "10_idx5_x501_y1_class0.png", 30000, 30000)
    df, report = index_with_report(root, verify=verify)
    assert report.counts()["skipped"]["too_large"] == 1 and len(df) == 18


# ---------------------------------------------------------------- config and leftovers

def test_negative_select_counts_are_one_line(tmp_path, caplog):
    """`explain.select={tn: -1}` explained every TN but one (hours with LIME or RISE on the real set)."""
    from idc.explain.select import select_patches

    msg = stage_error("explain", compose_cfg(tmp_path, "explain.select.tn=-1", "run.auto=false"), caplog)
    assert msg == "explain: explain.select.tn=-1 is out of range: use a value >= 0"
    pred = pd.DataFrame({"image_id": ["a", "b", "c"], "target": [0, 0, 0], "proba": [0.1, 0.2, 0.3], "pred": [0, 0, 0]})
    with pytest.raises(IdcError, match=r"explain.select.tn=-1 is out of range"):
        select_patches(pred, select={"tn": -1})


def test_a_viewer_killed_by_sigterm_leaves_a_temp_folder_the_next_start_removes(tmp_path, caplog):
    """SIGTERM during `make view` left `.viewer.tmp-*`; the start-up clean-up matched temp files only."""
    from idc.validate import preflight

    out = python("import os, signal, types\nfrom idc.viewer import stage\n"
                 "def killed(cfg, paths, out):\n    out.mkdir(parents=True, exist_ok=True)\n"
                 "    (out / 'index.html').write_text('half a page')\n"
                 "    os.kill(os.getpid(), signal.SIGTERM)\n"
                 "stage.build = killed\n"
                 f"stage.run(types.SimpleNamespace(run=types.SimpleNamespace(dir={str(tmp_path)!r})))\n")
    assert out.returncode == -signal.SIGTERM, out.stderr[-2000:]
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".viewer")]
    preflight(compose_cfg(tmp_path))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".viewer")]
    assert "stale temp file(s) or folder(s)" in caplog.text


def test_a_generator_killed_by_sigterm_leaves_temp_folders_the_next_start_removes(tmp_path, monkeypatch):
    """SIGTERM during the synthetic generation left two temp folders beside data.root, never removed."""
    from idc.data import synthetic

    cfg = compose_cfg(tmp_path / "run", "data.workers=1", data_dir=tmp_path / "data")
    out = python("import os, signal\nfrom idc.data import synthetic\n"
                 "synthetic.render_patient = lambda job: os.kill(os.getpid(), signal.SIGTERM)\n"
                 "from tests.helpers import compose_cfg\n"
                 f"cfg = compose_cfg({str(tmp_path / 'run')!r}, 'data.workers=1', data_dir={str(tmp_path / 'data')!r})\n"
                 "synthetic.generate_synthetic(cfg.data)\n")
    assert out.returncode == -signal.SIGTERM, out.stderr[-2000:]
    leftovers = lambda: sorted(p.name for p in (tmp_path / "data").iterdir() if "tmp" in p.name)  # noqa: E731
    assert len(leftovers()) == 2  # the image and the mask folders being written

    def fail(job):
        raise RuntimeError("renderer stopped")

    monkeypatch.setattr(synthetic, "render_patient", fail)  # the next start: its clean-up runs first
    with pytest.raises(RuntimeError, match="renderer stopped"):
        synthetic.generate_synthetic(cfg.data)
    assert leftovers() == []
