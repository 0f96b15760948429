"""Build a flow by name; the default configurations train on 64x64 CPU crops within minutes."""

from __future__ import annotations

from typing import Any

from openset_perception.flows.base import NormalizingFlow
from openset_perception.flows.denseflow import DenseFlow, DenseFlowConfig
from openset_perception.flows.realnvp import RealNVP, RealNVPConfig

DEFAULT_REALNVP_CONFIG = RealNVPConfig()
DEFAULT_DENSEFLOW_CONFIG = DenseFlowConfig()
FLOW_KINDS = (RealNVP.kind, DenseFlow.kind)


def build_flow(kind: str, **config: Any) -> NormalizingFlow:
    """``kind`` is 'realnvp' or 'denseflow'; keyword arguments override fields of its config."""
    if kind == RealNVP.kind:
        return RealNVP(RealNVPConfig(**config))
    if kind == DenseFlow.kind:
        return DenseFlow(DenseFlowConfig(**config))
    raise ValueError(f"unknown flow kind {kind!r}; expected one of {FLOW_KINDS}")
