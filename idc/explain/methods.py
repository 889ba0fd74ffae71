"""One registry of attribution methods. Each method only says what differs: how to get a raw map
[n, 3, 50, 50] (pixel attributions) or [n, 50, 50] (CAMs, LIME, RISE) for a batch; batching,
device placement, grey-scaling and plotting are the driver's (idc.explain.driver).

A method is called like captum's `attribute(inputs, target, ...)`: `fn(model, x, target, **kwargs)` with
keyword arguments, e.g. `integrated_gradients(model, x, target, steps=50, baseline="blur")`; no config
node. Its defaults are `ExplainConfig`'s (a test keeps them equal). `Method.params` says which `explain.*`
key each argument comes from; the driver (`idc.explain.driver.method_kwargs`) turns the config into
those arguments, and a leaderboard variant is one more argument override.

Engines: captum (Saliency, GuidedBackprop, IntegratedGradients, NoiseTunnel, LayerGradCam),
pytorch-grad-cam (GradCAM++, Score-CAM, LayerCAM), lime (LimeImageExplainer, imported when used: an
optional heavy package); RISE is ours (no maintained package), batched over masks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Mapping, Optional

import numpy as np
import pytorch_grad_cam
import torch
import torch.nn.functional as F
from captum.attr import GuidedBackprop, IntegratedGradients, LayerGradCam, NoiseTunnel, Saliency
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from skimage.segmentation import mark_boundaries
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from idc.data.dataset import normalize_batch
from idc.errors import ConfigError
from idc.model import predict


@dataclass(frozen=True)
class Reference:
    """What the data set looks like, for methods that replace pixels by "nothing": RISE's fill colour
    and IG's `expected` baseline. Built from the training split by `idc.explain.driver.dataset_reference`."""

    mean_rgb: np.ndarray  # [3] float, mean colour of the training patches in 0..255
    patches: np.ndarray  # [k, H, W, 3] uint8, random training patches (seeded)


def need_reference(reference: Optional[Reference], why: str) -> Reference:
    if reference is None:
        raise ConfigError(f"{why} needs the data set's reference patches; pass reference="
                          "idc.explain.driver.dataset_reference(...) (the explain, sanity and leaderboard stages do)")
    return reference


@dataclass(frozen=True)
class Method:
    name: str
    title: str  # as in the book's panel titles
    figure: str  # the book's file name
    fn: Callable  # fn(model, x, target, **kwargs) -> raw map
    params: Mapping[str, str] = field(default_factory=dict)  # keyword argument -> the explain.* key it is read from


