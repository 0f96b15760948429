"""Tests for the segmentation networks (CPU, no weights downloaded)."""

import functools
import json
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from openset_perception.models import (
    BACKBONE_NAMES,
    ArchitectureSpec,
    OpenSetSegmenter,
    PreactivatedHead,
    build_backbone,
    build_model,
)

NUM_CLASSES = 5

# (backbone, backbone_kwargs, moose_probes): one entry per network variant exercised below.
VARIANTS = [
    ("swiftnet_rn18", (), False),
    ("swiftnet_rn18", (("width", 0.25),), False),
    ("ldn121", (), False),
    ("deeplabv3plus_r50", (), True),
    ("deeplabv3plus_r101", (), True),
    ("ldn121_reference", (), False),
    ("swiftnet_rn18_reference", (), False),
    ("swiftnet_rn18_pyramid", (), False),
]


@functools.cache
def cached_model(backbone: str, kwargs: tuple[tuple[str, Any], ...], probes: bool) -> OpenSetSegmenter:
    """Eval-mode models shared by the read-only tests (building ResNet-101 twice would waste CPU time)."""
    torch.manual_seed(0)
    spec = ArchitectureSpec(backbone, NUM_CLASSES, dict(kwargs), moose_probes=probes)
    return build_model(spec).eval()


def resnet18_parameter_count(width: float) -> int:
    """ResNet-18 feature-part parameter count at a channel width, counted from the topology by hand."""
    stem, *stages = (round(c * width) for c in (64, 64, 128, 256, 512))
    count = 3 * 7 * 7 * stem + 2 * stem
    in_channels = stem
    for out_channels in stages:
        for block in range(2):
            block_in = in_channels if block == 0 else out_channels
            count += 9 * block_in * out_channels + 9 * out_channels * out_channels + 4 * out_channels
            if block == 0 and block_in != out_channels:
                count += block_in * out_channels + 2 * out_channels
        in_channels = out_channels
    return count


