"""Every file the tools write goes through atomic.py: folder datasets (PNGs and dataset.yaml), score
dumps of ``evaluate``, demo PNGs, the sample-negatives grid, benchmark JSON and Markdown, ONNX export.

A recorder on ``os.replace`` (the atomic move every atomic write ends with) lists the files written
atomically; each writer's outputs must all be on it. For ONNX, a failure just before the move must
leave the previous file untouched.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import TINY_CLASSES, TINY_PALETTE

from openset_perception import atomic, demo
from openset_perception.cli.main import main
from openset_perception.data import DatasetInfo, FolderDataset, Sample, write_folder_dataset
from openset_perception.engine import Segmenter
from openset_perception.evaluation.evaluate import evaluate_dataset


@pytest.fixture
def replaced(monkeypatch: pytest.MonkeyPatch) -> set[Path]:
    """Destinations of every os.replace during the test."""
    destinations: set[Path] = set()
    real_replace = os.replace

    def recording_replace(src: str | Path, dst: str | Path) -> None:
        destinations.add(Path(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    return destinations


def files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()}


def tiny_samples(count: int = 2) -> list[Sample]:
    rng = np.random.default_rng(0)
    samples = []
    for index in range(count):
        depth = rng.uniform(1.0, 30.0, (40, 48)).astype(np.float32)
        samples.append(
            Sample(
                image=rng.integers(0, 256, (40, 48, 3), dtype=np.uint8),
                semantic=rng.integers(0, len(TINY_CLASSES), (40, 48), dtype=np.uint8),
                anomaly=(rng.random((40, 48)) < 0.1).astype(np.uint8),
                depth=depth,
                name=f"frame_{index}",
            )
        )
    return samples


def test_folder_datasets_are_written_atomically(tmp_path: Path, replaced: set[Path]) -> None:
    samples = tiny_samples()
    root = write_folder_dataset(samples, tmp_path / "data", DatasetInfo(TINY_CLASSES, TINY_PALETTE))
    written = files_under(root)
    assert root / "dataset.yaml" in written and len(written) == 1 + 4 * len(samples)
    assert written <= replaced
    read_back = FolderDataset(root)[1]
    np.testing.assert_array_equal(read_back.image, samples[1].image)
    np.testing.assert_array_equal(read_back.semantic, samples[1].semantic)


def test_evaluate_score_dumps_are_atomic(tmp_path: Path, tiny_checkpoint: Path, replaced: set[Path]) -> None:
    root = write_folder_dataset(tiny_samples(), tmp_path / "data", DatasetInfo(TINY_CLASSES, TINY_PALETTE))
    segmenter = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu")
    out_dir = tmp_path / "eval"
    evaluate_dataset(segmenter, FolderDataset(root), out_dir, save_scores=True, progress=False)
    scores = files_under(out_dir / "scores")
    assert sorted(path.name for path in scores) == ["frame_0.npy", "frame_1.npy"]
    assert scores <= replaced
    assert np.load(out_dir / "scores" / "frame_0.npy").shape == (40, 48)


def test_demo_pngs_are_atomic(tmp_path: Path, replaced: set[Path]) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    path = tmp_path / "frame_00_overlay.png"
    demo._write_png(path, rgb)
    assert path in replaced
    np.testing.assert_array_equal(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), rgb)


def test_sample_negatives_grid_is_atomic(tmp_path: Path, replaced: set[Path]) -> None:
    from test_flow_negatives import FLOW, _batch

    from openset_perception.training.flow_negatives import FlowNegatives, save_flow

    source = FlowNegatives(FLOW, seed=0)
    _batch(source)  # ActNorm initialises on its first forward
    save_flow(tmp_path / "flow.safetensors", source.flow, FLOW.kind, FLOW.kwargs)
    out = tmp_path / "grid.png"
    argv = ["sample-negatives", "--checkpoint", str(tmp_path / "flow.safetensors"), "--n", "4"]
    assert main([*argv, "--sizes", "16", "--out", str(out)]) == 0
    assert out in replaced and cv2.imread(str(out)) is not None


def test_benchmark_outputs_are_atomic(tmp_path: Path, replaced: set[Path]) -> None:
    markdown = tmp_path / "benchmarks.md"
    markdown.write_text("# Benchmarks\n\nearlier rows stay\n")
    out = tmp_path / "result.json"
    argv = ["benchmark", "--size", "64x64", "--width", "0.125", "--iterations", "1", "--warmup", "0"]
    argv += ["--device", "cpu", "--no-progress", "--json", str(out), "--append-markdown", str(markdown)]
    assert main(argv) == 0
    assert {out, markdown} <= replaced
    assert json.loads(out.read_text())[0]["config"]["backbone"] == "swiftnet_rn18"
    assert markdown.read_text().startswith("# Benchmarks\n\nearlier rows stay\n")


def test_a_failed_onnx_export_keeps_the_previous_file(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from openset_perception.onnx_export import export_onnx

    out = tmp_path / "model.onnx"
    out.write_bytes(b"the previous export")

    def crash(_path: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(atomic, "_fsync_file", crash)
    segmenter = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu")
    with pytest.raises(OSError, match="disk full"):
        export_onnx(segmenter, out, 64, 64)
    assert out.read_bytes() == b"the previous export"
    assert [path.name for path in tmp_path.iterdir()] == ["model.onnx"]
