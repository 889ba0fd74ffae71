"""The book's PatchDataset and transforms (PIL per item); the packed cache reproduces them exactly."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
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
