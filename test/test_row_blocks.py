"""Row-block evaluation of per-pixel maps gives the whole-map result, and is used only where it may."""

from __future__ import annotations

import pytest
import torch

from openset_perception import row_blocks
from openset_perception.models import ArchitectureSpec, build_model
from openset_perception.models.segmenter import SegmenterOutput
from openset_perception.row_blocks import in_row_blocks
from openset_perception.scoring import SCORE_METHODS, anomaly_score, classes_and_anomaly_score


def _outputs(seed: int = 0) -> SegmenterOutput:
    generator = torch.Generator().manual_seed(seed)
    shape = (2, 5, 37, 23)
    logits = 6 * torch.randn(shape, generator=generator)
    ood_logit = 6 * torch.randn((2, 1, 37, 23), generator=generator)
    probes = [6 * torch.randn(shape, generator=generator) for _ in range(3)]
    return SegmenterOutput(logits, ood_logit, probes)


@pytest.fixture
def small_blocks(monkeypatch):
    # 5 classes x 23 columns x 2 frames = 230 elements a row: blocks of 2 rows, 19 blocks for 37 rows.
    monkeypatch.setattr(row_blocks, "BLOCK_ELEMENTS", 500)


def test_blocks_cover_every_row_once_in_order(small_blocks) -> None:
    seen: list[torch.Tensor] = []

    def record(logits: torch.Tensor) -> torch.Tensor:
        seen.append(logits)
        return logits.sum(dim=1)

    logits = _outputs().logits
    result = in_row_blocks(record, logits)
    assert len(seen) == 19 and all(block.shape[-2] <= 2 for block in seen)
    assert torch.equal(torch.cat(seen, dim=-2), logits)
    torch.testing.assert_close(result, logits.sum(dim=1), rtol=1e-6, atol=1e-5)


def test_several_results_of_one_pass_are_joined_each(small_blocks) -> None:
    logits = _outputs().logits
    calls = 0

    def max_and_index(block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal calls
        calls += 1
        return block.max(dim=1)

    values, indices = in_row_blocks(max_and_index, logits)
    assert calls == 19
    expected = logits.max(dim=1)
    assert torch.equal(values, expected.values) and torch.equal(indices, expected.indices)


@pytest.mark.parametrize("method", SCORE_METHODS)
def test_every_score_is_unchanged_by_row_blocks(method, small_blocks, monkeypatch) -> None:
    outputs = _outputs()
    blocked = anomaly_score(outputs, method)
    blocked_classes, blocked_fused = classes_and_anomaly_score(outputs, method)
    monkeypatch.setattr(row_blocks, "BLOCK_ELEMENTS", 1 << 30)
    whole = anomaly_score(outputs, method)
    assert blocked.shape == (2, 37, 23)
    torch.testing.assert_close(blocked, whole, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(blocked_fused, whole, rtol=1e-6, atol=1e-5)
    assert torch.equal(blocked_classes, outputs.logits.max(dim=1).indices)


def test_inlier_head_in_inference_equals_the_whole_map(small_blocks, monkeypatch) -> None:
    torch.manual_seed(0)
    model = build_model(ArchitectureSpec("swiftnet_rn18", 4, {"width": 0.125}))
    with torch.no_grad():  # non-trivial BN statistics
        head_norm = model.ood_head[0]
        head_norm.running_mean.normal_()
        head_norm.running_var.uniform_(0.5, 2.0)
    model.eval()
    images = torch.randn(1, 3, 96, 160)
    with torch.inference_mode():
        blocked = model(images, upsample=False).ood_logit
        monkeypatch.setattr(row_blocks, "BLOCK_ELEMENTS", 1 << 30)
        whole = model(images, upsample=False).ood_logit
    torch.testing.assert_close(blocked, whole, rtol=1e-6, atol=1e-5)


def test_maps_with_a_graph_are_not_split(small_blocks) -> None:
    logits = _outputs().logits.requires_grad_()
    calls = []

    def score(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape)
        return torch.logsumexp(x, dim=1)

    in_row_blocks(score, logits).sum().backward()
    assert calls == [logits.shape]
    assert logits.grad is not None
