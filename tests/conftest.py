"""Shared fixtures: compose the real Hydra configs into a tmp run dir, plus a tiny pipeline chain.

The chain fixtures (`tiny_prepared` -> `tiny_trained` -> `tiny_evaluated`) are session-scoped, so
the tiny synthetic set is generated and trained once per test session; tests that modify a run must
copy it first (`copy_run`).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from idc.cli import CONFIG_DIR

REPO = Path(__file__).resolve().parent.parent
SHARED_SAMPLE = REPO.parent / "shared" / "data" / "idc-sample"

# Small enough that every stage runs in seconds on 2 CPU cores.
TINY = [
    "data=tiny",
    "train.epochs=1",
    "train.batch_size=32",
    "explain.lime_num_samples=50",
    "explain.rise_num_masks=64",
    "explain.ig_steps=8",
    "explain.smoothgrad_samples=4",
    "explain.select={tp: 1, tn: 1, fp: 1, fn: 1}",
    "explain.filter_steps=3",
    "explain.filter_count=8",
    "sanity.num_patches=4",
    "sanity.random_labels_epochs=1",
    "sanity.localization_patches=4",
]


def compose_cfg(run_dir: Path, *overrides: str, data_dir: Path | None = None):
    """Compose configs/config.yaml with TINY + overrides, writing under run_dir (and data_dir)."""
    data_dir = Path(data_dir) if data_dir else Path(run_dir) / "_data"
    base = [
        f"run.dir={run_dir}",
        f"data.root={data_dir}/IDC_regular_ps50_idx5",
        f"data.masks_dir={data_dir}/masks",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=TINY + base + list(overrides))


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


requires_sample = pytest.mark.skipif(
    not SHARED_SAMPLE.is_dir(),
    reason=f"real IDC sample not found at {SHARED_SAMPLE} (../shared/data/idc-sample is outside the repo)",
)


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny_data")


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory, tiny_data_dir) -> Path:
    from idc import prepare_data

    run_dir = tmp_path_factory.mktemp("tiny_run")
    prepare_data.run(compose_cfg(run_dir, data_dir=tiny_data_dir))
    return run_dir


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory, tiny_prepared, tiny_data_dir) -> Path:
    from idc import train

    run_dir = copy_run(tiny_prepared, tmp_path_factory.mktemp("trained") / "run")
    train.run(compose_cfg(run_dir, data_dir=tiny_data_dir))
    return run_dir


@pytest.fixture(scope="session")
def tiny_evaluated(tmp_path_factory, tiny_trained, tiny_data_dir) -> Path:
    from idc import evaluate

    run_dir = copy_run(tiny_trained, tmp_path_factory.mktemp("evaluated") / "run")
    evaluate.run(compose_cfg(run_dir, data_dir=tiny_data_dir))
    return run_dir
