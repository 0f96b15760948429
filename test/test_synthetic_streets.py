"""Procedural street scenes: determinism, geometry of depth, anomaly placement, negatives, writing."""

import time
from pathlib import Path

import numpy as np
import pytest

from openset_perception.data import Dataset, FolderDataset, validate_sample
from openset_perception.data.synthetic_streets import (
    ANOMALY_DEPTH_RANGE_M,
    ROAD,
    SIDEWALK,
    SKY,
    STREET_CLASSES,
    STREET_PALETTE,
    TERRAIN,
    UNKNOWN,
    SyntheticStreets,
    random_negative_patch,
    split_stream,
    write_synthetic_streets,
)

HEIGHT, WIDTH = 120, 200


def test_frames_are_deterministic_and_random_access() -> None:
    first = SyntheticStreets(4, seed=7, height=HEIGHT, width=WIDTH, anomalies=True)
    second = SyntheticStreets(4, seed=7, height=HEIGHT, width=WIDTH, anomalies=True)
    later, earlier = second[3], second[1]  # out-of-order access must not matter
    for ours, theirs in ((first[1], earlier), (first[3], later)):
        for field in ("image", "semantic", "anomaly", "depth"):
            np.testing.assert_array_equal(getattr(ours, field), getattr(theirs, field))
        assert ours.name == theirs.name
    other_seed = SyntheticStreets(4, seed=8, height=HEIGHT, width=WIDTH, anomalies=True)[1]
    assert not np.array_equal(first[1].image, other_seed.image)
    assert not np.array_equal(first[1].image, first[2].image)


def test_odd_size_shapes_dtypes_and_labels() -> None:
    dataset = SyntheticStreets(2, seed=1, height=241, width=321, anomalies=True)
    assert isinstance(dataset, Dataset)
    assert dataset.info.class_names == list(STREET_CLASSES) and len(STREET_PALETTE) == len(STREET_CLASSES)
    for index in range(len(dataset)):
        sample = dataset[index]
        validate_sample(sample, dataset.info)
        assert sample.image.shape == (241, 321, 3)
        assert set(np.unique(sample.semantic)) <= set(range(len(STREET_CLASSES) + 1))
        assert set(np.unique(sample.anomaly)) <= {0, 1}
        np.testing.assert_array_equal(np.isnan(sample.depth), sample.semantic == SKY)
        assert np.nanmin(sample.depth) > 0
    with pytest.raises(IndexError):
        dataset[2]


def test_ground_depth_matches_the_pinhole_model() -> None:
    dataset = SyntheticStreets(3, seed=11, height=HEIGHT, width=WIDTH)
    for index in range(len(dataset)):
        sample, camera = dataset[index], dataset.camera(index)
        assert camera.focal_px == pytest.approx(dataset.info.camera["focal_px"])
        assert 1.2 <= camera.height_m <= 1.8
        rows = np.broadcast_to(np.arange(HEIGHT, dtype=np.float64)[:, None], (HEIGHT, WIDTH))
        ground = np.isin(sample.semantic, [ROAD, SIDEWALK, TERRAIN])
        road = sample.semantic == ROAD
        assert road.sum() > 0.1 * road.size
        expected = camera.focal_px * camera.height_m / (rows[ground] - camera.horizon_row)
        np.testing.assert_allclose(sample.depth[ground], expected, rtol=1e-6)


def test_depth_increases_up_the_road() -> None:
    sample = SyntheticStreets(1, seed=4, height=HEIGHT, width=WIDTH)[0]
    checked = 0
    for column in range(WIDTH):
        road_rows = np.flatnonzero(sample.semantic[:, column] == ROAD)
        if road_rows.size > 1:
            assert np.all(np.diff(sample.depth[road_rows, column]) < 0)
            checked += 1
    assert checked > WIDTH // 2


