"""The training loop shared by every stage (closed-set, DenseHybrid fine-tuning, MOoSe probes).

Reproducible and resumable: every random choice (data order, crops, negatives, pasting positions,
flow latents) is drawn from generators seeded by (seed, epoch, step/index), and the full training
state is written atomically at the end of every epoch, every ``save_every_steps`` steps and when
SIGINT/SIGTERM asks the run to stop. ``resume=True`` continues from the step after the last saved
one and ends with the same weights as an uninterrupted run; a run killed without a chance to save
repeats the steps since its last save. Validation and threshold calibration use the inference
engine, the same code path the ROS node runs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from tqdm import tqdm

from openset_perception.atomic import atomic_write, remove_stale_temp_files
from openset_perception.checkpoint import CheckpointError, ModelCard, save_checkpoint
from openset_perception.data.negatives import (
    ADE20kNegatives,
    FolderNegatives,
    MixedNegatives,
    NegativeSource,
    NoiseNegatives,
    ProceduralNegatives,
    paste_negatives,
    sample_positions,
)
from openset_perception.data.registry import open_dataset
from openset_perception.data.synthetic_streets import SyntheticStreets, split_stream
from openset_perception.engine import Segmenter, resolve_device
from openset_perception.evaluation.calibrate import calibrate_threshold
from openset_perception.evaluation.evaluate import evaluate_dataset
from openset_perception.losses import LossWeights, densehybrid_loss, moose_probe_loss, segmentation_ce
from openset_perception.models import ArchitectureSpec, OpenSetSegmenter, build_model
from openset_perception.preprocess import Normalization, normalize
from openset_perception.training.augment import TrainingCrops
from openset_perception.training.config import DatasetConfig, ModelConfig, TrainConfig
from openset_perception.training.flow_negatives import FLOW_CHECKPOINT, FlowNegatives

LOGGER = logging.getLogger(__name__)
STATE_FILE = "train_state.pt"
LAST_CHECKPOINT = "last.safetensors"
FINAL_CHECKPOINT = "model.safetensors"

StepCallback = Callable[[int, int, dict[str, float]], None]


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM stopped the run after a step; its state was saved and ``--resume`` continues it."""

    def __init__(self, epoch: int, step: int, epochs: int, steps_per_epoch: int, state_file: Path) -> None:
        super().__init__(
            f"stopped after step {step}/{steps_per_epoch} of epoch {epoch + 1}/{epochs}; "
            f"training state saved to {state_file}"
        )
        self.state_file = state_file


