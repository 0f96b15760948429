"""Importing published checkpoints: SwiftNet parity with the authors' code, and the importer's errors.

Neither the SwiftNet authors' repository nor their weights are needed here. The fixtures under
``test/fixtures/weights_import/`` hold, per format, the key list of the authors' ``state_dict()``
(``FORMAT.keys.json``) and the outputs their code computed (``FORMAT.reference.npz``).

How the references were made (once, on a CPU, torch 2.14.1; the script lives outside this repository):
github.com/orsic/swiftnet at commit 2b88990e1ab674e8ef7cb533a1d8d49ef34ac93d, with the Cython timer
module ``evaluation.evaluate`` stubbed (``mt = lambda sync=False: 1000 * time.perf_counter()``) so that
the models import. The authors' models in eval mode, as their configs build them (``MEAN``/``STD``
below are the configs' values):

- swiftnet-rn18: ``SemsegModel(resnet_single_scale.resnet18(pretrained=False, efficient=False,
  mean=MEAN, std=STD), 19)``
- swiftnet-rn18-pyramid: ``SemsegModel(resnet_pyramid.resnet18(pretrained=False, pyramid_levels=3,
  k_upsample=3, scale=1, mean=MEAN, std=STD, k_bneck=1, output_stride=4, efficient=True), 19, k=1,
  bias=True)``

The key list was written from that model's ``state_dict()`` with ``weights_parity.write_key_list``.
The state dict loaded into it was ``weights_parity.generate_state_dict(keys, seed=15,
weight_scales={"logits.conv.weight": s}, constants={img_mean: MEAN, img_std: STD})``, exactly as
``authors_state_dict`` below makes it, where ``s`` (stored as ``logit_weight_scale``) was chosen as 1.5
over the largest |logit| at scale 1, so that the logits stay under 2 and float16 storage is exact to
5e-4. It was loaded with ``strict=False`` as the authors' pyramid config does, and every tensor was
checked to have landed. The input was ``weights_parity.parity_image(128, 256, seed=15)`` as a
(1, 3, H, W) float tensor of 0-255 RGB (their loader's input; the model normalises with its buffers).
Stored: ``logits`` of ``model(image, target_size=(H/4, W/4), image_size=(H, W))`` as float16
(1, 19, H, W) and their argmax (uint8, computed in float32).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from rosbags.typesys import Stores, get_typestore
from safetensors.torch import load_file
from weights_parity import FIXTURES, generate_state_dict, parity_image, read_key_list

from openset_perception.checkpoint import read_model_card
from openset_perception.cli.main import main
from openset_perception.data.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from openset_perception.engine import Segmenter
from openset_perception.image_codec import numpy_to_image, rosbags_factories
from openset_perception.preprocess import hwc_batch_to_tensor
from openset_perception.runtime.frame_buffer import CameraFrame
from openset_perception.runtime.outputs import OUTPUT_NAMES
from openset_perception.runtime.parameters import runtime_settings
from openset_perception.runtime.pipeline import InferencePipeline
from openset_perception.training.config import load_train_config
from openset_perception.training.trainer import Trainer
from openset_perception.weights_import import (
    WeightImportError,
    fold_two_channel_ood_head,
    get_format,
    import_weights,
    read_state_dict,
)

pytest_plugins = ["conftest_datasets"]

REPO = Path(__file__).resolve().parents[1]
FACTORIES = rosbags_factories(get_typestore(Stores.ROS2_JAZZY))
SWIFTNET_FORMATS = ("swiftnet-rn18", "swiftnet-rn18-pyramid")
MEAN = (73.15, 82.90, 72.3)
STD = (47.67, 48.49, 47.73)
LOGIT_ATOL = 1e-3
ARGMAX_AGREEMENT = 0.9999
WORKING_SCORES = ("max_logit", "energy", "generative", "msp", "entropy")


def reference(format_name: str) -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / f"{format_name}.reference.npz"))


def authors_state_dict(format_name: str) -> dict[str, torch.Tensor]:
    ref = reference(format_name)
    keys = read_key_list(FIXTURES / f"{format_name}.keys.json")
    return generate_state_dict(
        keys,
        int(ref["seed"]),
        weight_scales={"logits.conv.weight": float(ref["logit_weight_scale"])},
        constants={"backbone.img_mean": MEAN, "backbone.img_std": STD},
    )


@pytest.fixture(scope="module")
def swiftnet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("authors") / "model_best.pt"
    torch.save(authors_state_dict("swiftnet-rn18"), path)
    return path


@pytest.fixture(scope="module")
def swiftnet_checkpoint(swiftnet_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("imported") / "swiftnet.safetensors"
    import_weights("swiftnet-rn18", swiftnet_file, out)
    return out


@pytest.mark.parametrize("format_name", SWIFTNET_FORMATS)
def test_imported_swiftnet_reproduces_the_authors_logits(format_name: str, tmp_path: Path) -> None:
    ref = reference(format_name)
    source = tmp_path / "model_best.pt"
    torch.save(authors_state_dict(format_name), source)
    summary = import_weights(format_name, source, tmp_path / "imported.safetensors")
    segmenter = Segmenter.from_checkpoint(summary.output, device="cpu")
    assert segmenter.score_method == "max_logit"

    height, width = (int(v) for v in ref["image_size"])
    image = parity_image(height, width, int(ref["seed"]))
    with torch.inference_mode():
        dense = segmenter.dense_maps(hwc_batch_to_tensor([image], torch.device("cpu")), with_logits=True)
    theirs = ref["logits"].astype(np.float32)
    assert dense.logits.shape == theirs.shape
    assert np.abs(dense.logits.numpy() - theirs).max() <= LOGIT_ATOL
    assert (dense.semantic.numpy() == ref["argmax"]).mean() >= ARGMAX_AGREEMENT
    # The closed-set score the card selects, from the authors' logits: -max_k s_k.
    score = dense.score.numpy()
    assert np.isfinite(score).all()
    assert np.abs(score - (-theirs.max(axis=1))).max() <= LOGIT_ATOL


def test_card_records_classes_normalisation_and_provenance(
    swiftnet_file: Path, swiftnet_checkpoint: Path
) -> None:
    card = read_model_card(swiftnet_checkpoint)
    assert card.class_names == list(CITYSCAPES_CLASSES)
    assert card.palette == list(CITYSCAPES_PALETTE)
    # From the file's img_mean / img_std buffers (0-255), on our 0-1 scale.
    assert card.normalization.mean == pytest.approx([m / 255 for m in MEAN])
    assert card.normalization.std == pytest.approx([s / 255 for s in STD])
    assert card.threshold is None
    assert card.score_method == "max_logit"
    assert not card.inlier_head_trained
    assert card.source == {
        "format": "swiftnet-rn18",
        "publisher": "orsic/swiftnet",
        "file": "model_best.pt",
        "sha256": hashlib.sha256(swiftnet_file.read_bytes()).hexdigest(),
        "dataset": "cityscapes",
    }
    assert card.architecture.backbone == get_format("swiftnet-rn18").backbone


def test_normalisation_follows_the_files_buffers(tmp_path: Path) -> None:
    state = authors_state_dict("swiftnet-rn18")
    state["backbone.img_mean"] = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)
    source = tmp_path / "model_best.pt"
    torch.save(state, source)
    card = import_weights("swiftnet-rn18", source, tmp_path / "out.safetensors").card
    assert card.normalization.mean == pytest.approx([10 / 255, 20 / 255, 30 / 255])


@pytest.mark.parametrize("method", ["densehybrid", "discriminative"])
def test_engine_refuses_inlier_head_scores_for_a_closed_set_import(
    swiftnet_checkpoint: Path, method: str
) -> None:
    segmenter = Segmenter.from_checkpoint(swiftnet_checkpoint, device="cpu")
    with pytest.raises(ValueError, match="not trained") as error:
        segmenter.score_method = method
    for working in WORKING_SCORES:
        assert working in str(error.value)
    for working in WORKING_SCORES:
        segmenter.score_method = working  # each of these is accepted
    assert segmenter.score_method == WORKING_SCORES[-1]


def test_folded_head_reproduces_the_two_channel_log_posterior() -> None:
    generator = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(2, 16, 1, 1, generator=generator), torch.randn(2, generator=generator)
    features = 5 * torch.randn(4, 16, 3, 5, generator=generator)
    two_channel = torch.nn.functional.conv2d(features, weight, bias)
    g = torch.nn.functional.conv2d(features, *fold_two_channel_ood_head(weight, bias))
    authors_log_p_out = torch.log_softmax(two_channel, dim=1)[:, 1:]
    assert torch.allclose(torch.nn.functional.logsigmoid(-g), authors_log_p_out, atol=1e-5)
    with pytest.raises(WeightImportError, match="two-channel"):
        fold_two_channel_ood_head(torch.zeros(3, 16, 1, 1), torch.zeros(3))


class _RunsCode:
    """Pickles as a call of Path.touch: loading it with plain pickle would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_that_would_run_code_is_refused_and_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    source = tmp_path / "evil.pt"
    torch.save({"conv.weight": torch.zeros(1), "payload": _RunsCode(marker)}, source)
    legacy = tmp_path / "evil_legacy.pkl"
    legacy.write_bytes(pickle.dumps({"payload": _RunsCode(marker)}, protocol=2))
    for path in (source, legacy):
        with pytest.raises(WeightImportError, match="refused"):
            import_weights("swiftnet-rn18", path, tmp_path / "out.safetensors")
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()


