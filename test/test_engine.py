"""The inference engine: one path from uint8 frames to maps, equal to the model + scoring by hand."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny_card, make_tiny_model

from openset_perception.engine import Segmenter, resolve_device
from openset_perception.preprocess import normalize
from openset_perception.scoring import anomaly_score


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    card = make_tiny_card(threshold=-6.0)
    return Segmenter(make_tiny_model(card), card, device="cpu")


def _frames(n: int, height: int = 61, width: int = 83, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(n)]


def test_outputs_equal_model_plus_scoring_by_hand(segmenter: Segmenter) -> None:
    frames = _frames(2)
    result = segmenter.segment(frames)
    x = normalize(torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2), segmenter.card.normalization)
    with torch.no_grad():
        out = segmenter.model(F.pad(x, (0, 96 - 83, 0, 64 - 61)))
    out = type(out)(out.logits[..., :61, :83], out.ood_logit[..., :61, :83], [])
    score = anomaly_score(out, "densehybrid").numpy()
    semantic = out.logits.argmax(1).numpy()
    assert result.semantic.shape == (2, 61, 83) and result.semantic.dtype == np.uint8
    assert result.anomaly_score.dtype == np.float32
    np.testing.assert_allclose(result.anomaly_score, score, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(result.semantic, semantic)
    expected_open = np.where(score >= -6.0, 8, semantic)
    np.testing.assert_array_equal(result.open_set, expected_open)
    assert 0 < (result.open_set == 8).mean() < 1  # the threshold splits this random model's map
    assert set(result.timings_ms) >= {"preprocess", "network", "scoring", "postprocess"}


def test_batch_equals_single_frames(segmenter: Segmenter) -> None:
    frames = _frames(3, seed=1)
    batch = segmenter.segment(frames)
    for i, frame in enumerate(frames):
        single = segmenter.segment([frame])
        np.testing.assert_allclose(single.anomaly_score[0], batch.anomaly_score[i], rtol=1e-4, atol=1e-4)


def test_runtime_threshold_and_method_changes(segmenter: Segmenter) -> None:
    frame = _frames(1, seed=2)
    segmenter.threshold = float("inf")
    assert (segmenter.segment(frame).open_set < 8).all()
    segmenter.threshold = -1e9
    assert (segmenter.segment(frame).open_set == 8).all()
    segmenter.score_method = "max_logit"
    logits_score = segmenter.segment(frame).anomaly_score
    segmenter.score_method = "densehybrid"
    assert not np.allclose(logits_score, segmenter.segment(frame).anomaly_score)
    with pytest.raises(ValueError, match="unknown score method"):
        segmenter.score_method = "magic"
    segmenter.threshold = -6.0


def test_requested_outputs_only(segmenter: Segmenter) -> None:
    result = segmenter.segment(_frames(1), outputs=("anomaly_score",))
    assert result.semantic is None and result.open_set is None and result.anomaly_score is not None


def test_depth_report_per_frame(segmenter: Segmenter) -> None:
    frames = _frames(2, seed=4)
    depth = np.full((61, 83), 12.0, dtype=np.float32)
    depth[:10] = np.nan
    result = segmenter.segment(frames, depth=[depth, None])
    assert result.depth_report[1] is None
    report = result.depth_report[0]
    assert sum(s.valid_pixels for s in report) == 51 * 83
    in_bin = next(s for s in report if s.range_m == (10.0, 15.0))
    flagged = (result.anomaly_score[0][10:] >= segmenter.threshold).sum()
    assert in_bin.anomalous_pixels == flagged


def test_bad_inputs_are_named(segmenter: Segmenter) -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        segmenter.segment([np.zeros((10, 10), np.uint8)])
    with pytest.raises(ValueError, match="share a size"):
        segmenter.segment([np.zeros((40, 40, 3), np.uint8), np.zeros((41, 40, 3), np.uint8)])
    with pytest.raises(ValueError, match="depth size"):
        segmenter.segment(_frames(1), depth=[np.zeros((5, 5), np.float32)])


def test_resize_to_card_input_size(tmp_path: Path) -> None:
    card = make_tiny_card(input_size=(64, 64))
    seg = Segmenter(make_tiny_model(card), card, device="cpu")
    result = seg.segment(_frames(1, 100, 150))
    assert result.anomaly_score.shape == (1, 100, 150)


def test_cuda_request_falls_back_loudly(caplog: pytest.LogCaptureFixture) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with caplog.at_level(logging.WARNING):
        assert resolve_device("cuda").type == "cpu"
    assert "CUDA" in caplog.text


def test_from_checkpoint(tiny_checkpoint: Path) -> None:
    seg = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu", precision="bf16")
    assert seg.precision == "bf16" and seg.num_classes == 8
    result = seg.segment(_frames(1))
    assert np.isfinite(result.anomaly_score).all()


def test_command_line_precisions_are_the_engines() -> None:
    from openset_perception.cli.main import PRECISION_CHOICES
    from openset_perception.engine import PRECISIONS

    assert tuple(PRECISIONS) == PRECISION_CHOICES