class _StopRequests:
    """Turns the first SIGINT/SIGTERM into a request to stop after the current step; a second one aborts."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            f"\n{signal.Signals(signum).name}: saving the training state after this step "
            "(send it again to stop at once, losing the steps since the last save)",
            flush=True,
        )


@dataclass
class TrainResult:
    checkpoint: Path
    epochs_run: int
    metrics: dict
    seconds: float


def open_training_dataset(spec: DatasetConfig, anomalies: bool = False, key: str = "data.train"):
    """Registry datasets by name; procedural streets without a root are generated on the fly.

    ``key`` is the config section of ``spec``, named in the errors.
    """
    if spec.name == "synthetic_streets" and spec.root is None:
        stream = split_stream(spec.split or "train")
        return SyntheticStreets(
            spec.num_frames,
            seed=spec.seed,
            height=spec.height,
            width=spec.width,
            anomalies=anomalies,
            stream=stream,
        )
    if spec.root is None:
        raise FileNotFoundError(f"{key}.root: dataset '{spec.name}' needs a root folder")
    if not Path(spec.root).exists():
        raise FileNotFoundError(f"{key}.root: dataset root {spec.root} does not exist")
    return open_dataset(spec.name, spec.root, spec.split)


def build_negative_sources(config: TrainConfig) -> tuple[NegativeSource | None, FlowNegatives | None]:
    """The source negatives are drawn from, and the jointly trained flow when there is one."""
    neg = config.negatives

    def real(kind: str) -> NegativeSource:
        if kind == "procedural":
            return ProceduralNegatives(neg.area_range)
        if kind == "noise":
            return NoiseNegatives(neg.area_range)
        if kind == "folder":
            return FolderNegatives(neg.root, neg.area_range)
        return ADE20kNegatives(neg.root, neg.ade_crop_size, neg.ade_mode, neg.exclude_classes, neg.area_range)

    if neg.source == "none":
        return None, None
    if neg.source != "flow":
        return real(neg.source), None
    flow = FlowNegatives(config.flow, config.seed)
    if neg.real_source is None:
        return flow, flow
    return MixedNegatives(real(neg.real_source), flow, neg.real_probability), flow


def _epoch_indices(n: int, count: int, seed: int, epoch: int) -> np.ndarray:
    """``count`` indices: whole shuffled passes over range(n), a fresh permutation per pass."""
    rng = np.random.default_rng([seed, epoch, 7919])
    passes = math.ceil(count / n)
    return np.concatenate([rng.permutation(n) for _ in range(passes)])[:count]


class Trainer:
    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world_size > 1:
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if not dist.is_initialized():
                dist.init_process_group(backend)
            self.device = (
                torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
            )
        else:
            self.device = resolve_device(config.device)
        self.is_main = self.rank == 0
        self.run_dir = config.run_dir

        self.train_set = open_training_dataset(config.data.train)
        val_spec = config.data.val
        self.val_set = open_training_dataset(val_spec, anomalies=True, key="data.val") if val_spec else None
        if len(self.train_set) == 0:
            raise ValueError(f"training dataset '{config.data.train.name}' is empty")
        info = self.train_set.info
        self.normalization = _training_normalization(config.model)
        torch.manual_seed(config.seed)
        spec = ArchitectureSpec(
            config.model.backbone,
            len(info.class_names),
            dict(config.model.backbone_kwargs),
            config.model.moose_probes,
            config.model.probe_depth,
        )
        self.model: OpenSetSegmenter = build_model(spec, pretrained=config.model.pretrained).to(self.device)
        if config.model.init_checkpoint is not None:
            _load_initial_weights(self.model, config.model.init_checkpoint)
        self.card = ModelCard(
            architecture=spec,
            class_names=list(info.class_names),
            palette=[tuple(c) for c in info.palette],
            normalization=self.normalization,
            score_method=config.score_method,
            description=config.description,
            training={
                "stage": config.stage,
                "train_dataset": config.data.train.name,
                "config": _jsonable(config),
            },
        )
        self.crops = TrainingCrops(
            self.train_set,
            tuple(config.data.crop_size),
            tuple(config.data.scale_range),
            config.data.flip,
            tuple(
                round(255 * c)
                for c in ((0.5,) * 3 if config.model.normalization == "unit" else self.normalization.mean)
            ),
            config.seed,
        )
        self.negatives, self.flow = (None, None)
        if config.stage == "densehybrid":
            self.negatives, self.flow = build_negative_sources(config)
        self.betas = LossWeights(**config.loss.model_dump())
        self.steps_per_epoch = config.steps_per_epoch or max(
            1, len(self.train_set) // (config.data.batch_size * self.world_size)
        )
        self.optimizer = self._build_optimizer()
        self.scheduler = self._build_scheduler()
        self.use_amp = config.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.net = self.model
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.writer = None
        self.start_epoch = 0
        self.start_step = 0  # steps of start_epoch already done (a run saved mid-epoch)
        self.partial_totals: dict[str, float] = {}  # their summed losses
        self.elapsed_before = 0.0  # seconds spent by the run before it was resumed
        self.history: list[dict] = []
        # Only now, with every input opened and the model built, does the run leave a trace on disk.
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            for stale in remove_stale_temp_files(self.run_dir):
                LOGGER.info("removed %s, left by a write that was killed", stale)

    def _trainable_groups(self) -> list[dict]:
        opt = self.config.optimizer
        if self.config.stage == "moose_probes":
            return [{"params": self.model.probe_parameters(), "lr": opt.lr_head}]
        groups = [
            {"params": self.model.encoder_parameters(), "lr": opt.lr_backbone},
            {"params": self.model.decoder_parameters(), "lr": opt.lr_head},
        ]
        if self.model.probes:
            groups.append({"params": self.model.probe_parameters(), "lr": opt.lr_head})
        return groups

    def _build_optimizer(self) -> torch.optim.Optimizer:
        groups = self._trainable_groups()
        trainable = {id(p) for g in groups for p in g["params"]}
        for p in self.model.parameters():
            p.requires_grad_(id(p) in trainable)
        return torch.optim.Adam(groups, weight_decay=self.config.optimizer.weight_decay)

    def _build_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        opt = self.config.optimizer
        if opt.schedule == "constant":
            return torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)
        # Cosine from each group's initial lr to lr_min over all epochs, stepped once per epoch.
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=self.config.epochs, eta_min=opt.lr_min
        )

    def _set_train_mode(self) -> None:
        self.model.train()
        if self.config.stage == "moose_probes":
            # The segmenter is frozen, BN statistics included; only the probes learn.
            for module in (self.model.backbone, self.model.classifier, self.model.ood_head):
                module.eval()

    # --- state -----------------------------------------------------------------------------------
    def _save_state(self, epoch: int, step: int, totals: dict[str, float], elapsed: float) -> None:
        """Everything needed to continue after ``step`` finished steps of ``epoch``."""
        state = {
            "epoch": epoch,
            "step": step,
            "epoch_totals": json.dumps(totals),
            "elapsed_s": elapsed,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": json.dumps(self.history),
            "torch_rng": torch.get_rng_state(),
        }
        if self.flow is not None:
            state["flow"] = self.flow.state_dict()
        atomic_write(self.run_dir / STATE_FILE, lambda tmp: torch.save(state, tmp))
        save_checkpoint(self.run_dir / LAST_CHECKPOINT, self.model, self.card)
        if self.flow is not None:
            self.flow.save(self.run_dir / FLOW_CHECKPOINT)

    def _load_state(self) -> None:
        path = self.run_dir / STATE_FILE
        if not path.is_file():
            LOGGER.info("no %s in %s: starting from scratch", STATE_FILE, self.run_dir)
            return
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            self.history = json.loads(state["history"])
            torch.set_rng_state(state["torch_rng"].cpu())
            if self.flow is not None:
                self.flow.load_state_dict(state["flow"])
            self.elapsed_before = float(state.get("elapsed_s", 0.0))
            epoch, step = int(state["epoch"]), int(state.get("step", self.steps_per_epoch))
            partial_totals = json.loads(state["epoch_totals"]) if step < self.steps_per_epoch else {}
        except Exception as error:  # torch.load, pickle and zip raise many types for a damaged file
            problem = (
                f"missing entry {error}"
                if isinstance(error, KeyError)
                else f"{type(error).__name__}: {error}"
            )
            raise CheckpointError(
                f"{path}: not a usable training state of this run ({problem}); "
                "remove it to start over, or train without --resume"
            ) from None
        if step >= self.steps_per_epoch:
            self.start_epoch, self.start_step = epoch + 1, 0
            LOGGER.info("resumed from %s after epoch %d", path, epoch + 1)
        else:
            self.start_epoch, self.start_step = epoch, step
            self.partial_totals = partial_totals
            LOGGER.info("resumed from %s at step %d of epoch %d", path, step + 1, epoch + 1)

    # --- loop ------------------------------------------------------------------------------------
    def fit(self, resume: bool = False, on_step: StepCallback | None = None) -> TrainResult:
        """Train to ``config.epochs``; raises :class:`TrainingInterrupted` after saving on SIGINT/SIGTERM."""
        started = time.perf_counter()
        if resume:
            self._load_state()
        if self.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        resumed = self.start_epoch > 0 or self.start_step > 0
        if self.flow is not None:
            self.flow.prepare(self.train_set, self.device, self.run_dir, resume=resumed)

        def elapsed() -> float:
            return self.elapsed_before + time.perf_counter() - started

        try:
            with _StopRequests() as stop:
                for epoch in range(self.start_epoch, self.config.epochs):
                    losses = self._train_epoch(epoch, on_step, stop, elapsed)
                    if self.world_size > 1:
                        self._share_rank0_buffers()
                    self.scheduler.step()
                    metrics = self._validate(epoch) if self.is_main else {}
                    self.history.append({"epoch": epoch, "loss": losses, "val": _summary(metrics)})
                    if self.is_main:
                        self._save_state(epoch, self.steps_per_epoch, {}, elapsed())
                    if self.world_size > 1:
                        dist.barrier()
                    if epoch + 1 < self.config.epochs and self._all_ranks_agree(stop.requested):
                        raise TrainingInterrupted(
                            epoch, self.steps_per_epoch, self.config.epochs, self.steps_per_epoch,
                            self.run_dir / STATE_FILE,
                        )
        finally:
            if self.writer is not None:
                self.writer.close()
        final = self._finish() if self.is_main else self.run_dir / FINAL_CHECKPOINT
        seconds = elapsed()
        last = self.history[-1]["val"] if self.history else {}
        if self.is_main:
            _print_summary(self.config, self.history, final, seconds, self.card.threshold)
        return TrainResult(final, len(self.history), last, seconds)

    def _share_rank0_buffers(self) -> None:
        """DDP hands rank 0's BatchNorm statistics to every rank before each forward pass, so after
        an epoch's last step each rank holds statistics of its own batches; give all ranks rank 0's,
        the ones its checkpoint holds, so that every rank carries on from the saved state."""
        for buffer in self.model.buffers():
            dist.broadcast(buffer, src=0)

    def _batches(self, epoch: int, first_step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batch = self.config.data.batch_size
        total = self.steps_per_epoch * batch * self.world_size
        indices = _epoch_indices(len(self.crops), total, self.config.seed, epoch)
        indices = indices[self.rank :: self.world_size][first_step * batch :]
        self.crops.epoch = epoch
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(self.crops, indices.tolist()),
            batch_size=batch,
            shuffle=False,
            num_workers=self.config.data.num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=True,
        )
        yield from loader

    def _train_epoch(
        self, epoch: int, on_step: StepCallback | None, stop: _StopRequests, elapsed: Callable[[], float]
    ) -> dict[str, float]:
        self._set_train_mode()
        first = self.start_step if epoch == self.start_epoch else 0
        totals = dict(self.partial_totals) if first else {}
        bar = tqdm(
            self._batches(epoch, first),
            total=self.steps_per_epoch,
            initial=first,
            desc=f"epoch {epoch + 1}/{self.config.epochs}",
            disable=not self.is_main,
            leave=False,
        )
        every = self.config.save_every_steps
        for step, (images, labels) in enumerate(bar, start=first):
            rng = np.random.default_rng([self.config.seed, epoch, step, self.rank])
            parts = self._train_step(images.to(self.device), labels.to(self.device), rng)
            for key, value in parts.items():
                totals[key] = totals.get(key, 0.0) + value
            bar.set_postfix(loss=f"{parts['loss']:.3f}")
            if self.writer is not None:
                global_step = epoch * self.steps_per_epoch + step
                for key, value in parts.items():
                    self.writer.add_scalar(f"train/{key}", value, global_step)
            if on_step is not None:
                on_step(epoch, step, parts)
            done = step + 1
            if done == self.steps_per_epoch:
                break
            stopping = self._all_ranks_agree(stop.requested)
            if self.is_main and (stopping or (every and done % every == 0)):
                self._save_state(epoch, done, totals, elapsed())
            if stopping:
                bar.close()
                raise TrainingInterrupted(
                    epoch, done, self.config.epochs, self.steps_per_epoch, self.run_dir / STATE_FILE
                )
        return {k: v / self.steps_per_epoch for k, v in totals.items()}

    def _all_ranks_agree(self, requested: bool) -> bool:
        """Whether any rank was asked to stop, so that every rank stops after the same step."""
        if self.world_size == 1:
            return requested
        flag = torch.tensor([1.0 if requested else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def _train_step(
        self, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator
    ) -> dict[str, float]:
        x = images.float() / 255.0
        outlier_mask = None
        if self.negatives is not None:
            height, width = x.shape[-2:]
            patches = [self.negatives.sample(rng, height, width) for _ in range(x.shape[0])]
            positions = sample_positions(rng, patches, height, width)
            # The segmenter learns from negatives as data; only the flow's own update differentiates them.
            detached = [(p.detach(), m) for p, m in patches]
            mixed, labels, outlier_mask = paste_negatives(x, labels, detached, positions)
        else:
            mixed = x
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
            out = self.net(normalize(mixed, self.normalization))
            loss, parts = self._loss(out, labels, outlier_mask)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.optimizer.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optimizer.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        result = {"loss": float(loss.detach())} | {k: float(v) for k, v in parts.items()}
        if self.flow is not None:
            result |= self.flow.update(self.model, self.normalization, x, patches, positions)
        return result

    def _loss(self, out, labels: torch.Tensor, outlier_mask: torch.Tensor | None):
        stage = self.config.stage
        if stage == "closed_set":
            ce = segmentation_ce(out.logits, labels)
            if self.model.probes:
                probe = moose_probe_loss(out.probe_logits, labels)
                return ce + probe, {"ce": ce.detach(), "probe_ce": probe.detach()}
            return ce, {"ce": ce.detach()}
        if stage == "moose_probes":
            probe = moose_probe_loss(out.probe_logits, labels)
            return probe, {"probe_ce": probe.detach()}
        return densehybrid_loss(out.logits, out.ood_logit, labels, outlier_mask, self.betas)

    # --- validation ------------------------------------------------------------------------------
    def _segmenter(self) -> Segmenter:
        # Before calibration there is no threshold to warn about; validation logs threshold-free metrics.
        return Segmenter(self.model, self.card, device=self.device, warn_uncalibrated=False)

    def _validate(self, epoch: int) -> dict:
        if self.val_set is None:
            return {}
        segmenter = self._segmenter()
        metrics = evaluate_dataset(
            segmenter,
            self.val_set,
            self.run_dir / "validation" / f"epoch_{epoch + 1:03d}",
            max_frames=self.config.data.val_max_frames,
            progress=False,
        )
        self._set_train_mode()
        if self.writer is not None:
            for key, value in _summary(metrics).items():
                if value is not None:
                    self.writer.add_scalar(f"val/{key}", value, epoch)
        summary = _summary(metrics)
        if self.card.threshold is None:
            summary.pop("open_miou")  # every pixel is 'known' until calibration: it would repeat mIoU
        LOGGER.info(
            "epoch %d validation: %s",
            epoch + 1,
            ", ".join(_percent(k, v) for k, v in summary.items() if v is not None),
        )
        return metrics

    def _finish(self) -> Path:
        """Calibrate the threshold on the validation split and write the final checkpoint."""
        if self.val_set is not None and self.config.stage != "closed_set":
            segmenter = self._segmenter()
            threshold, metrics = calibrate_threshold(
                segmenter,
                self.val_set,
                tpr=self.config.calibrate_tpr,
                max_frames=self.config.data.val_max_frames,
            )
            self.card.threshold = float(threshold)
            self.card.threshold_tpr = self.config.calibrate_tpr
            self.card.metrics = {
                "validation": self.history[-1]["val"] if self.history else {},
                "calibration": metrics,
            }
        elif self.history:
            self.card.metrics = {"validation": self.history[-1]["val"]}
        path = self.run_dir / FINAL_CHECKPOINT
        save_checkpoint(path, self.model, self.card)
        return path


def _training_normalization(model: ModelConfig) -> Normalization:
    if model.normalization == "init_checkpoint":
        from openset_perception.checkpoint import read_model_card

        return read_model_card(model.init_checkpoint).normalization
    return Normalization() if model.normalization == "imagenet" else Normalization((0, 0, 0), (1, 1, 1))


def _load_initial_weights(model: OpenSetSegmenter, path: Path) -> None:
    """Start from a checkpoint's weights; probe heads absent from it start fresh."""
    from openset_perception.checkpoint import load_weights, read_model_card

    if not path.is_file():
        raise FileNotFoundError(f"model.init_checkpoint: checkpoint not found: {path}{_written_by(path)}")
    read_model_card(path)  # validates the file and names the problem if it is not a checkpoint
    state = load_file(str(path), device="cpu")
    expected = model.state_dict()
    for name, tensor in expected.items():
        if name.startswith("probes.") and name not in state:
            state[name] = tensor
    try:
        load_weights(model, state, source=str(path))
    except CheckpointError as error:
        raise CheckpointError(f"init_checkpoint does not fit model: {error}") from None


