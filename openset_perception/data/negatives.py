"""Negative (outlier) patches and mixed-content images (thesis eq. 4.17).

``x' = (1 - m) * x+ + pad(x-, m)``: a negative patch is pasted into an inlier crop at a uniform
position; pasted pixels get the ignore label and outlier mask 1. Pasting happens on [0, 1] float
tensors on the training device, so the same code serves real negatives (decoded images) and
synthetic ones (flow samples that must keep their gradient).

Sources implement ``NegativeSource.sample(rng, height, width) -> (patch (3,h,w) float in [0,1],
mask (h,w) bool)`` for a target crop of ``height`` x ``width``:

- ``ProceduralNegatives``: textured shapes from the procedural-streets module (never test anomalies);
- ``FolderNegatives``: any folder of images, cut out with a random rectangle or ellipse;
- ``ADE20kNegatives``: ADEChallengeData2016 crops, a random rectangle (p = 0.5) or all pixels of two
  random classes, or one connected instance scaled to the scene, with optional class exclusion;
- ``NoiseNegatives``: uniform-noise rectangles (the baseline synthetic negatives are compared with);
- ``MixedNegatives``: real with probability b, otherwise synthetic (eq. 4.21).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch

from openset_perception.data.image_files import read_rgb
from openset_perception.data.synthetic_streets import random_negative_patch

IGNORE_INDEX = 255
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class NegativeSource(Protocol):
    def sample(
        self, rng: np.random.Generator, height: int, width: int
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def patch_side(rng: np.random.Generator, height: int, width: int, area_range: tuple[float, float]) -> int:
    """Square side covering a random fraction of the crop (RNVP paper: 1.5-8 %), a multiple of 8."""
    area = rng.uniform(*area_range) * height * width
    side = round(np.sqrt(area) / 8.0) * 8
    return int(np.clip(side, 8, max(8, min(height, width) // 8 * 8)))


def _to_patch(rgb: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    patch = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255.0
    return patch, torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))


class ProceduralNegatives:
    def __init__(self, area_range: tuple[float, float] = (0.015, 0.08)) -> None:
        self.area_range = area_range

    def sample(self, rng: np.random.Generator, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        side = patch_side(rng, height, width, self.area_range)
        aspect = rng.uniform(0.6, 1.6)
        h = int(np.clip(side * aspect, 8, height))
        w = int(np.clip(side / aspect, 8, width))
        return _to_patch(*random_negative_patch(rng, h, w))


class NoiseNegatives:
    """Uniform-noise rectangles: the naive synthetic negatives (thesis Table 6.11 baseline)."""

    def __init__(self, area_range: tuple[float, float] = (0.015, 0.08)) -> None:
        self.area_range = area_range

    def sample(self, rng: np.random.Generator, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        side = patch_side(rng, height, width, self.area_range)
        noise = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        return _to_patch(noise, np.ones((side, side), dtype=bool))


def _list_images(root: Path) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"negatives folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under negatives folder {root}")
    return files


def _random_crop(rng: np.random.Generator, image: np.ndarray, side: int) -> np.ndarray:
    """Square crop of ``side`` px, rescaling first when the image is smaller."""
    h, w = image.shape[:2]
    if min(h, w) < side:
        scale = side / min(h, w)
        image = cv2.resize(image, (max(side, round(w * scale)), max(side, round(h * scale))))
        h, w = image.shape[:2]
    top = rng.integers(0, h - side + 1)
    left = rng.integers(0, w - side + 1)
    return image[top : top + side, left : left + side]


def random_shape_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random rectangle (sides 16 px .. size, step 8) or an ellipse filling the patch."""
    if rng.random() < 0.5:
        mask = np.zeros((height, width), dtype=np.uint8)
        centre = (width // 2, height // 2)
        axes = (max(4, width // 2 - 1), max(4, height // 2 - 1))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
        return mask.astype(bool)
    mask = np.zeros((height, width), dtype=bool)
    rh = int(rng.choice(np.arange(min(16, height), height + 1, 8)))
    rw = int(rng.choice(np.arange(min(16, width), width + 1, 8)))
    top, left = rng.integers(0, height - rh + 1), rng.integers(0, width - rw + 1)
    mask[top : top + rh, left : left + rw] = True
    return mask


class FolderNegatives:
    """Any folder of images as negatives: a random crop cut out by a random shape."""

    def __init__(self, root: str | Path, area_range: tuple[float, float] = (0.015, 0.08)) -> None:
        self.files = _list_images(Path(root))
        self.area_range = area_range

    def sample(self, rng: np.random.Generator, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        side = patch_side(rng, height, width, self.area_range)
        crop = _random_crop(rng, read_rgb(self.files[rng.integers(len(self.files))]), side)
        return _to_patch(crop, random_shape_mask(rng, side, side))


class ADE20kNegatives:
    """Negatives from ADEChallengeData2016 (``images/training/*.jpg``, ``annotations/training/*.png``).

    ``mode``: 'mixed' (rectangle with p = 0.5, else two random classes, as the reference recipe) or
    'instance' (one connected region of a random class, scaled to ``area_range`` of the crop).
    ``exclude_classes``: ADE class indices (1..150) that overlap the inlier taxonomy (e.g. road, car);
    their pixels are never pasted.
    """

    def __init__(
        self,
        root: str | Path,
        crop_size: int = 384,
        mode: str = "mixed",
        exclude_classes: Sequence[int] = (),
        area_range: tuple[float, float] = (0.015, 0.08),
    ) -> None:
        root = Path(root)
        self.images = _list_images(root / "images" / "training")
        self.annotations = root / "annotations" / "training"
        if not self.annotations.is_dir():
            raise FileNotFoundError(f"ADE20k annotations not found: {self.annotations}")
        if mode not in ("mixed", "instance"):
            raise ValueError(f"ADE20k negatives mode must be 'mixed' or 'instance', got '{mode}'")
        self.crop_size = crop_size
        self.mode = mode
        self.excluded = np.asarray(sorted(exclude_classes), dtype=np.int64)
        self.area_range = area_range

    def _load(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        path = self.images[rng.integers(len(self.images))]
        labels = cv2.imread(str(self.annotations / f"{path.stem}.png"), cv2.IMREAD_UNCHANGED)
        if labels is None:
            raise OSError(f"missing or unreadable ADE20k annotation for {path.name}")
        return read_rgb(path), labels

    def _allowed(self, labels: np.ndarray) -> np.ndarray:
        return (labels > 0) & ~np.isin(labels, self.excluded)

    def sample(self, rng: np.random.Generator, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, labels = self._load(rng)
        if self.mode == "instance":
            return self._instance(rng, image, labels, height, width)
        side = min(self.crop_size, height, width)
        stacked = _random_crop(rng, np.dstack([image, labels]), side)
        crop, crop_labels = stacked[..., :3], stacked[..., 3]
        allowed = self._allowed(crop_labels)
        classes = np.unique(crop_labels[allowed])
        if rng.random() < 0.5 or classes.size == 0:
            mask = random_shape_mask(rng, side, side) & (allowed | (self.excluded.size == 0))
        else:
            chosen = rng.choice(classes, size=min(2, classes.size), replace=False)
            mask = np.isin(crop_labels, chosen)
        if not mask.any():
            mask = random_shape_mask(rng, side, side)
        return _to_patch(crop, mask)

    def _instance(
        self, rng: np.random.Generator, image: np.ndarray, labels: np.ndarray, height: int, width: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        allowed = self._allowed(labels)
        classes = np.unique(labels[allowed])
        if classes.size == 0:
            side = patch_side(rng, height, width, self.area_range)
            return _to_patch(_random_crop(rng, image, side), random_shape_mask(rng, side, side))
        region = (labels == rng.choice(classes)).astype(np.uint8)
        _count, components, stats, _ = cv2.connectedComponentsWithStats(region, connectivity=8)
        largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        x, y, w, h = stats[largest, :4]
        rgb = image[y : y + h, x : x + w]
        mask = (components[y : y + h, x : x + w] == largest).astype(np.uint8)
        target_area = rng.uniform(*self.area_range) * height * width
        scale = np.sqrt(target_area / max(1, int(mask.sum())))
        new_w = int(np.clip(round(w * scale), 8, width))
        new_h = int(np.clip(round(h * scale), 8, height))
        rgb = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(mask, (new_w, new_h), interpolation=cv2.INTER_NEAREST).astype(bool)
        if not mask.any():
            mask[:] = True
        return _to_patch(rgb, mask)


class MixedNegatives:
    """Real negative with probability ``real_probability`` (b in eq. 4.21), else synthetic."""

    def __init__(self, real: NegativeSource, synthetic: NegativeSource, real_probability: float) -> None:
        if not 0.0 <= real_probability <= 1.0:
            raise ValueError(f"real_probability must be in [0, 1], got {real_probability}")
        self.real, self.synthetic, self.real_probability = real, synthetic, real_probability

    def sample(self, rng: np.random.Generator, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        source = self.real if rng.random() < self.real_probability else self.synthetic
        return source.sample(rng, height, width)


def sample_positions(
    rng: np.random.Generator, patches: Sequence[tuple[torch.Tensor, torch.Tensor]], height: int, width: int
) -> list[tuple[int, int]]:
    """A uniform (top, left) per patch such that the (cropped-to-fit) patch lies inside the image."""
    positions = []
    for patch, _ in patches:
        ph, pw = min(patch.shape[-2], height), min(patch.shape[-1], width)
        positions.append((int(rng.integers(0, height - ph + 1)), int(rng.integers(0, width - pw + 1))))
    return positions


def paste_negatives(
    images: torch.Tensor,
    labels: torch.Tensor | None,
    patches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    positions: Sequence[tuple[int, int]],
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Paste one (patch, mask) per image at its (top, left) position.

    ``images``: (B,3,H,W) float in [0,1]; ``labels``: (B,H,W) long or None. Returns mixed images
    (keeping the patches' autograd graph), labels with ignore in pasted pixels, and the (B,H,W)
    outlier mask.
    """
    if not len(patches) == len(positions) == images.shape[0]:
        raise ValueError(
            f"{len(patches)} patches and {len(positions)} positions for a batch of {images.shape[0]}"
        )
    height, width = images.shape[-2:]
    mixed_rows, mask_rows = [], []
    for image, (patch, mask), (top, left) in zip(images, patches, positions, strict=True):
        ph, pw = min(patch.shape[-2], height - top), min(patch.shape[-1], width - left)
        patch, mask = patch[:, :ph, :pw].to(image), mask[:ph, :pw].to(image.device)
        padding = (left, width - left - pw, top, height - top - ph)
        full_mask = torch.nn.functional.pad(mask.float(), padding).bool()
        mixed_rows.append(torch.where(full_mask, torch.nn.functional.pad(patch, padding), image))
        mask_rows.append(full_mask)
    outlier_mask = torch.stack(mask_rows)
    mixed_labels = None if labels is None else labels.masked_fill(outlier_mask, ignore_index)
    return torch.stack(mixed_rows), mixed_labels, outlier_mask
