"""Stage `make train`: the book's training (ResNet-18, Adamax 0.002, batch 64, 5 epochs), made fast
(packed uint8 cache, batched flips), resumable (atomic per-epoch checkpoints with RNG state) and
distributed (`torchrun --nproc_per_node=N scripts/train.py`, DDP; only rank 0 writes).

Laid out like torchvision's references/classification/train.py: `train_step` and `train_one_epoch`
(any iterable of (x, y) batches), `evaluate` (the one inference function, `idc.model.predict`),
`resume` and `save_epoch` for checkpoints, and `fit`, which wires them together.
"""
from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf
from torch import nn
from tqdm import tqdm

from idc import distributed as D
from idc.data.device_loader import eval_inputs, make_loader
from idc.errors import CheckpointError, ConfigError, IdcError
from idc.inputs import load_run
from idc.integrity import keep_previous
from idc.metrics import binary_scores
from idc.model import amp_settings, as_dict, autocast, build_model, predict, read_checkpoint, save_checkpoint
from idc.paths import RunPaths, file_name
from idc.tracking import tracker
from idc.utils import ensure_writable, resolve_device, seed_everything, vouch_output, write_csv_atomic, wrote

log = logging.getLogger("idc")


class TrainingError(IdcError):
    """Training cannot go on (e.g. a non-finite loss)."""


def make_optimizer(cfg, params):
    name = cfg.train.optimizer.lower()
    if name == "adamax":
        return torch.optim.Adamax(params, lr=cfg.train.lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg.train.lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg.train.lr, momentum=0.9)
    raise ConfigError(f"train.optimizer={cfg.train.optimizer!r} is not known; use adamax (the book), adam or sgd")


def class_weights(targets: np.ndarray) -> torch.Tensor:
    counts = np.bincount(targets, minlength=2).astype(np.float64)
    return torch.tensor(counts.sum() / (2 * np.maximum(counts, 1)), dtype=torch.float32)


class StepMeter:
    """Per-batch losses of one split in one epoch, kept on the device and read back in blocks.

    Each `.item()` waits for the GPU, so on CUDA the losses are fetched every `sync_every` batches
    (on CPU it is free: every batch). Rows go to history_steps.csv: the batch loss and the running
    mean over the epoch so far (what the book's "Loss Curve by Step" draws), `step` counting on
    across epochs per split.
    """

    def __init__(self, split: str, epoch: int, first_step: int, sync_every: int = 1):
        self.split, self.epoch, self.step, self.sync_every = split, epoch, first_step, sync_every
        self.pending, self.rows = [], []
        self.seen, self.loss_sum, self.correct = 0, 0.0, 0

    def add(self, loss: torch.Tensor, n: int, correct: torch.Tensor | None = None):
        """Queue one batch; returns (step, loss) of a non-finite loss once it has been read back, else None."""
        self.pending.append((loss.detach().float(), n, correct))
        return self.flush() if len(self.pending) >= self.sync_every else None

    def flush(self):
        if not self.pending:
            return None
        losses = torch.stack([p[0] for p in self.pending]).cpu().tolist()
        counts = [p[2] for p in self.pending if p[2] is not None]
        if counts:
            self.correct += int(torch.stack(counts).sum())
        batches, self.pending = self.pending, []
        for value, (_, n, _) in zip(losses, batches):
            self.step += 1
            if not np.isfinite(value):
                return self.step, value
            self.seen += n
            self.loss_sum += value * n
            self.rows.append({"split": self.split, "epoch": self.epoch, "step": self.step, "loss": value,
                              "running_loss": self.loss_sum / self.seen})
        return None

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(self.seen, 1)


