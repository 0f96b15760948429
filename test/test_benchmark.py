"""The benchmark: its paths compute what they claim, its statistics and ratios follow from its samples."""

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_card, make_tiny_model

from openset_perception.benchmark import (
    PATHS,
    BenchmarkConfig,
    InferencePaths,
    LatencyStats,
    markdown_block,
    markdown_row,
    paired_overheads,
    peak_memory_mb,
    run_benchmark,
    synthetic_inputs,
    timed_call,
)
from openset_perception.cli.main import main
from openset_perception.engine import Segmenter
from openset_perception.image_codec import image_to_numpy

TINY = dict(height=64, width=128, model_width=0.125, iterations=3, warmup=1, device="cpu")


@pytest.fixture(scope="module")
def paths() -> InferencePaths:
    card = make_tiny_card(threshold=-6.0)
    segmenter = Segmenter(make_tiny_model(card), card, device="cpu")
    return InferencePaths(segmenter, synthetic_inputs(batch=2, height=61, width=83, seed=3))


@pytest.fixture(scope="module")
def tiny_result():
    return run_benchmark(BenchmarkConfig(**TINY), progress=False)


def test_closed_set_path_equals_the_engines_argmax(paths: InferencePaths) -> None:
    reference = paths.segmenter.segment(paths.inputs.frames)
    closed_set = paths.closed_set().numpy()
    assert closed_set.shape == (2, 61, 83)
    np.testing.assert_array_equal(closed_set, reference.semantic)
    assert len(np.unique(closed_set)) > 1  # a constant map would match anything trivially


def test_densehybrid_and_depth_paths_equal_the_engine(paths: InferencePaths) -> None:
    reference = paths.segmenter.segment(paths.inputs.frames, depth=paths.inputs.depth_m)
    semantic, open_set, score = paths.densehybrid()
    np.testing.assert_array_equal(semantic.numpy(), reference.semantic)
    np.testing.assert_array_equal(open_set.numpy(), reference.open_set)
    np.testing.assert_allclose(score.numpy(), reference.anomaly_score, rtol=1e-6, atol=1e-6)
    assert 0 < (reference.open_set == 8).mean() < 1  # the threshold splits the map: fusion does work
    assert paths.depth() == reference.depth_report


def test_node_path_messages_hold_the_engine_maps(paths: InferencePaths) -> None:
    # The node path ships depth as 16UC1 millimetres: the engine must see the same quantised depth.
    millimetres = [np.nan_to_num(d * 1000.0, nan=0.0).astype(np.uint16) for d in paths.inputs.depth_m]
    depth = [np.where(mm == 0, np.nan, mm.astype(np.float32) / np.float32(1000)) for mm in millimetres]
    reference = paths.segmenter.segment(paths.inputs.frames, depth=[d.astype(np.float32) for d in depth])
    node = paths.node()
    assert len(node.messages) == 2
    for camera, messages in enumerate(node.messages):
        assert messages["semantic"].encoding == "mono8" and messages["anomaly_score"].encoding == "32FC1"
        np.testing.assert_array_equal(image_to_numpy(messages["semantic"]), reference.semantic[camera])
        np.testing.assert_array_equal(image_to_numpy(messages["open_set"]), reference.open_set[camera])
        np.testing.assert_allclose(
            image_to_numpy(messages["anomaly_score"]), reference.anomaly_score[camera], rtol=1e-6, atol=1e-6
        )
    assert node.depth_report == reference.depth_report
    assert {"preprocess", "network", "scoring", "depth"} <= set(node.timings_ms)


def test_latency_statistics_by_hand() -> None:
    stats = LatencyStats.from_samples([float(v) for v in range(20, 0, -1)])
    # Order statistics 1..20: median between 10 and 11; p95 at rank 0.95 * 19 = 18.05 -> 19 + 0.05.
    assert stats.median_ms == 10.5
    assert stats.p95_ms == pytest.approx(19.05)
    assert (stats.min_ms, stats.max_ms, stats.mean_ms, stats.iterations) == (1.0, 20.0, 10.5, 20)


def test_paired_overhead_compares_calls_of_the_same_iteration() -> None:
    # A slow spell in iteration 2 doubles both calls; the per-iteration ratios stay 10 %, 5 %, 3 %.
    samples = {
        "closed_set": [100.0, 200.0, 100.0],
        "densehybrid": [110.0, 210.0, 103.0],
        "depth": [120.0, 240.0, 120.0],
        "node": [100.0, 200.0, 100.0],
    }
    paired = paired_overheads(samples)
    assert paired["densehybrid"] == pytest.approx(0.05)
    assert paired["depth"] == pytest.approx(0.2) and paired["node"] == 0.0
    # The ratio of medians (110 vs 100 here) would have read +10 %.
    assert np.median(samples["densehybrid"]) / np.median(samples["closed_set"]) - 1 == pytest.approx(0.1)


def test_result_invariants(tiny_result) -> None:
    result = tiny_result
    medians = {name: result.paths[name].latency.median_ms for name in PATHS}
    closed = medians["closed_set"]
    for name in PATHS:
        stats = result.paths[name].latency
        assert stats.iterations == 3
        assert 0 < stats.min_ms <= stats.median_ms <= stats.p95_ms <= stats.max_ms
        assert result.paths[name].fps == pytest.approx(1e3 / stats.median_ms)
    assert result.overhead["densehybrid"] == pytest.approx((medians["densehybrid"] - closed) / closed)
    assert result.overhead["node"] == pytest.approx((medians["node"] - closed) / closed)
    assert set(result.paired_overhead) == set(PATHS[1:])
    assert result.environment.device_type == "cpu" and result.environment.precision == "fp32"
    assert math.isfinite(result.threshold)


