"""Files beside viewer/index.html: per patient a script holding its full-resolution tissue JPEG (and
evidence-mask PNG) as data URIs, and per explained patch the patch and each method's grey map and
overlay as PNGs.

The page loads them by relative URL, so only the patient on screen is transferred, and the folder
opens from disk (file://) or from any static server. File names use integer ids and row numbers,
never ids from the data, so nothing from patches.csv ends up in a path.
"""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from idc.atlas import canvas as atlas_canvas
from idc.atlas.shards import patient_dir, patient_maps
from idc.data.synthetic import load_masks
from idc.integrity import read_csv
from idc.paths import RunPaths
from idc.stitch import original_tiles, stitch_patches
from idc.viz.style import colormap

MASK_RGBA = (0, 230, 255, 170)  # evidence (IDC nuclei) in cyan: apart from the red label tint
STORE = "idc_viewer_assets"  # the global object the patient scripts fill
DISPLAY = 100  # px: a 50 x 50 patch and its maps are shown twice as large, pixels kept sharp


def tissue_image(sub, images, root, size: int = 50) -> np.ndarray:
    """The patient's stitched tissue, uint8 [H, W, 3]; canvas pixel (r, c) = slide pixel (r, c) (at full
    resolution: the per-patch layers are drawn in slide pixels over it)."""
    tiles = original_tiles(sub, images, root, size)
    return stitch_patches(tiles, sub["x"].to_numpy(), sub["y"].to_numpy(), max_side=atlas_canvas.FULL_RES_MAX_SIDE)


def atlas_layers(paths: RunPaths, summary: Optional[dict], pid: int, shape) -> dict:
    """{method: data URI of a palette PNG}: the patient's attribution landscapes (make atlas) on the tissue
    canvas of `shape`, as the atlas figures draw them (same evidence, scale and colours); {} without them."""
    if summary is None or int(pid) not in [int(p) for p in summary["patients"]]:
        return {}
    maps = patient_maps(paths, pid)
    index = read_csv(patient_dir(paths, pid) / "index.csv", ["x", "y", "width", "height"])
    out = {}
    for m in summary["methods"]:
        values = atlas_canvas.stitch_map(atlas_canvas.evidence(maps[m], float(summary["display_sigma"])), index)
        disp = np.full(shape, np.nan, np.float32)
        crop = values[: shape[0], : shape[1]]
        disp[: crop.shape[0], : crop.shape[1]] = atlas_canvas.display(crop, float(summary["scale"][m]))
        out[m] = data_uri(atlas_canvas.layer_png(disp), "image/png")
    return out


def jpeg_bytes(rgb: np.ndarray, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def mask_png_bytes(mask: np.ndarray, shape) -> bytes:
    """The evidence mask (slide coordinates) cropped or padded to the canvas `shape`, as an RGBA PNG."""
    h, w = shape
    canvas = np.zeros((h, w), dtype=bool)
    crop = np.asarray(mask, dtype=bool)[:h, :w]
    canvas[: crop.shape[0], : crop.shape[1]] = crop
    rgba = np.zeros((h, w, 4), dtype=np.uint8)
    rgba[canvas] = MASK_RGBA
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def data_uri(data: bytes | None, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}" if data else ""


def patient_script(folder: Path, pid: int, tissue: str, mask: str, atlas: Optional[dict] = None) -> Path:
    """`patient_<pid>.js`: the patient's images as data URIs (tissue, mask, and per atlas method its
    landscape layer), registered under the patient id.

    Why a script and not the image files: bokeh loads images with crossOrigin="anonymous", which
    browsers refuse for file:// URLs (a console error, then a retry); a <script src> and data: URIs
    load from file:// and from a server alike, and only when that patient is picked."""
    path = folder / f"patient_{int(pid)}.js"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"tissue": tissue, "mask": mask, "atlas": atlas or {}})
    path.write_text(f"(window.{STORE} = window.{STORE} || {{}})[{json.dumps(str(int(pid)))}] = {body};\n")
    return path


def _upscaled(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray(rgb).resize((DISPLAY, DISPLAY), Image.NEAREST)


def heat_rgb(gray: np.ndarray) -> np.ndarray:
    """A grey map in [0, 1] through matplotlib's `jet` (the book's overlay colours), uint8 RGB."""
    return (colormap("jet")(np.clip(gray, 0, 1))[..., :3] * 255).round().astype(np.uint8)


def overlay(patch: np.ndarray, gray: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The map's colours blended over the patch, weighted by the map (low relevance shows the tissue)."""
    w = (alpha * np.clip(gray, 0, 1))[..., None]
    return ((1 - w) * patch.astype(np.float32) + w * heat_rgb(gray).astype(np.float32)).round().astype(np.uint8)


def explained_patch_assets(patch: np.ndarray, grays: dict, folder: Path, key: str) -> dict:
    """Write `<key>_patch.png` and per method `<key>_<method>_gray.png` / `_overlay.png`; return
    {"patch": path, method: (gray path, overlay path)}."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, object] = {"patch": folder / f"{key}_patch.png"}
    _upscaled(patch).save(out["patch"])
    for method, gray in grays.items():
        g, o = folder / f"{key}_{method}_gray.png", folder / f"{key}_{method}_overlay.png"
        _upscaled((np.clip(gray, 0, 1) * 255).round().astype(np.uint8)).save(g)
        _upscaled(overlay(patch, gray)).save(o)
        out[method] = (g, o)
    return out


def load_mask(masks_dir: Optional[str], pid: int) -> Optional[np.ndarray]:
    """The synthetic evidence mask (`<masks_dir>/<pid>.npz`, key `mask`), or None when there is none."""
    if not masks_dir:
        return None
    path = Path(str(masks_dir)) / f"{int(pid)}.npz"
    if not path.exists():
        return None
    return load_masks(masks_dir, pid)["mask"]