def cam_layer(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise ConfigError(f"explain.cam_layer={name!r} is not a module of the model; use layer4 (book), layer3, ...") from None


def no_inplace_relu(model: nn.Module) -> nn.Module:
    """Backward hooks (guided backprop) cannot wrap in-place ReLUs; same numbers, a little more memory."""
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return model


# ---------------------------------------------------------------- gradients (captum)
def vanilla_backprop(model, x, target):
    return Saliency(model).attribute(x, target=target, abs=False).detach()


def guided_backprop(model, x, target):
    return GuidedBackprop(no_inplace_relu(model)).attribute(x, target=target).detach()


IG_BASELINES = ("black", "grey", "blur", "uniform", "expected")


def _normalized(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] -> the model's input space, as Normalize(0.5, 0.5)."""
    return (pixels - 0.5) / 0.5


def ig_baselines(x: torch.Tensor, kind: str = "blur", blur_sigma: float = 5.0, expected_k: int = 8,
                 reference: Optional[Reference] = None) -> list:
    """The baselines IG integrates from (`explain.ig_baseline`), in the model's input space; IG's map is
    the mean of the maps over them (one baseline except `expected`)."""
    kind = str(kind)
    if kind == "black":
        return [torch.full_like(x, -1.0)]
    if kind == "grey":  # pixel 0.5 = normalized 0
        return [torch.zeros_like(x)]
    if kind == "blur":
        sigma = float(blur_sigma)
        k = 2 * int(np.ceil(3 * sigma)) + 1
        return [gaussian_blur(x, [k, k], [sigma, sigma])]
    if kind == "uniform":  # drawn from torch's RNG, which the driver seeds per method
        return [_normalized(torch.rand(x.shape, device=x.device))]
    if kind == "expected":  # Sturmfels et al. 2020 / expected gradients: average over data baselines
        ref = need_reference(reference, "explain.ig_baseline=expected")
        k = min(int(expected_k), len(ref.patches))
        if k < 1:
            raise ConfigError("explain.ig_expected_k must be >= 1 (and the training split non-empty)")
        base = normalize_batch(ref.patches[:k], device=x.device)
        return [b[None].expand_as(x) for b in base]
    raise ConfigError(f"explain.ig_baseline={kind!r} is not known; choose from {list(IG_BASELINES)}")


def integrated_gradients(model, x, target, *, steps: int = 50, baseline: str = "expected", blur_sigma: float = 5.0,
                         internal_batch_size: int = 512, expected_k: int = 8, reference: Optional[Reference] = None):
    """IG from `baseline` (`explain.ig_baseline`; `expected` needs `reference`, the training patches; docs/explain.md
    "IG's baseline"); the mean map over the
    baselines of `expected`. `steps` is the gradient passes per patch whatever the baseline: one baseline gets
    `steps` points on its path, `expected`'s k baselines `steps // k` each (8 x 6 = 48 at the defaults, the
    setting the validation split chose; 8 x 50 before, 8 times the cost of one path)."""
    ig = IntegratedGradients(model)
    bases = ig_baselines(x, baseline, blur_sigma=blur_sigma, expected_k=expected_k, reference=reference)
    per_path = max(1, int(steps) // len(bases))
    maps = [ig.attribute(x, baselines=b, target=target, n_steps=per_path,
                         internal_batch_size=internal_batch_size).detach() for b in bases]
    return torch.stack(maps).mean(0)


def noise_samples_per_pass(batch_size: int, n: int) -> int:
    """Noise samples per patch in one forward/backward pass, so that a pass holds about
    8 x batch_size images (as IG's and RISE's inner batches): larger passes only add memory traffic."""
    return max(1, (8 * batch_size) // max(1, n))


def smoothgrad(model, x, target, *, samples: int = 25, stdev: float = 0.15, batch_size: int = 64):
    """Noise stdev as a fraction of the input range (2.0 after Normalize(0.5, 0.5)), as SmoothGrad's paper."""
    return NoiseTunnel(Saliency(model)).attribute(
        x, nt_type="smoothgrad", nt_samples=samples, stdevs=2.0 * stdev,
        nt_samples_batch_size=noise_samples_per_pass(batch_size, len(x)), target=target, abs=False).detach()


# ---------------------------------------------------------------- CAMs
def upsample(cam: torch.Tensor, size) -> torch.Tensor:
    """[n, 1, h, w] -> [n, H, W], bilinear (as captum's LayerAttribution.interpolate(..., "bilinear"))."""
    return F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]


def relu_cam(model, x, target, layer: str) -> torch.Tensor:
    """Grad-CAM at `layer`: channel weights = mean gradient over the map, ReLU; [n, 1, h, w]."""
    return LayerGradCam(model, cam_layer(model, layer)).attribute(x, target=target, relu_attributions=True).detach()


def upsample_minmax(cam: torch.Tensor, size) -> torch.Tensor:
    """[n, 1, h, w] -> [n, H, W], bilinear, each map scaled to [0, 1] (a flat map stays 0)."""
    up = upsample(cam, size)
    lo = up.amin(dim=(1, 2), keepdim=True)
    span = up.amax(dim=(1, 2), keepdim=True) - lo
    return torch.where(span > 0, (up - lo) / span.clamp_min(1e-12), torch.zeros_like(up))


def gradcam(model, x, target, *, layer: str = "layer4", minmax: bool = False):
    """Channel weights = mean gradient over the map, ReLU, bilinear upsampling: the raw ReLU'd CAM, whose values
    compare between patches (the leaderboard's mass, the atlas's landscapes). The book min-max scales each map
    to [0, 1] (`minmax=True`); that shift changes the map's relevance mass (its minimum becomes 0), so only the
    grey display normalizes by default (`to_grayscale` gives the same image)."""
    cam = relu_cam(model, x, target, layer)
    return upsample_minmax(cam, x.shape[-2:]) if minmax else upsample(cam, x.shape[-2:])


def guided_gradcam(model, x, target, *, layer: str = "layer4"):
    """As published (Selvaraju et al. 2017; captum's GuidedGradCam): the upsampled ReLU'd CAM times the
    guided-backprop map, element-wise, with no normalization in between (only the display normalizes)."""
    cam = upsample(relu_cam(model, x, target, layer), x.shape[-2:])
    return cam[:, None] * guided_backprop(model, x, target)


def _unscaled(cam_class):
    """pytorch-grad-cam's `cam_class` without its per-map min-max scaling (`scale_cam_image`): the ReLU'd CAM
    of the one target layer, upsampled bilinearly as `upsample` does. The library's maps are these, min-max
    scaled (tests/test_explain_methods.py); the raw ones keep the relevance mass of the CAM itself."""
    class Unscaled(cam_class):
        def compute_cam_per_layer(self, input_tensor, targets, eigen_smooth):
            acts = [a.cpu().data.numpy() for a in self.activations_and_grads.activations]
            grads = [g.cpu().data.numpy() for g in self.activations_and_grads.gradients]
            layer, grad = self.target_layers[0], grads[0] if grads else None
            cam = np.maximum(self.get_cam_image(input_tensor, layer, targets, acts[0], grad, eigen_smooth), 0)
            return [upsample(torch.from_numpy(np.float32(cam))[:, None], input_tensor.shape[-2:]).numpy()]

        def aggregate_multi_layers(self, cam_per_target_layer):
            return cam_per_target_layer[0]

    Unscaled.__name__ = cam_class.__name__
    return Unscaled


def _grad_cam_lib(class_name: str):
    """A method that runs pytorch-grad-cam's `class_name` on the CAM layer `layer` (raw, not min-max scaled)."""
    def fn(model, x, target, *, layer: str = "layer4", batch_size: int = 64):
        cam = _unscaled(getattr(pytorch_grad_cam, class_name))(model=model, target_layers=[cam_layer(model, layer)])
        cam.batch_size = batch_size * 4  # read by Score-CAM only (masked forward passes per batch)
        with torch.enable_grad():
            maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in target])
        return torch.as_tensor(maps)
    return fn


