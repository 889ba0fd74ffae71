"""Attribution landscapes (`make atlas`): known answers for the shard assignment and the stitched maps; the
per-patient shards computed exactly once, the same bit for bit in one process, in two torchrun ranks (gloo)
and in a 2-job joblib multirun; a shard killed mid-way redone alone; the merge's exactly-once check.

Bit for bit at the same torch thread count: the subprocesses run with OMP_NUM_THREADS=1 (as torchrun sets it per
rank), so the in-process runs here use one thread too (a few float32 values differ in their last bits between
1 and 2 intra-op threads: oneDNN splits some small batches differently)."""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

import idc.config  # noqa: F401  (registers the structured config schema)
from idc.atlas import canvas as C
from idc.atlas.shards import assign, finish_shard, merge, patient_dir, provenance
from idc.errors import IntegrityError
from idc.paths import RunPaths, declared
from tests.helpers import REPO, TINY, compose_cfg, copy_run, data_overrides, run_script

ATLAS = REPO / "scripts" / "atlas.py"
# one forward and backward pass per patch, a value in every pixel (Grad-CAM, the default, is zero everywhere on
# the 1-epoch tiny model's patches: its layer-4 CAMs are all negative there)
METHODS = "atlas.methods=[vanilla_backprop]"


def test_assign_balances_patches_and_gives_each_patient_one_shard():
    sizes = {7: 100, 3: 80, 5: 60, 9: 50, 1: 10}
    two = assign(sizes, 2)
    assert two == {7: 0, 3: 1, 5: 1, 9: 0, 1: 1}  # loads 150 / 150: largest first, each to the lighter shard
    assert assign(sizes, 1) == dict.fromkeys(sizes, 0)
    assert sorted(assign(sizes, 7).values()) == [0, 1, 2, 3, 4]  # more shards than patients: some get none


def test_maps_stitch_at_full_resolution_with_edge_patches_at_their_size():
    maps = np.stack([np.full((50, 50), 1.0), np.arange(2500, dtype=np.float32).reshape(50, 50)])
    sub = pd.DataFrame({"x": [1, 51], "y": [1, 1], "width": [50, 25], "height": [50, 50]})
    canvas = C.stitch_map(maps, sub)
    assert canvas.shape == (51, 101) and np.isnan(canvas[0]).all()  # slide pixel (r, c) = canvas pixel (r, c)
    assert (canvas[1:, 1:51] == 1).all()
    assert np.isnan(canvas[1:, 76:]).all()  # the edge patch covers its 25 px, not 50
    assert canvas[1, 51] < 2 and canvas[1, 75] > 40  # its map (0..49 per row) squeezed to 25 px, not cropped (24)
    assert C.display_scale([np.array([-1.0, 0, *range(1, 101)])]) == pytest.approx(np.percentile(np.arange(1, 101), 99))
    assert C.display_scale([np.zeros(10)]) == 1.0
    disp = C.display(np.array([[np.nan, -2.0, 0.5, 3.0]]), 1.0)
    layer = C.rgba_layer(disp)
    assert layer[0, :, 3].tolist() == [0, 0, round(0.85 * 0.5 * 255), round(0.85 * 255)]  # opacity ~ evidence
    assert np.array_equal(C.evidence(maps[:1] - 2, 0.0), np.zeros((1, 50, 50)))  # only the positive part
    ring = C.outline(np.pad(np.ones((5, 5), bool), 2), width=1)
    assert ring.sum() == 16 and not ring[4, 4]


