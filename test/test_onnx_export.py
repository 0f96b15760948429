"""ONNX export: onnxruntime reproduces the engine's maps; verification catches a different model."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_card, make_tiny_model

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
onnxruntime = pytest.importorskip("onnxruntime")

from openset_perception.checkpoint import read_model_card  # noqa: E402
from openset_perception.cli.main import main  # noqa: E402
from openset_perception.engine import Segmenter  # noqa: E402
from openset_perception.onnx_export import export_onnx, read_onnx_model_card, verify_onnx  # noqa: E402

HEIGHT, WIDTH = 61, 83  # odd sizes: the graph must pad to the stride and crop back


def _frames(batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, HEIGHT, WIDTH, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def exported(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    argv = ["export-onnx", "--checkpoint", str(tiny_checkpoint), "--out", str(out)]
    assert main([*argv, "--size", f"{HEIGHT}x{WIDTH}", "--dynamic", "--verify"]) == 0
    return out


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_reproduces_the_engine(exported: Path, tiny_checkpoint: Path, batch: int) -> None:
    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["semantic", "anomaly_score"]
    frames = _frames(batch, seed=batch)
    semantic, score = session.run(None, {"images": np.ascontiguousarray(frames.transpose(0, 3, 1, 2))})
    reference = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu").segment(list(frames))
    assert semantic.dtype == np.uint8 and semantic.shape == (batch, HEIGHT, WIDTH)
    assert (semantic == reference.semantic).mean() >= 0.999
    np.testing.assert_allclose(score, reference.anomaly_score, rtol=1e-4, atol=1e-3)


def test_model_card_travels_in_the_metadata(exported: Path, tiny_checkpoint: Path) -> None:
    card = read_model_card(tiny_checkpoint).to_dict()
    assert read_onnx_model_card(exported) == json.loads(json.dumps(card))


def test_verify_catches_a_different_model(exported: Path) -> None:
    card = make_tiny_card()
    same = Segmenter(make_tiny_model(card, seed=0), card, device="cpu")
    other = Segmenter(make_tiny_model(card, seed=1), card, device="cpu")
    assert verify_onnx(exported, same, _frames(2, seed=7)).passed
    report = verify_onnx(exported, other, _frames(2, seed=7))
    assert not report.passed and report.label_agreement < 0.9 and report.max_score_abs_diff > 0.01


def test_logits_export_matches_the_engine_logits(tmp_path: Path) -> None:
    card = make_tiny_card()
    segmenter = Segmenter(make_tiny_model(card), card, device="cpu")
    path = export_onnx(segmenter, tmp_path / "logits.onnx", HEIGHT, WIDTH, output_logits=True)
    report = verify_onnx(path, segmenter, _frames(1, seed=11))
    assert report.passed and report.label_agreement is None and report.max_logit_abs_diff < 1e-3
