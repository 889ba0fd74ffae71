"""Bench section `sanity`: the wall time of `make sanity` and `make leaderboard` on the default set
(issues 10 and 15).

The stage runs as its own process (`scripts/sanity.py run.force=true`, after `scripts/evaluate.py` has
made sure the trained model and its test predictions exist, so training is not timed), exactly as
`make sanity` runs it; the stage writes `sanity/timing.json` (wall seconds per phase), which this
section turns into a table with the process's total wall time, CPU time and peak RSS.
quick=1 runs it on `data=tiny` with small settings in a temporary run dir (a smoke test of the section).
"""
from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from idc.bench.loader import command, compose
from idc.markdown import markdown_table
from idc.paths import RunPaths

BUDGET_S = 20 * 60  # issue 10: make sanity within 20 minutes on 2 CPU cores, memorization included
QUICK = ["data=tiny", "train.epochs=1", "sanity.num_patches=4", "sanity.smprt_patches=2", "sanity.smprt_samples=1",
         "sanity.random_labels_patches=32", "sanity.random_labels_epochs=2", "sanity.bootstrap=50",
         "leaderboard.bootstrap=50", "leaderboard.num_patches=4", "leaderboard.road_patches=1",
         "leaderboard.variants=[]", "sanity.lime_num_samples=50", "sanity.rise_num_masks=50",
         "leaderboard.lime_num_samples=50", "leaderboard.rise_num_masks=50",
         "leaderboard.methods=[gradcam]", "explain.ig_steps=4", "explain.smoothgrad_samples=2"]


def _stage(script: str, overrides: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"scripts/{script}.py", *overrides], check=True)


def _timed(script: str, overrides: list[str]) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MB of the largest child so far) of `scripts/<script>.py run.force=true`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    tic = time.perf_counter()
    _stage(script, [*overrides, "run.force=true"])
    wall = time.perf_counter() - tic
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, after.ru_maxrss / 1024


def run(quick: bool, overrides: tuple = ()) -> str:
    tmp = None
    overrides = list(overrides)
    if quick:
        tmp = Path(tempfile.mkdtemp(prefix="idc-bench-sanity-"))
        overrides = [*QUICK, f"run.dir={tmp}/run", f"data.root={tmp}/data/IDC_regular_ps50_idx5",
                     f"data.masks_dir={tmp}/data/masks", *overrides]
    try:
        _stage("evaluate", overrides)  # trains first if needed; not timed
        sanity = _timed("sanity", overrides)
        board = _timed("leaderboard", overrides)
        run_dir = next((o.split("=", 1)[1] for o in overrides if o.startswith("run.dir=")), None)
        if run_dir is None:
            run_dir = str(compose(overrides).run.dir)
        timing = json.loads(RunPaths(Path(run_dir)).sanity_timing_json.read_text())
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    rows = [[f"`make sanity`: {phase}", f"{seconds:.0f}"] for phase, seconds in timing.items() if phase != "total"]
    verdict = ("within" if sanity[0] <= BUDGET_S else "over") + f" the {BUDGET_S // 60}-minute budget of issue 10"
    shown = " ".join(overrides) if not quick else "quick=1 (data=tiny, small settings)"
    return "\n".join([
        "## make sanity and make leaderboard", "",
        f"Command: `{command('sanity', quick)}`" + (f" with `{shown}`" if overrides and not quick else "")
        + ": `scripts/sanity.py run.force=true`, then `scripts/leaderboard.py run.force=true`, each as its own "
        "process, on a model trained beforehand (not timed).",
        "",
        f"- `make sanity`: **{sanity[0] / 60:.1f} min wall** ({sanity[0]:.0f} s; {verdict}), {sanity[1]:.0f} CPU-s, "
        f"peak RSS {sanity[2]:.0f} MB.",
        f"- `make leaderboard`: **{board[0] / 60:.1f} min wall** ({board[0]:.0f} s), {board[1]:.0f} CPU-s, "
        f"peak RSS {board[2]:.0f} MB (largest child process so far).",
        "",
        markdown_table(["Phase (sanity/timing.json)", "Wall s"], rows),
    ])