@pytest.mark.parametrize(
    ("variant", "height", "width"),
    [
        (VARIANTS[0], 97, 129),
        (VARIANTS[0], 481, 641),
        (VARIANTS[1], 481, 641),
        (VARIANTS[1], 97, 129),
        (VARIANTS[1], 32, 32),
        (VARIANTS[2], 65, 97),
        (VARIANTS[3], 65, 97),
        (VARIANTS[3], 32, 33),
        (VARIANTS[4], 65, 97),
        (VARIANTS[5], 65, 97),
        (VARIANTS[6], 65, 97),
        (VARIANTS[7], 33, 131),
    ],
)
def test_outputs_have_input_size_and_match_bilinear_upsampling(
    variant: tuple[str, tuple[tuple[str, Any], ...], bool], height: int, width: int
) -> None:
    model = cached_model(*variant)
    x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(x)
        coarse = model(x, upsample=False)
    num_probes = 4 if variant[2] else 0
    assert full.logits.shape == (1, NUM_CLASSES, height, width)
    assert full.ood_logit.shape == (1, 1, height, width)
    assert [p.shape for p in full.probe_logits] == [(1, NUM_CLASSES, height, width)] * num_probes
    # Stem conv (k7 s2 p3) and max-pool (k3 s2 p1) each map n -> ceil(n / 2); the LDN authors'
    # 2x2 max-pool stem floors instead; NVIDIA's WRN-38 decodes at stride 2 (its first max-pool).
    output_stride = 4
    if variant[0] == "ldn121_reference":
        coarse_size = (math.ceil(height / 2) // 2, math.ceil(width / 2) // 2)
    elif variant[0] == "deeplabv3plus_wrn38":
        output_stride = 2
        coarse_size = (math.ceil(height / 2), math.ceil(width / 2))
    else:
        coarse_size = (math.ceil(height / 4), math.ceil(width / 4))
    assert model.backbone.output_stride == output_stride
    assert coarse.logits.shape[-2:] == coarse_size
    assert all(p.shape[-2:] == coarse_size for p in coarse.probe_logits)
    for upsampled, native in zip(
        [full.logits, full.ood_logit, *full.probe_logits],
        [coarse.logits, coarse.ood_logit, *coarse.probe_logits],
        strict=True,
    ):
        expected = F.interpolate(
            native, size=(height, width), mode="bilinear", align_corners=model.backbone.align_corners
        )
        torch.testing.assert_close(upsampled, expected)


@pytest.mark.parametrize("variant", VARIANTS[:4])
def test_eval_forward_is_deterministic_and_batch_independent(
    variant: tuple[str, tuple[tuple[str, Any], ...], bool],
) -> None:
    model = cached_model(*variant)
    x = torch.randn(2, 3, 40, 56, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        first, second, single = model(x), model(x), model(x[1:])
    assert torch.equal(first.logits, second.logits)
    assert torch.equal(first.ood_logit, second.ood_logit)
    assert all(torch.equal(a, b) for a, b in zip(first.probe_logits, second.probe_logits, strict=True))
    # Randomly initialised deep ResNets reach logits of ~1e4, so the tolerance follows their scale.
    scale = first.logits.abs().max().item()
    torch.testing.assert_close(first.logits[1:], single.logits, atol=1e-5 * scale, rtol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_groups_partition_the_model(variant: tuple[str, tuple[tuple[str, Any], ...], bool]) -> None:
    model = cached_model(*variant)
    groups = [model.encoder_parameters(), model.decoder_parameters(), model.probe_parameters()]
    grouped_ids = [id(p) for group in groups for p in group]
    assert len(grouped_ids) == len(set(grouped_ids))
    assert set(grouped_ids) == {id(p) for p in model.parameters()}
    assert {id(p) for p in groups[0]} == {id(p) for p in model.backbone.encoder.parameters()}
    assert len(groups[2]) > 0 if variant[2] else groups[2] == []


@pytest.mark.parametrize("variant", VARIANTS[3:4])
def test_deeplab_probe_features_are_detached_stride4_tensors(
    variant: tuple[str, tuple[tuple[str, Any], ...], bool],
) -> None:
    backbone = cached_model(*variant).backbone
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 65, 97), with_probes=True)
    assert backbone.probe_channels == [256 + 256 + 48] * 4
    assert [f.shape[1] for f in features.probe_features] == backbone.probe_channels
    assert all(f.shape[-2:] == features.prelogits.shape[-2:] for f in features.probe_features)
    assert features.prelogits.shape[1] == backbone.prelogit_channels == 256
    assert backbone(torch.randn(1, 3, 65, 97), with_probes=False).probe_features == []


def test_probe_loss_reaches_only_probes_and_segmenter_loss_only_segmenter() -> None:
    torch.manual_seed(0)
    model = build_model(ArchitectureSpec("deeplabv3plus_r50", NUM_CLASSES, moose_probes=True)).train()
    probe_ids = {id(p) for p in model.probe_parameters()}
    # Batch 1 in training mode also checks that no batch norm sees a 1x1 map (the pooling branch).
    x = torch.randn(1, 3, 64, 64)

    sum(p.square().mean() for p in model(x).probe_logits).backward()
    for param in model.parameters():
        if id(param) in probe_ids:
            assert param.grad is not None
        else:
            assert param.grad is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.probes[0][-1].parameters())

    model.zero_grad(set_to_none=True)
    output = model(x)
    (output.logits.square().mean() + output.ood_logit.square().mean()).backward()
    assert all(p.grad is None for p in model.probe_parameters())
    assert all(p.grad is not None for p in model.encoder_parameters() + model.decoder_parameters())


