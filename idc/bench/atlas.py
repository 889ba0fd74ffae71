"""Bench section `atlas`: the attribution landscapes (`make atlas`) of every default test patient, per method,
against the model's own forward+backward rate on the same patches (issue 26: Grad-CAM in under a minute and
integrated gradients, blur baseline, 50 steps, in under ten, on 2 CPU cores).

Each method runs the stage as `make atlas` runs it, as its own process (`scripts/atlas.py run.auto=false
atlas.methods=[<method>]`), in a scratch run directory whose data/ and model/ link to the trained run's, so the
user's atlas/ is neither reused nor overwritten. The stage logs each patient's compute time (prediction and
maps); the process's wall time adds start-up, loading, the merge, the figures and the full-resolution overlays.
The reference rate is one forward and one backward pass of the same model to its input (what a gradient map
costs at least), on the test patches in batches of `atlas.batch_size`, in this process at the same thread count.
quick=1: `data=tiny`, one epoch, 4 IG steps, in a temporary folder (a smoke test of the section).
"""
from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from idc.bench.loader import command, compose, load_note
from idc.data.dataset import normalize_batch
from idc.inputs import load_run
from idc.markdown import markdown_table
from idc.paths import RunPaths

BUDGET_S = {"gradcam": 60, "integrated_gradients": 600}  # issue 26, on 2 CPU cores
QUICK = ["data=tiny", "train.epochs=1", "explain.ig_steps=4"]
COMPUTED = re.compile(r"atlas: computed patient (\d+) \((\d+) patches, [^)]*\) in ([\d.]+) s")


def script(name: str, overrides: list[str], capture: bool = False) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, f"scripts/{name}.py", *overrides], capture_output=capture, text=True)
    if out.returncode:
        sys.exit(f"scripts/{name}.py {' '.join(overrides)} failed ({out.returncode})"
                 + (f":\n{(out.stdout + out.stderr)[-3000:]}" if capture else ""))
    return out


def scratch_run(run: RunPaths, folder: Path) -> Path:
    """A run dir whose data/ and model/ link to `run`'s, with its prepare_data and train records (and links to
    the figures they made): the atlas stage finds its inputs up to date there and writes only into the scratch
    dir."""
    folder.mkdir(parents=True)
    for name in ("data", "model"):
        (folder / name).symlink_to((run.root / name).resolve(), target_is_directory=True)
    (folder / "figures").mkdir()
    for fig in run.figures_dir.glob("*.png"):
        if not fig.name.startswith("atlas_"):
            (folder / "figures" / fig.name).symlink_to(fig.resolve())
    (folder / ".stages").mkdir()
    for stage in ("prepare_data", "train"):
        shutil.copyfile(run.stamps_dir / f"{stage}.json", folder / ".stages" / f"{stage}.json")
    return folder


def timed_stage(method: str, overrides: list[str]) -> dict:
    """Run the atlas stage for one method; its wall, CPU and per-patient compute seconds, patches, load."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0, tic = os.getloadavg()[0], time.perf_counter()
    out = script("atlas", [*overrides, f"atlas.methods=[{method}]"], capture=True)
    wall = time.perf_counter() - tic
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    found = COMPUTED.findall(out.stdout + out.stderr)
    return {"method": method, "wall": wall, "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "maps": sum(float(s) for _, _, s in found), "patients": len(found), "patches": sum(int(n) for _, n, _ in found),
            "rss_mb": after.ru_maxrss / 1024, "load": (load0, os.getloadavg()[0])}


def forward_backward_rate(cfg, batch: int, reps: int = 2) -> float:
    """Patches/s of one forward and one backward pass to the input (the explained class's logit) over the test
    patches, best of `reps` passes over (at most) 512 of them."""
    data = load_run(cfg, needs=("patches", "images", "model"))
    rows = data.patches.index[data.patches["split"] == "test"].to_numpy()[:512]
    images, model = np.asarray(data.images[rows]), data.model
    best = float("inf")
    for _ in range(reps):
        tic = time.perf_counter()
        for i in range(0, len(rows), batch):
            x = normalize_batch(images[i:i + batch]).requires_grad_(True)
            model(x)[:, 1].sum().backward()
        best = min(best, time.perf_counter() - tic)
    return len(rows) / best


def rows_of(results: list, rate: float, quick: bool) -> list:
    rows = []
    for r in results:
        per_s = r["patches"] / r["maps"] if r["maps"] else float("nan")
        budget = BUDGET_S[r["method"]]  # the targets are for the default set's test patients only
        verdict = "" if quick else (" (" + ("within" if r["wall"] <= budget else "over") + f" {budget // 60} min)")
        rows.append([r["method"], f"{r['patients']} / {r['patches']:,}", f"{r['maps']:.1f}", f"{per_s:,.1f}",
                     f"{rate / per_s:.1f}", f"**{r['wall']:.1f}**{verdict}", f"{r['cpu']:.0f}", f"{r['rss_mb']:.0f}",
                     f"{r['load'][0]:.1f} / {r['load'][1]:.1f}"])
    return rows


def run(quick: bool, overrides: tuple = ()) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="idc-bench-atlas-"))
    base = list(overrides)
    if quick:
        base = [*QUICK, f"run.dir={tmp}/run", f"data.root={tmp}/data/IDC_regular_ps50_idx5",
                f"data.masks_dir={tmp}/data/masks", *base]
    try:
        script("train", base)  # trains first if needed (up to date: nothing to do); not timed
        cfg = compose(base)
        scratch = scratch_run(RunPaths.from_cfg(cfg), tmp / "scratch")
        stage = [*base, f"run.dir={scratch}", "run.auto=false"]
        results = []
        for method in BUDGET_S:
            shutil.rmtree(scratch / "atlas", ignore_errors=True)
            results.append(timed_stage(method, stage))
        rate = forward_backward_rate(compose(stage), int(cfg.atlas.batch_size))
        summary = json.loads(RunPaths(scratch).atlas_summary_json.read_text())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shown = "quick=1 (data=tiny, 1 epoch, 4 IG steps)" if quick else " ".join(base) or "the default set"
    e = cfg.explain
    return "\n".join([
        "## Attribution landscapes (make atlas)", "",
        f"Command: `{command('atlas', quick)}`" + (f" with `{shown}`" if base and not quick else "") +
        f": `scripts/atlas.py run.auto=false atlas.methods=[<method>]` as its own process per method, every "
        f"{cfg.atlas.split} patient ({len(summary['patients'])} patients, {summary['patches']:,} patches), on the "
        f"model trained beforehand (not timed); IG with the {e.ig_baseline} baseline and {e.ig_steps} steps; "
        f"torch's default threads ({torch.get_num_threads()}).", "",
        markdown_table(["method", "patients / patches", "maps s (sum over patients)", "patches/s",
                        "fwd+bwd passes per patch", "stage wall s (target)", "CPU s", "peak RSS MB",
                        "load avg 1-min before / after"], rows_of(results, rate, quick),
                       align="lrrrrrrrr"), "",
        f"The model's forward+backward rate to the input on the same test patches (batch {cfg.atlas.batch_size}): "
        f"**{rate:,.1f} patches/s**. \"fwd+bwd passes per patch\" = that rate / the method's patches/s: what a "
        "patch costs in units of one gradient pass (Grad-CAM needs one plus the prediction's forward pass; IG "
        "one per step). The stage wall time adds process start, loading the model and cache, the merge, the "
        f"figures and the full-resolution overlays. The CPU seconds are those of the stage process: where they are "
        f"well below 2 x the wall time, other processes had the cores (this machine may be shared). {load_note()}",
    ])
