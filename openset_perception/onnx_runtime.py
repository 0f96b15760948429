"""onnxruntime as the engine's network runtime: one exported graph per input size, cached on disk.

The graph is the network alone at its output stride (normalised, padded float32 (B,3,H,W) in; logits,
inlier logit and probe logits out), so preprocessing and the fused upsample/argmax/score stay the one
implementation both runtimes share. The pyramid pooling grid follows the aspect ratio, so every input
size gets its own graph, and so does every batch size: with all shapes static, onnxruntime keeps the
ladder's upsampling in its blocked (NCHWc) layout instead of converting to and from it around every
Resize whose size a Shape node computes. Graphs are cached under
``$OPENSET_PERCEPTION_CACHE`` (default ``~/.cache/openset_perception``) in ``onnx/``, named by a
digest of the weights, the model card, the batch and input size, the precision and the versions that
shape the export; TensorRT keeps its built engines in ``tensorrt/`` beside them.

onnxruntime is optional: only choosing this runtime imports it. Execution providers: TensorRT, CUDA
and CPU in that order as available on a CUDA device, the CPU alone on the CPU, or one forced.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from openset_perception import __version__
from openset_perception.atomic import atomic_write
from openset_perception.checkpoint import ModelCard

LOGGER = logging.getLogger(__name__)

GRAPH_FORMAT_VERSION = 2  # bump when NetworkGraph's inputs, outputs or shapes change
INPUT_NAME = "x"
OPSET = 18
CACHE_ENV = "OPENSET_PERCEPTION_CACHE"
EXECUTION_PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
GRAPH_PRECISIONS = ("fp32", "fp16")


class RuntimeDependencyError(RuntimeError):
    """A package, or an execution provider of it, that the chosen runtime needs is not installed."""


def require_onnxruntime():
    """The onnxruntime module, or one clear error naming the package to install."""
    if importlib.util.find_spec("onnxruntime") is None:
        raise RuntimeDependencyError(
            "runtime 'onnxruntime' needs the onnxruntime package: pip install onnxruntime "
            "(CPU) or onnxruntime-gpu (CUDA / TensorRT), or choose runtime 'torch'"
        )
    import onnxruntime

    return onnxruntime


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "openset_perception")


class NetworkGraph(nn.Module):
    """The network at its output stride as a flat tuple (logits, ood_logit, *probe_logits), float32 out.

    ``fp16`` casts the input and the weights to half inside the graph (the CUDA execution provider
    runs a graph in the types it holds; TensorRT chooses fp16 kernels itself from an fp32 graph).
    """

    def __init__(self, model: nn.Module, fp16: bool = False) -> None:
        super().__init__()
        self.model = model.half() if fp16 else model
        self.fp16 = fp16

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x.half() if self.fp16 else x, upsample=False)
        return tuple(t.float() for t in (out.logits, out.ood_logit, *out.probe_logits))


def graph_digest(
    model: nn.Module, card: ModelCard, batch: int, height: int, width: int, precision: str
) -> str:
    """What decides the exported graph: weights, card, shape, precision and the exporting versions."""
    digest = hashlib.sha256()
    header = {
        "format": GRAPH_FORMAT_VERSION,
        "package": __version__,
        "torch": torch.__version__,
        "opset": OPSET,
        "shape": [batch, 3, height, width],
        "precision": precision,
        "card": card.to_dict(),
    }
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:20]


def export_network_graph(
    model: nn.Module, path: Path, batch: int, height: int, width: int, precision: str
) -> None:
    """Export ``NetworkGraph`` for padded (batch,3,height,width) float32 input, atomically."""
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise RuntimeDependencyError(
            f"exporting the network for onnxruntime needs the package(s) {', '.join(missing)}: "
            f"pip install {' '.join(missing)}"
        )
    for name in ("onnx_ir", "onnxscript", "torch.onnx"):  # the exporter logs every rewrite at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    graph = NetworkGraph(_cpu_copy(model), fp16=precision == "fp16").eval()
    example = torch.zeros((batch, 3, height, width), dtype=torch.float32)
    with torch.inference_mode():
        program = torch.onnx.export(
            graph, (example,), dynamo=True, opset_version=OPSET, input_names=[INPUT_NAME], verbose=False
        )
    atomic_write(path, lambda tmp: program.save(tmp, external_data=False))


def _cpu_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).cpu().float().eval()


def choose_providers(available: Sequence[str], device: torch.device, forced: str | None = None) -> list[str]:
    """Execution providers in preference order; a forced one must be available."""
    if forced is not None:
        if forced not in EXECUTION_PROVIDERS:
            raise ValueError(
                f"execution provider must be one of {', '.join(EXECUTION_PROVIDERS)}, got '{forced}'"
            )
        name = EXECUTION_PROVIDERS[forced]
        if name not in available:
            raise RuntimeDependencyError(
                f"execution provider '{forced}' ({name}) is not available in this onnxruntime build; "
                f"available: {', '.join(available)}"
            )
        # Nodes the forced provider cannot run fall back to CUDA (under TensorRT), then the CPU.
        fallbacks = {"tensorrt": ("cuda", "cpu"), "cuda": ("cpu",), "cpu": ()}[forced]
        return [name, *(EXECUTION_PROVIDERS[k] for k in fallbacks if EXECUTION_PROVIDERS[k] in available)]
    if device.type != "cuda":
        return [EXECUTION_PROVIDERS["cpu"]]
    preferred = [EXECUTION_PROVIDERS[k] for k in ("tensorrt", "cuda", "cpu")]
    chosen = [name for name in preferred if name in available]
    if chosen == [EXECUTION_PROVIDERS["cpu"]]:
        LOGGER.warning("onnxruntime has no CUDA or TensorRT provider here (install onnxruntime-gpu): CPU")
    return chosen


class OnnxNetwork:
    """Runs the network through onnxruntime; ``__call__`` takes and returns torch tensors.

    One session per batch and input size, built on first use from the cached graph (exported when
    missing).
    Worker threads sleep instead of spinning between runs: spinning onnxruntime threads slowed the
    PyTorch post-processing in the same process up to 4x.
    """

    def __init__(
        self,
        model: nn.Module,
        card: ModelCard,
        device: torch.device,
        precision: str = "fp32",
        execution_provider: str | None = None,
        threads: int | None = None,
    ) -> None:
        self.ort = require_onnxruntime()
        self.model = model
        self.card = card
        self.device = device
        self.precision = precision if precision in GRAPH_PRECISIONS else "fp32"
        self.providers = choose_providers(self.ort.get_available_providers(), device, execution_provider)
        if precision != self.precision:
            LOGGER.warning("runtime onnxruntime has no %s graphs: using %s", precision, self.precision)
        if self.precision == "fp16" and self.providers[0] == EXECUTION_PROVIDERS["cpu"]:
            LOGGER.warning("fp16 needs the CUDA or TensorRT execution provider: using fp32 on the CPU")
            self.precision = "fp32"
        # TensorRT picks fp16 kernels itself from an fp32 graph (trt_fp16_enable); CUDA runs the types
        # the graph holds, so it gets an fp16 graph.
        fp16_graph = self.precision == "fp16" and self.providers[0] == EXECUTION_PROVIDERS["cuda"]
        self.graph_precision = "fp16" if fp16_graph else "fp32"
        self.threads = threads or torch.get_num_threads()
        self._sessions: dict[tuple[int, int], object] = {}

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Padded float32 (B,3,H,W) -> (logits, ood_logit, probe_logits) at the output stride."""
        session = self._session(int(x.shape[0]), int(x.shape[-2]), int(x.shape[-1]))
        x = x.float().contiguous()
        if self.device.type == "cuda" and self.providers[0] != EXECUTION_PROVIDERS["cpu"]:
            outputs = self._run_on_device(session, x)
        else:
            feed = {INPUT_NAME: x.cpu().numpy()}
            outputs = [torch.from_numpy(o).to(self.device) for o in session.run(None, feed)]
        return outputs[0], outputs[1], outputs[2:]

    def _run_on_device(self, session, x: torch.Tensor) -> list[torch.Tensor]:
        """IO binding: onnxruntime reads and writes torch's CUDA buffers, no host round trip."""
        device_id = self.device.index or 0
        binding = session.io_binding()
        binding.bind_input(INPUT_NAME, "cuda", device_id, np.float32, tuple(x.shape), x.data_ptr())
        outputs = []
        for output in session.get_outputs():
            shape = [int(x.shape[0])] + [int(d) for d in output.shape[1:]]
            tensor = torch.empty(shape, dtype=torch.float32, device=self.device)
            binding.bind_output(output.name, "cuda", device_id, np.float32, shape, tensor.data_ptr())
            outputs.append(tensor)
        torch.cuda.current_stream(self.device).synchronize()  # the input is written on torch's stream
        session.run_with_iobinding(binding)
        return outputs

    def _session(self, batch: int, height: int, width: int):
        shape = (batch, height, width)
        if shape in self._sessions:
            return self._sessions[shape]
        path = self.graph_path(*shape)
        if path.exists():
            LOGGER.info("onnxruntime: cached graph for %d x %dx%d: %s", *shape, path)
        else:
            started = time.perf_counter()
            export_network_graph(self.model, path, *shape, self.graph_precision)
            LOGGER.info(
                "onnxruntime: exported the graph for %d x %dx%d in %.1f s to %s (cached for later runs)",
                *shape,
                time.perf_counter() - started,
                path,
            )
        session = self.ort.InferenceSession(
            str(path), sess_options=self._session_options(), providers=self._provider_options()
        )
        self._sessions[shape] = session
        LOGGER.info("onnxruntime: providers %s", ", ".join(session.get_providers()))
        return session

    def graph_path(self, batch: int, height: int, width: int) -> Path:
        digest = graph_digest(self.model, self.card, batch, height, width, self.graph_precision)
        backbone = self.card.architecture.backbone
        name = f"{backbone}_b{batch}_{height}x{width}_{self.graph_precision}_{digest}.onnx"
        return cache_dir() / "onnx" / name

    def _session_options(self):
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = self.ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        return options

    def _provider_options(self) -> list:
        device_id = str(self.device.index or 0)
        providers: list = []
        for name in self.providers:
            if name == EXECUTION_PROVIDERS["tensorrt"]:
                engines = cache_dir() / "tensorrt"
                engines.mkdir(parents=True, exist_ok=True)
                options = {
                    "device_id": device_id,
                    "trt_fp16_enable": str(self.precision == "fp16"),
                    "trt_engine_cache_enable": "True",
                    "trt_engine_cache_path": str(engines),
                    "trt_timing_cache_enable": "True",
                    "trt_timing_cache_path": str(engines),
                }
                providers.append((name, options))
            elif name == EXECUTION_PROVIDERS["cuda"]:
                providers.append((name, {"device_id": device_id}))
            else:
                providers.append(name)
        return providers
