"""Session fixtures: the tiny pipeline chain (`tiny_prepared` -> `tiny_trained` -> `tiny_evaluated`),
each built once per test session through the stage graph (`idc.pipeline.build`), so every later
stage finds its inputs up to date. Tests that modify a run copy it first (`tests.helpers.copy_run`).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.helpers import compose_cfg, copy_run

# Under pytest-xdist (`make test` runs two workers on the two cores), each worker computes on one
# thread: two workers with two threads each would fight over the cores and run slower than one.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def _build(stage: str, run_dir: Path, data_dir: Path) -> Path:
    from idc.pipeline import build

    build(stage, compose_cfg(run_dir, data_dir=data_dir))
    return run_dir


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny_data")


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory, tiny_data_dir) -> Path:
    return _build("prepare_data", tmp_path_factory.mktemp("tiny_run"), tiny_data_dir)


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory, tiny_prepared, tiny_data_dir) -> Path:
    return _build("train", copy_run(tiny_prepared, tmp_path_factory.mktemp("trained") / "run"), tiny_data_dir)


@pytest.fixture(scope="session")
def tiny_evaluated(tmp_path_factory, tiny_trained, tiny_data_dir) -> Path:
    return _build("evaluate", copy_run(tiny_trained, tmp_path_factory.mktemp("evaluated") / "run"), tiny_data_dir)
