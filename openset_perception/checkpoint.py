"""Self-describing model checkpoints: safetensors weights with the model card in the file's header.

One ``.safetensors`` file holds everything the engine needs (architecture, class names, palette,
normalisation, score method, calibrated threshold), so a checkpoint can never be paired with the
wrong card. Loading parses JSON and raw tensors only: no pickled code ever runs. Writes are atomic
(temporary file in the same folder, then ``os.replace``), so a crash never leaves a half-written file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from openset_perception.atomic import atomic_write
from openset_perception.models import ArchitectureSpec, OpenSetSegmenter, build_model
from openset_perception.preprocess import Normalization
from openset_perception.scoring import SCORE_METHODS

CARD_KEY = "openset_perception.model_card"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


@dataclass
class ModelCard:
    """Everything besides the weights that is needed to run and judge a model."""

    architecture: ArchitectureSpec
    class_names: list[str]
    palette: list[tuple[int, int, int]]
    normalization: Normalization = field(default_factory=Normalization)
    input_size: tuple[int, int] | None = None
    score_method: str = "densehybrid"
    score_temperature: float = 1.0
    threshold: float | None = None
    threshold_tpr: float | None = None
    description: str = ""
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    # False for imported closed-set checkpoints: the engine refuses the scores that read the inlier head.
    inlier_head_trained: bool = True
    # Provenance of imported weights: format, publisher, file name, sha256 of the input file.
    source: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        k = self.architecture.num_classes
        if len(self.class_names) != k:
            raise ValueError(f"model card: {len(self.class_names)} class names for a {k}-class architecture")
        if len(self.palette) != k:
            raise ValueError(f"model card: palette has {len(self.palette)} colours for {k} classes")
        if self.score_method not in SCORE_METHODS:
            raise ValueError(f"model card: unknown score_method '{self.score_method}'")
        if not self.score_temperature > 0:
            raise ValueError(f"model card: score_temperature must be > 0, got {self.score_temperature}")

    @property
    def num_classes(self) -> int:
        return self.architecture.num_classes

    def to_dict(self) -> dict:
        data = asdict(self)
        data["architecture"] = self.architecture.to_dict()
        data["normalization"] = self.normalization.to_dict()
        data["palette"] = [list(c) for c in self.palette]
        data["input_size"] = list(self.input_size) if self.input_size else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ModelCard:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"model card: unknown keys {unknown}")
        if data.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
            raise ValueError(
                f"model card format {data['format_version']} is newer than supported ({FORMAT_VERSION})"
            )
        values = dict(data)
        values["architecture"] = ArchitectureSpec.from_dict(data["architecture"])
        values["normalization"] = Normalization.from_dict(
            data.get("normalization", Normalization().to_dict())
        )
        values["palette"] = [tuple(int(v) for v in c) for c in data["palette"]]
        if data.get("input_size"):
            values["input_size"] = tuple(int(v) for v in data["input_size"])
        return cls(**values)


def save_checkpoint(path: str | Path, model: torch.nn.Module, card: ModelCard) -> None:
    """Write weights and model card to one safetensors file, atomically."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", CARD_KEY: json.dumps(card.to_dict())}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))


def read_model_card(path: str | Path) -> ModelCard:
    """Read only the card (cheap: the header, not the tensors)."""
    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({error})") from error
    if CARD_KEY not in metadata:
        raise CheckpointError(f"{path}: no model card in the file header (key '{CARD_KEY}')")
    try:
        return ModelCard.from_dict(json.loads(metadata[CARD_KEY]))
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path}: invalid model card: {error}") from error


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[OpenSetSegmenter, ModelCard]:
    """Build the card's architecture and load the weights into it (eval mode)."""
    card = read_model_card(path)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: corrupt weights ({error})") from error
    model = build_model(card.architecture)
    load_weights(model, state, source=str(path))
    return model.to(device).eval(), card


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load that explains mismatches (wrong architecture, class count) instead of a stack dump."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not match the architecture: missing {_preview(missing)}, "
            f"unexpected {_preview(unexpected)}"
        )
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            hint = " (class-count mismatch)" if name.startswith("classifier") else ""
            raise CheckpointError(
                f"{source}: tensor '{name}' has shape {tuple(tensor.shape)}, "
                f"the architecture expects {tuple(expected[name].shape)}{hint}"
            )
    model.load_state_dict(state, strict=True)


def _preview(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}] ({len(names)})" if names else "[]"


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path