def test_wrapped_and_dataparallel_state_dicts_load(swiftnet_checkpoint: Path, tmp_path: Path) -> None:
    state = authors_state_dict("swiftnet-rn18")
    expected = load_file(str(swiftnet_checkpoint))
    for name, wrapped in (
        ("state_dict", {"state_dict": state, "epoch": 250, "best_iou": 75.4}),
        ("model_module", {"model": {f"module.{k}": v for k, v in state.items()}}),
        ("module", {f"module.{k}": v for k, v in state.items()}),
    ):
        source = tmp_path / f"{name}.pt"
        torch.save(wrapped, source)
        out = tmp_path / f"{name}.safetensors"
        import_weights("swiftnet-rn18", source, out)
        loaded = load_file(str(out))
        assert loaded.keys() == expected.keys()
        assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_wrong_keys_are_named_in_one_error(tmp_path: Path) -> None:
    state = authors_state_dict("swiftnet-rn18")
    del state["backbone.layer2.1.conv2.weight"]
    state["backbone.extra_head.weight"] = torch.zeros(3)
    source = tmp_path / "model_best.pt"
    torch.save(state, source)
    with pytest.raises(WeightImportError) as error:
        import_weights("swiftnet-rn18", source, tmp_path / "out.safetensors")
    message = str(error.value)
    assert "missing keys [backbone.encoder.layer2.1.conv2.weight]" in message
    assert "backbone.encoder.extra_head.weight" in message
    assert "swiftnet-rn18" in message


