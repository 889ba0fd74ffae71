"""Bench section `train`: training and inference images/s of our loop vs. the book's, and the FLOP bound.

All measured in one process, on the data set of the `loader` section (`idc.bench.loader.prepared`).
"""
from __future__ import annotations

import logging
import os
import time

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from idc.bench.loader import BATCH, book_loader, command, cycle, load_note, packed_loader, prepared
from idc.data.device_loader import DeviceLoader
from idc.markdown import markdown_table
from idc.model import build_model, predict
from idc.train import StepMeter, train_step

log = logging.getLogger("idc")

TARGET_FRACTION = 0.70
LOADING_TARGET = 0.95  # our loop vs. the same steps on one fixed batch
WARMUP = 2
MATMUL_N = 2048


def fresh(cfg, device="cpu"):
    """(model in train mode, Adamax, CrossEntropy), as idc.train builds them, same seed every time."""
    torch.manual_seed(int(cfg.seed))
    model = build_model(cfg.model).to(device).train()
    return model, torch.optim.Adamax(model.parameters(), lr=float(cfg.train.lr)), nn.CrossEntropyLoss()


def time_steps(step, batches, steps: int, desc: str, sync=lambda: None) -> tuple[int, float]:
    """(images, seconds) of `steps` training steps after WARMUP untimed ones; data loading included."""
    for _ in range(WARMUP):
        step(*next(batches))
    sync()
    seen, tic = 0, time.perf_counter()
    for _ in tqdm(range(steps), desc=desc, unit="step", leave=False):
        seen += step(*next(batches))
    sync()
    return seen, time.perf_counter() - tic


def ours(p, steps: int, loader: str = "packed") -> tuple[int, float]:
    """Our loop (idc.train.fit on CPU): PackedLoader (or DeviceLoader on the CPU) -> model -> CE -> Adamax,
    deterministic algorithms on."""
    model, opt, crit = fresh(p.cfg)
    drop_last = len(p.train_rows) > BATCH
    if loader == "device":
        loader = DeviceLoader(p.images, p.targets, p.train_rows, BATCH, shuffle=True, flip=True, seed=int(p.cfg.seed),
                              drop_last=drop_last)
    else:
        loader = packed_loader(p, drop_last=drop_last)
    was_det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)  # as fit() does on CPU

    meter = StepMeter("train", 0, 0, sync_every=1)  # as fit() on CPU: loss and accuracy read every step

    def step(x, y):
        loss, logits = train_step(model, x, y, crit, opt)  # the training step fit() runs
        meter.add(loss, len(y), (logits.argmax(1) == y).sum())
        return len(y)

    try:
        return time_steps(step, cycle(loader), steps, "ours")
    finally:
        torch.use_deterministic_algorithms(was_det)


def book(p, steps: int) -> tuple[int, float]:
    """The book's loop, as printed: DataLoader(PatchDataset) -> zero_grad, forward, loss, backward, step."""
    model, opt, crit = fresh(p.cfg)

    def batches():
        for x, y in cycle(book_loader(p)):
            if len(y) > 1:  # a last batch of one image would fail in BatchNorm1d (the book's data never has one)
                yield x, y

    def step(images, labels):
        opt.zero_grad()
        outputs = model(images)
        loss = crit(outputs, labels)
        loss.backward()
        opt.step()
        running_loss = loss.item() * images.size(0)  # noqa: F841  (the book accumulates it)
        return len(labels)

    return time_steps(step, batches(), steps, "book")


def compute_only(p, steps: int) -> tuple[int, float]:
    """Forward+backward+Adamax on one fixed batch: the loop without any data loading."""
    model, opt, crit = fresh(p.cfg)
    x, y = next(iter(packed_loader(p)))

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        crit(model(x), y).backward()
        opt.step()
        return len(y)

    return time_steps(step, iter(lambda: (x, y), None), steps, "compute only")


def flops_per_image(p) -> float:
    model, _, crit = fresh(p.cfg)
    x, y = next(iter(packed_loader(p)))
    with FlopCounterMode(display=False) as counter:
        crit(model(x), y).backward()
    return counter.get_total_flops() / len(y)


def matmul_flops(reps: int = 5) -> float:
    """The machine's float32 FLOP/s: best of `reps` NxN matmuls (default thread count)."""
    a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(reps):
        tic = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - tic)
    return 2 * MATMUL_N ** 3 / best


def inference(p, n: int) -> tuple[int, float]:
    model, _, _ = fresh(p.cfg)
    images = p.images[: min(n, len(p.images))]
    predict(model, images[:256], batch_size=256, desc="warm-up")
    tic = time.perf_counter()
    predict(model, images, batch_size=256)
    return len(images), time.perf_counter() - tic


