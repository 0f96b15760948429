"""Self-describing model checkpoints: safetensors weights with the model card in the file's header.

One ``.safetensors`` file holds everything the engine needs (architecture, class names, palette,
normalisation, score method, calibrated threshold), so a checkpoint can never be paired with the
wrong card. Loading parses JSON and raw tensors only: no pickled code ever runs. Writes are atomic
(``atomic.py``), so a crash never leaves a half-written file.

The card is validated completely on load by one schema (``ModelCard``): a bad value fails there,
as a ``CheckpointError`` naming the key, not later on every frame; the backbone size it asks for is
bounded (``MAX_BACKBONE_PARAMETERS``) before anything is built. Before the weights are used, every
tensor's name, shape and dtype must match the built architecture (no silent cast) and their SHA-256
must equal the card's ``weights_sha256``: that costs 11 ms for the shipped model (3 MB), so there
is no option to skip it. A card from before format 2 has no hash: it loads, with one warning per file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field, Strict, ValidationError, ValidationInfo, field_validator
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from openset_perception.atomic import atomic_write
from openset_perception.config import ConfigError, StrictModel, describe_validation_error, validate_config
from openset_perception.image_codec import DEFAULT_MAX_PIXELS
from openset_perception.models import ArchitectureSpec, OpenSetSegmenter, build_model
from openset_perception.models.registry import check_backbone_kwargs
from openset_perception.preprocess import Normalization
from openset_perception.scoring import check_score_method

LOGGER = logging.getLogger(__name__)

CARD_KEY = "openset_perception.model_card"
FORMAT_VERSION = 2  # 2: the card carries weights_sha256
# The semantic and open-set outputs are uint8 maps with 255 = ignore and K = unknown, so K <= 254.
MAX_CLASSES = 254
# The largest backbone (deeplabv3plus_r101) has 59 M parameters; a card asking for more than 200 M
# (0.8 GB in float32, allocated before the weights' shapes can be compared) is an error, not a model.
MAX_BACKBONE_PARAMETERS = 200_000_000
MIN_INPUT_SIDE = 32  # the backbones' smallest input
THRESHOLD_LIMIT = 1e6  # every score method's values lie far inside; the engine clips scores at 1e30

Int = Annotated[int, Strict()]
Flag = Annotated[bool, Strict()]
Text = Annotated[str, Strict()]
Finite = Annotated[float, Strict(), Field(allow_inf_nan=False)]  # an int is a real number too
PositiveFinite = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]
ColourChannel = Annotated[int, Strict(), Field(ge=0, le=255)]
Colour = tuple[ColourChannel, ColourChannel, ColourChannel]
InputSide = Annotated[int, Strict(), Field(ge=MIN_INPUT_SIDE)]
Sha256 = Annotated[str, Strict(), Field(pattern=r"^[0-9a-f]{64}$")]

_warned_without_hash: set[Path] = set()  # files warned about once


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


class _NormalizationSchema(StrictModel):
    mean: tuple[Finite, Finite, Finite]
    std: tuple[PositiveFinite, PositiveFinite, PositiveFinite]


class ModelCard(StrictModel):
    """Everything besides the weights that is needed to run and judge a model.

    Validated on construction, on load and on every assignment. ``weights_sha256`` is filled in by
    ``save_checkpoint`` (the card in memory describes no particular weights until then).
    """

    architecture: ArchitectureSpec
    class_names: list[Text]
    palette: list[Colour]
    normalization: Normalization = Field(default_factory=Normalization)
    input_size: tuple[InputSide, InputSide] | None = None
    score_method: Text = "densehybrid"
    score_temperature: Annotated[float, Strict(), Field(gt=0, le=THRESHOLD_LIMIT, allow_inf_nan=False)] = 1.0
    threshold: Annotated[float, Strict(), Field(ge=-THRESHOLD_LIMIT, le=THRESHOLD_LIMIT)] | None = None
    threshold_tpr: Annotated[float, Strict(), Field(ge=0, le=1)] | None = None
    description: Text = ""
    training: dict = Field(default_factory=dict)
    metrics: dict = Field(default_factory=dict)
    inlier_head_trained: Flag = True
    source: dict = Field(default_factory=dict)  # provenance of imported weights (publisher, file, sha256)
    weights_sha256: Sha256 | None = None
    format_version: Int = FORMAT_VERSION

    @field_validator("architecture", mode="before")
    @classmethod
    def _architecture(cls, value: Any) -> ArchitectureSpec:
        spec = ArchitectureSpec.from_dict(value) if isinstance(value, dict) else value
        if not isinstance(spec, ArchitectureSpec):
            raise ValueError(f"must be a mapping of architecture fields, got {type(value).__name__}")
        if spec.num_classes > MAX_CLASSES:
            raise ValueError(
                f"num_classes must be at most {MAX_CLASSES} (uint8 label maps), got {spec.num_classes}"
            )
        parameters = _backbone_parameters(spec.backbone, json.dumps(spec.backbone_kwargs, sort_keys=True))
        if parameters > MAX_BACKBONE_PARAMETERS:
            raise ValueError(
                f"backbone_kwargs {spec.backbone_kwargs} give a backbone of {parameters:,} parameters "
                f"({parameters * 4 / 2**30:.1f} GiB in float32), more than {MAX_BACKBONE_PARAMETERS:,}"
            )
        return spec

    @field_validator("normalization", mode="before")
    @classmethod
    def _normalization(cls, value: Any) -> Normalization:
        if isinstance(value, Normalization):
            value = {"mean": list(value.mean), "std": list(value.std)}
        try:
            fields = _NormalizationSchema.model_validate(value)
        except ValidationError as error:
            raise ValueError(describe_validation_error(error)) from None
        return Normalization(mean=fields.mean, std=fields.std)

    @field_validator("class_names", "palette")
    @classmethod
    def _one_per_class(cls, values: list, info: ValidationInfo) -> list:
        spec = info.data.get("architecture")
        if spec is not None and len(values) != spec.num_classes:
            raise ValueError(f"{len(values)} entries for a {spec.num_classes}-class architecture")
        return values

    @field_validator("input_size")
    @classmethod
    def _input_size_bounded(cls, size: tuple[int, int] | None) -> tuple[int, int] | None:
        if size is not None and size[0] * size[1] > DEFAULT_MAX_PIXELS:
            raise ValueError(f"{size[0]}x{size[1]} is more than {DEFAULT_MAX_PIXELS} pixels")
        return size

    @field_validator("score_method")
    @classmethod
    def _known_score_method(cls, method: str) -> str:
        return check_score_method(method)

    @field_validator("threshold")
    @classmethod
    def _finite_threshold(cls, threshold: float | None) -> float | None:
        # NaN passes ge/le checks; infinity is refused by them.
        if threshold is not None and math.isnan(threshold):
            raise ValueError("must be a finite number, got nan")
        return threshold

    @field_validator("format_version")
    @classmethod
    def _supported_format(cls, version: int) -> int:
        if not 1 <= version <= FORMAT_VERSION:
            raise ValueError(f"format {version} is not supported (1 to {FORMAT_VERSION})")
        return version

    @property
    def num_classes(self) -> int:
        return self.architecture.num_classes

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    def updated(self, **changes: Any) -> ModelCard:
        """A copy with ``changes``, validated like a new card."""
        return ModelCard(**{**dict(self), **changes})

    @classmethod
    def from_dict(cls, data: Any) -> ModelCard:
        """Validate a card read from JSON; ``ConfigError`` (a ValueError) names every bad key."""
        if not isinstance(data, dict):
            raise ConfigError(f"model card must be a JSON object, got a JSON {type(data).__name__}")
        return validate_config(data, cls, source="model card")


@functools.lru_cache(maxsize=32)
def _backbone_parameters(backbone: str, kwargs_json: str) -> int:
    # A meta-device build takes 0.1 s (0.6 s for deeplabv3plus_r101); cards of one model repeat it.
    return check_backbone_kwargs(backbone, json.loads(kwargs_json))


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the weights: per tensor in sorted name order, its name, dtype and shape, then its
    raw bytes (native order, little-endian on every platform we run on). A flipped bit, a renamed
    tensor or a dtype relabelled at the same size all change it."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}\0{str(tensor.dtype).removeprefix('torch.')}\0{list(tensor.shape)}\0".encode())
        digest.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def save_checkpoint(path: str | Path, model: torch.nn.Module, card: ModelCard) -> ModelCard:
    """Write weights and model card to one safetensors file, atomically; return the card as written
    (``card`` with the weights' hash and the current format version)."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    written = card.updated(weights_sha256=weights_sha256(state), format_version=FORMAT_VERSION)
    metadata = {"format": "pt", CARD_KEY: json.dumps(written.to_dict())}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))
    return written


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
        data = json.loads(metadata[CARD_KEY])
    except ValueError as error:
        raise CheckpointError(f"{path}: the model card is not valid JSON ({error})") from None
    try:
        return ModelCard.from_dict(data)
    except ValueError as error:
        raise CheckpointError(f"{path}: invalid {error}") from None


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[OpenSetSegmenter, ModelCard]:
    """Build the card's architecture and load the weights into it (eval mode), after checking every
    tensor's name, shape and dtype against the architecture and the weights' hash against the card."""
    card = read_model_card(path)
    path = Path(path)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: corrupt weights ({error})") from error
    try:
        model = build_model(card.architecture)
    except Exception as error:  # whatever the card's architecture makes the builder do is the card's fault
        raise CheckpointError(f"{path}: the card's architecture cannot be built: {error}") from None
    _check_tensor_layout(state, model.state_dict(), str(path))
    _verify_hash(card, state, path)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), card


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load that explains mismatches (architecture, class count, dtype) instead of a stack dump."""
    _check_tensor_layout(state, model.state_dict(), source)
    model.load_state_dict(state, strict=True)


def _check_tensor_layout(
    found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str
) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not match the architecture: missing {_preview(missing)}, "
            f"unexpected {_preview(unexpected)}"
        )
    for name, tensor in found.items():
        if tensor.shape != expected[name].shape:
            hint = " (class-count mismatch)" if name.startswith("classifier") else ""
            raise CheckpointError(
                f"{source}: tensor '{name}' has shape {tuple(tensor.shape)}, "
                f"the architecture expects {tuple(expected[name].shape)}{hint}"
            )
        if tensor.dtype != expected[name].dtype:
            # load_state_dict would cast silently, e.g. float32 bytes relabelled as int32.
            raise CheckpointError(
                f"{source}: tensor '{name}' has dtype {tensor.dtype}, "
                f"the architecture expects {expected[name].dtype}"
            )


def _verify_hash(card: ModelCard, state: dict[str, torch.Tensor], path: Path) -> None:
    if card.weights_sha256 is None:
        if card.format_version >= 2:
            raise CheckpointError(
                f"{path}: the model card has no weights_sha256 (format {card.format_version})"
            )
        if path.resolve() not in _warned_without_hash:
            _warned_without_hash.add(path.resolve())
            LOGGER.warning(
                "%s: format-%d card without a weights hash, integrity not checked; "
                "saving it again (e.g. with calibrate) adds one",
                path,
                card.format_version,
            )
        return
    actual = weights_sha256(state)
    if actual != card.weights_sha256:
        raise CheckpointError(
            f"{path}: the weights do not match the card's weights_sha256 (corrupt or altered file): "
            f"{actual} != {card.weights_sha256}"
        )


def _preview(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}] ({len(names)})" if names else "[]"


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path
