"""configure with a bad model card ends in a clean FAILURE (back to unconfigured), never in ERROR.

The node runs in this process (no launch_testing); it creates no subscription before configure
succeeds, so nothing is sent. DDS stays on loopback (test/conftest.py). Skipped without rclpy.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from openset_perception.checkpoint import CARD_KEY, read_model_card  # noqa: E402

# The node needs the ROS message packages it subscribes with; without them there is no node to test.
SegmenterNode = pytest.importorskip(
    "openset_perception.ros.segmenter_node", exc_type=ImportError
).SegmenterNode

pytestmark = pytest.mark.ros


def with_card(source: Path, target: Path, card: object) -> Path:
    raw = source.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"][CARD_KEY] = json.dumps(card)
    new_header = json.dumps(header).encode()
    new_header += b" " * ((8 - len(new_header) % 8) % 8)
    target.write_bytes(struct.pack("<Q", len(new_header)) + new_header + raw[8 + n :])
    return target


@pytest.fixture
def ros_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # An empty ament prefix: the node then finds no installed share dir and takes the path as given
    # (without any prefix, looking the package up fails and configure fails before the model).
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "ament_prefix"))
    rclpy.init()
    try:
        yield
    finally:
        rclpy.try_shutdown()


def cards(card: dict) -> dict[str, object]:
    unknown_option = json.loads(json.dumps(card))
    unknown_option["architecture"]["backbone_kwargs"] = {"colour": 1}
    negative_width = json.loads(json.dumps(card))
    negative_width["architecture"]["backbone_kwargs"] = {"width": -1.0}
    short_palette = json.loads(json.dumps(card))
    short_palette["palette"] = [[1, 2]] * len(card["class_names"])
    return {
        "good": card,
        "list": [card],
        "unknown_option": unknown_option,
        "negative_width": negative_width,
        "short_palette": short_palette,
    }


def configure(model: Path) -> tuple[TransitionCallbackReturn, str]:
    node = SegmenterNode(
        parameter_overrides=[
            Parameter("model", value=str(model)),
            Parameter("autostart", value=False),
            Parameter("device", value="cpu"),
        ]
    )
    try:
        return node.trigger_configure(), node._state_machine.current_state[1]
    finally:
        node.destroy_node()


@pytest.mark.parametrize("case", ["list", "unknown_option", "negative_width", "short_palette"])
def test_configure_with_a_bad_card_fails_cleanly(
    tmp_path: Path, tiny_checkpoint: Path, ros_context: None, case: str
) -> None:
    all_cards = cards(read_model_card(tiny_checkpoint).to_dict())
    good = with_card(tiny_checkpoint, tmp_path / "good.safetensors", all_cards["good"])
    assert configure(good) == (TransitionCallbackReturn.SUCCESS, "inactive")  # the set-up can succeed
    bad = with_card(tiny_checkpoint, tmp_path / f"{case}.safetensors", all_cards[case])
    assert configure(bad) == (TransitionCallbackReturn.FAILURE, "unconfigured")
