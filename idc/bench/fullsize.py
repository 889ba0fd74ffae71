"""Bench section `fullsize`: training at the real set's size (`data=synthetic_full`: 279 patients, ~277k
patches, ~166k for training), where it can run.

- CUDA: the book's 5 epochs through `idc.train.fit` (evaluation of val and test after every epoch
  included), wall time from call to return; once at the book's batch 64 / lr 0.002 and once at batch 512
  with the learning rate scaled by sqrt(512 / 64), with the validation F1 each reaches.
- Both: the landscape figure of every test patient, timed.
- CPU: a fraction of one epoch: our training step over the full memory-mapped cache (random rows of
  a ~2 GB file), against the same steps on one fixed batch in the same process, and inference.
  The time of a whole epoch is projected from the measured rate and labelled so.

The set is prepared (generated, indexed, packed) when missing, on a GPU machine only: on a small CPU
machine that takes long (see "Full-size data" in docs/benchmarks.md), so there it must exist first.
Extra Hydra overrides (e.g. `run.dir=... data.root=...`) choose where the set lives.
"""
from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from idc.bench.loader import command, compose, load_note, packed_loader, prepare, prepared, time_loader
from idc.bench.train import inference, interleaved
from idc.landscape import landscape_figure
from idc.markdown import markdown_table
from idc.paths import RunPaths, file_name
from idc.stitch import original_tiles
from idc.train import fit
from idc.viz.style import close_all, save_figure_atomic

log = logging.getLogger("idc")

BASE = ["data=synthetic_full", "data.eda_figures=false"]
BIG_BATCH = 512


def fit_wall(overrides: list[str]) -> tuple[float, pd.DataFrame]:
    """(seconds, history) of idc.train.fit for `overrides`, into a temporary model dir (removed after)."""
    cfg = compose(overrides)
    model_dir = Path(tempfile.mkdtemp(prefix="idc-bench-fit-"))
    try:
        tic = time.perf_counter()
        fit(cfg, model_dir)
        seconds = time.perf_counter() - tic
        return seconds, pd.read_csv(model_dir / file_name("history_csv"))
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)


def gpu_rows(overrides: list[str], epochs: int, max_batches) -> list[list]:
    lr = 0.002
    cases = [(64, lr), (BIG_BATCH, lr * math.sqrt(BIG_BATCH / 64))]
    rows = []
    for batch, rate in cases:
        extra = [f"train.batch_size={batch}", f"train.lr={rate:g}", f"train.epochs={epochs}", "device=cuda"]
        if max_batches:
            extra.append(f"train.max_batches={max_batches}")
        seconds, hist = fit_wall([*overrides, *extra])
        last = hist.iloc[-1]
        rows.append([batch, f"{rate:.4g}", epochs, f"{seconds:.1f}", f"{hist['seconds'].sum():.1f}",
                     f"{hist['images_per_s'].median():,.0f}", f"{last['val_f1']:.3f}"])
        log.info("bench fullsize: %s", " | ".join(map(str, rows[-1])))
    return rows


def landscape_times(p) -> dict:
    """Seconds to draw the landscape figure (stitched tissue, IDC tint, probability map) of every test patient.

    The figure's cost does not depend on the probability values, and a full-size model may not exist on
    the machine, so the patch labels stand in for P(IDC); inference is timed on its own elsewhere.
    """
    test = p.df[p.df["split"] == "test"]
    out = Path(tempfile.mkdtemp(prefix="idc-bench-landscape-"))
    times = []
    try:
        for pid, sub in test.groupby("patient_id"):
            tic = time.perf_counter()
            tiles = original_tiles(sub, p.images[sub.index.to_numpy()], p.root, p.cfg.data.patch_size)
            fig = landscape_figure(sub, tiles, sub["target"].to_numpy(dtype=float), int(pid))
            save_figure_atomic(fig, out / f"landscape_{pid}.png")
            close_all()
            times.append(time.perf_counter() - tic)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"patients": len(times), "patches": len(test), "total": sum(times),
            "median": float(pd.Series(times).median()) if times else 0.0, "max": max(times, default=0.0)}


def landscape_line(t: dict) -> str:
    return (f"- Landscape figure of every test patient ({t['patients']} patients, {t['patches']:,} patches; "
            f"stitching, three panels, PNG): {t['total']:.1f} s in all, median {t['median']:.2f} s, max {t['max']:.2f} s "
            "per patient. Patch labels stand in for P(IDC) (the drawing cost does not depend on the values); "
            "inference is not included.")


