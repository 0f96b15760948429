"""One pass on a CPU from stride-f network outputs to full-resolution classes and anomaly score.

Upsampling the K logit maps to full resolution first, then reading them again for the argmax and
again for the score, moves 19 x 2 MP x 4 B = 160 MB through memory three times a frame; row blocks of
PyTorch operators keep it in cache but pay a dispatch and a pass per operator. This kernel computes,
for each output row, the bilinear interpolation of the two source rows it needs, the per-pixel class
maximum, its index and the score while the row is in the L1 cache, and writes only the two results.

Equal to upsampling with ``F.interpolate(mode="bilinear", align_corners=False)`` then
``max(dim=1)``: the interpolation is PyTorch's own arithmetic (source positions and weights in
float32, each pair of neighbours blended with one fused multiply-add), so the classes are the same
bit for bit. ``matches_pytorch`` checks that against PyTorch once per channel and thread count;
where PyTorch blends differently the caller falls back to PyTorch. Scores differ from PyTorch's by
float rounding only (exponential and logarithm are polynomials here, accurate to ~2e-6 relative).

Only what the node needs each frame runs here: power-of-two upsampling factors (the network's output
stride of a padded input) and the score methods in ``KERNEL_METHODS``; anything else stays in PyTorch.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
import torch
import torch.nn.functional as F

from openset_perception.kernels.threads import parallel_slices

KERNEL_METHODS = ("densehybrid", "generative", "discriminative", "max_logit", "energy", "msp", "entropy")
_METHOD_CODES = {name: code for code, name in enumerate(KERNEL_METHODS)}
_DENSEHYBRID, _GENERATIVE, _DISCRIMINATIVE, _MAX_LOGIT, _ENERGY, _MSP, _ENTROPY = range(len(KERNEL_METHODS))
# PyTorch upsamples outputs of height + width <= 128 with another kernel (and another rounding).
SMALL_OUTPUT_LIMIT = 128
_EXP_FLOOR = np.float32(-87.0)  # exp(-87) ~ 1.6e-38: the smallest normal float32 stays reachable


@numba.njit(inline="always", error_model="numpy")
def _blend(first: float, first_weight: float, second: float, second_weight: float) -> np.float32:
    """PyTorch's float32 bilinear blend: fma(first, first_weight, round(second * second_weight)).

    Emulated in float64: the product is exact there and the sum is rounded to float64, then to
    float32, which equals one rounding of the exact result except in double-rounding ties (about one
    value in 2^29); ``matches_pytorch`` and the tests compare with PyTorch bit for bit.
    """
    second_term = np.float32(second * second_weight)
    return np.float32(np.float64(first) * np.float64(first_weight) + np.float64(second_term))


@numba.njit(inline="always", error_model="numpy")
def _exp_into(exponents, out, scale_bits):
    """out = exp(exponents) in float32 for exponents <= 0 (clamped at -87), relative error < 2e-6.

    2^n 2^f with n = round(x log2 e): a degree-7 polynomial for 2^f and the float bits of 2^n, two
    loops without calls or branches that vectorise (libm's exp would run one value at a time).
    """
    f32 = np.float32
    scale = scale_bits.view(np.float32)
    for x in range(exponents.size):
        v = max(exponents[x], _EXP_FLOOR) * f32(1.4426950408889634)
        n = np.floor(v + f32(0.5))
        f = (v - n) * f32(0.6931471805599453)
        out[x] = f32(1.0) + f * (
            f32(1.0)
            + f
            * (
                f32(1 / 2)
                + f
                * (
                    f32(1 / 6)
                    + f * (f32(1 / 24) + f * (f32(1 / 120) + f * (f32(1 / 720) + f * f32(1 / 5040))))
                )
            )
        )
        scale_bits[x] = (np.int32(n) + np.int32(127)) << np.int32(23)
    for x in range(exponents.size):
        out[x] = out[x] * scale[x]


@numba.njit(inline="always", error_model="numpy")
def _log_near_one(t: float) -> float:
    """log(t) for t in [1, 2] as 2 atanh(z), z = (t - 1) / (t + 1) <= 1/3: 12 odd terms, error < 1e-13."""
    z = (t - 1.0) / (t + 1.0)
    q = z * z
    series = 1 / 23 + q * (1 / 25)
    series = 1 / 21 + q * series
    series = 1 / 19 + q * series
    series = 1 / 17 + q * series
    series = 1 / 15 + q * series
    series = 1 / 13 + q * series
    series = 1 / 11 + q * series
    series = 1 / 9 + q * series
    series = 1 / 7 + q * series
    series = 1 / 5 + q * series
    series = 1 / 3 + q * series
    series = 1.0 + q * series
    return 2.0 * z * series


@numba.njit(inline="always", error_model="numpy")
def _halve_while_above(t: float, log2: float, bits: int) -> tuple[float, float]:
    big = t >= 2.0**bits
    return (t * 2.0**-bits if big else t), (log2 + bits if big else log2)


@numba.njit(inline="always", error_model="numpy")
def _log_at_least_one(t: float) -> float:
    """log(t) for 1 <= t < 2^64 (a sum of exponentials with a largest term of 1), branch-free."""
    t, log2 = _halve_while_above(t, 0.0, 32)
    t, log2 = _halve_while_above(t, log2, 16)
    t, log2 = _halve_while_above(t, log2, 8)
    t, log2 = _halve_while_above(t, log2, 4)
    t, log2 = _halve_while_above(t, log2, 2)
    t, log2 = _halve_while_above(t, log2, 1)
    return log2 * math.log(2.0) + _log_near_one(t)


@numba.njit(inline="always", error_model="numpy")
def _log_sigmoid_of_negative_into(g, out, exponents, exps, scale_bits):
    """out = logsigmoid(-g) = min(-g, 0) - log1p(exp(-|g|)), PyTorch's stable form."""
    for x in range(g.size):
        exponents[x] = -abs(g[x])
    _exp_into(exponents, exps, scale_bits)
    for x in range(g.size):
        out[x] = min(-g[x], np.float32(0.0)) - _log_near_one(1.0 + exps[x])


@numba.njit(inline="always", error_model="numpy")
def _source_position(out_index: int, scale: np.float32, in_size: int):
    """Source index pair and weights of one output index, computed as PyTorch does in float32."""
    real = np.float32(scale * np.float32(np.float32(out_index) + np.float32(0.5))) - np.float32(0.5)
    real = max(real, np.float32(0.0))
    first = min(math.floor(real), in_size - 1)
    second_weight = min(max(np.float32(real - np.float32(first)), np.float32(0.0)), np.float32(1.0))
    second = first + (1 if first < in_size - 1 else 0)
    return first, second, np.float32(np.float32(1.0) - second_weight), second_weight


@numba.njit(inline="always", error_model="numpy")
def _blended_slot(logits, ood, image, source, keep, blended, blended_row, columns):
    """Slot of ``blended`` holding source row ``source`` blended horizontally; fills one if needed.

    ``keep``: a slot the current output row still needs (not overwritten), or -1. ``columns``: each
    output column's two source columns and their weights.
    """
    x_first, x_second, x_first_weight, x_second_weight = columns
    for slot in range(2):
        if blended_row[slot] == source:
            return slot
    # Without a slot to keep, refill the one of the upper row (rows only move down; empty slots hold -1).
    upper = 0 if blended_row[0] <= blended_row[1] else 1
    slot = 1 - keep if keep >= 0 else upper
    blended_row[slot] = source
    num_classes = logits.shape[1]
    for c in range(num_classes + 1):
        src = logits[image, c, source] if c < num_classes else ood[image, 0, source]
        for x in range(blended.shape[2]):
            blended[slot, c, x] = _blend(
                src[x_first[x]], x_first_weight[x], src[x_second[x]], x_second_weight[x]
            )
    return slot


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _rows_kernel(
    logits, ood, row_start, row_stop, out_height, out_width, crop_width, method, temperature, classes, score
):
    """Rows [row_start, row_stop) of the flattened (batch x crop rows) output."""
    _, num_classes, in_height, in_width = logits.shape
    crop_height = classes.shape[1]
    scale_y = np.float32(np.float32(in_height) / np.float32(out_height))
    scale_x = np.float32(np.float32(in_width) / np.float32(out_width))
    x_first = np.empty(crop_width, np.int64)
    x_second = np.empty(crop_width, np.int64)
    x_first_weight = np.empty(crop_width, np.float32)
    x_second_weight = np.empty(crop_width, np.float32)
    for x in range(crop_width):
        position = _source_position(x, scale_x, in_width)
        x_first[x], x_second[x], x_first_weight[x], x_second_weight[x] = position
    columns = (x_first, x_second, x_first_weight, x_second_weight)
    # Horizontally blended source rows, two at a time (the pair under the current output row).
    channels = num_classes + 1
    blended = np.empty((2, channels, crop_width), np.float32)
    blended_row = np.array([-1, -1], np.int64)
    blended_image = -1
    row = np.empty((num_classes, crop_width), np.float32)
    best = np.empty(crop_width, np.float32)
    best_index = np.empty(crop_width, np.int64)
    total = np.empty(crop_width, np.float64)
    weighted = np.empty(crop_width, np.float64)
    ood_row = np.empty(crop_width, np.float32)
    exponents = np.empty(crop_width, np.float32)
    exps = np.empty(crop_width, np.float32)
    scale_bits = np.empty(crop_width, np.int32)
    for flat in range(row_start, row_stop):
        image, y = flat // crop_height, flat % crop_height
        y_first, y_second, y_first_weight, y_second_weight = _source_position(y, scale_y, in_height)
        if image != blended_image:
            blended_row[:] = -1
            blended_image = image
        top = _blended_slot(logits, ood, image, y_first, -1, blended, blended_row, columns)
        bottom = _blended_slot(logits, ood, image, y_second, top, blended, blended_row, columns)
        for c in range(num_classes):
            for x in range(crop_width):
                row[c, x] = _blend(blended[top, c, x], y_first_weight, blended[bottom, c, x], y_second_weight)
        for x in range(crop_width):
            ood_row[x] = _blend(
                blended[top, num_classes, x], y_first_weight, blended[bottom, num_classes, x], y_second_weight
            )
        # Class maximum and its first index; NaN wins as in torch.max.
        for x in range(crop_width):
            best[x] = row[0, x]
            best_index[x] = 0
        for c in range(1, num_classes):
            for x in range(crop_width):
                v = row[c, x]
                b = best[x]
                take = v > b or (v != v and b == b)
                best[x] = v if take else b
                best_index[x] = c if take else best_index[x]
        for x in range(crop_width):
            classes[image, y, x] = best_index[x]
        out = score[image, y]
        if method == _DISCRIMINATIVE:
            _log_sigmoid_of_negative_into(ood_row, out, exponents, exps, scale_bits)
            continue
        if method == _MAX_LOGIT:
            for x in range(crop_width):
                out[x] = -best[x]
            continue
        finite = True
        for x in range(crop_width):
            finite = finite and math.isfinite(best[x])
        scaled = method in (_ENERGY, _MSP, _ENTROPY)
        t = np.float32(1.0 / temperature) if scaled else np.float32(1.0)
        if finite:
            for x in range(crop_width):
                total[x] = 0.0
                weighted[x] = 0.0
            for c in range(num_classes):
                for x in range(crop_width):
                    exponents[x] = (row[c, x] - best[x]) * t
                _exp_into(exponents, exps, scale_bits)
                for x in range(crop_width):
                    total[x] += exps[x]
                if method == _ENTROPY:
                    for x in range(crop_width):
                        weighted[x] += exps[x] * exponents[x]
        else:
            # A row with an infinite or NaN maximum: IEEE arithmetic gives PyTorch's inf / NaN results.
            for x in range(crop_width):
                shift = best[x] if math.isfinite(best[x]) else np.float32(0.0)
                s = 0.0
                w = 0.0
                for c in range(num_classes):
                    d = (np.float64(row[c, x]) - shift) * t
                    e = math.exp(d)
                    s += e
                    w += e * d
                total[x] = s
                weighted[x] = w
                best[x] = shift
        if finite:
            for x in range(crop_width):
                total[x] = _log_at_least_one(total[x])  # now log S
        else:
            for x in range(crop_width):
                total[x] = (
                    math.log(total[x]) if total[x] > 0.0 else (-math.inf if total[x] == 0.0 else math.nan)
                )
        # One loop per method, so that each vectorises.
        if method == _DENSEHYBRID:
            _log_sigmoid_of_negative_into(ood_row, out, exponents, exps, scale_bits)
            for x in range(crop_width):
                out[x] = out[x] - (total[x] + best[x])
        elif method == _GENERATIVE:
            for x in range(crop_width):
                out[x] = -(total[x] + best[x])
        elif method == _ENERGY:
            for x in range(crop_width):
                out[x] = -temperature * (total[x] + best[x] * t)
        elif method == _MSP:
            for x in range(crop_width):
                out[x] = -math.exp(-total[x])
        else:  # entropy of softmax(z / T): log S - sum(e * d) / S
            for x in range(crop_width):
                out[x] = total[x] - weighted[x] * math.exp(-total[x])


def supports(logits: torch.Tensor, ood_logit: torch.Tensor, size: tuple[int, int], method: str) -> bool:
    """Whether the kernel computes this case (else the caller upsamples with PyTorch)."""
    in_height, in_width = logits.shape[-2:]
    height, width = size
    factor = height // in_height if in_height else 0
    return (
        method in KERNEL_METHODS
        and logits.device.type == "cpu"
        and ood_logit.device.type == "cpu"
        and logits.dim() == 4
        and ood_logit.shape[1] == 1
        and logits.dtype == torch.float32
        and ood_logit.dtype == torch.float32
        and factor >= 1
        and factor & (factor - 1) == 0
        and (height, width) == (factor * in_height, factor * in_width)
        and height + width > SMALL_OUTPUT_LIMIT
        and not (torch.is_grad_enabled() and (logits.requires_grad or ood_logit.requires_grad))
        and matches_pytorch(logits.shape[1], torch.get_num_threads())
        and matches_pytorch(1, torch.get_num_threads())
    )


def upsampled_classes_and_score(
    logits: torch.Tensor,
    ood_logit: torch.Tensor,
    size: tuple[int, int],
    crop: tuple[int, int],
    method: str,
    temperature: float = 1.0,
    classes_dtype: torch.dtype = torch.int64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,H',W') classes and float32 score of the (B,K,h,w) maps upsampled to ``size``, cropped.

    ``classes_dtype``: int64 or, for fewer than 256 classes, uint8 (an eighth of the memory to write).
    Call only where ``supports`` is true.
    """
    logits_np = logits.detach().contiguous().numpy()
    ood_np = ood_logit.detach().contiguous().numpy()
    batch = logits_np.shape[0]
    crop_height, crop_width = crop
    classes = np.empty(
        (batch, crop_height, crop_width), np.uint8 if classes_dtype == torch.uint8 else np.int64
    )
    score = np.empty((batch, crop_height, crop_width), np.float32)
    code = _METHOD_CODES[method]

    def rows(start: int, stop: int) -> None:
        _rows_kernel(
            logits_np, ood_np, start, stop, *size, crop_width, code, float(temperature), classes, score
        )

    parallel_slices(rows, batch * crop_height)
    return torch.from_numpy(classes), torch.from_numpy(score)


@functools.cache
def matches_pytorch(channels: int, threads: int) -> bool:
    """Whether the kernel's bilinear blend equals PyTorch's here for maps of ``channels`` channels.

    PyTorch's choice of kernel depends on the build, the CPU and the call (on one thread, 3-channel
    maps take an image kernel that rounds differently), so the answer is probed once per channel
    count and thread count on a small map, the same way as the real call.
    """
    generator = torch.Generator().manual_seed(channels)
    logits = torch.randn((1, channels, 9, 37), generator=generator) * 7
    ood = torch.zeros((1, 1, 9, 37))
    size = (36, 148)  # height + width > 128: PyTorch's general bilinear kernel, the one 2 MP maps take
    expected = F.interpolate(logits, size=size, mode="bilinear", align_corners=False).max(dim=1)
    # max_logit's score is minus the upsampled maximum itself: it checks the blend bit for bit.
    classes, score = upsampled_classes_and_score(logits, ood, size, size, "max_logit")
    return torch.equal(classes, expected.indices) and torch.equal(score, -expected.values)