def test_shape_mismatch_names_the_tensor(tmp_path: Path) -> None:
    state = authors_state_dict("swiftnet-rn18")
    state["logits.conv.weight"] = torch.zeros(20, 128, 1, 1)
    state["logits.conv.bias"] = torch.zeros(20)
    source = tmp_path / "model_best.pt"
    torch.save(state, source)
    with pytest.raises(WeightImportError, match=r"classifier\.2\.bias \(20,\) \(expected \(19,\)\)"):
        import_weights("swiftnet-rn18", source, tmp_path / "out.safetensors")


def test_truncated_file_and_non_state_dicts_are_clear_errors(swiftnet_file: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(swiftnet_file.read_bytes()[: swiftnet_file.stat().st_size // 2])
    with pytest.raises(WeightImportError, match="truncated or corrupt"):
        read_state_dict(truncated)
    for name, content in (("list", [torch.zeros(2)]), ("metadata", {"epoch": 3, "lr": 1e-4}), ("empty", {})):
        source = tmp_path / f"{name}.pt"
        torch.save(content, source)
        with pytest.raises(WeightImportError, match="not a state dict"):
            read_state_dict(source)
    with pytest.raises(WeightImportError, match="file not found"):
        read_state_dict(tmp_path / "absent.pt")


def test_missing_normalisation_buffers_are_a_clear_error(tmp_path: Path) -> None:
    state = authors_state_dict("swiftnet-rn18")
    del state["backbone.img_std"]
    source = tmp_path / "model_best.pt"
    torch.save(state, source)
    with pytest.raises(WeightImportError, match=r"normalisation buffers \['backbone.img_std'\]"):
        import_weights("swiftnet-rn18", source, tmp_path / "out.safetensors")


def test_unknown_format_lists_the_known_ones() -> None:
    with pytest.raises(WeightImportError, match="swiftnet-rn18-pyramid"):
        get_format("swiftnet-rn50")


def test_cli_imports_and_reports_errors_in_one_line(
    swiftnet_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.safetensors"
    assert main(["import-weights", "--format", "swiftnet-rn18", str(swiftnet_file), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert hashlib.sha256(swiftnet_file.read_bytes()).hexdigest() in printed
    assert "untrained" in printed and "max_logit" in printed
    assert read_model_card(out).source["format"] == "swiftnet-rn18"
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "untrained" in info and "orsic/swiftnet model_best.pt" in info

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["import-weights", "--format", "swiftnet-rn18", str(bad), "--out", str(tmp_path / "x")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("openset-perception import-weights: error:") and "\n" not in error


def _write_fake_ade20k(root: Path) -> None:
    """ADEChallengeData2016 layout with two images (RGB .jpg, class-index .png)."""
    rng = np.random.default_rng(6)
    (root / "images" / "training").mkdir(parents=True)
    (root / "annotations" / "training").mkdir(parents=True)
    for index in range(2):
        name = f"ADE_train_{index:08d}"
        image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        labels = rng.integers(1, 151, (6, 8)).astype(np.uint8).repeat(8, axis=0).repeat(8, axis=1)
        cv2.imwrite(str(root / "images" / "training" / f"{name}.jpg"), image[..., ::-1])
        cv2.imwrite(str(root / "annotations" / "training" / f"{name}.png"), labels)


def test_swiftnet_densehybrid_recipe_fine_tunes_an_imported_model(
    swiftnet_checkpoint: Path, fake_dataset, tmp_path: Path
) -> None:
    """config/train/cityscapes_swiftnet_densehybrid.yaml for two steps on generated Cityscapes/ADE20k."""
    cityscapes = fake_dataset("cityscapes", split="train", depth=False)
    _write_fake_ade20k(tmp_path / "ade")
    config = load_train_config(
        REPO / "config/train/cityscapes_swiftnet_densehybrid.yaml",
        {
            "output_dir": str(tmp_path / "runs"),
            "epochs": 1,
            "steps_per_epoch": 2,
            "model.init_checkpoint": str(swiftnet_checkpoint),
            "data.train.root": str(cityscapes.root),
            "data.val": None,
            "data.crop_size": [64, 64],
            "data.batch_size": 2,
            "data.num_workers": 0,
            "negatives.root": str(tmp_path / "ade"),
            "negatives.ade_crop_size": 32,
        },
    )
    imported = load_file(str(swiftnet_checkpoint))
    result = Trainer(config).fit()
    tuned = load_file(str(result.checkpoint))
    card = read_model_card(result.checkpoint)
    assert card.normalization == read_model_card(swiftnet_checkpoint).normalization
    assert card.architecture.backbone == "swiftnet_rn18_reference"
    assert card.inlier_head_trained and card.score_method == "densehybrid"
    assert tuned.keys() == imported.keys()
    for prefix in ("backbone.encoder.", "backbone.upsampling.", "classifier.", "ood_head."):
        moved = [k for k in imported if k.startswith(prefix) and not torch.equal(imported[k], tuned[k])]
        assert moved, f"no {prefix} tensor changed"
    segmenter = Segmenter.from_checkpoint(result.checkpoint, device="cpu")
    frame = parity_image(64, 96, 0)
    assert np.isfinite(segmenter.segment([frame]).anomaly_score).all()


@pytest.fixture(scope="module")
def ldn121_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The DenseHybrid authors' LDN-121 with its OOD head, from test_import_densehybrid's generator."""
    from test_import_densehybrid import authors_state_dict as densehybrid_state_dict

    folder = tmp_path_factory.mktemp("authors_ldn")
    torch.save(densehybrid_state_dict("densehybrid-ldn121"), folder / "ldn121.pt")
    import_weights("densehybrid-ldn121", folder / "ldn121.pt", folder / "ldn121.safetensors")
    return folder / "ldn121.safetensors"


@pytest.mark.parametrize("imported", ["swiftnet_checkpoint", "ldn121_checkpoint"])
def test_imported_model_runs_through_evaluate_eval_bag_and_the_node_runtime(
    imported: str, request, fake_dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The imported checkpoint needs nothing special: evaluate, make-bag + eval-bag, InferencePipeline."""
    checkpoint_path = request.getfixturevalue(imported)
    laf = fake_dataset("fishyscapes_laf")
    checkpoint = str(checkpoint_path)
    evaluate = ["evaluate", "--checkpoint", checkpoint, "--dataset", laf.name, "--root", str(laf.root)]
    assert main([*evaluate, "--out", str(tmp_path / "eval"), "--exact", "--no-progress"]) == 0
    bag = tmp_path / "bag"
    assert (
        main(["make-bag", "--dataset", laf.name, "--root", str(laf.root), "--out", str(bag), "--no-progress"])
        == 0
    )
    eval_bag = ["eval-bag", str(bag), "--checkpoint", checkpoint, "--out", str(tmp_path / "eval_bag")]
    assert main([*eval_bag, "--exact", "--device", "cpu", "--write-outputs", "--no-progress"]) == 0
    capsys.readouterr()
    assert (tmp_path / "eval_bag" / "outputs").is_dir()  # the node's outputs, as a bag
    dataset_metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    bag_metrics = json.loads((tmp_path / "eval_bag" / "metrics.json").read_text())
    assert dataset_metrics["frames"]["evaluated"] == bag_metrics["frames"]["evaluated"] == len(laf.samples)
    assert dataset_metrics["anomaly"]["ap"] == pytest.approx(bag_metrics["anomaly"]["ap"], abs=1e-6)
    assert dataset_metrics["anomaly"]["fpr95"] == pytest.approx(bag_metrics["anomaly"]["fpr95"], abs=1e-6)

    segmenter = Segmenter.from_checkpoint(checkpoint_path, device="cpu")
    pipeline = InferencePipeline(segmenter, runtime_settings({}))
    image = laf.samples[0].image
    header = FACTORIES.header(1_000_000_000, "camera_optical")
    message = numpy_to_image(image, "rgb8", header, msg_factory=FACTORIES.image)
    frame = CameraFrame("camera", header, 1.0, time.monotonic(), message, None)
    outcome = pipeline.process([frame], lambda camera: OUTPUT_NAMES)
    assert outcome.rejected == []
    result = outcome.results[0].images
    expected = segmenter.segment([image])
    np.testing.assert_array_equal(result["semantic"], expected.semantic[0])
    # No threshold yet: no unknown pixels, so the overlay is image and Cityscapes colour half and half.
    palette = np.asarray(CITYSCAPES_PALETTE, dtype=np.float64)
    blended = (image.astype(np.float64) + palette[expected.semantic[0]]) / 2
    assert np.abs(result["overlay"].astype(np.float64) - blended).max() <= 1.0
    assert len(np.unique(expected.semantic[0])) > 1


def test_a_file_given_under_its_sibling_format_names_the_format_that_fits(tmp_path: Path) -> None:
    """The StreetHazards LDN-121 with and without the DenseHybrid head share an architecture."""
    with_head = "densehybrid-ldn121-streethazards"
    keys = read_key_list(FIXTURES / f"{with_head}.keys.json")
    source = tmp_path / "ldn_th.pth"
    torch.save(generate_state_dict(keys, 0), source)
    with pytest.raises(WeightImportError, match=f"the file fits --format {with_head}$"):
        import_weights(f"{with_head}-closed", source, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()
