"""Training augmentation as batched tensor ops: per-image flips and HED stain jitter, then normalization.

HED jitter (Tellez et al. 2019, "Whole-slide mitosis detection in H&E breast histology using PHH3 as a
reference to train distilled stain-invariant convolutional networks"): each image's pixels go to optical
density OD = -ln(rgb) (rgb in (0, 1], clamped at 1e-6), are unmixed into haematoxylin, eosin and DAB
concentrations with scikit-image's Ruifrok-Johnston matrix (`skimage.color.hed_from_rgb`, the matrix of
`rgb2hed`), each channel c becomes alpha_c * c + beta_c with alpha_c ~ U(1 - scale, 1 + scale) and
beta_c ~ U(-shift, shift) drawn per image, and is mixed back (`rgb_from_hed`, its inverse). beta is in
natural-log OD units (scikit-image's `rgb2hed` divides OD by -ln(1e-6) = 13.8; ours does not, so
beta = 0.05 here is a shift of 0.05 OD). With alpha = 1 and beta = 0 it is the identity up to float
error (tests/test_stain.py). Labels are never touched.

The random numbers come from the loader's numpy generator seeded by (seed, epoch), drawn per batch after
the flips (`draw_batch`), so PackedLoader and DeviceLoader draw the same, and a resumed epoch repeats.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
from skimage.color import hed_from_rgb, rgb_from_hed

MIN_RGB = 1e-6  # as scikit-image's rgb2hed: no log(0)


def draw_batch(rng: np.random.Generator, n: int, flip: bool, hed_scale: float = 0.0,
               hed_shift: float = 0.0) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(flips bool [n, 2] (horizontal, vertical) or None, hed float32 [n, 2, 3] (alpha, beta) or None).

    The one sequence of draws per batch both loaders follow: horizontal flips, vertical flips, then
    alpha and beta of the HED jitter (only what is switched on draws anything).
    """
    flips = None
    if flip:
        h = rng.random(n) < 0.5
        v = rng.random(n) < 0.5
        flips = np.stack([h, v], axis=1)
    hed = None
    if hed_scale > 0 or hed_shift > 0:
        alpha = rng.uniform(1 - hed_scale, 1 + hed_scale, (n, 3))
        beta = rng.uniform(-hed_shift, hed_shift, (n, 3))
        hed = np.stack([alpha, beta], axis=1).astype(np.float32)
    return flips, hed


def hed_jitter_(x: torch.Tensor, hed: torch.Tensor) -> torch.Tensor:
    """Per-image HED jitter of float NCHW pixels in [0, 1], in place; `hed` [n, 2, 3] = (alpha, beta)."""
    to_hed = torch.as_tensor(hed_from_rgb, dtype=x.dtype, device=x.device)
    to_rgb = torch.as_tensor(rgb_from_hed, dtype=x.dtype, device=x.device)
    od = x.clamp(min=MIN_RGB).log_().neg_().permute(0, 2, 3, 1)  # NHWC view: the mixing is a matmul on C
    stains = torch.addcmul(hed[:, None, None, 1], od @ to_hed, hed[:, None, None, 0])  # alpha * s + beta
    return x.copy_((stains @ to_rgb).neg_().exp_().clamp_(0, 1).permute(0, 3, 1, 2))


def flip_normalize(x: torch.Tensor, flips: Optional[torch.Tensor], channels_last: bool = False,
                   hed: Optional[torch.Tensor] = None) -> torch.Tensor:
    """uint8 NHWC batch on its device -> float32 NCHW (x / 255 - 0.5) / 0.5, with per-image flips and,
    when `hed` is given, HED jitter between the / 255 and the normalization.

    `flips` is bool [n, 2] (horizontal, vertical). torch.where over flipped views keeps every step a
    batched kernel with no data-dependent shapes (a boolean index would sync with the host).
    """
    if flips is not None:
        x = torch.where(flips[:, 0, None, None, None], x.flip(2), x)
        x = torch.where(flips[:, 1, None, None, None], x.flip(1), x)
    n, h, w, c = x.shape
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty((n, c, h, w), dtype=torch.float32, device=x.device).contiguous(memory_format=fmt)
    out.copy_(x.permute(0, 3, 1, 2))
    out.div_(255)
    if hed is not None:
        hed_jitter_(out, hed)
    return out.sub_(0.5).div_(0.5)
