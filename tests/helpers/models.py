"""Toy models with known answers, shared by the attribution and score tests."""
from __future__ import annotations

import torch
from torch import nn

REGION = (slice(0, 20), slice(30, 50))  # the only pixels the default RegionModel looks at (50 x 50 input)


class Masked(nn.Module):
    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, a):
        return a * self.mask


class RegionModel(nn.Module):
    """logit(IDC) = (sum of ReLU(conv) over a fixed region - `offset`) / `scale`; logit(normal) = its negative.

    The conv is 5x5, stride 5, every weight 0.05, two channels; `region` (pixel slices on 5-px cell
    boundaries of a `size` x `size` input) is where its output is kept. `layer4` (conv, then the region
    mask) is what CAMs hook; the defaults keep the softmax unsaturated on 50x50 inputs near 0.4 so that
    perturbation methods (RISE, LIME) see the output move."""

    def __init__(self, region=REGION, size: int = 50, offset: float = 40.0, scale: float = 4.0):
        super().__init__()
        conv = nn.Conv2d(3, 2, kernel_size=5, stride=5, bias=False)
        with torch.no_grad():
            conv.weight.fill_(0.05)
        mask = torch.zeros(1, 1, size // 5, size // 5)
        mask[:, :, region[0].start // 5:region[0].stop // 5, region[1].start // 5:region[1].stop // 5] = 1.0
        self.layer4 = nn.Sequential(conv, Masked(mask))
        self.relu = nn.ReLU()
        self.offset, self.scale = offset, scale

    def forward(self, x):
        s = (self.relu(self.layer4(x)).sum(dim=(1, 2, 3)) - self.offset) / self.scale
        return torch.stack([-s, s], dim=1)
