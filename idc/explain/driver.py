"""The batched driver: targets, batches, device, grey-scaling — shared by every method — and the map
settings: `explain.*` turned into each method's keyword arguments (`method_kwargs`), with the caps the
sanity and leaderboard stages put on the costly ones (`capped`)."""
from __future__ import annotations

import inspect
import logging
import warnings
from typing import Dict, Iterable, Mapping, Optional, Tuple

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from idc.data.dataset import normalize_batch
from idc.errors import ConfigError
from idc.explain.methods import Reference, get_method

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


def dataset_reference(images: np.ndarray, patches, k: int, seed: int) -> Reference:
    """The training split's mean colour (all its patches) and `k` of its patches drawn with `seed`.
    `images` is the packed cache (rows = patches.csv rows); `patches` has the `split` column."""
    rows = np.flatnonzero(np.asarray(patches["split"]) == "train")
    if len(rows) == 0:
        raise ConfigError("the data set has no training patches: RISE's mean colour and IG's expected "
                          "baseline need them (or set explain.rise_fill=black and another explain.ig_baseline)")
    total = np.zeros(3, np.float64)
    for start in range(0, len(rows), 4096):  # the cache is memory-mapped: read it in slices
        total += np.asarray(images[rows[start:start + 4096]], dtype=np.float64).sum(axis=(0, 1, 2))
    mean = total / (len(rows) * images.shape[1] * images.shape[2])
    pick = np.sort(np.random.default_rng(seed).choice(rows, size=min(int(k), len(rows)), replace=False))
    return Reference(mean_rgb=mean.astype(np.float32), patches=np.ascontiguousarray(images[pick]))


def patch_batch(images: np.ndarray, df, device) -> Tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """(uint8 NHWC images, normalized NCHW tensor, long target tensor) for the cache rows `df["row"]`."""
    imgs = np.ascontiguousarray(images[df["row"].to_numpy()])
    target = torch.tensor(np.array(df["target"], dtype=np.int64), device=device)
    return imgs, normalize_batch(imgs, device=device), target


CAPPED_KEYS = ("lime_num_samples", "rise_num_masks")  # the costly explain.* keys a stage may cap


def capped(explain_cfg, **caps):
    """explain.* with each of `caps` (e.g. lime_num_samples=300) as an upper bound; a None cap leaves the
    key as it is. The sanity and leaderboard stages map 13+ models x every method with these."""
    unknown = set(caps) - set(CAPPED_KEYS)
    if unknown:
        raise ValueError(f"capped: only {CAPPED_KEYS} can be capped, not {sorted(unknown)}")
    return OmegaConf.merge(explain_cfg, {k: min(int(v), int(explain_cfg[k])) for k, v in caps.items() if v is not None})


def method_kwargs(method: str, explain_cfg, overrides: Optional[Mapping[str, object]] = None) -> dict:
    """The keyword arguments of `method` read from explain.* (`Method.params`), then `overrides` (argument
    name -> value, e.g. a leaderboard variant's {"layer": "layer3"}, or the atlas's {"minmax": False} for
    Grad-CAM: a keyword argument without an explain.* key)."""
    m = get_method(method)
    kwargs = {arg: explain_cfg[key] for arg, key in m.params.items()}
    keywords = [p.name for p in inspect.signature(m.fn).parameters.values() if p.kind == p.KEYWORD_ONLY]
    unknown = set(overrides or {}) - set(kwargs) - set(keywords)
    if unknown:
        raise ConfigError(f"{method} takes no argument {sorted(unknown)}; "
                          f"its arguments: {sorted(set(m.params) | set(keywords))}")
    return {**kwargs, **(overrides or {})}


def attribute(model, x: torch.Tensor, target, method: str, **kwargs) -> np.ndarray:
    """Raw map of one method for one batch: [n, 3, H, W] (pixel methods) or [n, H, W]. `kwargs` go to the
    method (captum's call shape: `attribute(inputs, target, **kwargs)`)."""
    fn = get_method(method).fn
    model.eval()
    # a copy: inputs may be read-only views (a tensor is copied by torch, not via numpy's __array__)
    target = target.detach().to(x.device, torch.long).clone() if isinstance(target, torch.Tensor) else \
        torch.tensor(np.array(target, dtype=np.int64), device=x.device)
    with torch.enable_grad(), warnings.catch_warnings():
        # captum announces that it sets requires_grad and hooks ReLUs, for every batch: expected here.
        warnings.filterwarnings("ignore", message=".*(did not already require gradients|backward hooks on ReLU).*")
        raw = fn(model, x.detach().clone().requires_grad_(False), target, **kwargs)
    return raw.detach().float().cpu().numpy()


def _context(method: str, images: np.ndarray, reference: Optional[Reference], extras: dict) -> dict:
    """What the driver hands a method besides its settings: the uint8 patches, the data set's reference
    and a list for LIME's boundary images, each only to a method whose signature takes it."""
    takes = inspect.signature(get_method(method).fn).parameters
    ctx = {"images": images, "reference": reference}
    out = {k: v for k, v in ctx.items() if k in takes}
    if "vis" in takes:
        out["vis"] = extras.setdefault(f"{method}_vis", [])
    return out


def to_grayscale(raw: np.ndarray) -> np.ndarray:
    """The book's convert_to_grayscale: sum |attr| over channels, scale by the 99th percentile, clip to [0, 1]."""
    raw = np.asarray(raw, dtype=np.float32)
    g = np.abs(raw).sum(axis=1) if raw.ndim == 4 else np.abs(raw)
    lo = g.min(axis=(1, 2), keepdims=True)
    hi = np.percentile(g, 99, axis=(1, 2), keepdims=True)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    return np.clip((g - lo) / span, 0, 1).astype(np.float32)


def compute_maps(model, images: np.ndarray, targets, methods: Iterable[str], explain_cfg, device,
                 reference: Optional[Reference] = None,
                 overrides: Optional[Mapping[str, object]] = None) -> Tuple[Dict[str, np.ndarray], dict]:
    """Raw maps of every method for every patch (uint8 NHWC `images`), in batches on `device`; each method
    gets its `method_kwargs(m, explain_cfg, overrides)` (so `overrides` suits a single method).

    `explain_cfg`: the explain settings (the `explain` config node, or any mapping with its keys).
    Seeded: torch's RNG is set to `explain_cfg["seed"]` before each method (and restored after), so the
    same inputs give the same maps (SmoothGrad's noise, IG's uniform baseline), whatever ran before,
    and two models compared by the sanity stage see the same noise. Returns (maps, extras), extras
    holding LIME's boundary images (`lime_vis`) for the figures."""
    methods = list(methods)
    kwargs = {m: method_kwargs(m, explain_cfg, overrides) for m in methods}  # fail on a typo before any work
    targets = np.asarray(targets, dtype=np.int64)
    bs = max(1, int(explain_cfg["batch_size"]))
    out, extras = {}, {}
    for m in methods:
        parts = []
        with torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else []):
            torch.manual_seed(int(explain_cfg["seed"]))
            for start in tqdm(range(0, len(images), bs), desc=f"explain {m}", unit="batch", leave=False):
                batch = np.asarray(images[start:start + bs])
                x = normalize_batch(batch, device=device)
                parts.append(attribute(model, x, targets[start:start + bs], m, **kwargs[m],
                                       **_context(m, batch, reference, extras)))
        out[m] = np.concatenate(parts) if parts else np.zeros((0, 50, 50), np.float32)
        log.info("explain: %s done for %d patches", m, len(images))
    return out, extras