@contextlib.contextmanager
def one_thread():
    """torch's intra-op threads as in the subprocesses (OMP_NUM_THREADS=1), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_atlas(run: Path, data_dir: Path, *overrides: str) -> None:
    from idc.pipeline import build

    with one_thread():
        build("atlas", compose_cfg(run, *overrides, data_dir=data_dir))


def test_gradcam_keeps_its_values_for_the_atlas():
    """Grad-CAM is the upsampled raw CAM (the atlas's `minmax=False`, also the default since issue 23); the book's
    `minmax=True` scales each patch's map to [0, 1]."""
    from idc.explain.driver import attribute
    from idc.explain.methods import relu_cam, upsample
    from idc.model import build_model

    torch.manual_seed(0)
    model = build_model({"head": [8, 8]}).eval()
    x, target = torch.randn(2, 3, 50, 50), torch.tensor([1, 0])
    raw = attribute(model, x, target, "gradcam", layer="layer3", minmax=False)
    assert np.allclose(raw, upsample(relu_cam(model, x, target, "layer3"), (50, 50)).numpy(), atol=1e-6)
    assert np.array_equal(attribute(model, x, target, "gradcam", layer="layer3"), raw)
    book = attribute(model, x, target, "gradcam", layer="layer3", minmax=True)
    lo, hi = raw.min(axis=(1, 2), keepdims=True), raw.max(axis=(1, 2), keepdims=True)
    assert raw.max() > 0 and np.allclose(book, (raw - lo) / np.where(hi > lo, hi - lo, 1), atol=1e-5)


def digests(run: Path) -> dict:
    """sha256 of every atlas file (per-patient shards, joined index, summary, overlays, figures)."""
    files = [*(run / "atlas").rglob("*"), *(run / "figures").glob("atlas_*.png")]
    return {p.relative_to(run).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}


def computed(text: str) -> list:
    return [int(p) for p in re.findall(r"atlas: computed patient (\d+)", text)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_trained, tiny_data_dir):
    """The three smallest tiny patients in one process, one shard: (run dir, digests, overrides, patients)."""
    sizes = pd.read_csv(tiny_trained / "data" / "patches.csv")["patient_id"].value_counts()
    pids = sorted(int(p) for p in sizes.sort_values(kind="stable").index[:3])
    overrides = [METHODS, f"atlas.patients=[{','.join(map(str, pids))}]", "atlas.overlays=false"]
    run = copy_run(tiny_trained, tmp_path_factory.mktemp("atlas") / "run")
    build_atlas(run, tiny_data_dir, *overrides)
    files = digests(run)
    assert {f"atlas/patients/{p}/{n}" for p in pids for n in ("maps.npz", "index.csv", "shard.json")} < set(files)
    assert all(declared(f) for f in files)  # the registry declares every file the stage writes
    index = pd.read_csv(run / "atlas" / "index.csv")
    assert index["image_id"].is_unique and len(index) == int(sizes[pids].sum())
    return run, files, overrides, pids


def test_two_torchrun_ranks_equal_one_process_bit_for_bit(reference, tiny_trained, tiny_data_dir, tmp_path):
    _, expected, overrides, pids = reference
    copy_run(tiny_trained, tmp_path / "r0")  # run.dir below resolves to r<RANK>: rank 0's must win on every rank
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    with socket.socket() as sock:  # a free port: a fixed one collides with another test run on the machine
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = run_script(ATLAS, tmp_path / "r0", tiny_data_dir, *overrides, f"run.dir={tmp_path}/r${{oc.env:RANK}}",
                     launcher=(torchrun, "--nproc_per_node=2", f"--master_port={port}"))
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert sorted(computed(text)) == pids  # each patient by one rank, none twice, none padded in
    assert digests(tmp_path / "r0") == expected
    assert not (tmp_path / "r1").exists()  # rank 1 used rank 0's run dir, its Hydra logs too
    assert len(list((tmp_path / "r0" / "logs" / "atlas").iterdir())) == 2


def test_two_job_joblib_multirun_equals_one_process_bit_for_bit(reference, tiny_trained, tiny_data_dir, tmp_path):
    _, expected, overrides, pids = reference
    run = copy_run(tiny_trained, tmp_path / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, str(ATLAS), "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                          f"hydra.sweep.dir={tmp_path}/multirun", *TINY, *data_overrides(run, tiny_data_dir), *overrides,
                          "atlas.num_shards=2", "atlas.shard_index=0,1"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert sorted(computed(text)) == pids
    assert digests(run) == expected  # the job that finished last found every patient done and merged


def test_a_shard_killed_mid_way_is_redone_without_redoing_the_others(reference, tiny_trained, tiny_data_dir, tmp_path,
                                                                    caplog):
    _, expected, overrides, pids = reference
    run = copy_run(tiny_trained, tmp_path / "run")
    sizes = pd.read_csv(run / "data" / "patches.csv")["patient_id"].value_counts()
    done_first, half_done = sorted(p for p, s in assign({p: int(sizes[p]) for p in pids}, 2).items() if s == 1)
    two = [*overrides, "atlas.num_shards=2"]
    build_atlas(run, tiny_data_dir, *two, "atlas.shard_index=0")  # the largest patient
    killed = run_script(REPO / "tests" / "helpers" / "crash_atlas.py", run, tiny_data_dir, *two, "atlas.shard_index=1",
                        env={"IDC_TEST_KILL_AT_PATIENT": "2"})  # SIGKILL before its 2nd patient's shard.json
    assert killed.returncode == -9, (killed.stdout + killed.stderr)[-2000:]
    assert computed(killed.stdout + killed.stderr) == [done_first]
    half = patient_dir(RunPaths(run), half_done)
    assert (half / "maps.npz").exists() and not (half / "shard.json").exists()  # what the kill left
    kept = {p: p.stat().st_mtime_ns for p in (run / "atlas" / "patients").rglob("*") if p.is_file() and half not in p.parents}
    caplog.set_level("INFO", logger="idc")
    build_atlas(run, tiny_data_dir, *two, "atlas.shard_index=1")
    assert computed(caplog.text) == [half_done]
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # nothing done before was computed or written again
    assert digests(run) == expected


def test_merge_checks_every_patch_is_present_exactly_once(reference, tiny_data_dir, tmp_path):
    ref, _, overrides, pids = reference
    patches = pd.read_csv(ref / "data" / "patches.csv")
    for damage, message in ((lambda df: df.iloc[1:], "lacks 1 of its patches"),
                            (lambda df: pd.concat([df, df.iloc[:1]]), "2 times")):
        run = copy_run(ref, tmp_path / f"run{len(message)}")
        paths, cfg = RunPaths(run), compose_cfg(run, *overrides, data_dir=tiny_data_dir)
        folder = patient_dir(paths, pids[0])
        index = damage(pd.read_csv(folder / "index.csv"))
        index.to_csv(folder / "index.csv", index=False)  # a buggy writer that still sealed its shard
        prov = provenance(cfg, paths)
        finish_shard(folder, {"patient": pids[0]}, prov, index["image_id"])
        with pytest.raises(IntegrityError, match=f"atlas patient {pids[0]} .*{message}.*exactly once"):
            merge(paths, patches, pids, prov)


def documented_atlas_commands() -> list:
    """The overrides of each `scripts/atlas.py` command in docs/scale-out.md's bash blocks (continued lines
    joined; a multirun's `-m` dropped)."""
    text = (REPO / "docs" / "scale-out.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    lines = [line for b in blocks for line in b.replace("\\\n", " ").splitlines()]
    commands = []
    for line in lines:
        words = shlex.split(line.split("#", 1)[0] if line.lstrip().startswith("#") else line)
        if "scripts/atlas.py" in words:
            commands.append([w for w in words[words.index("scripts/atlas.py") + 1:] if w != "-m"])
    return commands


def test_the_documented_slurm_command_composes():
    """No cluster here: the Slurm command for the full real set (and every other atlas command of
    docs/scale-out.md) must at least compose with the real configs, the submitit launcher's included, and pass
    the config checks, one job per shard index, the shards covering 0 .. num_shards-1."""
    from hydra import compose, initialize_config_dir

    from idc.validate import validate_config

    commands = documented_atlas_commands()
    slurm = [c for c in commands if "hydra/launcher=submitit_slurm" in c]
    assert len(commands) >= 5 and len(slurm) == 1
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        for command in commands:
            parsed = OverridesParser.create().parse_overrides(command)
            jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
            cfg = compose(config_name="config", overrides=jobs[-1], return_hydra_config=True)  # jobs differ in shard only
            validate_config(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))
            if command in slurm:
                assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
                assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.run.auto is False
                shards = sorted(int(dict(o.split("=", 1) for o in job)["atlas.shard_index"]) for job in jobs)
                assert cfg.atlas.num_shards > 1 and shards == list(range(cfg.atlas.num_shards))


def test_the_viewer_follows_the_atlas_without_running_it(tmp_path):
    """`make view` never runs the atlas (minutes of IG), but a new atlas makes the page out of date."""
    from idc.pipeline import expected_record, producers

    paths, cfg = RunPaths(tmp_path), compose_cfg(tmp_path)
    assert "atlas" not in producers("view")
    assert expected_record("view", cfg, paths)["inputs"]["atlas/summary.json"] is None
    paths.atlas_summary_json.parent.mkdir(parents=True)
    paths.atlas_summary_json.write_text('{"methods": ["gradcam"]}')
    assert expected_record("view", cfg, paths)["inputs"]["atlas/summary.json"] == \
        hashlib.sha256(paths.atlas_summary_json.read_bytes()).hexdigest()
