"""Seeded stand-ins for published checkpoints, shared by the weight-import parity tests.

A parity fixture holds the key list (names, shapes, dtypes) of the authors' ``model.state_dict()``
and the outputs their code computed, once, from the state dict ``generate_state_dict`` makes from that
key list and the image ``parity_image`` makes. The scripts that ran the authors' code import this
module, so the test regenerates bit-identical inputs without their repositories or weights.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).parent / "fixtures" / "weights_import"
KeyList = list[tuple[str, tuple[int, ...], str]]


def write_key_list(path: Path, state: Mapping[str, torch.Tensor]) -> None:
    entries = [[name, list(t.shape), str(t.dtype).removeprefix("torch.")] for name, t in state.items()]
    path.write_text(json.dumps(entries, indent=0) + "\n", encoding="utf-8")


def read_key_list(path: Path) -> KeyList:
    return [
        (name, tuple(shape), dtype) for name, shape, dtype in json.loads(path.read_text(encoding="utf-8"))
    ]


def generate_state_dict(
    keys: KeyList,
    seed: int,
    weight_scales: Mapping[str, float] | None = None,
    constants: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, torch.Tensor]:
    """Pseudo-random values that keep a BN-ReLU network's activations of order one.

    Convolutions: He-normal (std sqrt(2 / fan_in)) times ``weight_scales[name]`` (used to keep the
    logits small); BN weight U(0.5, 1.5), bias and running mean N(0, 0.1), running variance U(0.5, 1.5);
    ``constants`` fixes buffers such as SwiftNet's img_mean. Values depend only on the seed and the
    key list, in its order.
    """
    weight_scales = weight_scales or {}
    constants = constants or {}
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape, dtype in keys:
        if name in constants:
            state[name] = torch.tensor(constants[name], dtype=getattr(torch, dtype)).reshape(shape)
        elif dtype != "float32":
            state[name] = torch.zeros(shape, dtype=getattr(torch, dtype))
        elif name.endswith("running_var") or (name.endswith("weight") and len(shape) == 1):
            state[name] = 0.5 + torch.rand(shape, generator=generator)
        elif name.endswith(("running_mean", "bias")):
            state[name] = 0.1 * torch.randn(shape, generator=generator)
        else:
            fan_in = math.prod(shape[1:])
            std = math.sqrt(2.0 / fan_in) * weight_scales.get(name, 1.0)
            state[name] = std * torch.randn(shape, generator=generator)
    return state


def parity_image(height: int, width: int, seed: int) -> np.ndarray:
    """HxWx3 uint8 RGB: coarse colour blocks (structure at several scales) plus pixel noise."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), dtype=np.float64)
    for cell in (32, 8):
        blocks = rng.uniform(0, 255, (-(-height // cell), -(-width // cell), 3))
        image += np.kron(blocks, np.ones((cell, cell, 1)))[:height, :width] / 2
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)