# ---------------------------------------------------------------- LIME
LIME_HIDE = {"black": 0, "mean": None}  # None: lime fills each hidden superpixel with its own mean colour


def lime(model, x, target, *, images: Optional[np.ndarray] = None, num_samples: int = 1000, batch_size: int = 500,
         num_features: int = 20, kernel_size: float = 4.0, hide_color: str = "black", seed: int = 0,
         vis: Optional[list] = None):
    """LIME per image (quickshift superpixels, the book's 1,000 samples); the classifier function
    normalizes uint8 images and predicts in batches of `batch_size` (lime's default is 10). `images`: the
    uint8 NHWC patches of `x`; `vis` (a list), if given, receives each patch's boundary image for figures."""
    from lime.lime_image import LimeImageExplainer  # optional heavy package: imported when LIME runs
    from lime.wrappers.scikit_image import SegmentationAlgorithm

    if images is None:
        raise ConfigError("LIME needs the uint8 patches (images=...)")
    if hide_color not in LIME_HIDE:
        raise ConfigError(f"explain.lime_hide_color={hide_color!r} is not known; choose black (the book) "
                          "or mean (each superpixel's mean colour)")
    device = x.device

    def classify(batch):
        batch = np.clip(np.asarray(batch), 0, 255).astype(np.uint8)
        return predict(model, batch, batch_size=max(1, len(batch)), device=device, desc=None)

    # lime's own default segmentation, with the kernel size configurable (smaller = finer superpixels)
    segmenter = SegmentationAlgorithm("quickshift", kernel_size=kernel_size, max_dist=200, ratio=0.2, random_seed=seed)
    maps = []
    for image, t in zip(images, target.tolist()):
        # one explainer per patch: lime draws every patch's samples from the explainer's one RandomState, so a
        # shared explainer would give a patch other samples after a neighbour with more or fewer superpixels
        # (its map would depend on its batch, and a stain-perturbed copy's on its neighbours' segmentation)
        explainer = LimeImageExplainer(random_state=seed)
        exp = explainer.explain_instance(np.asarray(image), classify, top_labels=2, hide_color=LIME_HIDE[hide_color],
                                         num_samples=num_samples, batch_size=batch_size, random_seed=seed,
                                         segmentation_fn=segmenter)
        weights = np.zeros(exp.segments.max() + 1, np.float32)  # per superpixel, 0 where LIME kept none
        for segment, w in exp.local_exp[t]:
            weights[segment] = w
        maps.append(weights[exp.segments])
        if vis is not None:  # the superpixels of the class that was explained (t), not LIME's top label
            shown, mask = exp.get_image_and_mask(t, positive_only=False, num_features=num_features, hide_rest=True)
            vis.append(mark_boundaries(shown / 255.0, mask))
    return torch.as_tensor(np.stack(maps))


# ---------------------------------------------------------------- RISE (ours)
def rise_masks(n: int, grid: int, p: float, size, seed: int) -> torch.Tensor:
    """N random binary grid masks, bilinearly upsampled and randomly shifted (Petsiuk et al. 2018)."""
    g = torch.Generator().manual_seed(seed)
    H, W = size
    ch, cw = int(np.ceil(H / grid)), int(np.ceil(W / grid))
    small = (torch.rand(n, 1, grid, grid, generator=g) < p).float()
    up = F.interpolate(small, size=((grid + 1) * ch, (grid + 1) * cw), mode="bilinear", align_corners=False)[:, 0]
    dy = torch.randint(0, ch, (n,), generator=g).tolist()
    dx = torch.randint(0, cw, (n,), generator=g).tolist()
    return torch.stack([up[i, y:y + H, x:x + W] for i, (y, x) in enumerate(zip(dy, dx))])


