"""Chapter-10 style visualizations: intermediate activations of one patch, filter patterns by
gradient ascent in input space, and a Grad-CAM heat map (jet) superimposed on the patch at 40%.

`draw(...)` runs as part of `make explain` (explain.visualize=true) and as `make visualize`
(`idc.explain.visualize`). Writes explain/visualize/activations.png, filters_<layer>.png and
gradcam_overlay.png (`idc.paths` keys `activations_png`, `filters_png`, `gradcam_overlay_png`).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from idc.data.dataset import normalize_batch
from idc.explain.driver import attribute, method_kwargs
from idc.explain.methods import cam_layer
from idc.paths import RunPaths
from idc.utils import atomic_path, wrote
from idc.viz.style import colormap, image_axis, save_figure_atomic, subplots

log = logging.getLogger("idc")
STAGES = ["conv1", "layer1", "layer2", "layer3", "layer4"]


@torch.no_grad()
def activations(model, x: torch.Tensor, stages=STAGES) -> dict:
    """Output of each named stage for one batch (forward hooks, removed afterwards)."""
    out, handles = {}, []
    for name in stages:
        handles.append(cam_layer(model, name).register_forward_hook(lambda m, i, o, n=name: out.__setitem__(n, o.detach())))
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return out


def activation_grid(acts: dict, path: Path, per_stage: int = 16) -> Path:
    fig, axes = subplots(len(acts), per_stage, figsize=(per_stage * 0.9, len(acts) * 1.1), squeeze=False)
    for r, (name, a) in enumerate(acts.items()):
        for c in range(per_stage):
            ax = axes[r, c]
            if c < a.shape[1]:
                image_axis(ax, a[0, c].cpu().numpy(), cmap="viridis")
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(f"{name}\n{tuple(a.shape[1:])}", fontsize=7)
        axes[r, 0].yaxis.label.set_visible(True)
    fig.suptitle(f"Intermediate activations (first {per_stage} channels per stage)")
    return save_figure_atomic(fig, path)


def filter_patterns(model, layer: str, count: int, steps: int, size: int = 50, seed: int = 0, device="cpu") -> np.ndarray:
    """Inputs that maximize the mean activation of each of the first `count` channels of `layer`:
    gradient ascent with L2-normalized gradient steps from a grey image plus noise, all channels at once
    (one image per channel in a batch). Returns uint8 [count, size, size, 3]."""
    g = torch.Generator().manual_seed(seed)
    module = cam_layer(model, layer)
    found = {}
    handle = module.register_forward_hook(lambda m, i, o: found.__setitem__("a", o))
    n = min(count, _channels(model, module, size, device))
    x = (0.1 * torch.randn(n, 3, size, size, generator=g)).to(device).requires_grad_(True)
    try:
        for _ in tqdm(range(steps), desc=f"filters {layer}", leave=False):
            model(x)
            objective = found["a"][torch.arange(n), torch.arange(n)].mean(dim=(1, 2)).sum()
            (grad,) = torch.autograd.grad(objective, x)
            grad = grad / (grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-8)
            with torch.no_grad():
                x += 1.0 * grad
                x.clamp_(-1, 1)
    finally:
        handle.remove()
    pixels = (x.detach() * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return (pixels * 255).round().astype(np.uint8)


def _channels(model, module, size, device) -> int:
    seen = {}
    h = module.register_forward_hook(lambda m, i, o: seen.__setitem__("c", o.shape[1]))
    with torch.no_grad():
        model(torch.zeros(2, 3, size, size, device=device))
    h.remove()
    return seen["c"]


def tile(images: np.ndarray, cols: int = 8, pad: int = 2) -> np.ndarray:
    n, h, w, c = images.shape
    rows = -(-n // cols)
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i, im in enumerate(images):
        r, k = divmod(i, cols)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = im
    return canvas


def gradcam_overlay(image: np.ndarray, cam: np.ndarray, scale: int = 4, alpha: float = 0.4) -> np.ndarray:
    """Jet-coloured heat map over the upscaled patch: (1 - alpha) * patch + alpha * heat."""
    big = np.kron(image.astype(np.float32) / 255, np.ones((scale, scale, 1)))
    heat = colormap("jet")(np.kron(cam, np.ones((scale, scale))))[..., :3]
    return np.clip((1 - alpha) * big + alpha * heat, 0, 1)


def draw(cfg, paths: RunPaths, model, images: np.ndarray, chosen: pd.DataFrame, device) -> list:
    e = cfg.explain
    i = min(max(e.visualize_patch, 0), len(images) - 1)
    x = normalize_batch(images[i:i + 1], device=device)
    written = [wrote(activation_grid(activations(model, x), paths.activations_png), "activations")]
    for layer in e.filter_layers:
        pats = filter_patterns(model, layer, e.filter_count, e.filter_steps, seed=e.seed, device=device)
        path = paths.path("filters_png", layer=layer)
        with atomic_path(path, suffix=".tmp.png") as tmp:
            Image.fromarray(tile(pats)).save(tmp)
        written.append(wrote(path, f"{len(pats)} filter patterns"))
    target = int(chosen["explained_class"].iloc[i]) if "explained_class" in chosen else int(chosen["pred"].iloc[i])
    cam = attribute(model, x, [target], "gradcam", **method_kwargs("gradcam", e, {"minmax": True}))[0]  # the book's [0, 1] map
    fig, axes = subplots(1, 2, figsize=(8, 4))
    image_axis(axes[0], np.kron(images[i], np.ones((4, 4, 1), np.uint8)), f"Patch (patient {chosen['patient_id'].iloc[i]})")
    image_axis(axes[1], gradcam_overlay(images[i], cam), f"Grad-CAM ({e.cam_layer}) over the patch, 40%")
    written.append(wrote(save_figure_atomic(fig, paths.gradcam_overlay_png), "Grad-CAM overlay"))
    return written
