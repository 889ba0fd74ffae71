"""The book's PatchDataset and transforms (PIL per item); the packed cache reproduces them exactly."""
from __future__ import annotations

from pathlib import Path

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


def load_rgb(path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


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
