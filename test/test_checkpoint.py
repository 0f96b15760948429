"""Checkpoint round trip, named errors for missing / corrupt / mismatched files, atomic writes."""

import json
import struct
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_card, make_tiny_model
from safetensors.torch import save_file

from openset_perception.checkpoint import (
    CARD_KEY,
    CheckpointError,
    ModelCard,
    load_checkpoint,
    read_model_card,
    save_checkpoint,
)
from openset_perception.models import ArchitectureSpec


def _replace_card(path: Path, card: dict) -> None:
    """Rewrite only the safetensors header's model card, keeping the tensors."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"][CARD_KEY] = json.dumps(card)
    new_header = json.dumps(header).encode()
    new_header += b" " * ((8 - len(new_header) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(new_header)) + new_header + raw[8 + n :])


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    card = make_tiny_card(threshold=-3.25, input_size=(64, 96), metrics={"ap": 0.5})
    model = make_tiny_model(card, seed=3)
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, card)
    loaded, loaded_card = load_checkpoint(path)
    assert loaded_card == card
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for name, tensor in original.items():
        assert tensor.dtype == restored[name].dtype
        assert torch.equal(tensor, restored[name]), name
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(model(x).logits, loaded(x).logits)


def test_no_temporary_files_left(tmp_path: Path) -> None:
    card = make_tiny_card()
    save_checkpoint(tmp_path / "a.safetensors", make_tiny_model(card), card)
    save_checkpoint(tmp_path / "a.safetensors", make_tiny_model(card), card)
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_corrupt_file(tmp_path: Path, tiny_checkpoint: Path) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(garbage)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match=r"corrupt|not a readable"):
        load_checkpoint(truncated)


def test_pickle_is_never_executed(tmp_path: Path) -> None:
    bomb = tmp_path / "pickle.safetensors"
    torch.save({"x": torch.zeros(1)}, bomb)  # a pickle archive under a safetensors name
    with pytest.raises(CheckpointError):
        load_checkpoint(bomb)


def test_file_without_card(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="no model card"):
        read_model_card(path)


def test_invalid_card_names_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "badcard.safetensors"
    card = make_tiny_card().to_dict()
    card["colour_scheme"] = "x"
    save_file({"w": torch.zeros(2)}, str(path), metadata={CARD_KEY: json.dumps(card)})
    with pytest.raises(CheckpointError, match="colour_scheme"):
        read_model_card(path)


def test_class_count_mismatch(tmp_path: Path) -> None:
    card = make_tiny_card()
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, make_tiny_model(card), card)
    # Rewrite the header so the card claims 9 classes for 8-class weights.
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    card9 = card.to_dict()
    card9["architecture"]["num_classes"] = 9
    card9["class_names"] = [*card.class_names, "extra"]
    card9["palette"] = [*card9["palette"], [1, 2, 3]]
    header["__metadata__"][CARD_KEY] = json.dumps(card9)
    new_header = json.dumps(header).encode()
    new_header += b" " * ((8 - len(new_header) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(new_header)) + new_header + raw[8 + n :])
    with pytest.raises(CheckpointError, match="class-count mismatch"):
        load_checkpoint(path)


def test_architecture_mismatch(tmp_path: Path) -> None:
    card = make_tiny_card()
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, make_tiny_model(card), card)
    wider_spec = ArchitectureSpec("swiftnet_rn18", 8, {"width": 0.25})
    wider = ModelCard(**{**card.__dict__, "architecture": wider_spec})
    _replace_card(path, wider.to_dict())
    with pytest.raises(CheckpointError, match="has shape"):
        load_checkpoint(path)


def test_card_validation() -> None:
    with pytest.raises(ValueError, match="class names"):
        make_tiny_card(class_names=["a", "b"])
    with pytest.raises(ValueError, match="score_method"):
        make_tiny_card(score_method="magic")
    for temperature in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="score_temperature must be > 0"):
            make_tiny_card(score_temperature=temperature)
