"""The atlas's pictures of one patient: the figure `figures/atlas_<pid>.png` (tissue with the ground truth
outlined, the P(IDC) landscape, each method's evidence landscape; drawn downsampled to at most 2,048 px a
side like every slide figure) and the full-resolution overlays `atlas/overlays/<pid>_<method>.jpg` (canvas
pixel = slide pixel: zoom in to the nuclei)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
from PIL import Image

from idc.atlas import canvas as C
from idc.data.synthetic import load_masks
from idc.stitch import MAX_CANVAS_SIDE, stitch_labels, stitch_patches, stitch_values
from idc.utils import atomic_path
from idc.viz.style import colorbar, image_axis, subplots

OUTLINE_COLOR = "#00c000"
CLASS_NAMES = {0: "no IDC", 1: "IDC"}


def ground_truth(masks_dir: Optional[str], pid: int, sub) -> Tuple[np.ndarray, str]:
    """(bool [H, W] on the full-resolution canvas, what it is): the synthetic set's IDC region
    (`<masks_dir>/<pid>.npz`, key `region`), else the IDC-labelled patches (real data: patch labels only)."""
    shape = C.canvas_shape(sub)
    path = Path(str(masks_dir)) / f"{int(pid)}.npz" if masks_dir else None
    if path is not None and path.exists():
        masks = load_masks(masks_dir, pid)
        if "region" in masks:
            return C.fit_mask(masks["region"], shape), "IDC region (ground truth)"
    w, h = C.sizes(sub)
    labels = stitch_labels(sub["target"].to_numpy(), sub["x"].to_numpy(), sub["y"].to_numpy(), w, h,
                           max_side=C.FULL_RES_MAX_SIDE)
    return C.fit_mask(labels, shape), "IDC-labelled patches"


def explained(target: str) -> str:
    return CLASS_NAMES.get(int(target), target) if str(target).isdigit() else f"the {target} class"


def patient_figure(pid: int, sub, tiles, maps: Dict[str, np.ndarray], scales: Dict[str, float],
                   titles: Dict[str, str], truth: Tuple[np.ndarray, str], target: str):
    """Tissue | P(IDC) | one evidence landscape per method (`maps`: `canvas.evidence` of each method), the ground
    truth outlined on each panel."""
    xs, ys = sub["x"].to_numpy(), sub["y"].to_numpy()
    tissue = stitch_patches(tiles, xs, ys)
    w, h = C.sizes(sub)
    heat = stitch_values(sub["proba"].to_numpy(np.float32), xs, ys, w, h)
    mask = C.resample_mask(truth[0], tissue.shape[:2]).astype(np.float32)
    fig, axes = subplots(1, 2 + len(maps), figsize=(5.2 * (2 + len(maps)), 6))
    image_axis(axes[0], tissue, f"Patient {pid}: tissue, {truth[1]} outlined")
    image_axis(axes[1], heat, "ResNet-18 P(IDC) landscape", cmap="PuRd", vmin=0, vmax=1)
    axes[1].set_facecolor("#f4f0f7")
    colorbar(fig, axes[1], "PuRd", 0, 1, "P(IDC)")
    for ax, (m, values) in zip(axes[2:], maps.items()):
        disp = C.display(C.stitch_map(values, sub, max_side=MAX_CANVAS_SIDE), scales[m])
        image_axis(ax, C.blend(tissue, C.rgba_layer(disp)), f"{titles[m]}: evidence for {explained(target)}")
        colorbar(fig, ax, "jet", 0, scales[m], "evidence (top: the atlas's 99th percentile)")
    if mask.any():
        for ax in axes:
            ax.contour(mask, levels=[0.5], colors=[OUTLINE_COLOR], linewidths=0.9)
    fig.suptitle(f"Attribution landscapes of patient {pid} ({len(sub)} patches)")
    return fig


def overlay_image(sub, tiles, values: np.ndarray, scale: float, truth: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] at full resolution: the evidence (`canvas.evidence` maps) over the tissue, the ground
    truth's border in green."""
    tissue = stitch_patches(tiles, sub["x"].to_numpy(), sub["y"].to_numpy(), max_side=C.FULL_RES_MAX_SIDE)
    rgb = C.blend(tissue, C.rgba_layer(C.display(C.stitch_map(values, sub), scale)))
    if truth.shape == rgb.shape[:2]:
        rgb[C.outline(truth, width=2)] = C.OUTLINE_RGB
    return rgb


def save_jpeg(rgb: np.ndarray, path: Path, quality: int = 85) -> Path:
    with atomic_path(path, suffix=".tmp.jpg") as tmp:
        Image.fromarray(rgb).save(tmp, format="JPEG", quality=quality, optimize=True)
    return Path(path)
