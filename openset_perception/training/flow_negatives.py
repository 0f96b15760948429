"""Synthetic negatives from a normalizing flow trained jointly with the segmenter (thesis 4.4).

Each step the flow samples a patch (random side, a multiple of the flow's size multiple) that the
segmenter sees as a detached negative. Then the flow is updated with
``L_mle`` (bits/dim of the inlier region the negative replaced) ``+ lambda * L_jsd`` (Jensen-Shannon
divergence between the uniform distribution and the segmenter's softmax over the generated pixels;
or the RNVP paper's KL to uniform). ``L_jsd`` is differentiated through the segmenter into the flow:
the samples stay differentiable end to end (no rounding or clamping in that path), so the flow
learns to generate patches at the border of the inlier distribution.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm import tqdm

from openset_perception.atomic import atomic_write, atomic_write_text
from openset_perception.checkpoint import CheckpointError
from openset_perception.data.negatives import paste_negatives
from openset_perception.flows import NormalizingFlow, build_flow
from openset_perception.losses import jsd_to_uniform, kl_to_uniform
from openset_perception.preprocess import Normalization, normalize
from openset_perception.training.config import FlowConfig

LOGGER = logging.getLogger(__name__)
# Generated patches whose pixels spread less than one 8-bit level have collapsed to a constant colour
# (seen with jsd_weight 1.0: all-black patches); the segmenter then only learns to flag that colour.
COLLAPSED_PIXEL_STD = 1.0 / 255.0
FLOW_CHECKPOINT = "flow.safetensors"
FLOW_META_KEY = "openset_perception.flow"


def save_flow(path: str | Path, flow: NormalizingFlow, kind: str, kwargs: dict) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in flow.state_dict().items()}
    meta = {"format": "pt", FLOW_META_KEY: json.dumps({"kind": kind, "kwargs": kwargs})}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


def load_flow(path: str | Path, device: str | torch.device = "cpu") -> NormalizingFlow:
    """Rebuild a flow saved by ``save_flow`` (safetensors only: no pickled code runs)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"flow checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {})[FLOW_META_KEY])
        flow = build_flow(meta["kind"], **meta["kwargs"])
        flow.load_state_dict(load_file(str(path)))
    except (KeyError, ValueError, RuntimeError, OSError) as error:
        raise CheckpointError(f"{path}: not a usable flow checkpoint ({error})") from error
    return flow.to(device).eval()


def read_flow_settings(path: str | Path) -> dict | None:
    """A flow checkpoint's kind, settings and size from its header; None for any other file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = (handle.metadata() or {}).get(FLOW_META_KEY)
            if meta is None:
                return None
            sizes = [handle.get_slice(name).get_shape() for name in handle.keys()]  # noqa: SIM118
    except (SafetensorError, OSError, ValueError):
        return None
    settings = json.loads(meta)
    return {
        "kind": settings["kind"],
        "kwargs": settings["kwargs"],
        "tensors": len(sizes),
        "parameters": sum(math.prod(shape) for shape in sizes),
    }


def random_crops(images: torch.Tensor, side: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random side x side crops from (B,3,H,W) images."""
    b, _, h, w = images.shape
    picks = torch.randint(0, b, (count,), generator=generator)
    tops = torch.randint(0, h - side + 1, (count,), generator=generator)
    lefts = torch.randint(0, w - side + 1, (count,), generator=generator)
    crops = [
        images[i, :, top : top + side, left : left + side]
        for i, top, left in zip(picks, tops, lefts, strict=True)
    ]
    return torch.stack(crops)