RISE_FILLS = {"black": 0.0, "grey": 0.5, "white": 1.0}  # and "mean"


def rise_fill(x: torch.Tensor, kind: str = "mean", reference: Optional[Reference] = None) -> torch.Tensor:
    """[3, 1, 1] pixel colour in [0, 1] that masked pixels take (`explain.rise_fill`): the data set's mean
    colour by default (black looks like haematoxylin in H&E), or black / white / grey."""
    kind = str(kind)
    if kind == "mean":
        rgb = np.asarray(need_reference(reference, "explain.rise_fill=mean").mean_rgb, dtype=np.float32) / 255.0
    elif kind in RISE_FILLS:
        rgb = np.full(3, RISE_FILLS[kind], np.float32)
    else:
        raise ConfigError(f"explain.rise_fill={kind!r} is not known; choose from mean, black, grey, white")
    return torch.as_tensor(rgb, device=x.device).view(3, 1, 1)


@torch.no_grad()
def rise(model, x, target, *, num_masks: int = 2000, cell: int = 8, p: float = 0.5, fill: str = "mean", seed: int = 0,
         batch_size: int = 64, reference: Optional[Reference] = None):
    """Saliency = sum over masks of P(target | image * mask + fill * (1 - mask)) * mask / (N * p); masking
    in pixel space towards `fill`, all masks of one image in batches of `batch_size * 8`."""
    masks = rise_masks(num_masks, cell, p, x.shape[-2:], seed).to(x.device)
    colour = rise_fill(x, fill, reference)
    chunk = max(1, batch_size * 8)
    out = torch.zeros(len(x), *x.shape[-2:], device=x.device)
    for i, (img, t) in enumerate(zip(x, target.tolist())):
        pixels = img * 0.5 + 0.5
        for start in range(0, len(masks), chunk):
            m = masks[start:start + chunk][:, None]
            probs = torch.softmax(model(_normalized(pixels[None] * m + colour * (1 - m))), 1)[:, t]
            m = m[:, 0]
            out[i] += torch.einsum("k,khw->hw", probs, m)
    return out / (len(masks) * p)


# ---------------------------------------------------------------- the registry
CAM = {"layer": "cam_layer"}
CAM_BATCHED = {**CAM, "batch_size": "batch_size"}
METHODS: Dict[str, Method] = {m.name: m for m in [
    Method("lime", "LIME Explanation", "chapter_05_lime_explanation", lime, {
        "num_samples": "lime_num_samples", "batch_size": "lime_batch_size", "num_features": "lime_num_features",
        "kernel_size": "lime_kernel_size", "hide_color": "lime_hide_color", "seed": "seed"}),
    Method("vanilla_backprop", "Vanilla Backprop", "chapter_05_vanilla_backprop", vanilla_backprop),
    Method("guided_backprop", "Guided Backprop", "chapter_05_guided_backprop", guided_backprop),
    Method("integrated_gradients", "Integrated Gradients", "chapter_05_integrated_gradients", integrated_gradients, {
        "steps": "ig_steps", "baseline": "ig_baseline", "blur_sigma": "ig_blur_sigma",
        "internal_batch_size": "ig_internal_batch_size", "expected_k": "ig_expected_k"}),
    Method("smoothgrad", "SmoothGrad", "chapter_05_smooth_grad", smoothgrad, {
        "samples": "smoothgrad_samples", "stdev": "smoothgrad_stdev", "batch_size": "batch_size"}),
    Method("gradcam", "Grad-CAM", "chapter_05_grad_cam", gradcam, CAM),
    Method("guided_gradcam", "Guided Grad-CAM", "chapter_05_guided_grad_cam", guided_gradcam, CAM),
    Method("gradcam_pp", "Grad-CAM++", "chapter_05_gradcam_pp", _grad_cam_lib("GradCAMPlusPlus"), CAM_BATCHED),
    Method("scorecam", "Score-CAM", "chapter_05_score_cam", _grad_cam_lib("ScoreCAM"), CAM_BATCHED),
    Method("layercam", "LayerCAM", "chapter_05_layer_cam", _grad_cam_lib("LayerCAM"), CAM_BATCHED),
    Method("rise", "RISE", "chapter_05_rise", rise, {
        "num_masks": "rise_num_masks", "cell": "rise_cell", "p": "rise_p", "fill": "rise_fill", "seed": "seed",
        "batch_size": "batch_size"}),
]}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"explain.methods: unknown method {name!r}; choose from {list(METHODS)}")
    return METHODS[name]
