"""Schema of ``config/train/*.yaml`` (validated on load: unknown keys and wrong types fail at start)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from openset_perception.config import StrictModel, load_config


class ModelConfig(StrictModel):
    backbone: str = "swiftnet_rn18"
    backbone_kwargs: dict = Field(default_factory=dict)
    pretrained: bool = False  # torchvision ImageNet weights (downloads once; never needed for tests)
    moose_probes: bool = False
    probe_depth: int = Field(3, ge=0)
    # init_checkpoint: the starting checkpoint's own (an imported model keeps the input it was trained on)
    normalization: Literal["imagenet", "unit", "init_checkpoint"] = "imagenet"
    init_checkpoint: Path | None = None  # start from this checkpoint (fine-tuning stages)

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
    num_frames: int = Field(200, ge=1)  # generated procedural scenes only
    height: int = Field(256, ge=16)
    width: int = Field(512, ge=16)
    seed: int = 0


class DataConfig(StrictModel):
    train: DatasetConfig
    val: DatasetConfig | None = None
    crop_size: tuple[int, int] = (256, 512)
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    batch_size: int = Field(8, ge=1)
    num_workers: int = Field(0, ge=0)
    val_max_frames: int | None = Field(None, ge=1)


class NegativesConfig(StrictModel):
    source: Literal["none", "procedural", "folder", "ade20k", "noise", "flow"] = "none"
    root: Path | None = None
    ade_mode: Literal["mixed", "instance"] = "mixed"
    ade_crop_size: int = Field(384, ge=16)
    exclude_classes: list[int] = Field(default_factory=list)
    area_range: tuple[float, float] = (0.015, 0.08)
    # Mix a real source with flow samples: real with this probability (b in eq. 4.21); null = flow only.
    real_source: Literal["procedural", "folder", "ade20k", "noise"] | None = None
    real_probability: float = Field(0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _root_when_needed(self) -> NegativesConfig:
        needs_root = {self.source, self.real_source} & {"folder", "ade20k"}
        if needs_root and self.root is None:
            raise ValueError(f"negatives.root is required for source '{sorted(needs_root)[0]}'")
        return self


class LossConfig(StrictModel):
    beta1: float = 1.0
    beta2: float = 0.3
    beta3: float = 0.3
    beta4: float = 0.03
    likelihood_floor: float | None = None


class OptimizerConfig(StrictModel):
    lr_head: float = Field(4e-4, gt=0)
    lr_backbone: float = Field(1e-4, gt=0)
    lr_min: float = Field(1e-7, ge=0)
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float | None = Field(None, gt=0)


class FlowConfig(StrictModel):
    """Synthetic negatives from a jointly trained normalizing flow (issue: synthetic negatives)."""

    kind: Literal["realnvp", "denseflow"] = "realnvp"
    kwargs: dict = Field(default_factory=dict)
    lr: float = Field(1e-4, gt=0)
    pretrain_steps: int = Field(0, ge=0)
    pretrain_crop: int = Field(64, ge=8)
    jsd_weight: float = Field(0.03, ge=0)  # lambda in the flow loss (thesis: 0.03)
    divergence: Literal["jsd", "kl"] = "jsd"
    patch_sizes: tuple[int, int] = (16, 64)  # min/max side in px, step = the flow's size multiple
    init_checkpoint: Path | None = None


class TrainConfig(StrictModel):
    name: str = "run"
    output_dir: Path = Path("runs")
    seed: int = 0
    stage: Literal["closed_set", "densehybrid", "moose_probes"] = "closed_set"
    epochs: int = Field(10, ge=1)
    steps_per_epoch: int | None = Field(None, ge=1)  # default: one pass over the training set
    device: str = "auto"
    amp: bool = True  # autocast + grad scaling on CUDA; ignored on the CPU
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    negatives: NegativesConfig = Field(default_factory=NegativesConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    flow: FlowConfig | None = None
    calibrate_tpr: float = Field(0.95, gt=0, lt=1)
    score_method: str = "densehybrid"
    description: str = ""

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
        return self

    @property
    def run_dir(self) -> Path:
        return self.output_dir / self.name


def load_train_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    return load_config(path, TrainConfig, overrides)
