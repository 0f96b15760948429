"""Parity of the DenseHybrid authors' checkpoints imported through ``import_weights`` (issue 15).

Neither the authors' repository nor their weights are needed here: the fixtures under
``test/fixtures/weights_import/`` hold, per format, the key list of the authors' ``state_dict()``
(``FORMAT.keys.json``: names, shapes, dtypes) and the outputs their code computed (``FORMAT.reference.npz``).

How the references were made (once, on a CPU, torch 2.14.1; the script is not part of this repository):
github.com/matejgrcic/DenseHybrid at commit 742ceab2b1ff5a91d62aa064aa56b61b08d10858 (stored in each
npz as ``authors_commit``), with ``torch.Tensor.cuda`` patched to a no-op because ``DeepWV3Plus``
moves its mean/std to CUDA in the constructor. For each format, the authors' class in eval mode:

| format | authors' class |
|---|---|
| densehybrid-ldn121 | ``models/ladder_densenet.py: LadderDenseNetTH(Args(), num_classes=19)`` |
| densehybrid-ldn121-streethazards | ``LadderDenseNetTH(Args(), num_classes=12)`` |
| densehybrid-ldn121-streethazards-closed | ``LadderDenseNet(Args(), num_classes=12)`` |
| densehybrid-wrn38 | ``models/deeplabv3/deeplabv3.py: DeepWV3PlusTH(num_classes=19)`` |
| densehybrid-wrn38-closed | ``DeepWV3Plus(num_classes=19)`` |

The key list was written from that model's ``state_dict()`` with ``weights_parity.write_key_list``;
the state dict loaded into it (``strict=True``) was ``weights_parity.generate_state_dict(keys,
seed=1515, weight_scales={every 4-D convolution weight: conv_scale(format, name)})``, exactly as
``authors_state_dict`` below makes it; the input was ``weights_parity.parity_image(64, 96, seed=15)``
as torchvision's ``ToTensor`` gives it (uint8 HWC -> float CHW / 255, batch of one), the authors' own
preprocessing (the WRN-38 classes subtract the ImageNet mean and divide by the std inside).
Stored (float32, ``np.savez_compressed``): ``logits`` (K, H, W) and, for the classes with a head,
``logits_ood`` (2, H, W) and ``score = log(softmax(logits_ood)[:, 1]) - logsumexp(logits)`` as in their
``smiyc_submission.py: method_densehybrid``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from weights_parity import FIXTURES, generate_state_dict, parity_image, read_key_list

from openset_perception.engine import DenseMaps, Segmenter
from openset_perception.preprocess import hwc_batch_to_tensor, normalize
from openset_perception.weights_import import WeightImportError, get_format, import_weights

IMAGE_SIZE = (64, 96)
IMAGE_SEED = 15
WEIGHTS_SEED = 1515
FORMATS = [
    "densehybrid-ldn121",
    "densehybrid-ldn121-streethazards",
    "densehybrid-ldn121-streethazards-closed",
    "densehybrid-wrn38",
    "densehybrid-wrn38-closed",
]
# Convolution weight scales (times He-normal) that keep the authors' logits at a few units; in WRN-38
# the convolutions after the first of each residual branch are smaller, so the residual sums stay tame.
LDN_CONV_SCALE = 0.9
WRN38_RESIDUAL_END = re.compile(r"^mod\d\.block\d+\.convs\.conv[23]\.weight$")
WRN38_RESIDUAL_SCALE = 0.3
WRN38_CONV_SCALE = 0.8
LOGIT_ATOL = 1e-3
SCORE_ATOL = 1e-3
ARGMAX_AGREEMENT = 0.9999


def conv_scale(format_name: str, name: str) -> float:
    if "wrn38" not in format_name:
        return LDN_CONV_SCALE
    return WRN38_RESIDUAL_SCALE if WRN38_RESIDUAL_END.match(name) else WRN38_CONV_SCALE


def authors_state_dict(format_name: str) -> dict[str, torch.Tensor]:
    keys = read_key_list(FIXTURES / f"{format_name}.keys.json")
    scales = {name: conv_scale(format_name, name) for name, shape, _ in keys if len(shape) == 4}
    return generate_state_dict(keys, WEIGHTS_SEED, weight_scales=scales)


@torch.inference_mode()
def engine_outputs(segmenter: Segmenter) -> tuple[DenseMaps, torch.Tensor]:
    """The engine's full-resolution maps of the parity image, and the inlier logit (B, 1, H, W)."""
    batch = hwc_batch_to_tensor([parity_image(*IMAGE_SIZE, IMAGE_SEED)], torch.device("cpu"))
    ood_logit = segmenter.model(normalize(batch, segmenter.card.normalization)).ood_logit
    return segmenter.dense_maps(batch, with_logits=True), ood_logit


