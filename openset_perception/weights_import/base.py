"""Import published checkpoints (plain ``torch.save(state_dict)`` files) into our safetensors format.

A ``WeightFormat`` says which of our architectures reproduces the authors' network, how their keys map
to ours and how the network was trained (dataset, input normalisation, whether an out-of-distribution
head exists). ``import_weights`` reads the file without executing pickled code, maps and strictly
loads it, and writes a checkpoint whose model card records where the weights came from.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from openset_perception.checkpoint import ModelCard, save_checkpoint
from openset_perception.data.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from openset_perception.data.streethazards import STREETHAZARDS_CLASSES, STREETHAZARDS_PALETTE
from openset_perception.models import ArchitectureSpec, OpenSetSegmenter, build_model
from openset_perception.preprocess import Normalization

Dataset = Literal["cityscapes", "streethazards"]
StateDict = dict[str, Tensor]

DATASET_CLASSES: dict[str, tuple[tuple[str, ...], tuple[tuple[int, int, int], ...]]] = {
    "cityscapes": (CITYSCAPES_CLASSES, CITYSCAPES_PALETTE),
    "streethazards": (STREETHAZARDS_CLASSES, STREETHAZARDS_PALETTE),
}
# Keys under which training scripts commonly wrap the state dict itself.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights")
DATAPARALLEL_PREFIX = "module."
INLIER_HEAD_PREFIX = "ood_head."
# Seed of the default initialisation of an inlier head the source checkpoint does not have, so that
# importing the same file twice gives the same checkpoint.
UNTRAINED_HEAD_SEED = 0
ERROR_KEY_PREVIEW = 8


class WeightImportError(ValueError):
    """The input cannot be imported; the message names the file and the problem (keys, shapes)."""


@dataclass(frozen=True)
class WeightFormat:
    """One published checkpoint layout and how to turn it into an ``OpenSetSegmenter``.

    ``map_state_dict`` receives the authors' state dict (already unwrapped, without ``module.``
    prefixes) and returns one with our key names. Without an inlier head (``has_inlier_head`` False)
    it returns no ``ood_head.*`` keys; the import then keeps our default initialisation and the card
    marks the head untrained. ``read_normalization``, when set, takes the input normalisation from the
    authors' state dict (SwiftNet stores it as buffers) instead of ``normalization``.
    """

    name: str
    publisher: str
    source_file: str
    backbone: str
    backbone_kwargs: Mapping[str, Any]
    num_classes: int
    dataset: Dataset
    normalization: Normalization
    has_inlier_head: bool
    map_state_dict: Callable[[StateDict], StateDict]
    read_normalization: Callable[[StateDict], Normalization] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.dataset not in DATASET_CLASSES:
            raise ValueError(
                f"format {self.name}: unknown dataset {self.dataset!r}; valid: {list(DATASET_CLASSES)}"
            )
        known = len(DATASET_CLASSES[self.dataset][0])
        if self.num_classes != known:
            raise ValueError(f"format {self.name}: {self.num_classes} classes, {self.dataset} has {known}")

    @property
    def architecture(self) -> ArchitectureSpec:
        return ArchitectureSpec(
            backbone=self.backbone, num_classes=self.num_classes, backbone_kwargs=dict(self.backbone_kwargs)
        )

    @property
    def score_method(self) -> str:
        return "densehybrid" if self.has_inlier_head else "max_logit"


FORMATS: dict[str, WeightFormat] = {}


def register(fmt: WeightFormat) -> WeightFormat:
    if fmt.name in FORMATS:
        raise ValueError(f"weight format {fmt.name!r} is registered twice")
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> WeightFormat:
    if name not in FORMATS:
        raise WeightImportError(
            f"unknown weight format {name!r}; known formats: {', '.join(sorted(FORMATS))}"
        )
    return FORMATS[name]


def fold_two_channel_ood_head(weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """The authors' two-channel (in, out) 1x1 head as our one-channel inlier logit ``g = o0 - o1``.

    Exact: their score uses ``log softmax(o)[1] = logsigmoid(o1 - o0) = logsigmoid(-g)``, and our
    P(in | x) = sigmoid(g). Both heads are linear in the same hidden features, so the rows subtract.
    """
    if weight.shape[0] != 2 or bias.shape != (2,):
        raise WeightImportError(
            f"expected a two-channel out-of-distribution head, got weight {tuple(weight.shape)}, "
            f"bias {tuple(bias.shape)}"
        )
    return weight[0:1] - weight[1:2], bias[0:1] - bias[1:2]


def read_state_dict(path: str | Path) -> StateDict:
    """Load a ``torch.save``'d state dict safely: tensors only, no pickled code ever runs."""
    path = Path(path)
    if not path.is_file():
        raise WeightImportError(f"{path}: file not found")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise WeightImportError(
            f"{path}: refused: the file holds pickled objects other than tensors, which could run code "
            f"when loaded; only plain state dicts are imported ({_first_line(error)})"
        ) from None
    except (EOFError, zipfile.BadZipFile, RuntimeError, OSError, ValueError) as error:
        raise WeightImportError(
            f"{path}: not a readable torch.save file (truncated or corrupt?): {_first_line(error)}"
        ) from None
    return _as_state_dict(loaded, path)