def _written_by(checkpoint: Path) -> str:
    """A hint naming the training config whose run writes ``checkpoint`` (runs/<name>/...), if one exists."""
    config = Path("config/train") / f"{checkpoint.parent.name}.yaml"
    if not config.is_file():
        return ""
    return f"; train that stage first: openset-perception train --config {config}"


def _summary(metrics: dict) -> dict[str, float | None]:
    anomaly = metrics.get("anomaly") or {}
    seg = metrics.get("segmentation") or {}
    return {
        "ap": anomaly.get("ap"),
        "auroc": anomaly.get("auroc"),
        "fpr95": anomaly.get("fpr95"),
        "miou": seg.get("miou"),
        "open_miou": seg.get("open_miou"),
    }


def _jsonable(config: TrainConfig) -> dict:
    return json.loads(config.model_dump_json())


def _print_summary(
    config: TrainConfig, history: list[dict], checkpoint: Path, seconds: float, threshold: float | None
) -> None:
    last = history[-1]["val"] if history else {}
    shown = ", ".join(_percent(k, v) for k, v in last.items() if v is not None) or "no validation split"
    epochs = f"{len(history)} epoch{'s' if len(history) != 1 else ''}"
    calibrated = (
        f"calibrated threshold {threshold:.6g} (TPR {config.calibrate_tpr:.0%})"
        if threshold is not None
        else "no calibrated threshold (closed-set stage or no validation split)"
    )
    print(
        f"training '{config.name}' ({config.stage}) finished: {epochs}, {seconds / 60:.1f} min in all; "
        f"final validation: {shown}; {calibrated}; checkpoint: {checkpoint}"
    )


def _percent(name: str, value: float) -> str:
    return f"{name} {100 * value:.2f}%"