class FlowNegatives:
    """A NegativeSource whose patches come from a jointly trained flow; see the module docstring."""

    def __init__(self, config: FlowConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        self.flow = build_flow(config.kind, **config.kwargs)
        if config.init_checkpoint is not None:
            self.flow = load_flow(config.init_checkpoint)
        self.optimizer = torch.optim.Adam(self.flow.parameters(), lr=config.lr)
        self.device = torch.device("cpu")
        self.run_dir: Path | None = None
        self._collapse_reported = False
        lo, hi = config.patch_sizes
        m = self.flow.size_multiple
        self.sides = list(range(max(m, (lo + m - 1) // m * m), hi + 1, m))
        if not self.sides:
            raise ValueError(f"flow.patch_sizes {config.patch_sizes} contain no multiple of {m}")

    # --- NegativeSource ---------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        fitting = [s for s in self.sides if s <= min(height, width)] or [self.sides[0]]
        side = int(rng.choice(fitting))
        generator = torch.Generator(device=self.device).manual_seed(int(rng.integers(2**62)))
        latents = [
            torch.randn(1, *shape, generator=generator, device=self.device)
            for shape in self.flow.latent_shapes(side, side)
        ]
        self.flow.train()
        patch = self.flow.to_image(self.flow.inverse(latents))[0]
        return patch, torch.ones(side, side, dtype=torch.bool, device=self.device)

    # --- training ---------------------------------------------------------------------------------
    def prepare(self, train_set, device: torch.device, run_dir: Path, resume: bool) -> None:
        """Move to the device and, on a fresh run, pre-train with MLE on inlier crops."""
        self.device = device
        self.flow.to(device)
        self.run_dir = run_dir
        if not resume and self.config.pretrain_steps > 0:
            self._pretrain(train_set)

    def _crops_from(
        self, train_set, indices: Sequence[int], generator: torch.Generator, per_image: int
    ) -> torch.Tensor:
        side = self.config.pretrain_crop
        images = [torch.from_numpy(train_set[int(i)].image).permute(2, 0, 1) for i in indices]
        crops = [random_crops(img[None].float() / 255.0, side, per_image, generator) for img in images]
        return torch.cat(crops).to(self.device)

    def _pretrain(self, train_set) -> None:
        generator = torch.Generator().manual_seed(self.seed)
        n = len(train_set)
        held_out = self._crops_from(train_set, range(max(0, n - 4), n), generator, per_image=8)
        history = []
        bar = tqdm(range(self.config.pretrain_steps), desc="flow pre-training (MLE)", leave=False)
        for step in bar:
            indices = torch.randint(0, max(1, n - 4), (4,), generator=generator).tolist()
            batch = self._crops_from(train_set, indices, generator, per_image=4)
            self.flow.train()
            loss = self.flow.bits_per_dim(batch).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.flow.parameters(), 10.0)
            self.optimizer.step()
            bar.set_postfix(bpd=f"{loss.item():.3f}")
            if step % max(1, self.config.pretrain_steps // 10) == 0 or step == self.config.pretrain_steps - 1:
                with torch.no_grad():
                    self.flow.eval()
                    held = float(self.flow.bits_per_dim(held_out).mean())
                history.append({"step": step, "train_bpd": float(loss), "held_out_bpd": held})
                LOGGER.info("flow pre-training step %d: held-out %.3f bits/dim", step, held)
        if self.run_dir is not None:
            text = json.dumps(history, indent=1)
            atomic_write_text(self.run_dir / "flow_pretrain.json", text)

    def update(
        self,
        segmenter: torch.nn.Module,
        normalization: Normalization,
        clean_images: torch.Tensor,
        patches: Sequence[tuple[torch.Tensor, torch.Tensor]],
        positions: Sequence[tuple[int, int]],
    ) -> dict[str, float]:
        """One flow step on this batch's generated patches (those that still carry a graph)."""
        chosen = [i for i, (p, _) in enumerate(patches) if p.requires_grad]
        if not chosen:
            return {}
        regions = []
        for i in chosen:
            top, left = positions[i]
            height, width = patches[i][0].shape[-2:]
            inlier_region = clean_images[i : i + 1, :, top : top + height, left : left + width]
            regions.append(self.flow.bits_per_dim(inlier_region).mean())
        mle = torch.stack(regions).mean()
        mixed, _, mask = paste_negatives(
            clean_images[chosen], None, [patches[i] for i in chosen], [positions[i] for i in chosen]
        )
        was_training = segmenter.training
        segmenter.eval()  # the flow's step must not move the segmenter's BN statistics
        logits = segmenter(normalize(mixed, normalization)).logits
        segmenter.train(was_training)
        divergence = (jsd_to_uniform if self.config.divergence == "jsd" else kl_to_uniform)(logits, mask)
        loss = mle + self.config.jsd_weight * divergence
        params = [p for p in self.flow.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        sample_std = float(torch.stack([patches[i][0].detach().std() for i in chosen]).mean())
        self._report_collapse(sample_std)
        return {
            "flow_bpd": float(mle.detach()),
            f"flow_{self.config.divergence}": float(divergence.detach()),
            "flow_sample_std": sample_std,
        }

    def _report_collapse(self, sample_std: float) -> None:
        """Warn once per collapse: training goes on (the run may recover), but the user must know."""
        collapsed = sample_std < COLLAPSED_PIXEL_STD
        if collapsed and not self._collapse_reported:
            LOGGER.warning(
                "flow negatives have collapsed to near-constant patches (pixel std %.5f < %.5f): the "
                "divergence term outweighs the likelihood; lower flow.jsd_weight (now %g)",
                sample_std,
                COLLAPSED_PIXEL_STD,
                self.config.jsd_weight,
            )
        self._collapse_reported = collapsed

    def state_dict(self) -> dict:
        return {"flow": self.flow.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.flow.load_state_dict(state["flow"])
        self.optimizer.load_state_dict(state["optimizer"])

    def save(self, path: Path) -> None:
        save_flow(path, self.flow, self.config.kind, dict(self.config.kwargs))
