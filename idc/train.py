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
from idc.utils import file_sha256, resolve_device, seed_everything, write_csv_atomic, wrote

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


@torch.no_grad()
def evaluate_rows(model, images, rows, targets, device, batch_size, criterion, amp_dtype, desc="eval") -> dict:
    """Mean loss and P(IDC) over `rows` of the cache, in eval mode."""
    model.eval()
    losses, probas = [], []
    for start in tqdm(range(0, len(rows), batch_size), desc=desc, unit="batch", leave=False):
        sel = rows[start:start + batch_size]
        x = normalize_batch(np.asarray(images[sel]), device=device)
        y = torch.from_numpy(targets[sel]).to(device)
        with autocast(device, amp_dtype):
            logits = model(x)
        losses.append(criterion(logits.float(), y).item() * len(sel))
        probas.append(torch.softmax(logits.float(), 1)[:, 1].cpu().numpy())
    proba = np.concatenate(probas) if probas else np.zeros(0)
    return {"loss": sum(losses) / max(len(rows), 1), "proba": proba}


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


def fit(cfg, model_dir, permute_labels_seed: int | None = None) -> dict:
    """Train per cfg.train into `model_dir` (best.pt, last.pt, history.csv, history_steps.csv).

    `permute_labels_seed` trains on randomly permuted training labels (the sanity stage's data
    randomization test). Returns a summary with the best epoch, its val F1 and the final train accuracy.
    """
    t = cfg.train
    if t.balance not in ("none", "class_weights", "sampler"):
        raise ConfigError(f"train.balance={t.balance!r} is not known; use none, class_weights or sampler")
    model_dir = Path(model_dir)
    paths = RunPaths.from_cfg(cfg)
    info = D.init_distributed(t.dist_backend)
    device = resolve_device(cfg.device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)

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

    history, steps, start_epoch, best_f1 = [], [], 0, -1.0
    last_pt, best_pt = model_dir / "last.pt", model_dir / "best.pt"
    if t.resume and last_pt.exists():
        ckpt = read_checkpoint(last_pt, device)
        if ckpt.get("data_hash") != data_hash:
            raise CheckpointError(f"{last_pt} was trained on another data/patches.csv; cannot resume. "
                                  "Start afresh with train.resume=false or use the matching run.dir")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        restore_rng(ckpt["rng"])
        start_epoch, best_f1 = ckpt["epoch"] + 1, ckpt.get("best_val_f1", -1.0)
        history = [r for r in ckpt.get("history", []) if r["epoch"] < start_epoch]
        steps = [r for r in ckpt.get("steps", []) if r["epoch"] < start_epoch]
        log.info("resumed from %s at epoch %d", last_pt, start_epoch + 1)
    elif t.resume:
        log.warning("train.resume=true but %s does not exist: starting from scratch", last_pt)

    global_step = sum(1 for _ in steps)
    for epoch in range(start_epoch, t.epochs):
        loader.set_epoch(epoch)
        net.train()
        tic, seen, correct, loss_sum = time.perf_counter(), 0, 0, 0.0
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
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"non-finite training loss ({loss.item()}) at epoch {epoch + 1}, batch {i + 1}; stopped. "
                    f"The last good checkpoint is {last_pt if last_pt.exists() else 'none (first epoch)'}. "
                    f"Lower train.lr (now {t.lr}) or check the data."
                )
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            global_step += 1
            loss_v = loss.item()
            loss_sum += loss_v * len(y)
            seen += len(y)
            correct += int((logits.argmax(1) == y).sum())
            steps.append({"epoch": epoch, "step": global_step, "loss": loss_v})
            bar.set_postfix(loss=f"{loss_v:.3f}", img_s=f"{seen / (time.perf_counter() - tic):.0f}")
            if t.crash_after_steps is not None and global_step >= t.crash_after_steps:
                os.kill(os.getpid(), signal.SIGKILL)  # test hook: die like an OOM-killed or preempted job
        seconds = time.perf_counter() - tic
        train_loss = D.mean_across(info, loss_sum / max(seen, 1), device)
        train_acc = D.mean_across(info, correct / max(seen, 1), device)
        row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "seconds": seconds,
               "images_per_s": seen * info.world_size / seconds}
        if info.is_main:
            bs = t.eval_batch_size
            val = evaluate_rows(model, images, rows["val"], train_targets if permute_labels_seed else targets,
                                device, bs, eval_criterion, amp_dtype, "val")
            val_scores = binary_scores(targets[rows["val"]], (val["proba"] >= 0.5).astype(int))
            row.update(val_loss=val["loss"], **{f"val_{k}": v for k, v in val_scores.items()})
            if len(rows["test"]):
                row["test_loss"] = evaluate_rows(model, images, rows["test"], targets, device, bs, eval_criterion,
                                                 amp_dtype, "test")["loss"]
            history.append(row)
            payload = {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else {}, "epoch": epoch,
                "rng": rng_state(), "model_cfg": as_dict(cfg.model),
                "train_cfg": OmegaConf.to_container(cfg.train, resolve=True), "data_hash": data_hash,
                "history": history, "steps": steps, "best_val_f1": max(best_f1, row["val_f1"]),
                "permute_labels_seed": permute_labels_seed,
            }
            if row["val_f1"] > best_f1:
                best_f1 = row["val_f1"]
                save_checkpoint(best_pt, payload)
                log.info("epoch %d: val F1 %.3f is the best so far: wrote %s", epoch + 1, best_f1, best_pt)
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
