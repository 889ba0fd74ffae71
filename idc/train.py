"""Stage `make train`: the book's training (ResNet-18, Adamax 0.002, batch 64, 5 epochs), made fast
(packed uint8 cache, batched flips), resumable (atomic per-epoch checkpoints with RNG state) and
distributed (`torchrun --nproc_per_node=N scripts/train.py`, DDP; only rank 0 writes).
"""
from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf
from torch import nn
from tqdm import tqdm

from idc import distributed as D
from idc.data import load_patches
from idc.data.cache import load_or_build_cache, normalize_batch
from idc.errors import CheckpointError, ConfigError, IdcError
from idc.metrics import binary_scores
from idc.model import as_dict, build_model, read_checkpoint, save_checkpoint
from idc.paths import RunPaths
from idc.utils import ensure_writable, file_sha256, resolve_device, seed_everything, write_csv_atomic, wrote

log = logging.getLogger("idc")


class TrainingError(IdcError):
    """Training cannot go on (e.g. a non-finite loss)."""


def amp_settings(device: torch.device, enabled: bool):
    """(autocast dtype or None, GradScaler or None): bf16 where the GPU supports it, else fp16 + scaler."""
    if not enabled or device.type != "cuda":
        return None, None
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def autocast(device: torch.device, dtype):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


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


@torch.no_grad()
def evaluate_rows(model, images, rows, targets, device, batch_size, criterion, amp_dtype, meter: StepMeter,
                  desc="eval") -> np.ndarray:
    """P(IDC) over `rows` of the cache in eval mode; batch losses go to `meter`."""
    model.eval()
    probas = []
    for start in tqdm(range(0, len(rows), batch_size), desc=desc, unit="batch", leave=False):
        sel = rows[start:start + batch_size]
        x = normalize_batch(np.asarray(images[sel]), device=device)
        y = torch.from_numpy(targets[sel]).to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits = model(x).float()
        meter.add(criterion(logits, y), len(sel))
        probas.append(torch.softmax(logits, 1)[:, 1])
    meter.flush()
    return torch.cat(probas).cpu().numpy() if probas else np.zeros(0, dtype=np.float32)


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