def _as_state_dict(loaded: object, path: Path) -> StateDict:
    state = _unwrap(loaded)
    if state is None:
        raise WeightImportError(f"{path}: not a state dict: {_describe(loaded)}")
    if state and all(key.startswith(DATAPARALLEL_PREFIX) for key in state):
        state = {key[len(DATAPARALLEL_PREFIX) :]: value for key, value in state.items()}
    return state


def _unwrap(loaded: object) -> StateDict | None:
    """The tensor dict itself, or the one under a wrapper key such as ``state_dict`` / ``model``."""
    if not isinstance(loaded, Mapping):
        return None
    if loaded and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in loaded.items()):
        return dict(loaded)
    for key in WRAPPER_KEYS:
        if key in loaded:
            inner = _unwrap(loaded[key])
            if inner is not None:
                return inner
    return None


def _describe(loaded: object) -> str:
    if isinstance(loaded, Mapping) and not loaded:
        return "an empty dict"
    if isinstance(loaded, Mapping):
        non_tensors = sorted(str(k) for k, v in loaded.items() if not isinstance(v, Tensor))
        return (
            f"a dict whose entries {_preview(non_tensors)} are not tensors, and no tensor dict under "
            f"any of the keys {list(WRAPPER_KEYS)}"
        )
    return f"a {type(loaded).__name__}"


def map_and_check(fmt: WeightFormat, source: StateDict, model: OpenSetSegmenter, origin: str) -> StateDict:
    """Map the authors' state dict to ours and check it names and shapes exactly what ``model`` has."""
    try:
        mapped = fmt.map_state_dict(source)
    except KeyError as error:
        raise WeightImportError(
            f"{origin}: does not match format {fmt.name}: the key {error} is missing"
        ) from None
    expected = model.state_dict()
    if not fmt.has_inlier_head:
        if any(key.startswith(INLIER_HEAD_PREFIX) for key in mapped):
            raise ValueError(
                f"format {fmt.name}: has_inlier_head is False but the mapping returns ood_head keys"
            )
        mapped = mapped | {k: v for k, v in expected.items() if k.startswith(INLIER_HEAD_PREFIX)}
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(set(mapped) - set(expected))
    if missing or unexpected:
        raise WeightImportError(
            f"{origin}: does not match format {fmt.name} ({fmt.publisher} {fmt.source_file}): "
            f"missing keys {_preview(missing)}, unexpected keys {_preview(unexpected)}"
        )
    wrong_shapes = [
        f"{key} {tuple(mapped[key].shape)} (expected {tuple(expected[key].shape)})"
        for key in sorted(expected)
        if mapped[key].shape != expected[key].shape
    ]
    if wrong_shapes:
        raise WeightImportError(
            f"{origin}: does not match format {fmt.name}: "
            f"tensors with the wrong shape: {_preview(wrong_shapes)}"
        )
    return {key: mapped[key].to(expected[key].dtype) for key in expected}


def formats_that_fit(source: StateDict, model: OpenSetSegmenter, excluding: WeightFormat) -> list[str]:
    """Other formats of the same architecture whose mapping fits ``source`` (e.g. the file with or
    without the out-of-distribution head given under the other's name)."""
    fitting = []
    for other in FORMATS.values():
        if other.name == excluding.name or other.architecture != excluding.architecture:
            continue
        try:
            map_and_check(other, source, model, origin=other.name)
        except (WeightImportError, ValueError):
            continue
        fitting.append(other.name)
    return fitting


@dataclass(frozen=True)
class ImportSummary:
    format: str
    source: Path
    output: Path
    sha256: str
    tensors: int
    parameters: int
    card: ModelCard = field(repr=False)


def import_weights(format_name: str, weights_path: str | Path, out_path: str | Path) -> ImportSummary:
    """Read ``weights_path`` in format ``format_name`` and write our checkpoint to ``out_path``."""
    fmt = get_format(format_name)
    weights_path = Path(weights_path)
    source = read_state_dict(weights_path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(UNTRAINED_HEAD_SEED)
        model = build_model(fmt.architecture)
    try:
        state = map_and_check(fmt, source, model, origin=str(weights_path))
    except WeightImportError as error:
        fitting = formats_that_fit(source, model, excluding=fmt)
        if not fitting:
            raise
        hint = " or ".join(f"--format {name}" for name in fitting)
        raise WeightImportError(f"{error}; the file fits {hint}") from None
    model.load_state_dict(state, strict=True)
    digest = sha256_of(weights_path)
    normalization = fmt.read_normalization(source) if fmt.read_normalization else fmt.normalization
    class_names, palette = DATASET_CLASSES[fmt.dataset]
    card = ModelCard(
        architecture=fmt.architecture,
        class_names=list(class_names),
        palette=list(palette),
        normalization=normalization,
        score_method=fmt.score_method,
        threshold=None,
        description=fmt.description or f"{fmt.publisher} {fmt.source_file}, imported as {fmt.name}",
        inlier_head_trained=fmt.has_inlier_head,
        source={
            "format": fmt.name,
            "publisher": fmt.publisher,
            "file": weights_path.name,
            "sha256": digest,
            "dataset": fmt.dataset,
        },
    )
    out_path = Path(out_path)
    save_checkpoint(out_path, model, card)
    return ImportSummary(
        format=fmt.name,
        source=weights_path,
        output=out_path,
        sha256=digest,
        tensors=len(state),
        parameters=sum(p.numel() for p in model.parameters()),
        card=card,
    )


def sha256_of(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _preview(names: list[str], limit: int = ERROR_KEY_PREVIEW) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return f"[{shown}{more}]"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
