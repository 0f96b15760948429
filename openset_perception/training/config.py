"""Schema of ``config/train/*.yaml`` (validated on load: unknown keys and wrong types fail at start).

Numbers and flags are strict (``epochs: true`` or ``epochs: "3"`` are errors, not 1 and 3); names are
checked against their registries (backbones, datasets, score methods), the backbone options against
the backbone's builder, and ranges across fields (``lr_min`` at most the learning rates, ordered
ranges), so a bad config fails before the run folder is created.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import torch
from pydantic import Field, Strict, ValidationInfo, field_validator, model_validator

from openset_perception.config import StrictModel, load_config
from openset_perception.data.registry import DATASET_NAMES
from openset_perception.models.registry import check_backbone_kwargs, check_backbone_name
from openset_perception.scoring import MOOSE_METHODS, check_score_method

Int = Annotated[int, Strict()]
Real = Annotated[float, Strict()]  # an int is a real number too; a bool or a string is not
Flag = Annotated[bool, Strict()]
CropSide = Annotated[int, Strict(), Field(ge=16)]
DEVICE_TYPES = ("cpu", "cuda", "mps")


def _ordered_positive(values: tuple[float, float], name: str) -> tuple[float, float]:
    low, high = values
    if not 0 < low <= high:
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {list(values)}")
    return values


class ModelConfig(StrictModel):
    backbone: str = "swiftnet_rn18"
    backbone_kwargs: dict = Field(default_factory=dict)
    pretrained: Flag = False  # torchvision ImageNet weights (downloads once; never needed for tests)
    moose_probes: Flag = False
    probe_depth: Int = Field(3, ge=0)
    # init_checkpoint: the starting checkpoint's own (an imported model keeps the input it was trained on)
    normalization: Literal["imagenet", "unit", "init_checkpoint"] = "imagenet"
    init_checkpoint: Path | None = None  # start from this checkpoint (fine-tuning stages)

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, name: str) -> str:
        check_backbone_name(name)
        return name

    @field_validator("backbone_kwargs")
    @classmethod
    def _kwargs_fit_backbone(cls, kwargs: dict, info: ValidationInfo) -> dict:
        if "backbone" in info.data:  # an unknown backbone is reported on its own
            check_backbone_kwargs(info.data["backbone"], kwargs)
        return kwargs

    @model_validator(mode="after")
    def _checkpoint_for_its_normalization(self) -> ModelConfig:
        if self.normalization == "init_checkpoint" and self.init_checkpoint is None:
            raise ValueError("model.normalization 'init_checkpoint' needs model.init_checkpoint")
        return self


class DatasetConfig(StrictModel):
    """A dataset by registry name; ``synthetic_streets`` without ``root`` is generated on the fly."""

    name: str
    root: Path | None = None
    split: str | None = None
    num_frames: Int = Field(200, ge=1)  # generated procedural scenes only
    height: Int = Field(256, ge=16)
    width: Int = Field(512, ge=16)
    seed: Int = 0

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        if name not in DATASET_NAMES:
            raise ValueError(f"unknown dataset '{name}'; known datasets: {', '.join(DATASET_NAMES)}")
        return name


class DataConfig(StrictModel):
    train: DatasetConfig
    val: DatasetConfig | None = None
    crop_size: tuple[CropSide, CropSide] = (256, 512)
    scale_range: tuple[Real, Real] = (0.5, 2.0)
    flip: Flag = True
    batch_size: Int = Field(8, ge=1)
    num_workers: Int = Field(0, ge=0)
    val_max_frames: Int | None = Field(None, ge=1)

    @field_validator("scale_range")
    @classmethod
    def _scale_range_ordered(cls, values: tuple[float, float]) -> tuple[float, float]:
        return _ordered_positive(values, "scale_range")


class NegativesConfig(StrictModel):
    source: Literal["none", "procedural", "folder", "ade20k", "noise", "flow"] = "none"
    root: Path | None = None
    ade_mode: Literal["mixed", "instance"] = "mixed"
    ade_crop_size: Int = Field(384, ge=16)
    exclude_classes: list[Int] = Field(default_factory=list)
    area_range: tuple[Real, Real] = (0.015, 0.08)
    # Mix a real source with flow samples: real with this probability (b in eq. 4.21); null = flow only.
    real_source: Literal["procedural", "folder", "ade20k", "noise"] | None = None
    real_probability: Real = Field(0.5, ge=0.0, le=1.0)

    @field_validator("area_range")
    @classmethod
    def _area_range_ordered(cls, values: tuple[float, float]) -> tuple[float, float]:
        if values[1] > 1:
            raise ValueError(f"area_range is a fraction of the crop, at most 1, got {list(values)}")
        return _ordered_positive(values, "area_range")

    @model_validator(mode="after")
    def _root_when_needed(self) -> NegativesConfig:
        needs_root = {self.source, self.real_source} & {"folder", "ade20k"}
        if needs_root and self.root is None:
            raise ValueError(f"negatives.root is required for source '{sorted(needs_root)[0]}'")
        return self


class LossConfig(StrictModel):
    beta1: Real = Field(1.0, ge=0)
    beta2: Real = Field(0.3, ge=0)
    beta3: Real = Field(0.3, ge=0)
    beta4: Real = Field(0.03, ge=0)
    likelihood_floor: Real | None = None


class OptimizerConfig(StrictModel):
    lr_head: Real = Field(4e-4, gt=0)
    lr_backbone: Real = Field(1e-4, gt=0)
    lr_min: Real = Field(1e-7, ge=0)
    weight_decay: Real = Field(1e-4, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: Real | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _lr_min_below_rates(self) -> OptimizerConfig:
        lowest = min(self.lr_head, self.lr_backbone)
        if self.lr_min > lowest:
            raise ValueError(
                f"lr_min ({self.lr_min:g}) is above a learning rate (lr_head {self.lr_head:g}, "
                f"lr_backbone {self.lr_backbone:g}): the cosine schedule would raise it"
            )
        return self


class FlowConfig(StrictModel):
    """Synthetic negatives from a jointly trained normalizing flow (issue: synthetic negatives)."""

    kind: Literal["realnvp", "denseflow"] = "realnvp"
    kwargs: dict = Field(default_factory=dict)
    lr: Real = Field(1e-4, gt=0)
    pretrain_steps: Int = Field(0, ge=0)
    pretrain_crop: Int = Field(64, ge=8)
    jsd_weight: Real = Field(0.03, ge=0)  # lambda in the flow loss (thesis: 0.03)
    divergence: Literal["jsd", "kl"] = "jsd"
    patch_sizes: tuple[Int, Int] = (16, 64)  # min/max side in px, step = the flow's size multiple
    init_checkpoint: Path | None = None

    @field_validator("patch_sizes")
    @classmethod
    def _patch_sizes_ordered(cls, values: tuple[int, int]) -> tuple[int, int]:
        _ordered_positive(values, "patch_sizes")
        return values


class TrainConfig(StrictModel):
    name: str = "run"
    output_dir: Path = Path("runs")
    seed: Int = 0
    stage: Literal["closed_set", "densehybrid", "moose_probes"] = "closed_set"
    epochs: Int = Field(10, ge=1)
    steps_per_epoch: Int | None = Field(None, ge=1)  # default: one pass over the training set
    # Also save the training state every N steps inside an epoch (0: epoch ends and SIGINT/SIGTERM only).
    save_every_steps: Int = Field(0, ge=0)
    device: str = "auto"
    amp: Flag = True  # autocast + grad scaling on CUDA; ignored on the CPU
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    negatives: NegativesConfig = Field(default_factory=NegativesConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    flow: FlowConfig | None = None
    calibrate_tpr: Real = Field(0.95, gt=0, lt=1)
    score_method: str = "densehybrid"
    description: str = ""

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if device == "auto":
            return device
        try:
            kind = torch.device(device).type
        except (RuntimeError, ValueError):
            kind = None
        if kind not in DEVICE_TYPES:
            raise ValueError(f"unknown device '{device}'; use auto, {', '.join(DEVICE_TYPES)} or cuda:N")
        return device

    @field_validator("score_method")
    @classmethod
    def _known_score_method(cls, method: str) -> str:
        return check_score_method(method)

    @model_validator(mode="after")
    def _stage_requirements(self) -> TrainConfig:
        if self.stage == "densehybrid" and self.negatives.source == "none":
            raise ValueError(
                "stage 'densehybrid' needs negatives.source (procedural, folder, ade20k, noise, flow)"
            )
        if self.negatives.source == "flow" and self.flow is None:
            raise ValueError("negatives.source 'flow' needs a 'flow' section")
        if self.stage == "moose_probes" and not self.model.moose_probes:
            raise ValueError("stage 'moose_probes' needs model.moose_probes: true")
        if self.score_method in MOOSE_METHODS and not self.model.moose_probes:
            raise ValueError(f"score_method '{self.score_method}' needs model.moose_probes: true")
        return self

    @property
    def run_dir(self) -> Path:
        return self.output_dir / self.name


def load_train_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    return load_config(path, TrainConfig, overrides)
