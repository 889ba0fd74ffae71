"""Stain normalization (`data.stain_normalize`: null | macenko | reinhard), applied once to every patch
when the packed cache is built (idc.data.cache), with torchstain's numpy normalizers (docs/data.md says
why torchstain, with the measured speed against scikit-image).

The reference patch comes from the training split only (no validation or test pixels shape the
normalization), deterministically: a `seed`-ed sample of `REFERENCE_SAMPLE` training patches, of which
those with at least `REFERENCE_TISSUE` tissue (pixels whose optical density exceeds torchstain's
`beta` = 0.15 in every channel) are candidates; the reference is the candidate whose mean optical
density over its tissue is closest to the candidates' median (the most typical staining of the sample)
and on which the method fits. Its image id, the fitted parameters and the selection rule are logged and
saved beside the cache (`data/cache/stain_reference.json`, the patch itself as `stain_reference.png`).

A patch with under `MIN_TISSUE` tissue (background, white, pen-free glass) is left as it is
("background"): Macenko's stain vectors and Reinhard's statistics of a nearly blank patch are noise
and would paint it with stain. A patch whose fit fails (a singular covariance, a percentile of nothing,
a zero standard deviation: any floating-point error) is left as it is too ("failed"). Both are
counted; the cache build logs one line with the counts and prepare_data writes them to summary.json.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from PIL import Image
from torchstain.numpy.normalizers import NumpyMacenkoNormalizer, NumpyReinhardNormalizer

from idc.data.cache import decode_patch
from idc.errors import ConfigError, DataError
from idc.utils import atomic_path, write_json_atomic

log = logging.getLogger("idc")

METHODS = ("macenko", "reinhard")
IO, BETA = 240, 0.15  # torchstain's Macenko defaults: transmitted light and the transparent-pixel OD cut
MIN_TISSUE = 0.05  # below this share of tissue pixels (125 of 50x50) a patch is background: left as it is
REFERENCE_SAMPLE = 64
REFERENCE_TISSUE = 0.5
SELECTION_RULE = (f"{REFERENCE_SAMPLE} training patches drawn with numpy default_rng(seed); candidates: tissue share "
                  f">= {REFERENCE_TISSUE}; reference: the candidate whose mean tissue optical density is closest "
                  "to the candidates' median and on which the method fits")
STATUSES = ("normalized", "background", "failed")
MAX_STAIN_COSINE = 0.99  # two Macenko stain vectors closer than this are one stain: the fit failed
MIN_LAB_STD = 0.5  # a LAB channel (L in 0..100) with less spread is one colour: Reinhard's fit failed
FIT_ERRORS = (FloatingPointError, ArithmeticError, ValueError, IndexError, np.linalg.LinAlgError)


def check_method(method: Optional[str]) -> Optional[str]:
    if method in (None, "null", "none"):
        return None
    if method not in METHODS:
        raise ConfigError(f"data.stain_normalize={method!r} is not known; use null, {' or '.join(METHODS)}")
    return method


def optical_density(img: np.ndarray) -> np.ndarray:
    """float [..., 3] optical density as torchstain's Macenko computes it: -ln((I + 1) / Io)."""
    return -np.log((img.astype(np.float64) + 1) / IO)


def tissue_mask(img: np.ndarray) -> np.ndarray:
    """bool [h, w]: pixels that absorb in every channel (torchstain's "not transparent")."""
    return (optical_density(img) >= BETA).all(axis=-1)


def _engine(method: str, params: dict):
    if method == "macenko":
        eng = NumpyMacenkoNormalizer()
        eng.HERef = np.asarray(params["stain_matrix"], dtype=np.float64)
        eng.maxCRef = np.asarray(params["max_concentrations"], dtype=np.float64)
    else:
        eng = NumpyReinhardNormalizer()
        eng.target_means = np.asarray(params["lab_means"], dtype=np.float64)
        eng.target_stds = np.asarray(params["lab_stds"], dtype=np.float64)
    return eng


def fit_params(method: str, img: np.ndarray) -> dict:
    """The method's parameters fitted to one uint8 RGB patch (FloatingPointError etc. when it cannot be)."""
    with np.errstate(divide="raise", invalid="raise", over="ignore"):
        if method == "macenko":
            eng = NumpyMacenkoNormalizer()
            eng.fit(img)
            params = {"stain_matrix": eng.HERef.tolist(), "max_concentrations": eng.maxCRef.tolist()}
        else:
            eng = NumpyReinhardNormalizer()
            eng.fit(img)
            params = {"lab_means": eng.target_means.tolist(), "lab_stds": eng.target_stds.tolist()}
    if not np.isfinite(np.concatenate([np.ravel(v) for v in params.values()])).all():
        raise FloatingPointError("non-finite parameters")
    return params


def check_fit(method: str, params: dict) -> None:
    """Refuse a degenerate fit (ValueError). Macenko: one stain found twice (a uniform patch: the eigen-
    decomposition of a zero covariance gives arbitrary vectors) or a stain that is absent; it would paint the
    patch dark. Reinhard: a LAB channel without spread (one colour): matching its standard deviation would
    multiply rounding noise."""
    if method == "reinhard":
        if not (np.asarray(params["lab_stds"]) > MIN_LAB_STD).all():
            raise ValueError(f"degenerate Reinhard fit (LAB standard deviations {params['lab_stds']})")
        return
    he = np.asarray(params["stain_matrix"])
    cos = abs(he[:, 0] @ he[:, 1]) / max(np.linalg.norm(he[:, 0]) * np.linalg.norm(he[:, 1]), 1e-12)
    if cos > MAX_STAIN_COSINE or not (np.asarray(params["max_concentrations"]) > 1e-6).all():
        raise ValueError(f"degenerate stain fit (cosine {cos:.3f} between the two stain vectors)")


