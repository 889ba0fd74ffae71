"""Figure `stain_normalization` (prepare_data): the same patches as they are, under each stain normalization
(idc.data.stain, each fitted to its reference from the training split, shown in the first column) and
under HED stain jitter (idc.data.augment) at Tellez et al.'s light and strong settings. Figure `site_shift`
(prepare_data, with `data.sites`): patches of each site's patients, one row per site, with its split."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from idc.data.augment import draw_batch, hed_jitter_
from idc.data.cache import decode_patch
from idc.data.stain import METHODS, MIN_TISSUE, choose_reference, tissue_mask
from idc.utils import wrote
from idc.viz.style import image_axis, save_figure_atomic, subplots

JITTER = {"HED jitter, light\n(scale 0.05, shift 0.05)": (0.05, 0.05),
          "HED jitter, strong\n(scale 0.2, shift 0.2)": (0.2, 0.2)}


def jittered(images: np.ndarray, scale: float, shift: float, seed: int) -> np.ndarray:
    """uint8 NHWC patches under one seeded draw of the training loader's HED jitter."""
    _, hed = draw_batch(np.random.default_rng(seed), len(images), False, scale, shift)
    x = torch.from_numpy(images.astype(np.float32) / 255).permute(0, 3, 1, 2).contiguous()
    out = hed_jitter_(x, torch.from_numpy(hed)).permute(0, 2, 3, 1).numpy()
    return np.round(out * 255).astype(np.uint8)


def stain_figure(df: pd.DataFrame, root, path: Path, seed: int = 0, n: int = 6, patch: int = 50) -> Path:
    """Rows: original, each normalization, each jitter; columns: the reference (normalization rows only), then
    `n` patches of the test split with tissue (seeded), half of each class where there are both."""
    def decode(image_id):
        return decode_patch(Path(root) / image_id, patch)

    pool = df[df["split"] == "test"] if (df["split"] == "test").any() else df
    picks = [g.sample(min(len(g), 4 * n), random_state=seed) for _, g in pool.groupby("target")]
    cand = pd.concat(picks).sample(frac=1, random_state=seed)
    cand = cand.assign(tissue=[tissue_mask(decode(i)).mean() for i in cand["image_id"]])
    chosen = cand[cand["tissue"] >= MIN_TISSUE].sort_values("target", kind="stable").groupby("target").head(-(-n // 2))
    originals = np.stack([decode(i) for i in chosen["image_id"]])
    rows = {"original": (None, originals)}
    for method in METHODS:
        norm = choose_reference(df, decode, method, seed)
        rows[f"{method.capitalize()}"] = (decode(norm.reference["image_id"]), np.stack([norm.normalize(im)[0] for im in originals]))
    for k, (label, (scale, shift)) in enumerate(JITTER.items()):
        rows[label] = (None, jittered(originals, scale, shift, seed + k))
    fig, axes = subplots(len(rows), len(originals) + 1, figsize=(1.6 * (len(originals) + 1), 1.7 * len(rows)), squeeze=False)
    for r, (label, (reference, images)) in enumerate(rows.items()):
        ax = axes[r, 0]
        if reference is None:  # the row's name in the empty reference cell
            ax.axis("off")
            ax.text(0.95, 0.5, label, ha="right", va="center", fontsize=9, transform=ax.transAxes)
        else:
            image_axis(ax, reference, "reference" if r == 1 else None)
            ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
        for c, im in enumerate(images, start=1):
            image_axis(axes[r, c], im, f"IDC {'+' if chosen['target'].iat[c - 1] else '-'}" if r == 0 else None)
    fig.subplots_adjust(wspace=0.05, hspace=0.1)
    return wrote(save_figure_atomic(fig, path), "patches under stain normalization and HED jitter")


def site_figure(df: pd.DataFrame, patient_sites: dict, root, path: Path, seed: int = 0, n: int = 8,
                patch: int = 50) -> Path:
    """One row per site (in `patient_sites` order of first appearance): `n` patches with tissue of its patients,
    half of each class where there are both (seeded), the row named by the site and the splits its patients are in."""
    def decode(image_id):
        return decode_patch(Path(root) / image_id, patch)

    site = df["patient_id"].map(patient_sites)
    names = list(dict.fromkeys(patient_sites.values()))
    fig, axes = subplots(len(names), n, figsize=(1.6 * n, 1.7 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        pool = df[site == name]
        picks = [g.sample(min(len(g), 4 * n), random_state=seed) for _, g in pool.groupby("target")]
        cand = pd.concat(picks).sample(frac=1, random_state=seed)
        images = {i: decode(i) for i in cand["image_id"]}
        cand = cand[[tissue_mask(images[i]).mean() >= MIN_TISSUE for i in cand["image_id"]]]
        chosen = cand.sort_values("target", kind="stable").groupby("target").head(-(-n // 2)).head(n)
        splits = ", ".join(s for s in ("train", "val", "test") if (pool["split"] == s).any())
        for c in range(n):
            if c < len(chosen):
                image_axis(axes[r, c], images[chosen["image_id"].iat[c]], f"IDC {'+' if chosen['target'].iat[c] else '-'}")
            else:
                axes[r, c].axis("off")
        axes[r, 0].set_ylabel(f"site {name}\n({splits})", rotation=0, ha="right", va="center", fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.25)
    return wrote(save_figure_atomic(fig, path), "patches of each site")
