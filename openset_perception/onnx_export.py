"""Export the network with its anomaly-score head to ONNX, for deployment runtimes (onnxruntime, TensorRT).

The graph is the engine's own ``Segmenter.dense_maps`` (normalisation, padding to the network stride,
network, crop, score) plus the argmax: uint8 (B,3,H,W) RGB in; ``semantic`` (B,H,W) uint8 labels, or
``logits`` (B,K,H,W) float32, and ``anomaly_score`` (B,H,W) float32 out. The model card (class names,
palette, score method, calibrated threshold) travels in the ONNX metadata under the checkpoint's key.

The spatial size is fixed at export because the pyramid pooling grid follows the input's aspect
ratio; the batch size can be dynamic. The exporter is torch.export-based (``dynamo=True``; needs the
``onnx`` and ``onnxscript`` packages): the TorchScript tracer cannot follow the Python arithmetic on
input sizes that the pooling grid uses. Verification needs ``onnxruntime``.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from openset_perception.atomic import atomic_write_bytes
from openset_perception.checkpoint import CARD_KEY
from openset_perception.engine import Segmenter

INPUT_NAME = "images"
SCORE_NAME = "anomaly_score"
MIN_OPSET = 18  # the lowest opset the torch.export-based exporter implements
MAX_DYNAMIC_BATCH = 64


class OnnxDependencyError(RuntimeError):
    """A package that ONNX export or verification needs is not installed."""


class DenseMapsGraph(nn.Module):
    """The engine's dense_maps as a module: uint8 images -> (labels or logits, anomaly score)."""

    def __init__(self, segmenter: Segmenter, output_logits: bool = False) -> None:
        super().__init__()
        self.model = segmenter.model  # registered, so the exporter sees the weights as parameters
        self.segmenter = segmenter
        self.output_logits = output_logits

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dense = self.segmenter.dense_maps(images, with_logits=self.output_logits)
        if self.output_logits:
            return dense.logits.float(), dense.score
        return dense.semantic.to(torch.uint8), dense.score


def output_names(output_logits: bool) -> tuple[str, str]:
    return ("logits" if output_logits else "semantic", SCORE_NAME)


def require_packages(*names: str) -> None:
    missing = [name for name in names if importlib.util.find_spec(name) is None]
    if missing:
        raise OnnxDependencyError(
            f"ONNX export needs the package(s) {', '.join(missing)}: pip install {' '.join(missing)}"
        )


def export_onnx(
    segmenter: Segmenter,
    path: str | Path,
    height: int,
    width: int,
    dynamic_batch: bool = False,
    opset: int = MIN_OPSET,
    output_logits: bool = False,
) -> Path:
    """Write the ONNX model for (B,3,height,width) uint8 input; B is fixed at 1 unless ``dynamic_batch``."""
    require_packages("onnx", "onnxscript")
    if segmenter.device.type != "cpu" or segmenter.precision != "fp32":
        raise ValueError("export from a CPU fp32 Segmenter; deployment runtimes choose their own precision")
    if opset < MIN_OPSET:
        raise ValueError(f"the ONNX exporter needs opset >= {MIN_OPSET}, got {opset}")
    # With a dynamic batch, an example of 2 keeps torch.export from specialising the batch to 1.
    example = torch.zeros((2 if dynamic_batch else 1, 3, height, width), dtype=torch.uint8)
    dynamic_shapes = None
    if dynamic_batch:
        dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)},)
    module = DenseMapsGraph(segmenter, output_logits).eval()
    with torch.inference_mode():
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(output_names(output_logits)),
            dynamic_shapes=dynamic_shapes,
            verbose=False,
        )
    program.model.metadata_props[CARD_KEY] = json.dumps(segmenter.card.to_dict())
    path = Path(path)
    # Serialised in memory: ONNXProgram.save would write the destination in place, not atomically.
    atomic_write_bytes(path, program.model_proto.SerializeToString())
    return path


@dataclass(frozen=True)
class VerifyReport:
    max_score_abs_diff: float
    label_agreement: float | None  # share of pixels with the same label (label exports)
    max_logit_abs_diff: float | None  # logit exports
    passed: bool


def verify_onnx(
    path: str | Path,
    segmenter: Segmenter,
    images: np.ndarray,
    rtol: float = 1e-4,
    atol: float = 1e-3,
    min_label_agreement: float = 0.999,
) -> VerifyReport:
    """Run (B,H,W,3) uint8 ``images`` through onnxruntime and the PyTorch engine and compare.

    Labels may differ where two classes' logits nearly tie, hence an agreement share, not equality.
    """
    require_packages("onnxruntime")
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    first, score = session.run(None, {INPUT_NAME: batch.numpy()})
    with torch.inference_mode():
        dense = segmenter.dense_maps(batch.to(segmenter.device), with_logits=first.ndim == 4)
    reference_score = dense.score.float().cpu().numpy()
    max_score_diff = float(np.abs(score - reference_score).max())
    passed = bool(np.allclose(score, reference_score, rtol=rtol, atol=atol))
    if first.ndim == 4:
        reference_logits = dense.logits.float().cpu().numpy()
        max_logit_diff = float(np.abs(first - reference_logits).max())
        passed &= bool(np.allclose(first, reference_logits, rtol=rtol, atol=atol))
        return VerifyReport(max_score_diff, None, max_logit_diff, passed)
    agreement = float((first == dense.semantic.cpu().numpy()).mean())
    return VerifyReport(max_score_diff, agreement, None, passed and agreement >= min_label_agreement)


def read_onnx_model_card(path: str | Path) -> dict:
    """The model card stored in an exported model's metadata, as a dict."""
    require_packages("onnx")
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    props = {prop.key: prop.value for prop in model.metadata_props}
    if CARD_KEY not in props:
        raise ValueError(f"{path}: no model card in the ONNX metadata (key '{CARD_KEY}')")
    return json.loads(props[CARD_KEY])
