"""Bench section `sanity`: the wall time of `make sanity` and `make leaderboard` on the default set
(issues 10, 15 and 23: both together within 40 minutes on 2 CPU cores, at the 24-patient evaluation cohort).

Each stage runs as its own process (`scripts/sanity.py run.force=true`, then `scripts/leaderboard.py
run.force=true`, after `scripts/evaluate.py` has made sure the trained model and its test predictions exist,
so training is not timed), exactly as `make sanity` and `make leaderboard` run them. The stages write
`sanity/timing.json` and `sanity/leaderboard_timing.json` (wall seconds per phase, and the images that went
through the network: `idc.model.counting_images`); this section turns them into tables with each process's
wall time, CPU time and peak RSS, and compares the wall time with the floor those network passes set: the
images without autograd at the forward rate and those with autograd at the forward + backward rate of the
same network, measured here at batch 128 with the stages' thread count.
quick=1 runs it on `data=tiny` with small settings in a temporary run dir (a smoke test of the section).
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from idc.bench.loader import command, compose
from idc.markdown import markdown_table
from idc.model import build_model, inference_layout
from idc.paths import RunPaths

BUDGET_S = 40 * 60  # issue 23: make sanity + make leaderboard within 40 minutes on 2 CPU cores, at the larger cohort
QUICK = ["data=tiny", "train.epochs=1", "sanity.num_patches=4", "sanity.smprt_patches=2", "sanity.smprt_samples=1",
         "sanity.random_labels_patches=32", "sanity.random_labels_epochs=2",
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


def network_rates(batch: int = 128, reps: int = 3) -> tuple[float, float]:
    """(images/s forward without autograd, images/s forward + backward) of the default network in the layout the
    two stages run it in (`idc.model.inference_layout`), best of `reps`."""
    torch.manual_seed(0)
    model, x = inference_layout(build_model({"head": [512, 256]}).eval()), torch.randn(batch, 3, 50, 50)

    def best(step) -> float:
        step()  # warm-up
        times = []
        for _ in range(reps):
            tic = time.perf_counter()
            step()
            times.append(time.perf_counter() - tic)
        return batch / min(times)

    with torch.no_grad():
        forward = best(lambda: model(x))
    backward = best(lambda: torch.autograd.grad(model(x.requires_grad_(True))[:, 1].sum(), x))
    return forward, backward


def phase_rows(stage: str, timing: dict, top: int = 12) -> list:
    """The stage's phases, largest first; beyond `top`, the rest summed in one row."""
    phases = sorted(((k, v) for k, v in timing.items() if k not in ("total", "network_images")), key=lambda kv: -kv[1])
    rows = [[f"`{stage}`: {k}", f"{v:.0f}"] for k, v in phases[:top]]
    if len(phases) > top:
        rows.append([f"`{stage}`: {len(phases) - top} other phases", f"{sum(v for _, v in phases[top:]):.0f}"])
    return rows


def floor_line(stage: str, wall: float, timing: dict, rates: tuple[float, float]) -> str:
    """How the stage's wall time compares with the network passes its maps and scores need."""
    n = timing.get("network_images", {})
    if not n:
        return f"- `{stage}`: no network count in its timing file."
    plain, grad = n["images"] - n["with_grad"], n["with_grad"]
    floor = plain / rates[0] + grad / rates[1]
    return (f"- `{stage}`: {n['images']:,} images through the network ({grad:,} with autograd); at the rates above "
            f"that is **{floor / 60:.1f} min**, {100 * floor / wall:.0f}% of its {wall / 60:.1f} min wall.")


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
        load = os.getloadavg()
        rates = network_rates()
        run_dir = next((o.split("=", 1)[1] for o in overrides if o.startswith("run.dir=")), None)
        if run_dir is None:
            run_dir = str(compose(overrides).run.dir)
        paths = RunPaths(Path(run_dir))
        timing = json.loads(paths.sanity_timing_json.read_text())
        board_timing = json.loads(paths.leaderboard_timing_json.read_text())
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    both = sanity[0] + board[0]
    verdict = ("within" if both <= BUDGET_S else "over") + f" the {BUDGET_S // 60}-minute budget of issue 23 for both"
    shown = " ".join(overrides) if not quick else "quick=1 (data=tiny, small settings)"
    return "\n".join([
        "## make sanity and make leaderboard", "",
        f"Command: `{command('sanity', quick)}`" + (f" with `{shown}`" if overrides and not quick else "")
        + ": `scripts/sanity.py run.force=true`, then `scripts/leaderboard.py run.force=true`, each as its own "
        "process, on a model trained beforehand (not timed).",
        "",
        f"- `make sanity`: **{sanity[0] / 60:.1f} min wall** ({sanity[0]:.0f} s), {sanity[1]:.0f} CPU-s, "
        f"peak RSS {sanity[2]:.0f} MB.",
        f"- `make leaderboard`: **{board[0] / 60:.1f} min wall** ({board[0]:.0f} s), {board[1]:.0f} CPU-s, "
        f"peak RSS {board[2]:.0f} MB (largest child process so far).",
        f"- Both: **{both / 60:.1f} min wall** ({verdict}); load average {load[0]:.1f} / {load[1]:.1f} / "
        f"{load[2]:.1f} (1 / 5 / 15 min) on {os.cpu_count()} cores at the end"
        + (" (other processes shared the CPU: the wall times are pessimistic)" if load[1] > 2.5 else "") + ".",
        "",
        f"Network passes: the default network runs {rates[0]:.0f} images/s forward and {rates[1]:.0f} images/s "
        "forward + backward (batch 128, channels-last as in the stages, measured right after them).",
        floor_line("make sanity", sanity[0], timing, rates),
        floor_line("make leaderboard", board[0], board_timing, rates),
        "",
        markdown_table(["Phase (sanity/timing.json, sanity/leaderboard_timing.json)", "Wall s"],
                       phase_rows("make sanity", timing) + phase_rows("make leaderboard", board_timing)),
    ])
