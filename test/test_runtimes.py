"""Engine runtimes and the fused post-processing: onnxruntime equals PyTorch, fused equals unfused.

Parity thresholds are the issue's: labels identical on >= 99.99 % of pixels and scores within 1e-3
for onnxruntime vs torch (two implementations of every kernel); labels bit-identical and scores
within 1e-4 for the fused upsample + argmax + score (the CPU kernel, test_upsample_kernel.py) vs
upsampling the logits whole.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_card, make_tiny_model
from torch import nn

from openset_perception import onnx_runtime, row_blocks
from openset_perception.checkpoint import ModelCard
from openset_perception.engine import Segmenter
from openset_perception.kernels import upsample_score
from openset_perception.models import BACKBONE_NAMES, ArchitectureSpec, build_model
from openset_perception.models.fold import fold_batchnorm
from openset_perception.preprocess import Normalization, normalize, normalize_padded, pad_to_multiple
from openset_perception.scoring import MOOSE_METHODS, SCORE_METHODS

SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "models" / "streets_swiftnet_small.safetensors"


def _frames(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, height, width, 3), dtype=np.uint8)


def _batch(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2)


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(row_blocks, "BLOCK_ELEMENTS", 4000)


@pytest.fixture(autouse=True)
def graph_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> Path:
    """Exported graphs go to one temporary cache per test session, never to the user's home."""
    path = tmp_path_factory.getbasetemp() / "graph_cache"
    monkeypatch.setenv(onnx_runtime.CACHE_ENV, str(path))
    return path


# --- fused vs unfused ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", SCORE_METHODS)
def test_fused_postprocessing_equals_unfused(method: str, small_blocks, monkeypatch) -> None:
    # MOoSe probes read pyramid branches, which DeepLabV3+ has and SwiftNet does not.
    probes = method in MOOSE_METHODS
    backbone, kwargs = ("deeplabv3plus_r50", {}) if probes else ("swiftnet_rn18", {"width": 0.125})
    card = make_tiny_card(
        architecture=ArchitectureSpec(backbone, 8, kwargs, moose_probes=probes), score_method=method
    )
    segmenter = Segmenter(make_tiny_model(card), card, device="cpu")
    batch = _batch(_frames(2, 61, 150))  # padded to 64 x 160: large enough for the CPU kernel
    for channels in (1, 8):  # the kernel's one-off checks against PyTorch, before counting calls
        upsample_score.matches_pytorch(channels, torch.get_num_threads())
    kernel_calls = []
    kernel = upsample_score.upsampled_classes_and_score
    monkeypatch.setattr(
        upsample_score,
        "upsampled_classes_and_score",
        lambda *a, **k: kernel_calls.append(1) or kernel(*a, **k),
    )
    with torch.inference_mode():
        fused = segmenter.dense_maps(batch)
        unfused = segmenter.dense_maps(batch, with_logits=True)
    assert len(kernel_calls) == (method in upsample_score.KERNEL_METHODS)  # the unfused path never uses it
    assert fused.logits is None and unfused.logits.shape == (2, 8, 61, 150)
    assert torch.equal(fused.semantic, unfused.semantic)
    torch.testing.assert_close(fused.score, unfused.score, rtol=0, atol=1e-4)
    assert torch.equal(unfused.semantic, unfused.logits.max(dim=1).indices)