def cpu_rows(p, steps: int, rounds: int) -> tuple[list[list], float, float, list, float]:
    """(table rows, our training images/s, median ours / compute-only over alternating rounds, the ratios,
    milliseconds per batch of the loader alone)."""
    il = interleaved(p, steps, rounds)
    (ours_n, ours_s), (comp_n, comp_s) = il["ours"], il["compute"]
    load_n, load_s = time_loader(packed_loader(p, drop_last=True), 200 * 64, "loading alone")
    inf_n, inf_s = inference(p, 4096)
    rate = ours_n / ours_s
    rows = [["ours: PackedLoader + Adamax step, batch 64", ours_n, f"{ours_s:.2f}", f"{rate:,.0f}"],
            ["compute only: one fixed batch", comp_n, f"{comp_s:.2f}", f"{comp_n / comp_s:,.0f}"],
            ["loading alone: PackedLoader, shuffled and flipped batches of 64, no model", load_n, f"{load_s:.2f}",
             f"{load_n / load_s:,.0f}"],
            ["inference: `predict_proba`, batch 256", inf_n, f"{inf_s:.2f}", f"{inf_n / inf_s:,.0f}"]]
    return rows, rate, float(pd.Series(il["ratios"]).median()), il["ratios"], 1000 * load_s / (load_n / 64)


def run(quick: bool, overrides: tuple = ()) -> str:
    overrides = list(overrides)
    cuda = torch.cuda.is_available()
    if quick:
        p, prep_s, note = prepared(True), 0.0, "quick run: the tiny set stands in for the full-size one"
        overrides = ["data=tiny", f"run.dir={p.cfg.run.dir}", f"data.root={p.cfg.data.root}",
                     f"data.masks_dir={p.cfg.data.masks_dir}", "data.eda_figures=false"]
    else:
        overrides = [*BASE, *overrides]
        cfg = compose(overrides)
        if not cuda and not RunPaths.from_cfg(cfg).patches_csv.exists():
            return "\n".join([
                "## Full size", "", f"Command: `{command('fullsize', quick)}`.", "",
                f"Not run: the full-size set is not prepared under {cfg.run.dir} and this machine has no GPU. "
                "Prepare it first (`python scripts/prepare_data.py data=synthetic_full`; its time on 2 cores is in "
                "'Full-size data' below), then re-run the command.",
            ])
        tic = time.perf_counter()
        p = prepare(cfg)
        prep_s, note = time.perf_counter() - tic, ""
    head = [f"Command: `{command('fullsize', quick)}`" + (f" with `{' '.join(overrides[len(BASE):])}`"
                                                         if not quick and len(overrides) > len(BASE) else "")
            + f". Data: {p.label}; preparing or reusing it took {prep_s:.0f} s in this run. {note}".rstrip()]
    if cuda:
        epochs, max_batches = (1, 5) if quick else (5, None)
        rows = gpu_rows(overrides, epochs, max_batches)
        land = landscape_times(p)
        return "\n".join([
            "## Full size", "", *head, "",
            f"`idc.train.fit` on {torch.cuda.get_device_name(0)} (its defaults on CUDA), {epochs} epoch(s), "
            "evaluation of val and test after every epoch included in the wall time.", "",
            markdown_table(["Batch", "lr", "Epochs", "Wall s (fit call)", "Training s (sum of epochs)",
                            "Images/s (median epoch)", "Val F1, last epoch"], rows, align="rrrrrrr"), "",
            "The book's target on one H100: 5 epochs in < 60 s (>= 14k images/s sustained, evaluation included).",
            landscape_line(land),
        ])
    steps, rounds = (5, 2) if quick else (10, 6)
    rows, rate, ratio, ratios, load_ms = cpu_rows(p, steps, rounds)
    land = landscape_times(p)
    n_train = len(p.train_rows)
    return "\n".join([
        "## Full size", "", *head, "",
        f"CPU: {rounds} alternating rounds (ours, then compute only) of {steps} training steps each (after 2 warm-up "
        "steps per round), a fraction of one epoch, over the full memory-mapped cache; the compute-only loop repeats "
        "one fixed batch. Alternating rounds in one process make a drift in the machine's speed hit both loops.", "",
        markdown_table(["Loop", "Images", "Seconds", "Images/s"], rows, align="lrrr"), "",
        f"- Ours / compute only, median of {rounds} rounds: **{ratio:.1%}** (rounds: "
        + ", ".join(f"{r:.0%}" for r in ratios) + "). The loading-alone row is the direct cost of the data path: "
        f"{load_ms:.1f} ms per batch of 64.",
        f"- Projected from the measured rate (not measured): one epoch of {n_train:,} training patches takes "
        f"{n_train / rate / 3600:.2f} h on this CPU, the book's 5 epochs {5 * n_train / rate / 3600:.1f} h "
        "(evaluation not included).",
        landscape_line(land),
        f"- {load_note()}",
    ])