@dataclass
class StainNormalizer:
    """A fitted normalizer: `normalize(patch) -> (patch, status)`; `key()` enters the cache key."""

    method: str
    params: dict
    reference: dict  # image_id, row, tissue share, seed, rule
    counts: Counter = field(default_factory=Counter)

    def __post_init__(self):
        self._eng = _engine(self.method, self.params)

    def key(self) -> str:
        blob = json.dumps({"method": self.method, "params": self.params, "min_tissue": MIN_TISSUE}, sort_keys=True)
        return f"{self.method}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"

    def normalize(self, img: np.ndarray) -> tuple[np.ndarray, str]:
        """(uint8 patch, status in STATUSES); background and failed fits come back unchanged."""
        if tissue_mask(img).mean() < MIN_TISSUE:
            return img, "background"
        try:
            check_fit(self.method, fit_params(self.method, img))  # the patch's own fit, as normalize() repeats it
            with np.errstate(divide="raise", invalid="raise", over="ignore"):
                out = self._eng.normalize(img, stains=False)[0] if self.method == "macenko" else self._eng.normalize(img)
        except FIT_ERRORS:
            return img, "failed"
        return np.ascontiguousarray(out, dtype=np.uint8), "normalized"

    def log_counts(self, what: str) -> None:
        """The one line a cache build logs: how many patches were normalized and how many left as they are."""
        c = self.counts
        log.info("stain normalization (%s) of %s: %d normalized, %d background (under %.0f%% tissue) and %d failed "
                 "fits left as they are", self.method, what, c["normalized"], c["background"], 100 * MIN_TISSUE,
                 c["failed"])

    def record(self) -> dict:
        return {"method": self.method, "reference": self.reference, "params": self.params,
                "min_tissue": MIN_TISSUE, "counts": {s: int(self.counts[s]) for s in STATUSES}}


def _train_digest(df: pd.DataFrame) -> str:
    ids = df.loc[df["split"] == "train", "image_id"].astype(str)
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def choose_reference(df: pd.DataFrame, decode, method: str, seed: int) -> StainNormalizer:
    """The normalizer fitted to the reference patch of df's training split (module docstring: the rule).
    `decode(image_id) -> uint8 [h, w, 3]` reads a patch as the cache stores it."""
    train = np.flatnonzero(df["split"].to_numpy() == "train")
    if len(train) == 0:
        raise DataError("data.stain_normalize needs training patches to choose its reference; the split has none")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(train, size=min(REFERENCE_SAMPLE, len(train)), replace=False))
    imgs = [decode(df["image_id"].iat[r]) for r in rows]
    masks = [tissue_mask(im) for im in imgs]
    share = np.array([m.mean() for m in masks])
    cand = np.flatnonzero(share >= REFERENCE_TISSUE)
    if len(cand) == 0:
        cand = np.flatnonzero(share >= MIN_TISSUE)
    mean_od = np.array([optical_density(imgs[i])[masks[i]].mean(axis=0) for i in cand])
    order = cand[np.argsort(np.linalg.norm(mean_od - np.median(mean_od, axis=0), axis=1), kind="stable")] \
        if len(cand) else cand
    for i in order:
        try:
            params = fit_params(method, imgs[i])
            check_fit(method, params)
        except FIT_ERRORS:
            continue
        ref = {"image_id": str(df["image_id"].iat[rows[i]]), "row": int(rows[i]), "tissue_share": round(float(share[i]), 4),
               "seed": int(seed), "sampled": int(len(rows)), "candidates": int(len(cand)), "rule": SELECTION_RULE,
               "train_digest": _train_digest(df)}
        return StainNormalizer(method, params, ref)
    raise DataError(f"data.stain_normalize={method}: none of {len(rows)} sampled training patches has enough tissue "
                    f"(>= {MIN_TISSUE:.0%}) for a fit; check the data or set data.stain_normalize=null")


def normalizer_for(df: pd.DataFrame, images_dir, method: Optional[str], seed: int, record: Path,
                   size: int = 50) -> Optional[StainNormalizer]:
    """The run's normalizer (None when `method` is null): read from `record` (stain_reference.json) when it
    was chosen from this training split with this method and seed, else chosen again (deterministic: the
    same reference; prepare_data writes the record). `df` is the data set's patches table with its split."""
    method = check_method(method)
    if method is None:
        return None
    try:
        saved = json.loads(Path(record).read_text())
        ref = saved["reference"]
        if saved["method"] == method and ref["seed"] == seed and ref["train_digest"] == _train_digest(df):
            return StainNormalizer(method, saved["params"], ref, Counter(saved.get("counts", {})))
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent or from another choice: choose (and the producer writes it)
    norm = choose_reference(df, lambda image_id: decode_patch(Path(images_dir) / image_id, size), method, seed)
    log.info("stain reference (%s): %s from the training split (tissue %.0f%%; %s)", method,
             norm.reference["image_id"], 100 * norm.reference["tissue_share"], SELECTION_RULE)
    return norm


def save_reference(norm: Optional[StainNormalizer], record: Path, png: Path, images_dir, size: int = 50) -> None:
    """Write stain_reference.json and the reference patch as PNG beside the cache; remove both when off."""
    if norm is None:
        for p in (Path(record), Path(png)):
            p.unlink(missing_ok=True)
        return
    write_json_atomic(record, norm.record())
    with atomic_path(png, suffix=".tmp.png") as tmp:
        Image.fromarray(decode_patch(Path(images_dir) / norm.reference["image_id"], size)).save(tmp, format="PNG")