def test_anomalies_stand_on_the_road_within_range() -> None:
    height, width = 240, 480
    with_anomalies = SyntheticStreets(6, seed=3, height=height, width=width, anomalies=True)
    without = SyntheticStreets(6, seed=3, height=height, width=width, anomalies=False)
    low, high = ANOMALY_DEPTH_RANGE_M
    objects = 0
    for index in range(len(with_anomalies)):
        sample, plain, camera = with_anomalies[index], without[index], with_anomalies.camera(index)
        anomaly = sample.anomaly == 1
        assert anomaly.any()
        np.testing.assert_array_equal(anomaly, sample.semantic == UNKNOWN)
        assert np.all((sample.depth[anomaly] >= low) & (sample.depth[anomaly] <= high))
        for depth in np.unique(sample.depth[anomaly]):  # each object is a vertical plane at its own depth
            cols = np.nonzero(anomaly & (sample.depth == depth))[1]
            span = slice(cols.min(), cols.max() + 1)
            # First image row whose ground lies in front of the object's ground contact.
            row = int(np.ceil(camera.horizon_row + camera.focal_px * camera.height_m / depth))
            assert row < height
            labels, depths = plain.semantic[row, span], plain.depth[row, span]
            # Road under the footprint, unless something standing nearer (not ground) hides it.
            hidden = ~np.isin(labels, [SIDEWALK, TERRAIN]) & (depths < depth)
            assert np.all((labels == ROAD) | hidden)
            objects += 1
    assert objects >= len(with_anomalies)


def test_anomalies_change_only_their_own_pixels() -> None:
    with_anomalies = SyntheticStreets(3, seed=5, height=HEIGHT, width=WIDTH, anomalies=True)
    without = SyntheticStreets(3, seed=5, height=HEIGHT, width=WIDTH, anomalies=False)
    for index in range(3):
        plain, anomalous = without[index], with_anomalies[index]
        assert not plain.anomaly.any() and not (plain.semantic == UNKNOWN).any()
        inlier = anomalous.anomaly == 0
        np.testing.assert_array_equal(plain.image[inlier], anomalous.image[inlier])
        np.testing.assert_array_equal(plain.semantic[inlier], anomalous.semantic[inlier])
        np.testing.assert_array_equal(plain.depth[inlier], anomalous.depth[inlier])
        behind = np.nan_to_num(plain.depth[~inlier], nan=np.inf)
        assert np.all(behind > anomalous.depth[~inlier])  # anomalies cover only what lies behind them


def test_classes_are_textured_not_flat_colours() -> None:
    sample = SyntheticStreets(1, seed=2, height=HEIGHT, width=WIDTH)[0]
    road_pixels = sample.image[sample.semantic == ROAD].astype(np.float32)
    assert road_pixels.std(axis=0).min() > 2.0
    assert len(np.unique(road_pixels, axis=0)) > 100


def test_negative_patches() -> None:
    for height, width in ((1, 1), (7, 300), (64, 48), (150, 150)):
        patch, mask = random_negative_patch(np.random.default_rng(height), height, width)
        assert patch.shape == (height, width, 3) and patch.dtype == np.uint8
        assert mask.shape == (height, width) and mask.dtype == bool and mask.any()
    fractions = [random_negative_patch(np.random.default_rng(seed), 64, 64)[1].mean() for seed in range(20)]
    assert min(fractions) > 0.1
    again = random_negative_patch(np.random.default_rng(0), 32, 40)
    np.testing.assert_array_equal(random_negative_patch(np.random.default_rng(0), 32, 40)[0], again[0])
    assert not np.array_equal(random_negative_patch(np.random.default_rng(1), 32, 40)[0], again[0])


def test_write_splits_round_trip(tmp_path: Path) -> None:
    written = write_synthetic_streets(tmp_path, {"train": 2, "test": 1}, seed=9, height=48, width=80)
    assert written == {"train": tmp_path / "train", "test": tmp_path / "test"}
    train, test = FolderDataset(tmp_path / "train"), FolderDataset(tmp_path / "test")
    assert len(train) == 2 and len(test) == 1
    assert train.info.class_names == list(STREET_CLASSES)
    assert not train[0].anomaly.any() and not train[1].anomaly.any()
    assert test[0].anomaly.any()
    assert not np.array_equal(train[0].image, test[0].image)  # splits are independent sequences
    reference = SyntheticStreets(1, seed=9, height=48, width=80, anomalies=True, stream=split_stream("test"))[
        0
    ]
    np.testing.assert_array_equal(test[0].image, reference.image)
    np.testing.assert_array_equal(test[0].semantic, reference.semantic)
    stored = ~np.isnan(test[0].depth)
    np.testing.assert_array_equal(stored, reference.depth <= 65.535)
    assert np.abs(test[0].depth[stored] - reference.depth[stored]).max() <= 0.001


def test_generation_is_vectorised_enough() -> None:
    dataset = SyntheticStreets(3, seed=0, height=256, width=512, anomalies=True)
    start = time.perf_counter()
    for index in range(3):
        dataset[index]
    # Well under 50 ms on an idle core; the loose bound only catches per-pixel Python loops.
    assert (time.perf_counter() - start) / 3 < 0.5
