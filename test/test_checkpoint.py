"""Checkpoint round trip, named errors for missing / corrupt / mismatched files, atomic writes."""

import json
import logging
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_card, make_tiny_model
from safetensors.torch import save_file

from openset_perception import checkpoint
from openset_perception.checkpoint import (
    CARD_KEY,
    CheckpointError,
    ModelCard,
    load_checkpoint,
    read_model_card,
    save_checkpoint,
    weights_sha256,
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
    written = save_checkpoint(path, model, card)
    loaded, loaded_card = load_checkpoint(path)
    assert loaded_card == written == card.updated(weights_sha256=written.weights_sha256)
    assert written.weights_sha256 is not None and card.weights_sha256 is None
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
    with pytest.raises(ValueError, match="class_names"):
        make_tiny_card(class_names=["a", "b"])
    with pytest.raises(ValueError, match="score_method"):
        make_tiny_card(score_method="magic")
    for temperature in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="score_temperature"):
            make_tiny_card(score_temperature=temperature)
    card = make_tiny_card()
    with pytest.raises(ValueError, match="threshold"):
        card.threshold = "high"  # assignments are validated too (calibration writes the threshold)
    assert card.threshold == 0.0


def _rewrite_header(path: Path, edit: Callable[[dict], None]) -> None:
    """Apply ``edit`` to the parsed safetensors header (tensor entries and metadata), keep the data."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    new_header = json.dumps(header).encode()
    new_header += b" " * ((8 - len(new_header) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(new_header)) + new_header + raw[8 + n :])


def _set(card: dict, dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        card = card[key]
    card[leaf] = value


BAD_CARD_FIELDS = [
    ("architecture.backbone_kwargs", {"colour": 1}, "has no option 'colour'"),
    ("architecture.backbone_kwargs", {"width": "wide"}, "width: Input should be a valid number"),
    ("architecture.backbone_kwargs", {"width": True}, "width: Input should be a valid number"),
    ("architecture.backbone_kwargs", {"width": -0.5}, "architecture: .*width"),
    ("architecture.backbone_kwargs", {"width": 8.0}, "parameters .* more than 200,000,000"),
    ("architecture.num_classes", 300, "num_classes must be at most 254"),
    ("architecture.backbone", "resnet9000", "unknown backbone"),
    ("architecture", [1, 2], "architecture: .*mapping"),
    ("palette", [[1, 2]] * 8, "palette.0.2: required key is missing"),
    ("palette", [[1, 2, 3, 4]] * 8, "palette.0: Tuple should have at most 3 items"),
    ("palette", [[0, 0, 300]] * 8, "palette.0.2: Input should be less than or equal to 255"),
    ("palette", [[0, 0, -1]] * 8, "palette.0.2: Input should be greater than or equal to 0"),
    ("palette", [[0, 0, 1.5]] * 8, "palette.0.2: Input should be a valid integer"),
    ("palette", [[0, 0, 1]] * 7, "palette: .*7 entries for a 8-class"),
    ("class_names", [1] * 8, "class_names.0: Input should be a valid string"),
    ("normalization.mean", [0.5, 0.5], "normalization: .*mean.2: required key is missing"),
    ("normalization.std", [0.5, 0.5, 0.5, 0.5], "normalization: .*std: Tuple should have at most 3"),
    ("normalization.std", [0.5, 0.0, 0.5], "normalization: .*std.1: Input should be greater than 0"),
    ("normalization.mean", [0.5, "0.5", 0.5], "normalization: .*mean.1: Input should be a valid number"),
    ("normalization.colour_space", "bgr", "normalization: .*colour_space: unknown key"),
    ("threshold", "high", "threshold: Input should be a valid number"),
    ("threshold", [1.0], "threshold: Input should be a valid number"),
    ("threshold", -1e30, "threshold: Input should be greater than or equal to -1000000"),
    ("threshold", float("nan"), "threshold"),
    ("threshold", float("inf"), "threshold"),
    ("threshold_tpr", 1.5, "threshold_tpr: Input should be less than or equal to 1"),
    ("input_size", [0, 0], "input_size.0: Input should be greater than or equal to 32"),
    ("input_size", [1], "input_size.1: required key is missing"),
    ("input_size", [-5, 10], "input_size.0: Input should be greater than or equal to 32"),
    ("input_size", [100_000, 100_000], "input_size: .*more than 16000000 pixels"),
    ("score_temperature", "1", "score_temperature: Input should be a valid number"),
    ("format_version", 3, "format_version: .*format 3 is not supported"),
    ("weights_sha256", "abc", "weights_sha256: String should match pattern"),
    ("inlier_head_trained", "yes", "inlier_head_trained: Input should be a valid boolean"),
]


@pytest.mark.parametrize(("key", "value", "fragment"), BAD_CARD_FIELDS)
def test_every_bad_card_field_is_a_checkpoint_error_naming_the_key(
    tmp_path: Path, tiny_checkpoint: Path, key: str, value: object, fragment: str
) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(tiny_checkpoint.read_bytes())
    card = read_model_card(path).to_dict()
    _set(card, key, value)
    _replace_card(path, card)
    for load in (read_model_card, load_checkpoint):
        with pytest.raises(CheckpointError, match=fragment):
            load(path)


def test_a_card_that_is_a_json_list_is_a_checkpoint_error(tmp_path: Path, tiny_checkpoint: Path) -> None:
    path = tmp_path / "list.safetensors"
    path.write_bytes(tiny_checkpoint.read_bytes())
    _replace_card(path, [read_model_card(path).to_dict()])
    with pytest.raises(CheckpointError, match="model card must be a JSON object, got a JSON list"):
        load_checkpoint(path)
    _rewrite_header(path, lambda header: header["__metadata__"].update({CARD_KEY: "{not json"}))
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path)


def test_an_error_while_building_the_model_is_a_checkpoint_error(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_builder(spec: ArchitectureSpec) -> torch.nn.Module:
        raise AttributeError("'NoneType' object has no attribute 'out_channels'")

    monkeypatch.setattr(checkpoint, "build_model", broken_builder)
    with pytest.raises(CheckpointError, match="architecture cannot be built: 'NoneType'"):
        load_checkpoint(tiny_checkpoint)


def _data_start(path: Path) -> int:
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    return 8 + n


def test_every_flipped_weight_byte_is_detected(tmp_path: Path, tiny_checkpoint: Path) -> None:
    raw = tiny_checkpoint.read_bytes()
    start = _data_start(tiny_checkpoint)
    rng = np.random.default_rng(4)
    path = tmp_path / "flipped.safetensors"
    for position in rng.integers(start, len(raw), 40):
        flipped = bytearray(raw)
        flipped[position] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(flipped))
        with pytest.raises(CheckpointError, match="do not match the card's weights_sha256"):
            load_checkpoint(path)


def test_the_hash_covers_names_dtypes_and_shapes() -> None:
    state = {"a": torch.arange(4, dtype=torch.float32), "b": torch.zeros(2, 2, dtype=torch.int64)}
    reference = weights_sha256(state)
    assert reference == weights_sha256({"b": state["b"].clone(), "a": state["a"].clone()})  # order-free
    same_bytes_other_dtype = {**state, "a": state["a"].view(torch.int32)}
    same_bytes_other_shape = {**state, "a": state["a"].reshape(2, 2)}
    renamed = {"c": state["a"], "b": state["b"]}
    hashes = {weights_sha256(s) for s in (same_bytes_other_dtype, same_bytes_other_shape, renamed)}
    assert len(hashes) == 3 and reference not in hashes
    scalar = {"n": torch.tensor(7, dtype=torch.int64), "h": torch.ones(3, dtype=torch.bfloat16)}
    assert len(weights_sha256(scalar)) == 64


def test_a_relabelled_dtype_is_refused(tmp_path: Path, tiny_checkpoint: Path) -> None:
    path = tmp_path / "relabelled.safetensors"
    path.write_bytes(tiny_checkpoint.read_bytes())
    name = "classifier.weight"

    def relabel(header: dict) -> None:
        assert header[name]["dtype"] == "F32"
        header[name]["dtype"] = "I32"  # same element size: the bytes still fit

    _rewrite_header(path, relabel)
    with pytest.raises(CheckpointError, match=f"'{name}' has dtype torch.int32, .* torch.float32"):
        load_checkpoint(path)


def test_an_old_card_without_a_hash_loads_with_one_warning(
    tmp_path: Path, tiny_checkpoint: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "format1.safetensors"
    path.write_bytes(tiny_checkpoint.read_bytes())
    card = read_model_card(path).to_dict()
    del card["weights_sha256"], card["inlier_head_trained"], card["source"]
    card["format_version"] = 1
    _replace_card(path, card)
    with caplog.at_level(logging.WARNING, logger="openset_perception.checkpoint"):
        for _ in range(3):
            model, loaded = load_checkpoint(path)
    assert loaded.weights_sha256 is None and loaded.format_version == 1
    warnings = [r for r in caplog.records if "without a weights hash" in r.getMessage()]
    assert len(warnings) == 1
    # Saving it again binds the hash and moves it to the current format.
    resaved = save_checkpoint(tmp_path / "resaved.safetensors", model, loaded)
    assert resaved.format_version == checkpoint.FORMAT_VERSION and resaved.weights_sha256 is not None
    # A current-format card whose hash was stripped is refused.
    card["format_version"] = checkpoint.FORMAT_VERSION
    _replace_card(path, card)
    with pytest.raises(CheckpointError, match="no weights_sha256"):
        load_checkpoint(path)


def test_a_width_that_does_not_fit_the_weights_is_refused(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """A width within the size bound that does not fit the weights fails on their shapes."""
    path = tmp_path / "wide.safetensors"
    path.write_bytes(tiny_checkpoint.read_bytes())
    card = read_model_card(path).to_dict()
    card["architecture"]["backbone_kwargs"] = {"width": 0.25}  # within the bound, but not these weights
    _replace_card(path, card)
    with pytest.raises(CheckpointError, match="has shape"):
        load_checkpoint(path)


def test_the_shipped_model_carries_a_matching_hash() -> None:
    shipped = Path(__file__).resolve().parents[1] / "models" / "streets_swiftnet_small.safetensors"
    card = read_model_card(shipped)
    assert card.format_version == checkpoint.FORMAT_VERSION and card.weights_sha256 is not None
    load_checkpoint(shipped)  # verifies the hash
