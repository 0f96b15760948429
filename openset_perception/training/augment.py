"""Training crops: random scale of the shorter side, padding with the mean colour, crop, flip.

Every random choice comes from a generator seeded by (seed, epoch, index), so a crop depends on
nothing but those numbers: runs are reproducible and resumable, whatever the number of workers.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from openset_perception.data.sample import Sample

IGNORE_INDEX = 255


def random_crop(
    sample: Sample,
    rng: np.random.Generator,
    crop_size: tuple[int, int],
    scale_range: tuple[float, float],
    flip: bool,
    pad_colour: tuple[int, int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Augmented (image HxWx3 uint8, labels HxW uint8) of exactly ``crop_size``."""
    if sample.semantic is None:
        raise ValueError(f"sample '{sample.name}' has no semantic labels: it cannot be used for training")
    image, labels = sample.image, sample.semantic
    scale = rng.uniform(*scale_range)
    if scale != 1.0:
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        labels = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
    crop_h, crop_w = crop_size
    pad_h, pad_w = max(0, crop_h - image.shape[0]), max(0, crop_w - image.shape[1])
    if pad_h or pad_w:
        image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=pad_colour)
        labels = cv2.copyMakeBorder(labels, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=IGNORE_INDEX)
    top = rng.integers(0, image.shape[0] - crop_h + 1)
    left = rng.integers(0, image.shape[1] - crop_w + 1)
    image = image[top : top + crop_h, left : left + crop_w]
    labels = labels[top : top + crop_h, left : left + crop_w]
    if flip and rng.random() < 0.5:
        image, labels = image[:, ::-1], labels[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)


class TrainingCrops(torch.utils.data.Dataset):
    """Wraps a Dataset into augmented (image uint8 (3,H,W), labels long (H,W)) training pairs."""

    def __init__(
        self,
        dataset,
        crop_size: tuple[int, int],
        scale_range: tuple[float, float],
        flip: bool,
        pad_colour: tuple[int, int, int],
        seed: int,
    ) -> None:
        self.dataset = dataset
        self.crop_size = crop_size
        self.scale_range = scale_range
        self.flip = flip
        self.pad_colour = pad_colour
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image, labels = random_crop(
            self.dataset[index], rng, self.crop_size, self.scale_range, self.flip, self.pad_colour
        )
        return torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(labels).long()