def test_ood_head_is_bn_relu_conv_on_the_classifier_input() -> None:
    model = cached_model(*VARIANTS[1])
    head = model.ood_head
    assert [type(m) for m in head] == [nn.BatchNorm2d, nn.ReLU, nn.Conv2d]
    assert head[2].out_channels == 1 and head[2].kernel_size == (1, 1)

    captured: dict[str, torch.Tensor] = {}
    hooks = [
        model.classifier.register_forward_hook(lambda _m, args, _o: captured.update(classifier=args[0])),
        head.register_forward_hook(lambda _m, args, _o: captured.update(ood=args[0])),
    ]
    bn = head[0]
    saved_stats = bn.running_mean.clone(), bn.running_var.clone()
    generator = torch.Generator().manual_seed(3)
    # Non-trivial statistics so that a head skipping the normalisation would be caught.
    bn.running_mean.copy_(torch.randn(bn.num_features, generator=generator))
    bn.running_var.copy_(torch.rand(bn.num_features, generator=generator) + 0.5)
    try:
        with torch.no_grad():
            output = model(torch.randn(1, 3, 64, 96, generator=generator), upsample=False)
            z = captured["classifier"]
            mean, var = bn.running_mean[:, None, None], bn.running_var[:, None, None]
            normalised = (z - mean) / torch.sqrt(var + bn.eps)
            activated = torch.relu(normalised * bn.weight[:, None, None] + bn.bias[:, None, None])
            expected_ood = F.conv2d(activated, head[2].weight, head[2].bias)
            expected_logits = F.conv2d(z, model.classifier.weight, model.classifier.bias)
    finally:
        for hook in hooks:
            hook.remove()
        bn.running_mean.copy_(saved_stats[0])
        bn.running_var.copy_(saved_stats[1])
    assert captured["ood"] is z
    assert z.shape[1] == model.backbone.prelogit_channels
    torch.testing.assert_close(output.ood_logit, expected_ood)
    torch.testing.assert_close(output.logits, expected_logits)


