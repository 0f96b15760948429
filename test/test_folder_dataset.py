"""FolderDataset / write_folder_dataset round trips, depth encoding, errors; Sample validation."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from openset_perception.data import (
    Dataset,
    DatasetInfo,
    FolderDataset,
    Sample,
    validate_sample,
    write_folder_dataset,
)
from openset_perception.data.folder import depth_to_millimetres, millimetres_to_depth

INFO = DatasetInfo(
    class_names=["road", "car", "sky"],
    palette=[(128, 64, 128), (0, 0, 142), (70, 130, 180)],
    camera={"focal_px": 1000.0, "height_m": 1.5},
)


def make_sample(rng: np.random.Generator, name: str, height: int = 13, width: int = 17) -> Sample:
    depth = rng.uniform(0.5, 60.0, (height, width)).astype(np.float32)
    depth[0, :4] = [np.nan, np.inf, -2.0, 0.0]
    depth[1, :2] = [70.0, 65.535]
    semantic = rng.integers(0, 4, (height, width)).astype(np.uint8)  # 3 = unknown (K + 1 labels)
    semantic[2, :3] = 255
    return Sample(
        image=rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        semantic=semantic,
        anomaly=rng.choice(np.array([0, 1, 255], np.uint8), (height, width)),
        depth=depth,
        name=name,
    )


def test_round_trip_is_exact_and_depth_within_a_millimetre(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    originals = [make_sample(rng, name) for name in ("b", "a", "c")]
    write_folder_dataset(iter(originals), tmp_path, INFO)
    dataset = FolderDataset(tmp_path)

    assert isinstance(dataset, Dataset)
    assert dataset.names == ["a", "b", "c"]
    assert dataset.info.class_names == INFO.class_names
    assert dataset.info.palette == INFO.palette
    assert dataset.info.camera == INFO.camera
    assert (dataset.info.has_semantic, dataset.info.has_anomaly, dataset.info.has_depth) == (True, True, True)
    by_name = {sample.name: sample for sample in originals}
    for index in range(len(dataset)):
        loaded = dataset[index]
        original = by_name[loaded.name]
        np.testing.assert_array_equal(loaded.image, original.image)
        np.testing.assert_array_equal(loaded.semantic, original.semantic)
        np.testing.assert_array_equal(loaded.anomaly, original.anomaly)
        assert loaded.depth is not None and loaded.depth.dtype == np.float32
        representable = np.isfinite(original.depth) & (original.depth > 0) & (original.depth <= 65.535)
        np.testing.assert_array_equal(np.isnan(loaded.depth), ~representable)
        assert np.abs(loaded.depth[representable] - original.depth[representable]).max() <= 0.001
    assert np.isnan(dataset[0].depth[1, 0])  # 70 m is beyond the uint16 range: invalid, not clipped
    assert dataset[0].depth[1, 1] == pytest.approx(65.535)


def test_images_are_rgb_on_disk(tmp_path: Path) -> None:
    image = np.zeros((4, 5, 3), np.uint8)
    image[..., 0] = 200  # pure red in RGB
    write_folder_dataset([Sample(image=image, name="red")], tmp_path, INFO)
    on_disk = cv2.imread(str(tmp_path / "images" / "red.png"), cv2.IMREAD_UNCHANGED)  # BGR
    assert on_disk[0, 0].tolist() == [0, 0, 200]


def test_jpg_images_are_read_as_rgb(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    bgr = np.zeros((8, 8, 3), np.uint8)
    bgr[..., 2] = 220  # red
    cv2.imwrite(str(tmp_path / "images" / "x.jpg"), bgr)
    sample = FolderDataset(tmp_path, class_names=["a"])[0]
    red, green, blue = sample.image[4, 4].astype(int)
    assert red > 180 and green < 40 and blue < 40


def test_missing_optional_folders_give_none(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    sample = make_sample(rng, "only_image")
    write_folder_dataset([Sample(image=sample.image, depth=sample.depth, name=sample.name)], tmp_path, INFO)
    dataset = FolderDataset(tmp_path)
    loaded = dataset[0]
    assert loaded.semantic is None and loaded.anomaly is None and loaded.depth is not None
    info = dataset.info
    assert (info.has_semantic, info.has_anomaly, info.has_depth) == (False, False, True)


def test_missing_root_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        FolderDataset(missing)


def test_missing_info_file_needs_class_names(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "x.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match=r"dataset\.yaml"):
        FolderDataset(tmp_path)
    dataset = FolderDataset(tmp_path, class_names=["a", "b"])
    assert dataset.info.class_names == ["a", "b"]
    assert len(set(dataset.info.palette)) == 2


def test_explicit_class_names_override_the_info_file(tmp_path: Path) -> None:
    write_folder_dataset([Sample(image=np.zeros((3, 3, 3), np.uint8), name="x")], tmp_path, INFO)
    assert FolderDataset(tmp_path, class_names=["only"]).info.class_names == ["only"]


def test_missing_annotation_names_the_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    write_folder_dataset([make_sample(rng, "a"), make_sample(rng, "b")], tmp_path, INFO)
    (tmp_path / "semantic" / "b.png").unlink()
    dataset = FolderDataset(tmp_path)
    dataset[0]
    with pytest.raises(FileNotFoundError, match=r"semantic.b\.png"):
        dataset[1]


def test_index_out_of_range(tmp_path: Path) -> None:
    write_folder_dataset([Sample(image=np.zeros((3, 3, 3), np.uint8), name="x")], tmp_path, INFO)
    dataset = FolderDataset(tmp_path)
    with pytest.raises(IndexError):
        dataset[1]
    assert [sample.name for sample in dataset] == ["x"]


def test_writer_rejects_inconsistent_fields_and_bad_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    full, other = make_sample(rng, "a"), make_sample(rng, "b")
    other.depth = None
    with pytest.raises(ValueError, match="fields"):
        write_folder_dataset([full, other], tmp_path / "mixed", INFO)
    with pytest.raises(ValueError, match="plain file name"):
        write_folder_dataset([make_sample(rng, "../escape")], tmp_path / "names", INFO)
    with pytest.raises(ValueError, match="duplicate"):
        write_folder_dataset([make_sample(rng, "a"), make_sample(rng, "a")], tmp_path / "dupes", INFO)


def test_depth_encoding_hand_cases() -> None:
    metres = np.array([1.0, 0.0004, 0.0006, 65.535, 65.5356, np.nan, np.inf, -1.0, 12.3454], np.float32)
    millimetres = depth_to_millimetres(metres)
    assert millimetres.dtype == np.uint16
    assert millimetres.tolist() == [1000, 0, 1, 65535, 0, 0, 0, 0, 12345]
    decoded = millimetres_to_depth(np.array([0, 1, 65535], np.uint16))
    assert np.isnan(decoded[0]) and decoded[1] == np.float32(0.001) and decoded[2] == np.float32(65.535)


def test_validate_sample_reports_the_problem() -> None:
    image = np.zeros((4, 5, 3), np.uint8)
    validate_sample(Sample(image=image, name="ok"))
    with pytest.raises(ValueError, match="HxWx3"):
        validate_sample(Sample(image=np.zeros((4, 5), np.uint8), name="gray"))
    with pytest.raises(ValueError, match="uint8"):
        validate_sample(Sample(image=image.astype(np.float32), name="float"))
    with pytest.raises(ValueError, match=r"semantic must have shape \(4, 5\)"):
        validate_sample(Sample(image=image, semantic=np.zeros((5, 4), np.uint8), name="t"))
    with pytest.raises(ValueError, match="depth must be float32"):
        validate_sample(Sample(image=image, depth=np.ones((4, 5), np.float64), name="d"))
    with pytest.raises(ValueError, match=r"found \[2\]"):
        validate_sample(Sample(image=image, anomaly=np.full((4, 5), 2, np.uint8), name="a"))
    with pytest.raises(ValueError, match=r"found \[9\]"):
        validate_sample(Sample(image=image, semantic=np.full((4, 5), 9, np.uint8), name="s"), INFO)
    validate_sample(Sample(image=image, semantic=np.full((4, 5), 3, np.uint8), name="unknown"), INFO)


def test_dataset_info_checks_palette() -> None:
    with pytest.raises(ValueError, match="palette has 1 colours"):
        DatasetInfo(class_names=["a", "b"], palette=[(1, 2, 3)])
    with pytest.raises(ValueError, match="RGB triple"):
        DatasetInfo(class_names=["a"], palette=[(1, 2, 300)])