def rng_state() -> dict:
    """Every RNG the loop draws from (python, numpy, torch CPU and CUDA), in weights_only-loadable types."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def non_finite(bad, epoch: int, last_pt: Path, lr: float) -> TrainingError:
    step, value = bad
    return TrainingError(
        f"non-finite training loss ({value}) at epoch {epoch + 1}, step {step}; stopped. "
        f"The last good checkpoint is {last_pt if last_pt.exists() else 'none (first epoch)'}. "
        f"Lower train.lr (now {lr}) or check the data."
    )


# ---------------------------------------------------------------- one step, one epoch, evaluation
def train_step(net, x, y, criterion, optimizer, scaler=None, amp_dtype=None, channels_last: bool = False):
    """One optimizer step on a batch: (loss, logits), both still on the device."""
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(x.device, amp_dtype):
        logits = net(x)
        loss = criterion(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss, logits


def train_one_epoch(net, criterion, optimizer, batches, meter: StepMeter, *, max_batches: Optional[int] = None,
                    scaler=None, amp_dtype=None, channels_last: bool = False, show: bool = True):
    """Train on an iterable of (x, y) batches (any loader); losses go to `meter`.

    Returns (step, loss) of the first non-finite loss, or None. Stops after `max_batches` batches.
    """
    net.train()
    total = len(batches) if max_batches is None else min(len(batches), max_batches)
    bar = tqdm(batches, total=total, desc=f"epoch {meter.epoch + 1}", unit="batch", disable=not show)
    tic = time.perf_counter()
    for i, (x, y) in enumerate(bar):
        if i >= total:
            break
        loss, logits = train_step(net, x, y, criterion, optimizer, scaler, amp_dtype, channels_last)
        bad = meter.add(loss, len(y), (logits.argmax(1) == y).sum())
        if bad is not None:
            return bad
        if meter.rows and (i + 1) % meter.sync_every == 0:
            bar.set_postfix(loss=f"{meter.rows[-1]['running_loss']:.3f}",
                            img_s=f"{meter.seen / (time.perf_counter() - tic):.0f}")
    return meter.flush()


def evaluate(model, images, rows, targets, meter: StepMeter, batch_size: int, amp_dtype=None) -> np.ndarray:
    """P(IDC) of `rows` of the cache in eval mode (the one inference function); batch losses go to `meter`."""
    proba = predict(model, images, rows=rows, batch_size=batch_size, amp_dtype=amp_dtype, targets=targets[rows],
                    on_loss=meter.add, desc=meter.split)
    meter.flush()
    return proba[:, 1]


# ---------------------------------------------------------------- checkpoints
def resume(last_pt: Path, data_hash: str, model, optimizer, scaler, device) -> Tuple[int, float, list, list]:
    """Restore model, optimizer, scaler and RNG state from last.pt: (next epoch, best score, history, steps)."""
    afresh = f"delete {last_pt} or set train.resume=false to start afresh"  # `make train` alone fails again
    ckpt = read_checkpoint(last_pt, device, fix=afresh)
    if ckpt.get("data_hash") != data_hash:
        raise CheckpointError(f"{last_pt} was trained on another data/patches.csv; cannot resume. "
                              f"Delete {last_pt} or set train.resume=false, or use the matching run.dir")
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
    except (KeyError, RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{last_pt} does not fit the configured model or optimizer ({first}); {afresh}") from None
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    restore_rng(ckpt["rng"])
    start = ckpt["epoch"] + 1
    log.info("resumed from %s at epoch %d", last_pt, start + 1)
    best = ckpt["best_score"]
    return (start, best, [r for r in ckpt.get("history", []) if r["epoch"] < start],
            [r for r in ckpt.get("steps", []) if r["epoch"] < start])


def save_epoch(cfg, model_dir: Path, model, optimizer, scaler, history: list, steps: list, best: float,
               data_hash: str, by_f1: bool = True) -> float:
    """Write last.pt (and best.pt when the val score improved), history.csv and history_steps.csv; the new
    best score: val F1, or minus the val loss where the val split has one class (F1 undefined)."""
    row = history[-1]
    score = row["val_f1"] if by_f1 else -row["val_loss"]
    payload = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {}, "epoch": row["epoch"],
        "rng": rng_state(), "model_cfg": as_dict(cfg.model),
        "train_cfg": OmegaConf.to_container(cfg.train, resolve=True), "data_hash": data_hash,
        "history": history, "steps": steps, "best_val_f1": max(r["val_f1"] for r in history),
        "best_score": max(best, score), "best_by": "val_f1" if by_f1 else "val_loss",
    }
    if score > best:
        best = score
        best_pt = save_checkpoint(model_dir / file_name("best_pt"), payload)
        log.info("epoch %d: val %s %.3f is the best so far: wrote %s", row["epoch"] + 1,
                 "F1" if by_f1 else "loss", abs(score), best_pt)
    save_checkpoint(model_dir / file_name("last_pt"), payload)
    write_csv_atomic(pd.DataFrame(history), model_dir / file_name("history_csv"))
    write_csv_atomic(pd.DataFrame(steps), model_dir / file_name("history_steps_csv"))
    return best


def start(resume_run: bool, model_dir: Path, data_hash: str, model, optimizer, scaler, device,
          is_main: bool) -> Tuple[int, float, list, list]:
    """(first epoch, best score, history, steps): from last.pt with train.resume=true, else from scratch,
    keeping the best.pt a new training replaces as best.prev.pt."""
    last_pt, best_pt = model_dir / file_name("last_pt"), model_dir / file_name("best_pt")
    if resume_run and last_pt.exists():
        out = resume(last_pt, data_hash, model, optimizer, scaler, device)
        for key in ("best_pt", "last_pt", "history_csv", "history_steps_csv"):  # this training's, continued
            vouch_output(model_dir / file_name(key))
        return out
    if resume_run:
        log.warning("train.resume=true but %s does not exist: starting from scratch", last_pt)
    previous = model_dir / file_name("best_prev_pt")
    if is_main and keep_previous(best_pt, previous):
        log.info("a new training replaces %s: the previous one is kept as %s", best_pt, previous)
    return 0, -np.inf, [], []


# ---------------------------------------------------------------- the loop
def setup_device(cfg, info) -> torch.device:
    device = resolve_device(cfg.device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    if device.type == "cpu":  # reproducible (and resumable to the same numbers) on CPU
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif device.type == "cuda":  # fixed input size: let cuDNN pick its fastest kernels
        torch.backends.cudnn.benchmark = True
    return device


def load_data(cfg, info):
    """(run inputs with patches and cache, rows per split); rank 0 builds the cache, the others wait."""
    if info.is_main:
        data = load_run(cfg, needs=("patches", "images"))
    D.barrier(info)
    if not info.is_main:
        data = load_run(cfg, needs=("patches", "images"))
    split = data.patches["split"].to_numpy()
    rows = {s: np.flatnonzero(split == s) for s in ("train", "val", "test")}
    if len(rows["train"]) == 0 or len(rows["val"]) == 0:
        raise ConfigError(f"{data.paths.patches_csv} has no train or val patches; re-run `make data` with more patients")
    return data, rows


def setup_training(cfg, info, device, images, targets: np.ndarray, train_rows: np.ndarray) -> tuple:
    """(model, net = model wrapped for DDP / compile, optimizer, criterion, loader, scaler, amp dtype,
    channels_last), seeded with cfg.seed, as `fit` trains them."""
    t = cfg.train
    seed_everything(cfg.seed)
    model = build_model(cfg.model).to(device)
    amp_dtype, scaler = amp_settings(device, t.amp)
    channels_last = device.type == "cuda" and t.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg, model.parameters())
    weights = class_weights(targets[train_rows])
    criterion = nn.CrossEntropyLoss(weight=weights.to(device) if t.balance == "class_weights" else None)
    # drop_last: a last batch of a handful of images (or one: BatchNorm1d fails) gives a noisy step.
    # train.loader: the cache resident on the GPU (default on CUDA) or gathered per batch on the host; both
    # give the same batches and flips for the same seed (tests/test_device_loader.py)
    loader = make_loader(t.loader, images, targets, train_rows, t.batch_size, shuffle=True, flip=True,
                         seed=cfg.seed, rank=info.rank, world_size=info.world_size,
                         drop_last=len(train_rows) > t.batch_size, device=device,
                         memory_budget_gb=t.device_memory_gb, channels_last=channels_last,
                         sample_weights=weights.numpy()[targets[train_rows]] if t.balance == "sampler" else None)
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if info.enabled else model
    if t.compile:  # after DDP, as torch recommends; checkpoints keep saving the plain `model`
        net = torch.compile(net)
    return model, net, optimizer, criterion, loader, scaler, amp_dtype, channels_last


def fit(cfg, model_dir) -> dict:
    """Train per cfg.train into `model_dir` (best.pt, last.pt, history.csv, history_steps.csv).
    Returns a summary with the best epoch, its val F1 and the final train accuracy. (The sanity stage's
    random-label model is trained by idc.sanity.memorization, without flips or dropout.)"""
    t = cfg.train
    if t.balance not in ("none", "class_weights", "sampler"):
        raise ConfigError(f"train.balance={t.balance!r} is not known; use none, class_weights or sampler")
    model_dir = ensure_writable(Path(model_dir), "run.dir")  # now, not after the first epoch
    info = D.init_distributed(t.dist_backend)
    device = setup_device(cfg, info)
    data, rows = load_data(cfg, info)
    targets = data.patches["target"].to_numpy(dtype=np.int64)
    by_f1 = len(np.unique(targets[rows["val"]])) == 2
    if not by_f1:  # F1 is undefined (no positives) or trivial (no negatives): choose best.pt by val loss
        log.warning("the val split holds one class only (%d patches): val F1 is undefined or meaningless; best.pt "
                    "is chosen by the lowest val loss. Use more patients or another data.split_seed", len(rows["val"]))

    model, net, optimizer, criterion, loader, scaler, amp_dtype, channels_last = setup_training(
        cfg, info, device, data.images, targets, rows["train"])
    # only rank 0 evaluates: with the device loader on a GPU its val and test rows go there once
    eval_images, eval_rows, eval_targets = eval_inputs(t.loader, data.images, rows, targets, device, t.device_memory_gb) \
        if info.is_main else (data.images, rows, targets)

    last_pt = model_dir / file_name("last_pt")
    start_epoch, best, history, steps = start(t.resume, model_dir, data.data_hash, model, optimizer, scaler, device,
                                              info.is_main)
    # train.logger=tensorboard: live curves (rank 0); a resumed run hides the steps after its checkpoint
    track = tracker(cfg, "train", purge_step=max([r["step"] for r in steps if r["split"] == "train"], default=0) + 1
                    if steps else 0, enabled=info.is_main)

    sync_every = 1 if device.type == "cpu" else 50  # read losses back in blocks on a GPU (no per-step sync)
    last_step = {sp: max([r["step"] for r in steps if r["split"] == sp], default=0) for sp in ("train", "val", "test")}
    for epoch in range(start_epoch, t.epochs):
        loader.set_epoch(epoch)
        tic = time.perf_counter()
        meter = StepMeter("train", epoch, last_step["train"], sync_every)
        bad = train_one_epoch(net, criterion, optimizer, loader, meter, max_batches=t.max_batches, scaler=scaler,
                              amp_dtype=amp_dtype, channels_last=channels_last, show=info.is_main)
        if bad is not None:
            raise non_finite(bad, epoch, last_pt, t.lr)
        seconds = time.perf_counter() - tic
        last_step["train"] = meter.step
        first_new = len(steps)
        steps += meter.rows
        row = {"epoch": epoch, "train_loss": D.mean_across(info, meter.mean_loss, device),
               "train_acc": D.mean_across(info, meter.correct / max(meter.seen, 1), device), "seconds": seconds,
               "images_per_s": meter.seen * info.world_size / seconds}
        if info.is_main:
            for split in ("val", "test"):
                if len(rows[split]):
                    m = StepMeter(split, epoch, last_step[split], sync_every)
                    proba = evaluate(model, eval_images, eval_rows[split], eval_targets, m, t.eval_batch_size, amp_dtype)
                    last_step[split], row[f"{split}_loss"] = m.step, m.mean_loss
                    steps += m.rows
                    if split == "val":
                        scores = binary_scores(targets[rows["val"]], (proba >= 0.5).astype(int))
                        row.update({f"val_{k}": v for k, v in scores.items()})
            history.append(row)
            track.steps(steps[first_new:])
            track.epoch(row)
            best = save_epoch(cfg, model_dir, model, optimizer, scaler, history, steps, best, data.data_hash, by_f1)
            log.info("epoch %d/%d: train loss %.4f acc %.3f | val loss %.4f P %.3f R %.3f F1 %.3f | %.0f img/s",
                     epoch + 1, t.epochs, row["train_loss"], row["train_acc"], row["val_loss"], row["val_precision"],
                     row["val_recall"], row["val_f1"], row["images_per_s"])
        D.barrier(info)
    track.close()
    D.cleanup(info)
    final = history[-1] if history else {}
    return {"model_dir": str(model_dir), "epochs": t.epochs, "best_val_f1": max((r["val_f1"] for r in history), default=-1.0),
            "train_acc": final.get("train_acc"), "final": final, "data_hash": data.data_hash, "rank": info.rank}


def run(cfg) -> dict:
    paths = RunPaths.from_cfg(cfg)
    summary = fit(cfg, paths.model_dir)
    if summary["rank"] == 0:
        for path in (paths.best_pt, paths.last_pt, paths.history_csv, paths.history_steps_csv):
            if path.exists():
                wrote(path)
        log.info("next: `make evaluate` (same overrides) for Table 5.1 and the PR curve")
    return summary
