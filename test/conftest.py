"""Shared fixtures: a tiny random-weight checkpoint and loopback-only DDS settings for ROS tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from openset_perception.checkpoint import ModelCard, save_checkpoint
from openset_perception.models import ArchitectureSpec, build_model

TEST_DIR = Path(__file__).parent
TINY_CLASSES = ["road", "sidewalk", "building", "vegetation", "sky", "car", "pole", "terrain"]
TINY_PALETTE = [
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (107, 142, 35),
    (70, 130, 180),
    (0, 0, 142),
    (153, 153, 153),
    (152, 251, 152),
]

# ROS 2 tests must never send DDS traffic off this machine, whatever the shell had set: the node
# processes they start inherit these.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["CYCLONEDDS_URI"] = (TEST_DIR / "cyclonedds_loopback.xml").resolve().as_uri()


@pytest.fixture(autouse=True, scope="session")
def single_torch_thread():
    """One intra-op thread: tiny test tensors gain nothing from two, and on a shared CPU two threads
    spin-wait for each other (measured here: up to 100x slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_tiny_card(threshold: float | None = 0.0, **overrides) -> ModelCard:
    spec = ArchitectureSpec("swiftnet_rn18", len(TINY_CLASSES), {"width": 0.125})
    values = dict(
        architecture=spec,
        class_names=TINY_CLASSES,
        palette=TINY_PALETTE,
        threshold=threshold,
        threshold_tpr=0.95 if threshold is not None else None,
        description="random weights, for tests",
    )
    values.update(overrides)
    return ModelCard(**values)


def make_tiny_model(card: ModelCard, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(card.architecture)
    # Non-trivial BN statistics, so a round trip that drops buffers cannot pass by accident.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.9, 1.1)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small swiftnet_rn18 (width 0.125) checkpoint with random weights and a threshold of 0."""
    card = make_tiny_card()
    path = tmp_path_factory.mktemp("checkpoints") / "tiny.safetensors"
    save_checkpoint(path, make_tiny_model(card), card)
    return path
