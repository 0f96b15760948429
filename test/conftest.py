"""Shared fixtures: a tiny random-weight checkpoint; loopback-only DDS settings for the ROS tests, and
ROS skips turned into failures where ROS is meant to be installed (`make test`)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch

from openset_perception.checkpoint import ModelCard, save_checkpoint
from openset_perception.models import ArchitectureSpec, build_model

TEST_DIR = Path(__file__).parent
TINY_CLASSES = ["road", "sidewalk", "building", "vegetation", "sky", "car", "pole", "terrain"]
TINY_PALETTE = [
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (107, 142, 35),
    (70, 130, 180),
    (0, 0, 142),
    (153, 153, 153),
    (152, 251, 152),
]

# ROS 2 tests must never send DDS traffic off this machine, whatever the shell had set: the node
# processes they start inherit these. Fast DDS (the wheels' and Jazzy's default RMW) reads its profile
# from the first variable in 2.x and the second in 3.x; Cyclone DDS from CYCLONEDDS_URI. A random
# domain keeps concurrent runs on one machine apart.
FASTDDS_PROFILE = (TEST_DIR / "fastdds_loopback.xml").resolve()
CYCLONEDDS_CONFIG = (TEST_DIR / "cyclonedds_loopback.xml").resolve()
DDS_ENVIRONMENT = {
    "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
    "FASTRTPS_DEFAULT_PROFILES_FILE": str(FASTDDS_PROFILE),
    "FASTDDS_DEFAULT_PROFILES_FILE": str(FASTDDS_PROFILE),
    "CYCLONEDDS_URI": CYCLONEDDS_CONFIG.as_uri(),
    "ROS_DOMAIN_ID": str(random.randint(1, 100)),
}
# Settings that would widen discovery or replace the transports of the profiles above.
DDS_UNSET = ("ROS_STATIC_PEERS", "ROS_LOCALHOST_ONLY", "ROS_DISCOVERY_SERVER", "FASTDDS_BUILTIN_TRANSPORTS")
os.environ.update(DDS_ENVIRONMENT)
for name in DDS_UNSET:
    os.environ.pop(name, None)

# `make test` installs the ROS 2 wheels and sets this: there, a test in test/ros that skips fails.
REQUIRE_ROS = os.environ.get("OPENSET_REQUIRE_ROS") == "1"
ROS_TEST_DIR = (TEST_DIR / "ros").resolve()


def _ros_skip_to_failure(is_ros: bool, report: pytest.CollectReport | pytest.TestReport) -> None:
    if not (REQUIRE_ROS and is_ros and report.skipped and not hasattr(report, "wasxfail")):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"a ROS test skipped with OPENSET_REQUIRE_ROS=1 (make test): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    outcome = yield
    _ros_skip_to_failure(collector.path.resolve().is_relative_to(ROS_TEST_DIR), outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    _ros_skip_to_failure(item.path.resolve().is_relative_to(ROS_TEST_DIR), outcome.get_result())


@pytest.fixture(autouse=True, scope="session")
def single_torch_thread():
    """One intra-op thread: tiny test tensors gain nothing from two, and on a shared CPU two threads
    spin-wait for each other (measured here: up to 100x slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_tiny_card(threshold: float | None = 0.0, **overrides) -> ModelCard:
    spec = ArchitectureSpec("swiftnet_rn18", len(TINY_CLASSES), {"width": 0.125})
    values = dict(
        architecture=spec,
        class_names=TINY_CLASSES,
        palette=TINY_PALETTE,
        threshold=threshold,
        threshold_tpr=0.95 if threshold is not None else None,
        description="random weights, for tests",
    )
    values.update(overrides)
    return ModelCard(**values)


def make_tiny_model(card: ModelCard, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(card.architecture)
    # Non-trivial BN statistics, so a round trip that drops buffers cannot pass by accident.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.9, 1.1)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small swiftnet_rn18 (width 0.125) checkpoint with random weights and a threshold of 0."""
    card = make_tiny_card()
    path = tmp_path_factory.mktemp("checkpoints") / "tiny.safetensors"
    save_checkpoint(path, make_tiny_model(card), card)
    return path
