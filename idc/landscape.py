"""Stage `make landscape`: each chosen patient's patches stitched back into the tissue, the
ground-truth IDC patches tinted red, and the model's P(IDC) painted on the slide grid (book Fig 5.13).

Reads data/patches.csv, the packed cache, eval/predictions.csv (and model/best.pt for patients that
are not in it); writes figures/chapter_05_patient<k>_breast_tissue_proba.png and landscape_<pid>.png.
"""
from __future__ import annotations

import logging
import shutil

import numpy as np
import pandas as pd

from idc.errors import ConfigError
from idc.inputs import load_run
from idc.model import load_model, predict
from idc.paths import require
from idc.stitch import PATCH, original_tiles, stitch_values, tissue_and_idc
from idc.tracking import tracker
from idc.utils import atomic_path, wrote
from idc.viz.style import save_figure_atomic, subplots

log = logging.getLogger("idc")


def choose_patients(patches: pd.DataFrame, explicit, n: int, split: str) -> list[int]:
    """Explicit ids (checked), else the `n` patients of `split` with the most IDC-positive patches."""
    known = set(patches["patient_id"].unique())
    if explicit:
        missing = [int(p) for p in explicit if int(p) not in known]
        if missing:
            raise ConfigError(f"landscape.patients={missing} not in data/patches.csv; known ids e.g. {sorted(known)[:8]}")
        return [int(p) for p in explicit]
    sub = patches[patches["split"] == split]
    counts = sub.groupby("patient_id")["target"].sum().sort_values(ascending=False, kind="stable")
    return [int(p) for p in counts.index[:n]]


def patient_probabilities(cfg, run, pids: list[int]) -> dict[int, np.ndarray]:
    """P(IDC) per patch (patches.csv order within the patient): from predictions.csv, else the model."""
    preds = run.predictions.set_index("image_id")
    out, model = {}, None
    for pid in pids:
        sub = run.patches[run.patches["patient_id"] == pid]
        proba = preds["proba"].reindex(sub["image_id"])
        if not proba.isna().any():
            out[pid] = proba.to_numpy()
            continue
        if model is None:
            model, _ = load_model(require(run.paths.best_pt), run.device, data_hash=run.data_hash, model_cfg=cfg.model)
            log.info("read %s (patients outside eval/predictions.csv are predicted now)", run.paths.best_pt)
        out[pid] = predict(model, run.images, rows=sub.index.to_numpy(), batch_size=cfg.evaluate.batch_size,
                           desc=f"patient {pid}")[:, 1]
    return out


def landscape_figure(sub: pd.DataFrame, tiles, proba: np.ndarray, pid: int, patch: int = PATCH):
    """The book's three panels for one patient (`tiles`: see `idc.stitch.original_tiles`)."""
    canvas, tinted = tissue_and_idc(sub, tiles, patch)
    # Probability heat map on the same canvas: one flat tile per patch, NaN where no tissue patch.
    heat = stitch_values(proba.astype(np.float32), sub["x"].to_numpy(), sub["y"].to_numpy(), patch=patch)
    fig, axes = subplots(1, 3, figsize=(20, 6.5))
    axes[0].imshow(canvas)
    axes[0].set_title(f"Breast tissue slice of patient: {pid}")
    axes[1].imshow(tinted)
    axes[1].set_title(f"Cancer tissue colored red for patient: {pid}")
    im = axes[2].imshow(heat, cmap="PuRd", vmin=0, vmax=1)
    axes[2].set_facecolor("#f4f0f7")
    axes[2].set_title(f"Resnet18 probability landscape for patient: {pid}")
    fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.04, label="P(IDC)")
    for ax in axes:
        ax.grid(False)
    return fig


def run(cfg) -> list:
    run = load_run(cfg, needs=("patches", "images", "predictions"))
    paths, patches, images = run.paths, run.patches, run.images
    pids = choose_patients(patches, list(cfg.landscape.patients), cfg.landscape.num_patients, cfg.landscape.split)
    probas = patient_probabilities(cfg, run, pids)
    written, track = [], tracker(cfg, "landscape")  # train.logger=tensorboard: the figures as images
    for k, pid in enumerate(pids, start=1):
        sub = patches[patches["patient_id"] == pid]
        tiles = original_tiles(sub, images[sub.index.to_numpy()], cfg.data.root, cfg.data.patch_size)
        fig = landscape_figure(sub, tiles, probas[pid], pid, cfg.data.patch_size)
        path = paths.path("landscape_book_png", k=k)
        written.append(wrote(save_figure_atomic(fig, path), f"patient {pid}"))
        by_id = paths.path("landscape_png", pid=pid)
        with atomic_path(by_id) as tmp:
            shutil.copyfile(path, tmp)
        written.append(wrote(by_id))
        track.image(f"landscape/patient_{pid}", by_id)
    track.close()
    return written
