"""Benchmark readers on fake copies of their layouts: label mappings, depth from disparity, order, errors."""

from __future__ import annotations

import re
import shutil
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pytest

from openset_perception.data import DatasetInfo, FolderDataset, Sample, write_folder_dataset
from openset_perception.data.cityscapes import CityscapesDataset
from openset_perception.data.fishyscapes import FishyscapesLostAndFound, FishyscapesStatic
from openset_perception.data.lostandfound import LostAndFoundDataset
from openset_perception.data.registry import DATASET_NAMES, open_dataset
from openset_perception.data.smiyc import SmiycAnomalyTrack, SmiycObstacleTrack
from openset_perception.data.streethazards import StreetHazardsDataset

if TYPE_CHECKING:
    from conftest_datasets import FakeDataset

# Imported by pytest (not here) so that its asserts are rewritten; test/conftest.py may register it too.
pytest_plugins = ["conftest_datasets"]

READER_CLASSES = {
    "cityscapes": CityscapesDataset,
    "lostandfound": LostAndFoundDataset,
    "fishyscapes_laf": FishyscapesLostAndFound,
    "fishyscapes_static": FishyscapesStatic,
    "smiyc_anomaly": SmiycAnomalyTrack,
    "smiyc_obstacle": SmiycObstacleTrack,
    "streethazards": StreetHazardsDataset,
}


def assert_samples_equal(actual: Sample, expected: Sample) -> None:
    assert actual.name == expected.name
    np.testing.assert_array_equal(actual.image, expected.image)
    for field in ("semantic", "anomaly"):
        expected_labels = getattr(expected, field)
        if expected_labels is None:
            assert getattr(actual, field) is None, field
        else:
            np.testing.assert_array_equal(getattr(actual, field), expected_labels, err_msg=field)
    if expected.depth is None:
        assert actual.depth is None
    else:
        assert actual.depth is not None and actual.depth.dtype == np.float32
        np.testing.assert_allclose(actual.depth, expected.depth, rtol=1e-6, equal_nan=True)


def assert_reads(dataset, fake: FakeDataset) -> None:
    assert len(dataset) == len(fake.samples)
    for index, expected in enumerate(fake.samples):
        assert_samples_equal(dataset[index], expected)


def test_cityscapes_maps_label_ids_to_train_ids_and_disparity_to_depth(fake_dataset) -> None:
    fake = fake_dataset("cityscapes")
    dataset = CityscapesDataset(fake.root, "val")
    assert [sample.name for sample in fake.samples] == [
        "aachen_000000_000019",
        "aachen_000001_000019",
        "zurich_000000_000019",
    ]
    assert_reads(dataset, fake)
    first = dataset[0]
    assert first.image.shape == (33, 65, 3) and first.anomaly is None
    assert first.semantic[0, :4].tolist() == [0, 255, 18, 255]  # label ids 7, 0, 33, 9
    baseline, fx = 0.209313, 2262.52  # the fake camera files
    assert np.isnan(first.depth[0, :2]).all()  # PNG 0 (invalid) and 1 (zero disparity)
    assert first.depth[0, 2] == pytest.approx(baseline * fx, rel=1e-6)  # PNG 257: disparity 1 px
    info = dataset.info
    assert (info.num_classes, info.class_names[0], info.class_names[-1]) == (19, "road", "bicycle")
    assert info.palette[13] == (0, 0, 142)  # car
    assert info.has_semantic and info.has_depth and not info.has_anomaly
    assert info.camera == pytest.approx({"focal_px": fx, "baseline_m": baseline})
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_cityscapes_prefers_train_id_files_and_reads_them_alone(fake_dataset) -> None:
    fake = fake_dataset("cityscapes", depth=False)
    second = fake.samples[1].name
    train_ids = np.full((33, 65), 5, np.uint8)
    city = second.split("_")[0]
    cv2.imwrite(str(fake.root / "gtFine" / "val" / city / f"{second}_gtFine_labelTrainIds.png"), train_ids)
    dataset = CityscapesDataset(fake.root)
    np.testing.assert_array_equal(dataset[1].semantic, train_ids)
    np.testing.assert_array_equal(dataset[0].semantic, fake.samples[0].semantic)
    assert dataset[0].depth is None and not dataset.info.has_depth and dataset.info.camera is None

    only_train_ids = fake_dataset("cityscapes", split="train", label_kind="labelTrainIds")
    assert_reads(CityscapesDataset(only_train_ids.root, "train"), only_train_ids)