def imported_segmenter(format_name: str, state: dict[str, torch.Tensor], tmp_path: Path) -> Segmenter:
    source = tmp_path / "authors.pth"
    torch.save(state, source)
    summary = import_weights(format_name, source, tmp_path / "imported.safetensors")
    return Segmenter.from_checkpoint(summary.output, device="cpu")


@pytest.mark.parametrize("format_name", FORMATS)
def test_imported_model_reproduces_the_authors_outputs(format_name: str, tmp_path: Path) -> None:
    fmt = get_format(format_name)
    reference = np.load(FIXTURES / f"{format_name}.reference.npz")
    segmenter = imported_segmenter(format_name, authors_state_dict(format_name), tmp_path)
    assert segmenter.card.normalization == fmt.normalization
    assert segmenter.card.num_classes == fmt.num_classes == reference["logits"].shape[0]

    dense, ood_logit = engine_outputs(segmenter)
    logits = dense.logits[0].numpy()
    theirs = reference["logits"]
    assert logits.shape == theirs.shape
    assert np.abs(logits - theirs).max() <= LOGIT_ATOL
    agreement = (dense.semantic[0].numpy() == theirs.argmax(axis=0)).mean()
    assert agreement >= ARGMAX_AGREEMENT

    if not fmt.has_inlier_head:
        assert "logits_ood" not in reference
        assert not segmenter.card.inlier_head_trained
        return
    assert segmenter.score_method == "densehybrid"
    # Our one-channel head is the authors' two channels folded: g = o0 - o1.
    their_ood = reference["logits_ood"]
    assert np.abs(ood_logit[0, 0].numpy() - (their_ood[0] - their_ood[1])).max() <= LOGIT_ATOL
    score = dense.score[0].numpy()
    their_score = reference["score"]
    assert np.isfinite(score).all()
    finite = np.isfinite(their_score)
    assert finite.mean() > 0.5
    assert np.abs(score[finite] - their_score[finite]).max() <= SCORE_ATOL


def test_score_stays_finite_where_the_authors_head_saturates(tmp_path: Path) -> None:
    """A sharpened head drives the authors' log(softmax) to -inf; our logsigmoid(-g) stays finite."""
    state = authors_state_dict("densehybrid-ldn121")
    state["logits_ood.conv.weight"] = state["logits_ood.conv.weight"] * 1e4
    state["logits_ood.conv.bias"] = state["logits_ood.conv.bias"] * 1e4
    segmenter = imported_segmenter("densehybrid-ldn121", state, tmp_path)
    dense, ood = engine_outputs(segmenter)
    authors_log_p_out = torch.log(torch.softmax(torch.cat([ood, torch.zeros_like(ood)], dim=1), dim=1)[:, 1])
    assert torch.isinf(authors_log_p_out).any()
    assert torch.isfinite(dense.score).all()


def test_head_and_closed_set_files_are_told_apart(tmp_path: Path) -> None:
    """Each LDN-121 StreetHazards file imported as the other kind fails, naming the offending keys."""
    with_head = authors_state_dict("densehybrid-ldn121-streethazards")
    closed = authors_state_dict("densehybrid-ldn121-streethazards-closed")
    for state, wrong_format, expected in (
        (with_head, "densehybrid-ldn121-streethazards-closed", "unexpected keys [logits_ood."),
        (closed, "densehybrid-ldn121-streethazards", "logits_ood.conv.weight"),
    ):
        source = tmp_path / "authors.pth"
        torch.save(state, source)
        with pytest.raises(WeightImportError, match=expected.replace("[", r"\[")):
            import_weights(wrong_format, source, tmp_path / "imported.safetensors")
        assert not (tmp_path / "imported.safetensors").exists()
