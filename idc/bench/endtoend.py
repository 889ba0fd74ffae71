"""Bench section `endtoend`: the pipeline on one data set, each stage as its own process the way `make` runs
it (`scripts/<stage>.py run.force=true run.auto=false`, in graph order), with the wall time, CPU time and peak
RSS of each, and the Table 5.1 it ends with.

Default (issue 26): `data=synthetic_full` (279 patients, ~268k patches) through prepare_data, train (the book's
5 epochs), evaluate, landscape and the Grad-CAM attribution landscapes of every test patient (`make atlas
ARGS="atlas.methods=[gradcam]"`). On 2 CPU cores that is hours of dedicated CPU: run it in the background,
alone on the machine (docs/benchmarks.md, "End to end"):

    nohup python -m idc.bench sections=endtoend > endtoend.log 2>&1 &

The generated set is reused when it exists (its generation is then not timed; the table says so).
quick=1: the same stages on `data=tiny` with one epoch, in a temporary folder (a smoke test of the section).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from idc.bench.loader import command, compose, load_note
from idc.markdown import markdown_table
from idc.paths import RunPaths

STAGES = ["prepare_data", "train", "evaluate", "landscape", "atlas"]
BASE = ["data=synthetic_full", "atlas.methods=[gradcam]"]
QUICK = ["data=tiny", "train.epochs=1", "atlas.methods=[gradcam]"]
BOOK_CPU_HOURS = 17  # the book's 5 epochs on a CPU


def timed_process(args: list[str]) -> dict:
    """Run `args`; its wall s, CPU s (user + system) and peak RSS (MB) from its own rusage (os.wait4)."""
    load0, tic = os.getloadavg()[0], time.perf_counter()
    proc = subprocess.Popen(args)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - tic
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"{' '.join(args)} failed ({proc.returncode})")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024,
            "load": (load0, os.getloadavg()[0])}


def hms(seconds: float) -> str:
    h, rest = divmod(int(round(seconds)), 3600)
    return f"{h} h {rest // 60:02d} min" if h else f"{rest // 60} min {rest % 60:02d} s"


def run(quick: bool, overrides: tuple = ()) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="idc-bench-e2e-")) if quick else None
    base = [*BASE, *overrides] if not quick else [*QUICK, f"run.dir={tmp}/run", f"data.root={tmp}/data/IDC_regular_ps50_idx5",
                                                  f"data.masks_dir={tmp}/data/masks", *overrides]
    cfg = compose(base)
    generated = not Path(str(cfg.data.root)).exists()
    rows, total = [], 0.0
    try:
        for stage in STAGES:
            extra = ["run.force=true"] + ([] if stage == "prepare_data" else ["run.auto=false"])
            r = timed_process([sys.executable, f"scripts/{stage}.py", *base, *extra])
            total += r["wall"]
            rows.append([f"`{stage}`", f"**{hms(r['wall'])}**", f"{r['cpu']:,.0f}", f"{r['rss_mb']:,.0f}",
                         f"{r['load'][0]:.1f} / {r['load'][1]:.1f}"])
        title, _, table = RunPaths.from_cfg(cfg).table_5_1.read_text().strip().partition("\n")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    rows.append(["**all**", f"**{hms(total)}**", "", "", ""])
    shown = "quick=1 (data=tiny, 1 epoch)" if quick else " ".join(base)
    return "\n".join([
        "## End to end", "",
        f"Command: `{command('endtoend', quick)}`" + ("" if quick else f" (overrides: `{shown}`)") +
        ": `scripts/<stage>.py run.force=true run.auto=false` per stage, each its own process; the data set was "
        + ("generated in this run (inside prepare_data)." if generated else "already generated (its generation "
           "is not timed; prepare_data indexed and packed it)."), "",
        markdown_table(["stage", "wall", "CPU s", "peak RSS MB", "load avg 1-min before / after"], rows, align="lrrrr"),
        "", f"The book quotes about {BOOK_CPU_HOURS} hours on a CPU for its 5 epochs; `train` above is ours.", "",
        f"{title.lstrip('# ')} of this run (`eval/table_5_1.md`):", table, "", load_note(),
    ])
