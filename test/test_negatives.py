"""Mixed-content images: exact pasting (eq. 4.17), labels, masks, and each negative source."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from openset_perception.data.negatives import (
    ADE20kNegatives,
    FolderNegatives,
    MixedNegatives,
    NoiseNegatives,
    ProceduralNegatives,
    paste_negatives,
    sample_positions,
)


def test_paste_is_eq_4_17() -> None:
    images = torch.rand(2, 3, 10, 12)
    labels = torch.randint(0, 5, (2, 10, 12))
    patch = torch.rand(3, 4, 5, requires_grad=True)
    mask = torch.zeros(4, 5, dtype=torch.bool)
    mask[1:3, 1:4] = True
    other = (torch.rand(3, 3, 3), torch.ones(3, 3, dtype=torch.bool))
    mixed, mixed_labels, outlier = paste_negatives(images, labels, [(patch, mask), other], [(2, 6), (0, 0)])
    expected_mask = torch.zeros(10, 12, dtype=torch.bool)
    expected_mask[3:5, 7:10] = True
    assert torch.equal(outlier[0], expected_mask)
    padded = torch.zeros(3, 10, 12)
    padded[:, 2:6, 6:11] = patch.detach()
    m = expected_mask.float()
    assert torch.allclose(mixed[0], (1 - m) * images[0] + m * padded)
    assert torch.equal(mixed_labels[0][expected_mask], torch.full((6,), 255))
    assert torch.equal(mixed_labels[0][~expected_mask], labels[0][~expected_mask])
    assert outlier[1].sum() == 9 and torch.equal(mixed[1, :, :3, :3], other[0])
    mixed[0].sum().backward()
    assert patch.grad is not None and patch.grad[:, 1:3, 1:4].eq(1).all() and patch.grad[:, 0].eq(0).all()


def test_positions_keep_patches_inside() -> None:
    rng = np.random.default_rng(0)
    patches = [(torch.zeros(3, 30, 7), torch.ones(30, 7, dtype=torch.bool))] * 50
    for top, left in sample_positions(rng, patches, 20, 40):
        assert top == 0 and 0 <= left <= 33  # a 30-high patch is cut to fit a 20-high image


def test_counts_must_match() -> None:
    with pytest.raises(ValueError, match="batch of 2"):
        paste_negatives(torch.zeros(2, 3, 4, 4), None, [], [])


@pytest.mark.parametrize("source", [ProceduralNegatives(), NoiseNegatives()])
def test_synthetic_sources_cover_the_area_range(source) -> None:
    rng = np.random.default_rng(1)
    for _ in range(10):
        patch, mask = source.sample(rng, 128, 256)
        assert patch.dtype == torch.float32 and patch.min() >= 0 and patch.max() <= 1
        assert patch.shape[-2:] == mask.shape and mask.any()
        assert patch.shape[-1] <= 256 and patch.shape[-2] <= 128
        assert 0.002 * 128 * 256 <= mask.sum() <= 0.2 * 128 * 256


def _write_rgb(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def test_folder_negatives(tmp_path: Path) -> None:
    _write_rgb(tmp_path / "a" / "x.png", np.full((50, 60, 3), (10, 200, 30), np.uint8))
    source = FolderNegatives(tmp_path, area_range=(0.05, 0.05))
    patch, mask = source.sample(np.random.default_rng(0), 100, 100)
    assert torch.allclose(patch[:, 0, 0] * 255, torch.tensor([10.0, 200.0, 30.0]))
    assert mask.any()
    with pytest.raises(FileNotFoundError, match="negatives folder not found"):
        FolderNegatives(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        FolderNegatives(tmp_path / "empty")


def _fake_ade(root: Path) -> None:
    image = np.zeros((64, 64, 3), np.uint8)
    labels = np.zeros((64, 64), np.uint8)
    image[:, :32] = (255, 0, 0)
    labels[:, :32] = 7  # 'road' in ADE: excluded below
    image[:, 32:] = (0, 0, 255)
    labels[:, 32:] = 20  # 'car'-like class kept
    _write_rgb(root / "images" / "training" / "ADE_train_0001.jpg", image)
    (root / "annotations" / "training").mkdir(parents=True)
    cv2.imwrite(str(root / "annotations" / "training" / "ADE_train_0001.png"), labels)


@pytest.mark.parametrize("mode", ["mixed", "instance"])
def test_ade20k_negatives_respect_excluded_classes(tmp_path: Path, mode: str) -> None:
    _fake_ade(tmp_path)
    source = ADE20kNegatives(tmp_path, crop_size=64, mode=mode, exclude_classes=[7])
    rng = np.random.default_rng(0)
    for _ in range(8):
        patch, mask = source.sample(rng, 64, 64)
        pasted = patch[:, mask]
        # Pixels of the excluded class (red) are never pasted; JPEG blurs the boundary a little.
        assert (pasted[0] > 0.8).float().mean() < 0.1


def test_ade20k_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="negatives folder not found"):
        ADE20kNegatives(tmp_path)


def test_mixed_probability() -> None:
    class Const:
        def __init__(self, value: float) -> None:
            self.value = value

        def sample(self, rng, height, width):
            return torch.full((3, 8, 8), self.value), torch.ones(8, 8, dtype=torch.bool)

    mixed = MixedNegatives(Const(1.0), Const(0.0), real_probability=0.3)
    rng = np.random.default_rng(0)
    real = np.mean([mixed.sample(rng, 32, 32)[0][0, 0, 0].item() for _ in range(2000)])
    assert real == pytest.approx(0.3, abs=0.04)
    with pytest.raises(ValueError, match="real_probability"):
        MixedNegatives(Const(1.0), Const(0.0), 1.5)
