"""Scale-out through the command line: Hydra multirun of explain shards on the joblib launcher, merged.

(torchrun with gloo and 2 processes: tests/test_train.py::test_ddp_two_processes_gloo.)
"""
from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd

from idc.cli import with_job_name
from tests.helpers import REPO, TINY, copy_run


def test_job_name_goes_before_the_overrides_not_before_flags():
    assert with_job_name(["x.py", "-m", "a=1", "b=2"], "explain") == ["x.py", "-m", "hydra.job.name=explain", "a=1", "b=2"]
    assert with_job_name(["x.py"], "train") == ["x.py", "hydra.job.name=train"]
    assert with_job_name(["x.py", "--cfg", "job", "a=1"], "t")[3] == "hydra.job.name=t"


def test_explain_shards_as_a_joblib_multirun_then_merged(tiny_evaluated, tiny_data_dir, tmp_path):
    run = copy_run(tiny_evaluated, tmp_path / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "scripts" / "explain.py"), "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
           f"hydra.sweep.dir={tmp_path}/multirun", *TINY, f"run.dir={run}", f"data.root={tiny_data_dir}/IDC_regular_ps50_idx5",
           f"data.masks_dir={tiny_data_dir}/masks", "explain.methods=[vanilla_backprop]", "explain.visualize=false",
           "explain.num_shards=2", "explain.shard_index=0,1"]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert (run / "explain" / "shards" / "0-of-2" / "maps.npz").exists()
    assert (run / "explain" / "shards" / "1-of-2" / "maps.npz").exists()
    merged = pd.read_csv(run / "explain" / "index.csv")  # the second shard to finish merged both
    assert merged["image_id"].is_unique and 2 <= len(merged) <= 4  # TINY: at most one patch per outcome