def test_gflops_difference_is_the_inlier_head(tiny_result) -> None:
    # The head's only FLOPs: its 1x1 conv C -> 1 on the stride-4 pre-logits, 2 FLOPs per multiply-add.
    model = make_tiny_model(make_tiny_card())
    channels, stride = model.backbone.prelogit_channels, model.backbone.output_stride
    head_gflops = 2 * channels * (64 // stride) * (128 // stride) / 1e9
    gflops = tiny_result.gflops
    assert gflops["closed_set"] > 0
    assert gflops["densehybrid"] - gflops["closed_set"] == pytest.approx(head_gflops, rel=1e-6)


def test_markdown_row_and_json_hold_the_numbers(tiny_result) -> None:
    row = markdown_row(tiny_result)
    paths = tiny_result.paths
    for name in ("closed_set", "densehybrid", "node"):
        assert f"{paths[name].latency.median_ms:.1f} ({paths[name].latency.p95_ms:.1f})" in row
    assert f"{100 * tiny_result.overhead['densehybrid']:+.2f} %" in row
    assert f"paired {100 * tiny_result.paired_overhead['densehybrid']:+.2f} %" in row
    assert f"{paths['node'].fps:.2f}" in row
    data = json.loads(json.dumps(tiny_result.to_dict()))
    assert data["paths"]["depth"]["median_ms"] == paths["depth"].latency.median_ms
    assert data["overhead"]["densehybrid"] == tiny_result.overhead["densehybrid"]
    assert data["paired_overhead"]["densehybrid"] == tiny_result.paired_overhead["densehybrid"]


def test_cli_writes_json_and_appends_markdown(tmp_path: Path) -> None:
    markdown = tmp_path / "benchmarks.md"
    markdown.write_text("# Benchmarks\n\nearlier rows stay\n")
    out = tmp_path / "result.json"
    argv = ["benchmark", "--size", "64x128", "--width", "0.125", "--iterations", "2", "--warmup", "0"]
    argv += ["--device", "cpu", "--no-progress", "--json", str(out), "--append-markdown", str(markdown)]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert [d["config"]["backbone"] for d in data] == ["swiftnet_rn18"]
    text = markdown.read_text()
    assert text.startswith("# Benchmarks\n\nearlier rows stay\n")
    assert "`openset-perception benchmark --backbone swiftnet_rn18 --size 64x128" in text
    closed = data[0]["paths"]["closed_set"]
    assert f"| {closed['median_ms']:.1f} ({closed['p95_ms']:.1f}) |" in text


def test_cli_rejects_bad_options(capsys: pytest.CaptureFixture[str], tiny_checkpoint: Path) -> None:
    assert main(["benchmark", "--backbone", "resnet9000", "--no-progress"]) == 2
    assert "unknown backbone 'resnet9000'" in capsys.readouterr().err
    assert main(["benchmark", "--backbone", "ldn121", "--width", "0.5", "--no-progress"]) == 2
    assert "--width applies to swiftnet_rn18 only" in capsys.readouterr().err
    assert main(["benchmark", "--checkpoint", str(tiny_checkpoint), "--backbone", "ldn121"]) == 2
    assert "holds a swiftnet_rn18" in capsys.readouterr().err


def test_timing_and_memory_measure_the_call() -> None:
    elapsed_ms, output = timed_call(lambda: time.sleep(0.02) or "done", torch.device("cpu"))
    assert output == "done" and elapsed_ms >= 20.0
    peak = peak_memory_mb(lambda: torch.ones(16 * 2**20).sum(), torch.device("cpu"))  # 64 MiB touched
    if peak is None:
        pytest.skip("this kernel does not let a process reset its peak RSS")
    assert peak >= 60


def test_runtimes_are_timed_together_and_compared_stage_by_stage(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("onnxruntime")
    from openset_perception.benchmark import paired_ratio, run_interleaved, runtime_comparison_table
    from openset_perception.onnx_runtime import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    configs = [BenchmarkConfig(**TINY, runtime=runtime) for runtime in ("torch", "onnxruntime")]
    torch_result, onnx_result = run_interleaved(configs, progress=False)
    assert (torch_result.config.runtime, onnx_result.config.runtime) == ("torch", "onnxruntime")
    for result in (torch_result, onnx_result):
        assert all(len(result.samples_ms[name]) == TINY["iterations"] for name in PATHS)
        assert {"network", "scoring", "depth", "decode + encode"} <= set(result.node_stage_ms)
    table = runtime_comparison_table([torch_result, onnx_result])
    ratio = paired_ratio(torch_result.samples_ms["node"], onnx_result.samples_ms["node"])
    assert "| stage | torch ms | onnxruntime ms | torch / onnxruntime |" in table
    assert (
        f"| full node path (decode -> engine -> encode) | {np.median(torch_result.samples_ms['node']):.1f} |"
        in table
    )
    assert f"{ratio:.2f}x |" in table
    assert paired_ratio([2.0, 9.0, 4.0], [1.0, 3.0, 1.0]) == 3.0  # per-iteration ratios 2, 3, 4

def test_object_stage_is_timed_against_the_densehybrid_path(tiny_result) -> None:
    objects = tiny_result.objects
    assert 0 < objects["median_ms"] <= objects["p95_ms"]
    assert objects["share_of_densehybrid"] > 0 and 0 < objects["unknown_fraction"] < 1
    assert objects["points"] > 0  # the depth ramp is valid almost everywhere
    assert "of the DenseHybrid path" in markdown_block([tiny_result], "cmd")
