"""Normalizing flows (RealNVP, DenseFlow) that generate synthetic negative patches."""

from openset_perception.flows.base import Latents, NormalizingFlow, dequantize, standard_normal_log_prob
from openset_perception.flows.denseflow import DenseFlow, DenseFlowConfig
from openset_perception.flows.factory import (
    DEFAULT_DENSEFLOW_CONFIG,
    DEFAULT_REALNVP_CONFIG,
    FLOW_KINDS,
    build_flow,
)
from openset_perception.flows.realnvp import RealNVP, RealNVPConfig

__all__ = [
    "DEFAULT_DENSEFLOW_CONFIG",
    "DEFAULT_REALNVP_CONFIG",
    "FLOW_KINDS",
    "DenseFlow",
    "DenseFlowConfig",
    "Latents",
    "NormalizingFlow",
    "RealNVP",
    "RealNVPConfig",
    "build_flow",
    "dequantize",
    "standard_normal_log_prob",
]