def fit(cfg, model_dir, permute_labels_seed: int | None = None) -> dict:
    """Train per cfg.train into `model_dir` (best.pt, last.pt, history.csv, history_steps.csv).

    `permute_labels_seed` trains on randomly permuted training labels (the sanity stage's data
    randomization test). Returns a summary with the best epoch, its val F1 and the final train accuracy.
    """
    t = cfg.train
    if t.balance not in ("none", "class_weights", "sampler"):
        raise ConfigError(f"train.balance={t.balance!r} is not known; use none, class_weights or sampler")
    model_dir = ensure_writable(Path(model_dir), "run.dir")  # now, not after the first epoch
    paths = RunPaths.from_cfg(cfg)
    info = D.init_distributed(t.dist_backend)
    device = resolve_device(cfg.device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    if device.type == "cpu":  # reproducible (and resumable to the same numbers) on CPU
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif device.type == "cuda":  # fixed input size: let cuDNN pick its fastest kernels
        torch.backends.cudnn.benchmark = True

    df = load_patches(paths)
    data_hash = file_sha256(paths.patches_csv)
    if info.is_main:  # rank 0 builds the cache once; the others wait and memory-map it
        images = load_or_build_cache(df, cfg.data.root, paths.cache_dir, size=cfg.data.patch_size)
    D.barrier(info)
    if not info.is_main:
        images = load_or_build_cache(df, cfg.data.root, paths.cache_dir, size=cfg.data.patch_size)
    targets = df["target"].to_numpy(dtype=np.int64)
    rows = {s: np.flatnonzero(df["split"].to_numpy() == s) for s in ("train", "val", "test")}
    if len(rows["train"]) == 0 or len(rows["val"]) == 0:
        raise ConfigError(f"{paths.patches_csv} has no train or val patches; re-run `make data` with more patients")
    by_f1 = len(np.unique(targets[rows["val"]])) == 2
    if not by_f1:  # F1 is undefined (no positives) or trivial (no negatives): choose best.pt by val loss
        log.warning("the val split holds one class only (%d patches): val F1 is undefined or meaningless; best.pt "
                    "is chosen by the lowest val loss. Use more patients or another data.split_seed", len(rows["val"]))
    train_targets = targets.copy()
    if permute_labels_seed is not None:
        rng = np.random.default_rng(permute_labels_seed)
        train_targets[rows["train"]] = rng.permutation(targets[rows["train"]])
        log.info("training on permuted labels (seed %d)", permute_labels_seed)

    seed_everything(cfg.seed)
    model = build_model(cfg.model).to(device)
    amp_dtype, scaler = amp_settings(device, t.amp)
    if device.type == "cuda" and t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg, model.parameters())
    weight = class_weights(train_targets[rows["train"]]).to(device) if t.balance == "class_weights" else None
    criterion = nn.CrossEntropyLoss(weight=weight)
    eval_criterion = nn.CrossEntropyLoss()
    sample_weights = None
    if t.balance == "sampler":
        sample_weights = class_weights(train_targets[rows["train"]]).numpy()[train_targets[rows["train"]]]
    from idc.data.cache import PackedLoader

    loader = PackedLoader(images, train_targets, rows["train"], t.batch_size, shuffle=True, flip=True, seed=cfg.seed,
                          rank=info.rank, world_size=info.world_size, drop_last=len(rows["train"]) > t.batch_size, device=device,
                          sample_weights=sample_weights)
    # drop_last: a last batch of a handful of images (or one: BatchNorm1d fails) gives a noisy step.
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if info.enabled else model

    history, steps, start_epoch, best_f1, best_score = [], [], 0, -1.0, -np.inf
    last_pt, best_pt = model_dir / "last.pt", model_dir / "best.pt"
    if t.resume and last_pt.exists():
        afresh = f"delete {last_pt} or set train.resume=false to start afresh"
        ckpt = read_checkpoint(last_pt, device, fix=afresh)
        if ckpt.get("data_hash") != data_hash:
            raise CheckpointError(f"{last_pt} was trained on another data/patches.csv; cannot resume. "
                                  "Start afresh with train.resume=false or use the matching run.dir")
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
        except (KeyError, RuntimeError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"{last_pt} does not fit the configured model or optimizer ({first}); {afresh}") from None
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        restore_rng(ckpt["rng"])
        start_epoch, best_f1 = ckpt["epoch"] + 1, ckpt.get("best_val_f1", -1.0)
        best_score = ckpt.get("best_score", best_f1 if by_f1 else -np.inf)  # older checkpoints: F1 only
        history = [r for r in ckpt.get("history", []) if r["epoch"] < start_epoch]
        steps = [r for r in ckpt.get("steps", []) if r["epoch"] < start_epoch]
        log.info("resumed from %s at epoch %d", last_pt, start_epoch + 1)
    elif t.resume:
        log.warning("train.resume=true but %s does not exist: starting from scratch", last_pt)

    sync_every = 1 if device.type == "cpu" else 50  # read losses back in blocks on a GPU (no per-step sync)
    last_step = {sp: max([r["step"] for r in steps if r.get("split", "train") == sp], default=0)
                 for sp in ("train", "val", "test")}
    for epoch in range(start_epoch, t.epochs):
        loader.set_epoch(epoch)
        net.train()
        tic = time.perf_counter()
        meter = StepMeter("train", epoch, last_step["train"], sync_every)
        n_batches = len(loader) if t.max_batches is None else min(len(loader), t.max_batches)
        bar = tqdm(loader, total=n_batches, desc=f"epoch {epoch + 1}/{t.epochs}", unit="batch", disable=not info.is_main)
        for i, (x, y) in enumerate(bar):
            if i >= n_batches:
                break
            if device.type == "cuda" and t.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp_dtype):
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
            bad = meter.add(loss, len(y), (logits.argmax(1) == y).sum())
            if bad is None and i + 1 == n_batches:
                bad = meter.flush()
            if bad is not None:
                raise non_finite(bad, epoch, last_pt, t.lr)
            if meter.rows and (i + 1) % sync_every == 0:
                bar.set_postfix(loss=f"{meter.rows[-1]['running_loss']:.3f}",
                                img_s=f"{meter.seen / (time.perf_counter() - tic):.0f}")
            if t.crash_after_steps is not None and last_step["train"] + i + 1 >= t.crash_after_steps:
                os.kill(os.getpid(), signal.SIGKILL)  # test hook: die like an OOM-killed or preempted job
        bad = meter.flush()  # nothing is left on the device unless the loader ended early
        if bad is not None:
            raise non_finite(bad, epoch, last_pt, t.lr)
        seconds = time.perf_counter() - tic
        last_step["train"] = meter.step
        steps += meter.rows
        train_loss = D.mean_across(info, meter.mean_loss, device)
        train_acc = D.mean_across(info, meter.correct / max(meter.seen, 1), device)
        row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "seconds": seconds,
               "images_per_s": meter.seen * info.world_size / seconds}
        if info.is_main:
            for split in ("val", "test"):
                if not len(rows[split]):
                    continue
                m = StepMeter(split, epoch, last_step[split], sync_every)
                proba = evaluate_rows(model, images, rows[split], targets, device, t.eval_batch_size,
                                      eval_criterion, amp_dtype, m, split)
                last_step[split] = m.step
                steps += m.rows
                row[f"{split}_loss"] = m.mean_loss
                if split == "val":
                    scores = binary_scores(targets[rows["val"]], (proba >= 0.5).astype(int))
                    row.update({f"val_{k}": v for k, v in scores.items()})
            history.append(row)
            payload = {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else {}, "epoch": epoch,
                "rng": rng_state(), "model_cfg": as_dict(cfg.model),
                "train_cfg": OmegaConf.to_container(cfg.train, resolve=True), "data_hash": data_hash,
                "history": history, "steps": steps, "best_val_f1": max(best_f1, row["val_f1"]),
                "permute_labels_seed": permute_labels_seed,
            }
            score = row["val_f1"] if by_f1 else -row["val_loss"]
            payload.update(best_score=max(best_score, score), best_by="val_f1" if by_f1 else "val_loss")
            best_f1 = max(best_f1, row["val_f1"])
            if score > best_score:
                best_score = score
                save_checkpoint(best_pt, payload)
                log.info("epoch %d: val %s %.3f is the best so far: wrote %s", epoch + 1,
                         "F1" if by_f1 else "loss", abs(score), best_pt)
            save_checkpoint(last_pt, payload)
            write_csv_atomic(pd.DataFrame(history), model_dir / "history.csv")
            write_csv_atomic(pd.DataFrame(steps), model_dir / "history_steps.csv")
            log.info("epoch %d/%d: train loss %.4f acc %.3f | val loss %.4f P %.3f R %.3f F1 %.3f | %.0f img/s",
                     epoch + 1, t.epochs, train_loss, train_acc, row["val_loss"], row["val_precision"],
                     row["val_recall"], row["val_f1"], row["images_per_s"])
        D.barrier(info)
    D.cleanup(info)
    final = history[-1] if history else {}
    return {"model_dir": str(model_dir), "epochs": t.epochs, "best_val_f1": best_f1,
            "train_acc": final.get("train_acc"), "final": final, "data_hash": data_hash, "rank": info.rank}


def run(cfg) -> dict:
    paths = RunPaths.from_cfg(cfg)
    summary = fit(cfg, paths.model_dir)
    if summary["rank"] == 0:
        for name in ("best.pt", "last.pt", "history.csv", "history_steps.csv"):
            wrote(paths.model_dir / name)
        log.info("next: `make evaluate` (same overrides) for Table 5.1 and the PR curve")
    return summary
