"""Joint flow training: the JSD term's gradient reaches the flow through the segmenter."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_card, make_tiny_model

from openset_perception.data.negatives import paste_negatives, sample_positions
from openset_perception.preprocess import Normalization
from openset_perception.training.config import FlowConfig
from openset_perception.training.flow_negatives import FlowNegatives, load_flow, save_flow

FLOW = FlowConfig(
    kind="realnvp", kwargs={"num_scales": 2, "hidden_channels": 8, "num_blocks": 1}, patch_sizes=(16, 24)
)


def _batch(flow_source: FlowNegatives, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = torch.rand(2, 3, 48, 64)
    patches = [flow_source.sample(rng, 48, 64) for _ in range(2)]
    return images, patches, sample_positions(rng, patches, 48, 64)


def test_samples_are_differentiable_patches_of_allowed_sizes() -> None:
    source = FlowNegatives(FLOW, seed=0)
    _, patches, _ = _batch(source)
    for patch, mask in patches:
        side = patch.shape[-1]
        assert patch.requires_grad and 16 <= side <= 24 and side % source.flow.size_multiple == 0
        assert patch.shape[-2] == side and mask.all()
        assert patch.min() >= 0 and patch.max() <= 1


def test_jsd_gradient_reaches_the_flow_through_the_segmenter() -> None:
    source = FlowNegatives(FLOW.model_copy(update={"jsd_weight": 1.0}), seed=0)
    segmenter = make_tiny_model(make_tiny_card())
    images, patches, positions = _batch(source)
    mixed, _, mask = paste_negatives(images, None, patches, positions)
    logits = segmenter(mixed).logits
    from openset_perception.losses import jsd_to_uniform

    jsd = jsd_to_uniform(logits, mask)
    grads = torch.autograd.grad(jsd, list(source.flow.parameters()), allow_unused=True)
    norms = [g.norm() for g in grads if g is not None]
    assert norms and all(torch.isfinite(n) for n in norms) and sum(norms) > 0


def test_update_changes_only_the_flow() -> None:
    source = FlowNegatives(FLOW, seed=0)
    segmenter = make_tiny_model(make_tiny_card()).train()
    images, patches, positions = _batch(source)
    flow_before = [p.detach().clone() for p in source.flow.parameters()]
    segmenter_before = {k: v.clone() for k, v in segmenter.state_dict().items()}
    parts = source.update(segmenter, Normalization(), images, patches, positions)
    assert set(parts) == {"flow_bpd", "flow_jsd", "flow_sample_std"}
    assert all(np.isfinite(v) for v in parts.values()) and parts["flow_sample_std"] > 0.01
    assert any(not torch.equal(a, b) for a, b in zip(flow_before, source.flow.parameters(), strict=True))
    for name, value in segmenter.state_dict().items():
        assert torch.equal(value, segmenter_before[name]), name  # BN statistics included
    assert segmenter.training


def test_flow_checkpoint_round_trip(tmp_path: Path) -> None:
    source = FlowNegatives(FLOW, seed=0)
    _batch(source)  # ActNorm initialises on its first forward
    save_flow(tmp_path / "flow.safetensors", source.flow, FLOW.kind, FLOW.kwargs)
    restored = load_flow(tmp_path / "flow.safetensors")
    for a, b in zip(source.flow.state_dict().values(), restored.state_dict().values(), strict=True):
        assert torch.equal(a.cpu(), b)


def test_missing_flow_checkpoint_is_named(tmp_path: Path) -> None:
    from openset_perception.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="flow checkpoint not found"):
        load_flow(tmp_path / "none.safetensors")


def test_collapsed_flow_samples_are_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    source = FlowNegatives(FLOW, seed=0)
    segmenter = make_tiny_model(make_tiny_card()).train()

    def update(collapsed: bool, seed: int) -> dict[str, float]:
        images, patches, positions = _batch(source, seed)
        if collapsed:  # what a collapsed flow produces: one colour, still carrying the flow's graph
            patches = [(0.0 * patch + 0.2, mask) for patch, mask in patches]
        return source.update(segmenter, Normalization(), images, patches, positions)

    with caplog.at_level("WARNING", logger="openset_perception.training.flow_negatives"):
        assert update(collapsed=True, seed=1)["flow_sample_std"] < 1e-6
        update(collapsed=True, seed=2)
    warnings = [r.getMessage() for r in caplog.records if "collapsed" in r.getMessage()]
    assert len(warnings) == 1 and "jsd_weight" in warnings[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="openset_perception.training.flow_negatives"):
        update(collapsed=False, seed=3)
    assert not caplog.records
