"""Helpers shared by the test modules: compose the real Hydra configs into a tmp run dir, copy runs,
run stage scripts in a subprocess. Test modules import from here (never from conftest)."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SHARED_SAMPLE = REPO.parent / "shared" / "data" / "idc-sample"
CONFIG_DIR = str(REPO / "configs")

# Small enough that every stage runs in seconds on 2 CPU cores.
TINY = [
    "data=tiny",
    "train.epochs=1",
    "train.batch_size=32",
    "explain.lime_num_samples=50",
    "explain.rise_num_masks=16",
    "explain.ig_steps=8",
    "explain.smoothgrad_samples=4",
    "explain.select={tp: 1, tn: 1, fp: 1, fn: 1}",
    "explain.filter_steps=3",
    "explain.filter_count=8",
    "sanity.num_patches=4",
    "sanity.random_labels_epochs=1",
    # the sanity stage's own multipliers (the defaults are sized for a real run, not a test)
    "sanity.smprt_samples=1",
    "sanity.smprt_patches=2",
    "sanity.random_labels_patches=32",
    "leaderboard.num_patches=4",
    "leaderboard.bootstrap=200",
    "leaderboard.variants=[]",
    "leaderboard.road_patches=1",
    "leaderboard.nucleus_patches=2",
]


def data_overrides(run_dir: Path, data_dir: Path | None = None) -> list[str]:
    data_dir = Path(data_dir) if data_dir else Path(run_dir) / "_data"
    return [f"run.dir={run_dir}", f"data.root={data_dir}/IDC_regular_ps50_idx5", f"data.masks_dir={data_dir}/masks"]


def compose_cfg(run_dir: Path, *overrides: str, data_dir: Path | None = None):
    """Compose configs/config.yaml with TINY + overrides, writing under run_dir (and data_dir)."""
    from hydra import compose, initialize_config_dir

    import idc.config  # noqa: F401  (registers the structured config schema)

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=TINY + data_overrides(run_dir, data_dir) + list(overrides))


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@contextlib.contextmanager
def one_thread():
    """torch's intra-op threads as in the stage subprocesses (OMP_NUM_THREADS=1, as torchrun sets it per
    rank), restored after: in-process and subprocess runs then agree bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def stage_error(stage: str, cfg, caplog) -> str:
    """Run a stage through the entry layer; it must exit 2 with exactly one ERROR line, returned."""
    from idc.cli import run_stage

    with pytest.raises(SystemExit) as exc:
        run_stage(stage, cfg)
    assert exc.value.code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    return errors[0]


def run_script(script: Path | str, run_dir, data_dir, *overrides, launcher=(sys.executable,), env=None, timeout=600):
    """Run an entry script (scripts/<stage>.py or a helper script) with TINY + overrides in a subprocess."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(env or {})}
    cmd = [*launcher, str(script), *TINY, *data_overrides(run_dir, data_dir), *overrides]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


requires_sample = pytest.mark.skipif(
    not SHARED_SAMPLE.is_dir(),
    reason=f"real IDC sample not found at {SHARED_SAMPLE} (../shared/data/idc-sample is outside the repo)",
)


@contextlib.contextmanager
def small_tmpfs(folder, size: str):
    """A tmpfs of `size` mounted on `folder` for the block: a disk that fills up. Needs root (CI runs as root);
    unmounted whatever happens."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a full disk is simulated with a small tmpfs, which only root can mount")
    folder.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True,
                         text=True)
    if out.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({out.stderr.strip()}): no small disk to fill")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(path) -> None:
    """Write zeros into `path` until its disk is full."""
    with contextlib.suppress(OSError), open(path, "wb") as fh:
        while True:
            fh.write(bytes(1 << 16))
            fh.flush()