# --- preprocessing and BatchNorm folding -----------------------------------------------------------


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_normalize_padded_equals_normalize_then_pad_and_reuses_its_buffer(memory_format) -> None:
    images = _batch(_frames(2, 45, 70))
    normalization = Normalization()
    expected, _ = pad_to_multiple(normalize(images, normalization), 32)
    first = normalize_padded(images, normalization, 32, memory_format=memory_format)
    assert torch.equal(first, expected) and first.is_contiguous(memory_format=memory_format)
    other = _batch(_frames(2, 45, 70, seed=1))
    second = normalize_padded(other, normalization, 32, out=first, memory_format=memory_format)
    assert second.data_ptr() == first.data_ptr()
    assert torch.equal(second, pad_to_multiple(normalize(other, normalization), 32)[0])
    # A smaller frame with the same padded size must not see the larger one in its margins.
    smaller = _batch(_frames(2, 40, 66, seed=2))
    third = normalize_padded(smaller, normalization, 32, out=second, memory_format=memory_format)
    assert third.data_ptr() == first.data_ptr()
    assert torch.equal(third, pad_to_multiple(normalize(smaller, normalization), 32)[0])
    # A buffer of the other layout is not reused.
    other_format = (
        torch.channels_last if memory_format == torch.contiguous_format else torch.contiguous_format
    )
    fourth = normalize_padded(smaller, normalization, 32, out=third, memory_format=other_format)
    assert fourth.data_ptr() != first.data_ptr() and fourth.is_contiguous(memory_format=other_format)
    assert torch.equal(fourth, third)


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_folding_batchnorm_keeps_the_function(backbone: str) -> None:
    torch.manual_seed(0)
    model = build_model(ArchitectureSpec(backbone, 5)).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        before = model(x)
        norms_before = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        folded = fold_batchnorm(model, torch.zeros(1, 3, 64, 64))
        after = model(x)
    # The SwiftNet pyramid shares each encoder convolution between its scales, each with its own
    # BatchNorm: a shared output is never folded, so nothing folds there; every other backbone folds.
    assert folded > 0 or backbone == "swiftnet_rn18_pyramid"
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == norms_before - folded
    for got, expected in ((after.logits, before.logits), (after.ood_logit, before.ood_logit)):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * expected.abs().max().item())


def test_folding_is_the_same_every_time() -> None:
    # Tensor ids are reused once a tensor is freed; the probe must not pair by a stale id.
    card = make_tiny_card()
    folded = []
    for _ in range(3):
        model = make_tiny_model(card)
        count = fold_batchnorm(model, torch.zeros(1, 3, 64, 64))
        folded.append((count, sorted(model.state_dict())))
    assert folded[0][0] > 0 and all(f == folded[0] for f in folded)


def test_a_batchnorm_sharing_its_input_is_not_folded() -> None:
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.norm = nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.norm(y) + y  # y is read twice: scaling the conv would change the sum

    model = Residual().eval()
    model.norm.running_var.fill_(4.0)
    assert fold_batchnorm(model, torch.zeros(1, 3, 8, 8)) == 0
    assert isinstance(model.norm, nn.BatchNorm2d)


# --- onnxruntime -----------------------------------------------------------------------------------


def _assert_parity(reference, candidate, rtol: float = 0.0) -> None:
    agreement = float((reference.semantic == candidate.semantic).mean())
    assert agreement >= 0.9999, f"labels agree on {100 * agreement:.4f} % of pixels"
    np.testing.assert_allclose(candidate.anomaly_score, reference.anomaly_score, rtol=rtol, atol=1e-3)


def test_onnxruntime_equals_torch_for_the_shipped_model() -> None:
    pytest.importorskip("onnxruntime")
    frames = list(_frames(2, 128, 256, seed=3))
    torch_engine = Segmenter.from_checkpoint(SHIPPED_MODEL, device="cpu")
    onnx_engine = Segmenter.from_checkpoint(SHIPPED_MODEL, device="cpu", runtime="onnxruntime")
    _assert_parity(torch_engine.segment(frames), onnx_engine.segment(frames))


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_onnxruntime_equals_torch_for_every_backbone(backbone: str) -> None:
    pytest.importorskip("onnxruntime")
    card = ModelCard(
        architecture=ArchitectureSpec(backbone, 5),
        class_names=[f"c{k}" for k in range(5)],
        palette=[(k, k, k) for k in range(5)],
        threshold=0.0,
    )
    torch.manual_seed(0)
    model = _with_batch_statistics(build_model(card.architecture), card)
    frames = list(_frames(1, 96, 160, seed=4))
    reference = Segmenter(model, card, device="cpu").segment(frames)
    candidate = Segmenter(model, card, device="cpu", runtime="onnxruntime").segment(frames)
    # Random weights amplify rounding with depth more than trained ones: deeplabv3plus_r101's scores
    # differed by up to 1.4e-3 at |score| 2.4 (5.6e-4 relative), hence 1e-3 relative on top.
    _assert_parity(reference, candidate, rtol=1e-3)