def test_lostandfound_anomaly_labels_and_depth_with_mean_focal(fake_dataset) -> None:
    fake = fake_dataset("lostandfound")
    dataset = LostAndFoundDataset(fake.root)
    assert [sample.name for sample in fake.samples] == [
        "01_Hanns_Klemm_Str_45_000000_000100",
        "01_Hanns_Klemm_Str_45_000000_000200",
        "04_Maurener_Weg_8_000002_000140",
    ]
    assert_reads(dataset, fake)
    first = dataset[0]
    # label ids 0 (unlabelled), 1 (free space), 2 (crate), 31 (non-hazard), 43 (kid), 44 (undefined)
    assert first.anomaly[0, :6].tolist() == [255, 0, 1, 255, 1, 255]
    assert first.semantic is None
    baseline, focal = 0.21409, (2268.36 + 2225.54) / 2  # the fake camera files: baseline, (fx + fy) / 2
    assert np.isnan(first.depth[0, 0])  # zero disparity
    assert first.depth[0, 1] == pytest.approx(baseline * focal * 256, rel=1e-6)  # PNG 1
    assert first.depth[0, 2] == pytest.approx(baseline * focal * 256 / 257, rel=1e-6)  # PNG 257
    assert dataset.info.has_anomaly and dataset.info.has_depth and not dataset.info.has_semantic
    assert dataset.info.camera == pytest.approx({"focal_px": focal, "baseline_m": baseline})

    train_ids = fake_dataset("lostandfound", split="train", depth=False, label_kind="labelTrainIds")
    assert_reads(LostAndFoundDataset(train_ids.root, "train"), train_ids)


@pytest.mark.parametrize(
    "reader, subset", [(FishyscapesLostAndFound, "LostAndFound"), (FishyscapesStatic, "Static")]
)
def test_fishyscapes_reads_a_set_folder_or_its_parent(fake_dataset, reader, subset) -> None:
    name = "fishyscapes_laf" if subset == "LostAndFound" else "fishyscapes_static"
    flat = fake_dataset(name)
    assert [sample.name for sample in flat.samples] == sorted(sample.name for sample in flat.samples)
    assert_reads(reader(flat.root), flat)
    nested = fake_dataset(name, nested=True)
    assert_reads(reader(nested.root), nested)
    assert reader(nested.root).info.has_anomaly


def test_fishyscapes_errors_name_the_missing_path(fake_dataset) -> None:
    fake = fake_dataset("fishyscapes_laf", nested=True)
    with pytest.raises(FileNotFoundError, match=re.escape(str(fake.root / "original"))):
        FishyscapesStatic(fake.root)  # only LostAndFound/ is there
    label = fake.root / "LostAndFound" / "labels" / f"{fake.samples[1].name}.png"
    label.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(label))):
        FishyscapesLostAndFound(fake.root)


def test_anomaly_values_outside_0_1_255_are_rejected(fake_dataset) -> None:
    fake = fake_dataset("fishyscapes_static")
    cv2.imwrite(str(fake.root / "labels" / f"{fake.samples[0].name}.png"), np.full((33, 65), 2, np.uint8))
    with pytest.raises(ValueError, match="anomaly values must be 0, 1 or 255"):
        FishyscapesStatic(fake.root)[0]


