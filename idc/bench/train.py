"""Bench section `train`: training and inference images/s of our loop vs. the book's, and the FLOP bound.

All measured in one process, on the data set of the `loader` section (`idc.bench.loader.prepared`).
"""
from __future__ import annotations

import logging
import time

import torch
from torch import nn
from tqdm import tqdm

from idc.bench.loader import BATCH, book_loader, command, cycle, load_note, packed_loader, prepared
from idc.train import StepMeter, train_step

log = logging.getLogger("idc")

TARGET_FRACTION = 0.70
WARMUP = 2
MATMUL_N = 2048


def fresh(cfg, device="cpu"):
    """(model in train mode, Adamax, CrossEntropy), as idc.train builds them, same seed every time."""
    from idc.model import build_model

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


def ours(p, steps: int) -> tuple[int, float]:
    """Our loop (idc.train.fit on CPU): PackedLoader -> model -> CE -> Adamax, deterministic algorithms on."""
    model, opt, crit = fresh(p.cfg)
    loader = packed_loader(p, drop_last=len(p.train_rows) > BATCH)
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
    from torch.utils.flop_counter import FlopCounterMode

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
    from idc.model import predict

    model, _, _ = fresh(p.cfg)
    images = p.images[: min(n, len(p.images))]
    predict(model, images[:256], batch_size=256, desc="warm-up")
    tic = time.perf_counter()
    predict(model, images, batch_size=256)
    return len(images), time.perf_counter() - tic


def cuda_amp(p, steps: int) -> tuple[int, float]:
    """Our loop on the GPU as idc.train runs it there: bf16 autocast, channels_last."""
    device = torch.device("cuda")
    model, opt, crit = fresh(p.cfg, device)
    model = model.to(memory_format=torch.channels_last)
    loader = packed_loader(p, drop_last=len(p.train_rows) > BATCH, device=device)

    def step(x, y):
        train_step(model, x, y, crit, opt, amp_dtype=torch.bfloat16, channels_last=True)
        return len(y)

    return time_steps(step, cycle(loader), steps, "cuda amp", sync=torch.cuda.synchronize)


def run(quick: bool) -> str:
    p = prepared(quick)
    steps = 10 if quick else 40
    log.info("timing %d training steps each (after %d warm-up): ours, book, compute only", steps, WARMUP)
    ours_n, ours_s = ours(p, steps)
    book_n, book_s = book(p, steps)
    comp_n, comp_s = compute_only(p, steps)
    log.info("inference (idc.model.predict, batch 256)")
    inf_n, inf_s = inference(p, 1024 if quick else 4096)
    log.info("FLOP bound: FlopCounterMode on one batch, %dx%d float32 matmul", MATMUL_N, MATMUL_N)
    fpi = flops_per_image(p)
    peak = matmul_flops()
    bound = peak / fpi
    ours_rate, book_rate, comp_rate = ours_n / ours_s, book_n / book_s, comp_n / comp_s
    frac = ours_rate / bound
    rows = [
        f"| ours: PackedLoader + Adamax step | {ours_n} | {ours_s:.2f} | {ours_rate:,.0f} | {frac:.0%} |",
        f"| book: DataLoader(PatchDataset) + Adamax step | {book_n} | {book_s:.2f} | {book_rate:,.0f} | "
        f"{book_rate / bound:.0%} |",
        f"| compute only: one fixed batch, no loading | {comp_n} | {comp_s:.2f} | {comp_rate:,.0f} | "
        f"{comp_rate / bound:.0%} |",
        f"| inference: `predict`, batch 256 (eval mode) | {inf_n} | {inf_s:.2f} | {inf_n / inf_s:,.0f} | |",
    ]
    notes = []
    if torch.cuda.is_available():
        try:
            amp_n, amp_s = cuda_amp(p, steps)
            rows.append(f"| ours on {torch.cuda.get_device_name(0)}: bf16 autocast, channels_last | {amp_n} | "
                        f"{amp_s:.2f} | {amp_n / amp_s:,.0f} | |")
        except Exception as err:  # report, don't hide, a GPU path that fails
            notes.append(f"- The CUDA AMP measurement failed: {type(err).__name__}: {err}")
    else:
        notes.append("- No CUDA device here: the bf16/channels_last GPU row is not measured.")
    verdict = "meets" if frac >= TARGET_FRACTION else "misses"
    return "\n".join([
        "## Training and inference",
        "",
        f"Command: `{command('train', quick)}`. Data: {p.label}. ResNet-18 with the book's 512-256-2 head, "
        f"train mode, Adamax lr {p.cfg.train.lr}, batch {BATCH}, CrossEntropy; {WARMUP} warm-up steps, then {steps} "
        "timed steps per row, data loading included; all rows in one process, default torch threads.",
        "",
        "| Loop | Images | Seconds | Images/s | Fraction of FLOP bound |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
        f"- Ratio ours / book (training): **{ours_rate / book_rate:.2f}x**.",
        f"- FLOP bound: {fpi / 1e9:.3f} GFLOP per training image (forward + backward, `FlopCounterMode`, batch "
        f"{BATCH}) and {peak / 1e9:.1f} GFLOP/s measured by a {MATMUL_N}x{MATMUL_N} float32 matmul (best of 5) "
        f"give {bound:,.0f} images/s. Ours reaches {frac:.0%} of it; the target on CPU is "
        f">= {TARGET_FRACTION:.0%}, so this run {verdict} it.",
        "- The bound counts only matmul/convolution FLOPs and assumes they run at large-matmul speed; the "
        "50x50 inputs give small, late-layer convolutions (2x2 maps in layer4) that run well below it, and "
        "BatchNorm, ReLU, pooling and the optimizer are extra memory-bound work. The compute-only row is the "
        "ceiling for any loader on this model and machine.",
        f"- The CPU may be shared with other work, so single runs vary: {load_note()}",
        *notes,
    ])
