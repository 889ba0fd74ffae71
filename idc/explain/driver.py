"""The batched driver: targets, batches, device, grey-scaling — shared by every method."""
from __future__ import annotations

import logging
import warnings
from typing import Dict, Iterable, Optional, Tuple

import numpy as np
import torch
from tqdm import tqdm

from idc.errors import ConfigError
from idc.explain.methods import Context, get_method

log = logging.getLogger("idc")


def resolve_targets(spec, labels, preds) -> np.ndarray:
    """explain.target: 'pred' (default), 'label', or a class index."""
    spec = str(spec)
    if spec == "pred":
        return np.asarray(preds, dtype=np.int64)
    if spec == "label":
        return np.asarray(labels, dtype=np.int64)
    if spec.isdigit() and int(spec) in (0, 1):
        return np.full(len(labels), int(spec), dtype=np.int64)
    raise ConfigError(f"explain.target={spec!r} is not known; use pred, label, 0 or 1")


def attribute(model, x: torch.Tensor, target, method: str, explain_cfg, images: Optional[np.ndarray] = None,
              extras: Optional[dict] = None) -> np.ndarray:
    """Raw map of one method for one batch: [n, 3, H, W] (pixel methods) or [n, H, W]."""
    model.eval()
    # a copy: inputs may be read-only views (a tensor is copied by torch, not via numpy's __array__)
    target = target.detach().to(x.device, torch.long).clone() if isinstance(target, torch.Tensor) else \
        torch.tensor(np.array(target, dtype=np.int64), device=x.device)
    ctx = Context(cfg=explain_cfg, images=images, extras=extras if extras is not None else {})
    with torch.enable_grad(), warnings.catch_warnings():
        # captum announces that it sets requires_grad and hooks ReLUs, for every batch: expected here.
        warnings.filterwarnings("ignore", message=".*(did not already require gradients|backward hooks on ReLU).*")
        raw = get_method(method).fn(model, x.detach().clone().requires_grad_(False), target, ctx)
    return raw.detach().float().cpu().numpy()


def to_grayscale(raw: np.ndarray) -> np.ndarray:
    """The book's convert_to_grayscale: sum |attr| over channels, scale by the 99th percentile, clip to [0, 1]."""
    raw = np.asarray(raw, dtype=np.float32)
    g = np.abs(raw).sum(axis=1) if raw.ndim == 4 else np.abs(raw)
    lo = g.min(axis=(1, 2), keepdims=True)
    hi = np.percentile(g, 99, axis=(1, 2), keepdims=True)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    return np.clip((g - lo) / span, 0, 1).astype(np.float32)


def compute_maps(model, images: np.ndarray, targets, methods: Iterable[str], explain_cfg, device) -> Tuple[Dict[str, np.ndarray], dict]:
    """Raw maps of every method for every patch (uint8 NHWC `images`), in batches on `device`."""
    from idc.data.dataset import normalize_batch

    methods = list(methods)
    for m in methods:
        get_method(m)  # fail on a typo before any work
    targets = np.asarray(targets, dtype=np.int64)
    bs = max(1, int(explain_cfg.batch_size))
    out, extras = {}, {}
    for m in methods:
        parts = []
        for start in tqdm(range(0, len(images), bs), desc=f"explain {m}", unit="batch", leave=False):
            batch = np.asarray(images[start:start + bs])
            x = normalize_batch(batch, device=device)
            parts.append(attribute(model, x, targets[start:start + bs], m, explain_cfg, images=batch, extras=extras))
        out[m] = np.concatenate(parts) if parts else np.zeros((0, 50, 50), np.float32)
        log.info("explain: %s done for %d patches", m, len(images))
    return out, extras