@pytest.mark.parametrize(
    "name, reader", [("smiyc_anomaly", SmiycAnomalyTrack), ("smiyc_obstacle", SmiycObstacleTrack)]
)
def test_smiyc_reads_only_labelled_validation_frames(fake_dataset, name, reader) -> None:
    fake = fake_dataset(name)
    dataset = reader(fake.root)
    assert len(list((fake.root / "images").iterdir())) == 3 and len(dataset) == 2
    assert [sample.name for sample in fake.samples] == sorted(sample.name for sample in fake.samples)
    assert_reads(dataset, fake)


def test_smiyc_without_labels_is_an_error(fake_dataset) -> None:
    fake = fake_dataset("smiyc_anomaly")
    for label in (fake.root / "labels_masks").iterdir():
        label.unlink()
    with pytest.raises(FileNotFoundError, match="no labelled images"):
        SmiycAnomalyTrack(fake.root)
    (fake.root / "labels_masks").rmdir()
    with pytest.raises(FileNotFoundError, match=re.escape(str(fake.root / "labels_masks"))):
        SmiycAnomalyTrack(fake.root)


def test_streethazards_maps_values_to_twelve_classes_and_anomaly_to_k(fake_dataset) -> None:
    fake = fake_dataset("streethazards")
    dataset = StreetHazardsDataset(fake.root)
    assert [sample.name for sample in fake.samples] == ["t5_1000", "t5_300", "t6_100"]
    assert_reads(dataset, fake)
    first = dataset[0]
    # values 14 (anomaly), 4 (other), 1 (unlabeled = background class), 13 (traffic sign), 0, 5 (pedestrian)
    assert first.semantic[0, :6].tolist() == [12, 255, 0, 11, 255, 3]
    assert first.anomaly[0, :6].tolist() == [1, 255, 0, 0, 255, 0]
    info = dataset.info
    assert info.num_classes == 12 and info.class_names[11] == "traffic sign"
    assert info.has_semantic and info.has_anomaly


def test_streethazards_split_names_and_errors(fake_dataset, tmp_path) -> None:
    fake = fake_dataset("streethazards", split="val")
    assert_reads(StreetHazardsDataset(fake.root, "val"), fake)
    assert_reads(StreetHazardsDataset(fake.root, "validation"), fake)
    with pytest.raises(FileNotFoundError, match=re.escape(str(fake.root / "train" / "images" / "training"))):
        StreetHazardsDataset(fake.root, "train")
    with pytest.raises(ValueError, match="choose one of train, training, val, validation, test"):
        StreetHazardsDataset(fake.root, "valid")
    annotation = fake.root / "train" / "annotations" / "validation" / "t2" / "100.png"
    annotation.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(annotation))):
        StreetHazardsDataset(fake.root, "val")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nowhere"))):
        StreetHazardsDataset(tmp_path / "nowhere")


@pytest.mark.parametrize("reader", [CityscapesDataset, LostAndFoundDataset])
def test_stereo_layout_errors_name_the_expected_path(fake_dataset, tmp_path, reader) -> None:
    name = "cityscapes" if reader is CityscapesDataset else "lostandfound"
    label_folder, split = ("gtFine", "val") if reader is CityscapesDataset else ("gtCoarse", "test")
    fake = fake_dataset(name)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "missing"))):
        reader(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=re.escape(str(fake.root / "leftImg8bit" / "other"))):
        reader(fake.root, "other")

    frame = fake.samples[2].name
    group = next((fake.root / "leftImg8bit" / split).glob(f"*/{frame}_leftImg8bit.png")).parent.name
    disparity = fake.root / "disparity" / split / group / f"{frame}_disparity.png"
    disparity.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(disparity))):
        reader(fake.root, split)
    shutil.rmtree(fake.root / "camera")
    with pytest.raises(FileNotFoundError, match=re.escape(str(fake.root / "camera" / split))):
        reader(fake.root, split)
    shutil.rmtree(fake.root / "disparity")
    label = next((fake.root / label_folder / split / group).glob(f"{frame}_*.png"))
    label.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(label))):
        reader(fake.root, split)


