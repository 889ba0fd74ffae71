"""Bench section `gpu`: training images/s on CUDA (bf16 autocast, channels_last, device-resident batches),
eager vs. `torch.compile`, at the book's batch 64 and larger; the eleven attribution methods over 1,000
patches. Without a CUDA device it writes one line saying so and measures nothing.

The full-size 5-epoch wall time (evaluation included) is the `fullsize` section's GPU part.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import torch

from omegaconf import OmegaConf

from idc.bench.loader import BATCH, command, load_note, prepared
from idc.bench.train import fresh
from idc.config import ExplainConfig
from idc.data.device_loader import DeviceLoader
from idc.explain.driver import compute_maps
from idc.explain.methods import METHODS
from idc.markdown import markdown_table
from idc.model import amp_settings, build_model
from idc.train import train_step

log = logging.getLogger("idc")

BATCHES = (BATCH, 256, 1024)
EXPLAIN_PATCHES = 1000


def no_cuda_section(title: str, section: str, what: str) -> str:
    return "\n".join([
        f"## {title}",
        "",
        f"Command: `{command(section, False)}`.",
        "",
        f"Not measured: no CUDA device on this machine. {what} Run the command on a machine with one; "
        "no GPU number in this file was estimated.",
    ])


def train_rate(p, batch: int, compiled: bool, steps: int) -> dict:
    """Images/s of the training step on CUDA as idc.train runs it there, plus the first step's seconds
    (compilation for `torch.compile`, cuDNN autotuning for both)."""
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    model, opt, crit = fresh(p.cfg, device)
    model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if compiled else model
    amp_dtype, _ = amp_settings(device, True)
    loader = DeviceLoader(p.images, p.targets, p.train_rows, batch, shuffle=True, flip=True, seed=int(p.cfg.seed),
                          drop_last=True, device=device, channels_last=True)
    total = torch.zeros((), device=device)  # losses summed on the device: no host sync per step

    def batches():
        epoch = 0
        while True:
            loader.set_epoch(epoch)
            yield from loader
            epoch += 1

    def step(x, y):
        nonlocal total
        loss, _ = train_step(net, x, y, crit, opt, amp_dtype=amp_dtype, channels_last=True)  # fit()'s step
        total = total + loss.detach()
        return len(y)

    it = batches()
    torch.cuda.synchronize()
    tic = time.perf_counter()
    step(*next(it))
    torch.cuda.synchronize()
    first = time.perf_counter() - tic
    for _ in range(5):  # warm-up after the first step (autotuning of the remaining shapes)
        step(*next(it))
    torch.cuda.synchronize()
    seen, tic = 0, time.perf_counter()
    for _ in range(steps):
        seen += step(*next(it))
    torch.cuda.synchronize()
    seconds = time.perf_counter() - tic
    assert torch.isfinite(total).item(), "non-finite loss in the GPU bench"
    return {"images": seen, "seconds": seconds, "rate": seen / seconds, "first_step_s": first}


def explain_rate(p, n: int) -> list[tuple[str, float]]:
    """Seconds of each method over `n` patches of the bench set, batched by the explain driver on CUDA."""
    device = torch.device("cuda")
    cfg = OmegaConf.structured(ExplainConfig)
    cfg.rise_fill = "grey"  # no reference patches passed here; the fill colour does not change RISE's cost
    torch.manual_seed(0)
    model = build_model(p.cfg.model).to(device).eval()
    images = np.asarray(p.images[:n])
    targets = p.targets[:n]
    compute_maps(model, images[:8], targets[:8], list(METHODS), cfg, device)  # warm-up, every method
    out = []
    for m in METHODS:
        torch.cuda.synchronize()
        tic = time.perf_counter()
        compute_maps(model, images, targets, [m], cfg, device)
        torch.cuda.synchronize()
        out.append((m, time.perf_counter() - tic))
        log.info("bench gpu explain %s: %.1f s for %d patches", m, out[-1][1], len(images))
    return out


def run(quick: bool) -> str:
    if not torch.cuda.is_available():
        return no_cuda_section("GPU", "gpu", "Rows it would write: training images/s eager vs. `torch.compile` at "
                               f"batch {', '.join(map(str, BATCHES))}; the eleven attribution methods over "
                               f"{EXPLAIN_PATCHES:,} patches.")
    p = prepared(quick)
    steps = 20 if quick else 200
    name = torch.cuda.get_device_name(0)
    rows = []
    for batch in BATCHES:
        for compiled in (False, True):
            try:
                r = train_rate(p, batch, compiled, steps)
                rows.append([batch, "torch.compile" if compiled else "eager", r["images"], f"{r['seconds']:.2f}",
                             f"{r['rate']:,.0f}", f"{r['first_step_s']:.1f}"])
            except Exception as err:  # report, don't hide, a GPU path that fails
                rows.append([batch, "torch.compile" if compiled else "eager",
                             f"failed: {type(err).__name__}: {str(err)[:120]}", "", "", ""])
            log.info("bench gpu: %s", " | ".join(map(str, rows[-1])))
    n = 64 if quick else EXPLAIN_PATCHES
    methods = explain_rate(p, n)
    total = sum(s for _, s in methods)
    return "\n".join([
        "## GPU",
        "",
        f"Command: `{command('gpu', quick)}` on {name}. Data: {p.label}.",
        "",
        f"Training step as `idc.train` runs it on CUDA: DeviceLoader (cache resident on the GPU, flips and "
        f"normalization on the device), bf16 autocast, channels_last, Adamax, losses summed on the device; "
        f"6 warm-up steps, then {steps} timed steps per row. 'First step' is the first step's wall time "
        "(compilation for `torch.compile`, cuDNN autotuning for both).",
        "",
        markdown_table(["Batch", "Mode", "Images", "Seconds", "Images/s", "First step (s)"], rows, align="rlrrrr"),
        "",
        f"Attribution, untrained ResNet-18, {n:,} patches of the bench set, book settings, explain driver "
        f"batch {64}: seconds per method (all {len(methods)}: {total:.1f} s).",
        "",
        markdown_table(["Method", "Seconds", "ms/patch"], [[m, f"{s:.2f}", f"{1000 * s / n:.2f}"] for m, s in methods],
                       align="lrr"),
        "",
        f"Host: {load_note()}",
    ])
