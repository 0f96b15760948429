"""Depth binning against a hand-made depth map."""

import math

import numpy as np
import pytest
import torch

from openset_perception.depth import (
    DepthBins,
    depth_bin_statistics,
    depth_from_disparity,
    depth_table_on_device,
    nearest_anomaly,
)
from openset_perception.kernels.depth_table import depth_table

NAN = math.nan


def test_bins_on_a_hand_made_map() -> None:
    depth = torch.tensor([[[1.0, 4.9, 5.0, 7.0], [12.0, 60.0, NAN, 0.0], [math.inf, -3.0, 9.0, 14.0]]])
    score = torch.tensor([[[0.0, 3.0, 1.0, 5.0], [2.0, 9.0, 9.0, 9.0], [9.0, 9.0, 0.5, 2.5]]])
    stats = depth_bin_statistics(score, depth, threshold=2.0, bins=DepthBins((0.0, 5.0, 10.0, 15.0)))[0]
    assert [s.range_m for s in stats] == [(0, 5), (5, 10), (10, 15), (15, math.inf)]
    near, mid, far, beyond = stats
    # 0-5 m: depths 1.0 (score 0) and 4.9 (score 3)
    assert (near.valid_pixels, near.anomalous_pixels, near.nearest_anomaly_m) == (2, 1, pytest.approx(4.9))
    assert near.mean_score == pytest.approx(1.5) and near.max_score == 3.0
    # 5-10 m: 5.0 (1), 7.0 (5), 9.0 (0.5); anomalous only 7.0
    assert (mid.valid_pixels, mid.anomalous_pixels, mid.nearest_anomaly_m) == (3, 1, 7.0)
    assert mid.anomalous_fraction == pytest.approx(1 / 3) and mid.mean_score == pytest.approx(6.5 / 3)
    # 10-15 m: 12 (2.0, at threshold -> anomalous) and 14 (2.5)
    assert (far.valid_pixels, far.anomalous_pixels, far.nearest_anomaly_m) == (2, 2, 12.0)
    assert (beyond.valid_pixels, beyond.anomalous_pixels, beyond.nearest_anomaly_m) == (1, 1, 60.0)
    # NaN, 0, inf and negative depth are excluded everywhere
    assert sum(s.valid_pixels for s in stats) == 8
    assert nearest_anomaly(stats) == pytest.approx(4.9)


def test_empty_bins_and_no_beyond_bin() -> None:
    depth = torch.full((2, 3, 3), 7.0)
    depth[1] = NAN
    score = torch.zeros(2, 3, 3)
    stats = depth_bin_statistics(score, depth, 1.0, DepthBins((0.0, 5.0, 10.0), beyond_last=False))
    assert len(stats) == 2 and len(stats[0]) == 2
    assert stats[0][0].valid_pixels == 0 and stats[0][0].mean_score is None
    assert stats[0][1].valid_pixels == 9 and stats[0][1].nearest_anomaly_m is None
    assert all(s.valid_pixels == 0 for s in stats[1])
    assert nearest_anomaly(stats[0]) is None


def test_vectorised_result_equals_a_pixel_loop() -> None:
    rng = np.random.default_rng(3)
    depth = rng.uniform(-5, 70, (3, 20, 30)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.1] = np.nan
    score = rng.normal(size=depth.shape).astype(np.float32)
    bins = DepthBins()
    stats = depth_bin_statistics(torch.from_numpy(score), torch.from_numpy(depth), 0.5, bins)
    for f in range(3):
        for b, (lo, hi) in enumerate(bins.ranges):
            sel = np.isfinite(depth[f]) & (depth[f] > 0) & (depth[f] >= lo) & (depth[f] < hi)
            anomalous = sel & (score[f] >= 0.5)
            assert stats[f][b].valid_pixels == sel.sum()
            assert stats[f][b].anomalous_pixels == anomalous.sum()
            if sel.any():
                assert stats[f][b].max_score == pytest.approx(score[f][sel].max())
                assert stats[f][b].mean_score == pytest.approx(score[f][sel].mean(), rel=1e-5)
            if anomalous.any():
                assert stats[f][b].nearest_anomaly_m == pytest.approx(depth[f][anomalous].min())


@pytest.mark.parametrize("bins", [DepthBins(), DepthBins((2.0, 3.5, 40.0), beyond_last=False)])
@pytest.mark.parametrize("threads", [1, 2])
def test_cpu_kernel_table_equals_the_tensor_table(bins: DepthBins, threads: int, monkeypatch) -> None:
    # Frames of 1500 pixels: the kernel's 1024-pixel chunks and the per-thread slices cross frames.
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    rng = np.random.default_rng(threads)
    depth = rng.uniform(-5, 70, (3, 30, 50)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.1] = np.nan
    depth[0, 0, :5] = [0.0, np.inf, -np.inf, 2.0, 40.0]
    score = rng.normal(size=depth.shape).astype(np.float32)
    kernel = depth_table(score.reshape(3, -1), depth.reshape(3, -1), bins.edges_m, bins.beyond_last, 0.5)
    tensors = depth_table_on_device(torch.from_numpy(score), torch.from_numpy(depth), 0.5, bins)
    assert kernel.shape == tensors.shape == (3, len(bins.ranges) + 1, 5)
    assert np.array_equal(kernel[..., [0, 1, 3, 4]], tensors[..., [0, 1, 3, 4]])
    np.testing.assert_allclose(kernel[..., 2], tensors[..., 2], rtol=1e-5, atol=1e-4)


def test_depth_from_disparity() -> None:
    disparity = np.array([[0.0, 10.0], [np.nan, -1.0]], dtype=np.float32)
    depth = depth_from_disparity(disparity, baseline_m=0.2, focal_px=2000.0)
    assert np.isnan(depth[0, 0]) and np.isnan(depth[1]).all()
    assert depth[0, 1] == pytest.approx(40.0)


@pytest.mark.parametrize("edges", [(5.0,), (0.0, 5.0, 5.0), (-1.0, 3.0), (0.0, math.inf)])
def test_bad_edges_rejected(edges) -> None:
    with pytest.raises(ValueError, match="edges"):
        DepthBins(edges)


def test_shape_mismatch_rejected() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        depth_bin_statistics(torch.zeros(1, 2, 2), torch.zeros(1, 2, 3), 0.0)