def test_camera_file_without_baseline_is_reported(fake_dataset) -> None:
    fake = fake_dataset("cityscapes")
    camera = next((fake.root / "camera" / "val").glob("aachen/*_camera.json"))
    camera.write_text('{"intrinsic": {"fx": 1.0, "fy": 1.0}}')
    with pytest.raises(ValueError, match=r"extrinsic\.baseline"):
        CityscapesDataset(fake.root)


@pytest.mark.parametrize("name", sorted(READER_CLASSES))
def test_registry_opens_every_benchmark(fake_dataset, name) -> None:
    fake = fake_dataset(name)
    dataset = open_dataset(name, fake.root, fake.split)
    assert type(dataset) is READER_CLASSES[name]
    assert_reads(dataset, fake)


def test_registry_names_defaults_and_errors(fake_dataset, tmp_path) -> None:
    assert set(DATASET_NAMES) == {
        "cityscapes",
        "fishyscapes_laf",
        "fishyscapes_static",
        "smiyc_anomaly",
        "smiyc_obstacle",
        "streethazards",
        "lostandfound",
        "folder",
        "synthetic_streets",
    }
    with pytest.raises(ValueError, match="unknown dataset 'kitti'; choose one of ") as error:
        open_dataset("kitti", tmp_path)
    assert all(name in str(error.value) for name in DATASET_NAMES)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "absent"))):
        open_dataset("cityscapes", tmp_path / "absent")
    fishy = fake_dataset("fishyscapes_laf")
    with pytest.raises(ValueError, match="has no splits"):
        open_dataset("fishyscapes_laf", fishy.root, "val")
    # default splits: Cityscapes val, LostAndFound test, StreetHazards test
    assert len(open_dataset("cityscapes", fake_dataset("cityscapes").root)) == 3
    assert len(open_dataset("lostandfound", fake_dataset("lostandfound").root)) == 3
    assert len(open_dataset("streethazards", fake_dataset("streethazards").root)) == 3


def test_registry_synthetic_streets_reads_the_split_folder(tmp_path) -> None:
    info = DatasetInfo(class_names=["road", "car"], palette=[(128, 64, 128), (0, 0, 142)])
    image = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    for split, count in (("val", 2), ("test", 1)):
        samples = [Sample(image=image, name=f"{split}_{index}") for index in range(count)]
        write_folder_dataset(samples, tmp_path / split, info)
    val = open_dataset("synthetic_streets", tmp_path, "val")
    assert isinstance(val, FolderDataset) and [val[i].name for i in range(len(val))] == ["val_0", "val_1"]
    assert [open_dataset("synthetic_streets", tmp_path)[0].name] == ["test_0"]
    assert len(open_dataset("folder", tmp_path / "val")) == 2


def test_registry_synthetic_streets_explains_the_appended_split(tmp_path) -> None:
    # A user passing the split folder itself as the root gets told that the split is appended.
    (tmp_path / "test").mkdir()
    with pytest.raises(FileNotFoundError) as error:
        open_dataset("synthetic_streets", tmp_path / "test", "test")
    message = str(error.value)
    assert f"{tmp_path / 'test' / 'test'} does not exist" in message
    assert "the split is appended to the root" in message
    assert f"make-streets --out {tmp_path / 'test'}" in message


def test_evaluate_missing_streets_root_says_how_to_make_it(tmp_path, tiny_checkpoint, capsys) -> None:
    from openset_perception.cli.main import main

    root = tmp_path / "data" / "streets"
    argv = ["evaluate", "--checkpoint", str(tiny_checkpoint), "--dataset", "synthetic_streets"]
    assert main([*argv, "--root", str(root), "--split", "test"]) == 2
    assert f"openset-perception make-streets --out {root}" in capsys.readouterr().err
