"""The book's PatchDataset and transforms (PIL per item), and `normalize_batch`: the same arithmetic on
whole uint8 batches (the packed cache, LIME's perturbed images), bit-identical to ToTensor + Normalize."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def resize_transform(size: int = 50):
    return transforms.Resize((size, size))


def train_transform(size: int = 50):
    return transforms.Compose([
        resize_transform(size),
        transforms.RandomHorizontalFlip(),
        transforms.RandomVerticalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])


def eval_transform(size: int = 50):
    return transforms.Compose([resize_transform(size), transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


# Greyscale modes PIL opens with more than 8 bits: its convert("RGB") clips them at 255 (all white).
WIDE_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def load_rgb(path) -> Image.Image:
    """The file as 8-bit RGB. 16-bit greyscale (PNG bit depth 16) is scaled to 0..255 first."""
    with Image.open(path) as im:
        if im.mode in WIDE_GREY:
            return Image.fromarray(scale_to_8bit(np.asarray(im)), "L").convert("RGB")
        return im.convert("RGB")


def scale_to_8bit(grey: np.ndarray) -> np.ndarray:
    """uint8 from 16-bit samples: round(v * 255 / 65535), so 0 -> 0 and 65535 -> 255 exactly."""
    v = np.clip(grey.astype(np.int64), 0, 65535)
    return ((v * 255 + 32767) // 65535).astype(np.uint8)


class PatchDataset(Dataset):
    """(image tensor, target) per row of a patches table; `image_id` is relative to `images_dir`."""

    def __init__(self, df: pd.DataFrame, images_dir, transform=None):
        self.image_ids = df["image_id"].tolist()
        self.targets = df["target"].astype(int).tolist()
        self.images_dir = Path(images_dir)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, idx):
        image = load_rgb(self.images_dir / self.image_ids[idx])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[idx]


def normalize_inplace(x: np.ndarray) -> np.ndarray:
    """In place on float32 pixel values 0..255: ToTensor's / 255, then Normalize's (x - 0.5) / 0.5."""
    x /= np.float32(255)
    x -= np.float32(0.5)
    x /= np.float32(0.5)
    return x


def normalize_batch(images, device=None) -> torch.Tensor:
    """uint8 NHWC (numpy or tensor) -> float32 NCHW, as ToTensor + Normalize(0.5, 0.5) per image.

    The same float32 operations as the transforms (x / 255 - 0.5) / 0.5, hence bit-identical. On CPU in
    numpy: single-threaded passes beat torch's multi-threaded elementwise kernels on a small, busy CPU.
    On an accelerator the uint8 batch is copied there first (4x fewer bytes) and normalized there.
    """
    device = torch.device(device) if device is not None else None
    on_device = images.device if isinstance(images, torch.Tensor) else torch.device("cpu")
    target = device or on_device
    if target.type == "cpu":
        arr = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        return torch.from_numpy(normalize_inplace(arr.transpose(0, 3, 1, 2).astype(np.float32, order="C")))
    t = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    t = t.to(target, non_blocking=True)
    n, h, w, c = t.shape
    # contiguous NCHW: a permuted (channels-last strided) batch sends convolutions down a slower path
    x = torch.empty((n, c, h, w), dtype=torch.float32, device=target)
    x.copy_(t.permute(0, 3, 1, 2))
    return x.div_(255).sub_(0.5).div_(0.5)