def _with_batch_statistics(model: nn.Module, card: ModelCard) -> nn.Module:
    """BatchNorm statistics from a batch of noise frames, as training would set them.

    Random weights with the initial statistics (mean 0, variance 1) let deep backbones' activations
    grow to logits of 1e4, where float32 itself resolves only 1e-3; a trained model's stay near 10.
    """
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average: one batch sets the statistics
    x = normalize(_batch(_frames(2, 96, 160, seed=9)), card.normalization)
    with torch.no_grad():
        model.train()(x)
    return model.eval()


def test_graphs_are_cached_per_batch_and_size(graph_cache: Path, monkeypatch, caplog) -> None:
    pytest.importorskip("onnxruntime")
    card = make_tiny_card()
    model = make_tiny_model(card, seed=5)
    Segmenter(model, card, device="cpu", runtime="onnxruntime").segment(list(_frames(1, 40, 72)))
    # A second engine for the same model and shape must not export again; a new batch or size must.
    exports: list[tuple[int, int, int]] = []
    real_export = onnx_runtime.export_network_graph

    def counting_export(model, path, batch, height, width, precision):
        exports.append((batch, height, width))
        real_export(model, path, batch, height, width, precision)

    monkeypatch.setattr(onnx_runtime, "export_network_graph", counting_export)
    engine = Segmenter(model, card, device="cpu", runtime="onnxruntime")
    with caplog.at_level(logging.INFO, logger="openset_perception.onnx_runtime"):
        engine.segment(list(_frames(1, 40, 72)))
        engine.segment(list(_frames(2, 40, 72)))
        engine.segment(list(_frames(1, 33, 100)))
        engine.segment(list(_frames(1, 33, 100)))
    assert exports == [(2, 64, 96), (1, 64, 128)]  # padded to the stride
    assert "cached graph for 1 x 64x96" in caplog.text
    names = sorted(p.name for p in (graph_cache / "onnx").glob("swiftnet_rn18_*.onnx"))
    for prefix in (
        "swiftnet_rn18_b1_64x96_fp32_",
        "swiftnet_rn18_b2_64x96_fp32_",
        "swiftnet_rn18_b1_64x128_fp32_",
    ):
        assert any(n.startswith(prefix) for n in names)


def test_sessions_do_not_spin() -> None:
    pytest.importorskip("onnxruntime")
    card = make_tiny_card()
    engine = Segmenter(make_tiny_model(card), card, device="cpu", runtime="onnxruntime")
    options = engine._onnx._session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"


def test_missing_onnxruntime_is_one_clear_error(monkeypatch) -> None:
    real_find_spec = onnx_runtime.importlib.util.find_spec
    monkeypatch.setattr(
        onnx_runtime.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "onnxruntime" else real_find_spec(name, *args),
    )
    card = make_tiny_card()
    with pytest.raises(onnx_runtime.RuntimeDependencyError, match="pip install onnxruntime"):
        Segmenter(make_tiny_model(card), card, device="cpu", runtime="onnxruntime")


def test_execution_providers() -> None:
    cpu, cuda, trt = (onnx_runtime.EXECUTION_PROVIDERS[k] for k in ("cpu", "cuda", "tensorrt"))
    everything = [trt, cuda, cpu]
    assert onnx_runtime.choose_providers(everything, torch.device("cuda")) == [trt, cuda, cpu]
    assert onnx_runtime.choose_providers(everything, torch.device("cpu")) == [cpu]
    assert onnx_runtime.choose_providers(everything, torch.device("cuda"), "cuda") == [cuda, cpu]
    assert onnx_runtime.choose_providers(everything, torch.device("cuda"), "tensorrt") == [trt, cuda, cpu]
    assert onnx_runtime.choose_providers(everything, torch.device("cpu"), "cpu") == [cpu]
    with pytest.raises(onnx_runtime.RuntimeDependencyError, match=r"tensorrt.*not available"):
        onnx_runtime.choose_providers([cpu], torch.device("cuda"), "tensorrt")


def test_unknown_runtime_is_named() -> None:
    card = make_tiny_card()
    with pytest.raises(ValueError, match="runtime must be one of torch, onnxruntime"):
        Segmenter(make_tiny_model(card), card, device="cpu", runtime="tvm")