def interleaved(p, steps: int, rounds: int) -> dict:
    """Ours and compute-only in alternating rounds (A B A B ...), so that a change in the machine's load
    hits both: the ratio per round, its median, and the totals per loop."""
    out = {"ours": [0, 0.0], "compute": [0, 0.0], "ratios": [], "loads": []}
    for _ in range(rounds):
        a_n, a_s = ours(p, steps)
        b_n, b_s = compute_only(p, steps)
        out["ours"][0] += a_n
        out["ours"][1] += a_s
        out["compute"][0] += b_n
        out["compute"][1] += b_s
        out["ratios"].append((a_n / a_s) / (b_n / b_s))
        out["loads"].append(os.getloadavg()[0])
    return out


def row(name: str, n: int, s: float, bound: float | None = None) -> list:
    frac = f"{n / s / bound:.0%}" if bound else ""
    return [name, n, f"{s:.2f}", f"{n / s:,.0f}", frac, f"{os.getloadavg()[0]:.1f}"]


def run(quick: bool) -> str:
    p = prepared(quick)
    steps, rounds = (10, 2) if quick else (40, 3)
    log.info("FLOP bound: FlopCounterMode on one batch, %dx%d float32 matmul", MATMUL_N, MATMUL_N)
    fpi = flops_per_image(p)
    peak = matmul_flops()
    bound = peak / fpi
    log.info("timing %d rounds of %d training steps (after %d warm-up): ours, compute only", rounds, steps, WARMUP)
    il = interleaved(p, steps, rounds)
    ours_n, ours_s = il["ours"]
    comp_n, comp_s = il["compute"]
    rows = [row("ours: PackedLoader + Adamax step", ours_n, ours_s, bound),
            row("compute only: one fixed batch, no loading", comp_n, comp_s, bound)]
    log.info("timing ours with DeviceLoader on the CPU, then the book's loop")
    dev_n, dev_s = ours(p, steps, loader="device")
    rows.append(row("ours: DeviceLoader on the CPU + Adamax step", dev_n, dev_s, bound))
    book_n, book_s = book(p, steps)
    rows.append(row("book: DataLoader(PatchDataset) + Adamax step", book_n, book_s, bound))
    log.info("inference (idc.model.predict, batch 256)")
    inf_n, inf_s = inference(p, 1024 if quick else 4096)
    rows.append(row("inference: `predict`, batch 256 (eval mode)", inf_n, inf_s))
    ours_rate, book_rate, comp_rate = ours_n / ours_s, book_n / book_s, comp_n / comp_s
    frac = ours_rate / bound
    ratio = float(np.median(il["ratios"]))
    verdict = "meets" if frac >= TARGET_FRACTION else "misses"
    return "\n".join([
        "## Training and inference",
        "",
        f"Command: `{command('train', quick)}`. Data: {p.label}. ResNet-18 with the book's 512-256-2 head, "
        f"train mode, Adamax lr {p.cfg.train.lr}, batch {BATCH}, CrossEntropy; {WARMUP} warm-up steps, then {steps} "
        f"timed steps per row ({rounds} rounds for the first two rows), data loading included; all rows in one "
        "process, default torch threads. The last column is the 1-minute load average when the row ended "
        f"({os.cpu_count()} cores).",
        "",
        markdown_table(["Loop", "Images", "Seconds", "Images/s", "Fraction of FLOP bound", "Load after row"], rows,
                       align="lrrrrr"),
        "",
        f"- Ours / compute only, median of {rounds} alternating rounds: **{ratio:.1%}** (rounds: "
        + ", ".join(f"{r:.1%} at load {ld:.1f}" for r, ld in zip(il["ratios"], il["loads"]))
        + f"); the target is >= {LOADING_TARGET:.0%}, so this run {'meets' if ratio >= LOADING_TARGET else 'misses'} it. "
        "Both loops run in one process, alternately, so a change in the machine's load hits both.",
        f"- Ratio ours / book (training): **{ours_rate / book_rate:.2f}x**; DeviceLoader / PackedLoader on the CPU: "
        f"{(dev_n / dev_s) / ours_rate:.2f}x.",
        f"- FLOP bound: {fpi / 1e9:.3f} GFLOP per training image (forward + backward, `FlopCounterMode`, batch "
        f"{BATCH}) and {peak / 1e9:.1f} GFLOP/s measured by a {MATMUL_N}x{MATMUL_N} float32 matmul (best of 5) "
        f"give {bound:,.0f} images/s. Ours reaches {frac:.0%} of it; the target on CPU is "
        f">= {TARGET_FRACTION:.0%}, so this run {verdict} it.",
        "- The bound counts only matmul/convolution FLOPs and assumes they run at large-matmul speed; the "
        "50x50 inputs give small, late-layer convolutions (2x2 maps in layer4) that run well below it, and "
        "BatchNorm, ReLU, pooling and the optimizer are extra memory-bound work. The compute-only row is the "
        "ceiling for any loader on this model and machine.",
        f"- The CPU may be shared with other work, so single runs vary: {load_note()}",
        "- GPU rows (bf16, channels_last, eager vs `torch.compile`, larger batches): section `gpu` below.",
    ])