@pytest.mark.parametrize("channels_last", [False, True])
def test_inlier_head_inference_shortcut_equals_its_modules(channels_last: bool) -> None:
    generator = torch.Generator().manual_seed(5)
    head = PreactivatedHead(16)
    with torch.no_grad():
        for tensor in (head[0].weight, head[0].bias, head[0].running_mean, head[2].weight, head[2].bias):
            tensor.copy_(torch.randn(tensor.shape, generator=generator))
        head[0].running_var.copy_(torch.rand(16, generator=generator) + 0.5)
    z = torch.randn(2, 16, 9, 13, generator=generator)
    if channels_last:
        z = z.contiguous(memory_format=torch.channels_last)
    head.eval()
    with torch.no_grad():
        shortcut = head(z)
        modules = nn.Sequential.forward(head, z.clone())
    assert shortcut.shape == (2, 1, 9, 13)
    torch.testing.assert_close(shortcut, modules, rtol=1e-5, atol=1e-5)
    # In training the batch statistics are used (and updated), not the folded running ones.
    head.train()
    torch.testing.assert_close(head(z), nn.Sequential.forward(head, z.clone()), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(head(z), shortcut, atol=1e-3)


def test_swiftnet_width_scales_encoder_and_decoder() -> None:
    small = cached_model(*VARIANTS[1])
    assert small.backbone.encoder.stage_channels == [16, 32, 64, 128]
    assert small.backbone.prelogit_channels == 32
    assert sum(p.numel() for p in small.encoder_parameters()) == resnet18_parameter_count(0.25)
    assert sum(p.numel() for p in small.parameters()) < 1_500_000
    assert build_backbone("swiftnet_rn18", width=0.25, decoder_channels=24).prelogit_channels == 24


def test_swiftnet_full_width_encoder_matches_torchvision_resnet18() -> None:
    encoder = cached_model(*VARIANTS[0]).backbone.encoder
    reference = {
        k: v.shape for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")
    }
    assert {k: v.shape for k, v in encoder.state_dict().items()} == reference
    count = sum(p.numel() for p in encoder.parameters())
    assert count == resnet18_parameter_count(1.0) == 11_176_512
    assert cached_model(*VARIANTS[0]).backbone.prelogit_channels == 128


def test_swiftnet_pretrained_loads_torchvision_imagenet_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    requested = []
    torch.manual_seed(4)
    imagenet = torchvision.models.resnet18()

    def fake_resnet18(weights: Any = None) -> nn.Module:
        requested.append(weights)
        return imagenet

    monkeypatch.setattr(torchvision.models, "resnet18", fake_resnet18)
    backbone = build_backbone("swiftnet_rn18", pretrained=True)
    assert requested == [torchvision.models.ResNet18_Weights.IMAGENET1K_V1]
    loaded = backbone.encoder.state_dict()
    for key, value in imagenet.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(loaded[key], value), key
    with pytest.raises(ValueError, match="width"):
        build_backbone("swiftnet_rn18", pretrained=True, width=0.5)


@pytest.mark.parametrize(
    ("backbone", "torchvision_builder", "weights"),
    [
        ("ldn121", "densenet121", torchvision.models.DenseNet121_Weights.IMAGENET1K_V1),
        ("ldn121_reference", "densenet121", torchvision.models.DenseNet121_Weights.IMAGENET1K_V1),
        ("deeplabv3plus_r50", "resnet50", torchvision.models.ResNet50_Weights.IMAGENET1K_V1),
        ("deeplabv3plus_r101", "resnet101", torchvision.models.ResNet101_Weights.IMAGENET1K_V1),
    ],
)
def test_torchvision_backbones_request_imagenet_weights_only_when_pretrained(
    monkeypatch: pytest.MonkeyPatch, backbone: str, torchvision_builder: str, weights: Any
) -> None:
    # ResNet-50 stands in for ResNet-101 (same stage channels) to keep the test cheap.
    stand_in = torchvision.models.densenet121 if backbone.startswith("ldn") else torchvision.models.resnet50
    requested = []

    def recording_builder(weights: Any = None, **kwargs: Any) -> nn.Module:
        requested.append((weights, kwargs))
        return stand_in(weights=None, **kwargs)

    monkeypatch.setattr(torchvision.models, torchvision_builder, recording_builder)
    build_backbone(backbone, pretrained=True)
    build_backbone(backbone)
    assert [w for w, _ in requested] == [weights, None]
    if backbone.startswith("deeplab"):
        assert all(kw == {"replace_stride_with_dilation": [False, False, True]} for _, kw in requested)


def test_probe_heads_follow_the_moose_layout() -> None:
    depth = 1
    spec = ArchitectureSpec("deeplabv3plus_r50", NUM_CLASSES, moose_probes=True, probe_depth=depth)
    model = build_model(spec)
    assert len(model.probes) == 4
    # 1x1 conv + BN, depth x (3x3 conv + BN), 1x1 classifier with bias; probe input 256 + 256 + 48.
    expected = 560 * 256 + 2 * 256 + depth * (9 * 256 * 256 + 2 * 256) + 256 * NUM_CLASSES + NUM_CLASSES
    assert [sum(p.numel() for p in probe.parameters()) for probe in model.probes] == [expected] * 4
    kernels = [m.kernel_size for m in model.probes[0].modules() if isinstance(m, nn.Conv2d)]
    assert kernels == [(1, 1), (3, 3), (1, 1)]


def test_probes_on_a_backbone_without_pyramid_branches_are_rejected() -> None:
    with pytest.raises(ValueError, match="MOoSe"):
        build_model(ArchitectureSpec("swiftnet_rn18", NUM_CLASSES, {"width": 0.25}, moose_probes=True))


def test_architecture_spec_round_trips_through_json() -> None:
    spec = ArchitectureSpec("swiftnet_rn18", 19, {"width": 0.25}, moose_probes=False, probe_depth=1)
    data = json.loads(json.dumps(spec.to_dict()))
    assert data == {
        "backbone": "swiftnet_rn18",
        "num_classes": 19,
        "backbone_kwargs": {"width": 0.25},
        "moose_probes": False,
        "probe_depth": 1,
    }
    assert ArchitectureSpec.from_dict(data) == spec


def test_architecture_spec_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="colour_space"):
        ArchitectureSpec.from_dict({"backbone": "ldn121", "num_classes": 19, "colour_space": "rgb"})
    with pytest.raises(ValueError, match="num_classes"):
        ArchitectureSpec.from_dict({"backbone": "ldn121"})
    with pytest.raises(ValueError, match="num_classes"):
        ArchitectureSpec("ldn121", 0)
    with pytest.raises(ValueError, match="swiftnet_rn18"):
        ArchitectureSpec("resnet9000", 19)
    kwargs = {"width": 0.25}
    spec = ArchitectureSpec("swiftnet_rn18", 19, kwargs)
    kwargs["width"] = 2.0
    assert spec.backbone_kwargs == {"width": 0.25}


def test_unknown_backbone_name_lists_valid_names() -> None:
    with pytest.raises(ValueError) as error:
        build_backbone("resnet9000")
    assert all(name in str(error.value) for name in BACKBONE_NAMES)
    assert {
        "swiftnet_rn18",
        "ldn121",
        "ldn121_reference",
        "deeplabv3plus_r50",
        "deeplabv3plus_r101",
        "deeplabv3plus_wrn38",
    } <= set(BACKBONE_NAMES)
