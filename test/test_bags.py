"""make-bag / eval-bag / eval-live core: bags built here give the numbers dataset evaluation gives."""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import make_tiny_card, make_tiny_model
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

from openset_perception.bags import topics
from openset_perception.bags.evaluate import evaluate_bag
from openset_perception.bags.frames import ReadStatistics, read_frames
from openset_perception.bags.live import LiveEvaluation
from openset_perception.bags.pairing import Discarded, StampPairer
from openset_perception.bags.reader import BagReader
from openset_perception.bags.writer import (
    START_STAMP_NS,
    BagWriter,
    typestore,
    write_dataset_bag,
    write_sample,
)
from openset_perception.checkpoint import save_checkpoint
from openset_perception.cli.eval_bag import EXIT_DAMAGED_BAG
from openset_perception.cli.main import main
from openset_perception.data import (
    STREET_CLASSES,
    STREET_PALETTE,
    DatasetInfo,
    FolderDataset,
    Sample,
    SyntheticStreets,
    write_folder_dataset,
)
from openset_perception.engine import Segmenter
from openset_perception.evaluation.accumulate import EvaluationAccumulator
from openset_perception.evaluation.evaluate import evaluate_dataset
from openset_perception.evaluation.report import jsonable
from openset_perception.image_codec import image_to_numpy, numpy_to_image, rosbags_factories
from openset_perception.metrics import DEFAULT_DISTANCE_EDGES_M
from openset_perception.runtime.outputs import IMAGE_OUTPUT_ENCODINGS

FRAMES, HEIGHT, WIDTH = 10, 64, 96
STEP_NS = 100_000_000  # make-bag's default 10 Hz
METRIC_SECTIONS = ("anomaly", "segmentation", "per_distance")
COUNTS = ("evaluated", "with_semantic_gt", "with_anomaly_gt", "with_depth", "skipped")


class ListDataset:
    """Samples held in memory, to give evaluate_dataset exactly the frames a test wrote to a bag."""

    def __init__(self, samples: Sequence[Sample], info: DatasetInfo) -> None:
        self.samples = list(samples)
        self.info = info

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]


def assert_close(actual: object, expected: object, where: str = "metrics") -> None:
    """Equal structure; floats equal to 1e-9."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), where
        for key in expected:
            assert_close(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_close(a, e, f"{where}[{index}]")
    elif isinstance(expected, float):
        assert isinstance(actual, float) and math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-9), where
    else:
        assert actual == expected, where


def assert_same_metrics(bag_metrics: dict, dataset_metrics: dict) -> None:
    for section in METRIC_SECTIONS:
        assert_close(bag_metrics[section], dataset_metrics[section], section)
    for key in COUNTS:
        assert bag_metrics["frames"][key] == dataset_metrics["frames"][key], key


@pytest.fixture(scope="module")
def streets() -> ListDataset:
    dataset = SyntheticStreets(FRAMES, seed=3, height=HEIGHT, width=WIDTH, anomalies=True)
    return ListDataset([dataset[i] for i in range(FRAMES)], dataset.info)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, streets: ListDataset) -> Path:
    """The tiny model on the street classes, thresholded inside its score range so open-set maps hold
    both known and unknown pixels."""
    card = make_tiny_card(class_names=list(STREET_CLASSES), palette=STREET_PALETTE)
    model = make_tiny_model(card)
    scores = Segmenter(model, card, device="cpu").segment([streets[0].image]).anomaly_score
    card.threshold = float(np.quantile(scores, 0.8))
    path = tmp_path_factory.mktemp("bag_checkpoint") / "streets_tiny.safetensors"
    save_checkpoint(path, model, card)
    return path


@pytest.fixture(scope="module")
def segmenter(checkpoint: Path) -> Segmenter:
    return Segmenter.from_checkpoint(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def folder_dataset(tmp_path_factory: pytest.TempPathFactory, streets: ListDataset) -> Path:
    return write_folder_dataset(streets.samples, tmp_path_factory.mktemp("streets_folder"), streets.info)


@pytest.fixture(scope="module")
def folder_metrics(
    segmenter: Segmenter, folder_dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    out = tmp_path_factory.mktemp("folder_eval")
    return evaluate_dataset(
        segmenter, FolderDataset(folder_dataset), out, batch_size=2, mode="exact", progress=False
    )


def _evaluate(segmenter: Segmenter, bag: Path, out: Path, **kwargs) -> dict:
    return evaluate_bag(segmenter, bag, out, mode="exact", progress=False, **kwargs)


def _storage_file(bag: Path) -> Path:
    return next(file for file in bag.iterdir() if file.suffix in (".mcap", ".db3"))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_eval_bag_equals_dataset_evaluation_and_writes_node_outputs(
    storage: str,
    checkpoint: Path,
    segmenter: Segmenter,
    folder_dataset: Path,
    folder_metrics: dict,
    tmp_path: Path,
) -> None:
    bag, out = tmp_path / "bag", tmp_path / "eval"
    make = ["make-bag", "--dataset", "folder", "--root", str(folder_dataset), "--out", str(bag)]
    assert main([*make, "--format", storage, "--no-progress"]) == 0
    evaluate = ["eval-bag", str(bag), "--checkpoint", str(checkpoint), "--out", str(out), "--exact"]
    assert main([*evaluate, "--batch-size", "2", "--device", "cpu", "--write-outputs", "--no-progress"]) == 0

    metrics = json.loads((out / "metrics.json").read_text())
    assert_same_metrics(metrics, folder_metrics)
    assert metrics["frames"]["evaluated"] == FRAMES and metrics["frames"]["skipped"] == 0
    assert metrics["bag"]["storage"] == storage and metrics["bag"]["cameras"] == {"camera": "/camera/image"}
    assert metrics["latency_ms"]["overhead: decode"]["calls"] == FRAMES
    assert metrics["latency_ms"]["total"]["calls"] == FRAMES // 2
    assert "## Bag" in (out / "report.md").read_text()

    # The output bag: every node output of every frame, with the input's header and bag time.
    dataset = FolderDataset(folder_dataset)
    engine = segmenter.segment(
        [dataset[0].image, dataset[1].image], depth=[dataset[0].depth, dataset[1].depth]
    )
    store = typestore()
    stamps: dict[str, list[int]] = {}
    scores = []
    with BagReader(out / "outputs") as reader:
        for raw in reader.messages():
            message = store.deserialize_cdr(raw.data, raw.msgtype)
            assert message.header.frame_id == "camera_optical_frame"
            header_stamp = message.header.stamp.sec * 10**9 + message.header.stamp.nanosec
            assert header_stamp == raw.log_time_ns
            stamps.setdefault(raw.topic, []).append(header_stamp)
            if raw.topic == "/camera/anomaly_score":
                scores.append(image_to_numpy(message))
    input_stamps = [START_STAMP_NS + index * STEP_NS for index in range(FRAMES)]
    output_topics = {f"/camera/{name}" for name in [*IMAGE_OUTPUT_ENCODINGS, "depth_report"]}
    assert stamps == {topic: input_stamps for topic in output_topics}
    np.testing.assert_array_equal(scores[0], engine.anomaly_score[0])
    np.testing.assert_array_equal(scores[1], engine.anomaly_score[1])


def _jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    assert ok
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_compressed_images_give_the_metrics_of_their_decoded_frames(
    segmenter: Segmenter, streets: ListDataset, tmp_path: Path
) -> None:
    raw_bag, jpeg_bag = tmp_path / "raw", tmp_path / "jpeg"
    write_dataset_bag(streets, raw_bag, progress=False)
    write_dataset_bag(streets, jpeg_bag, compressed=True, jpeg_quality=90, progress=False)
    raw = _evaluate(segmenter, raw_bag, tmp_path / "raw_eval")
    jpeg = _evaluate(segmenter, jpeg_bag, tmp_path / "jpeg_eval")

    decoded = [
        Sample(_jpeg_round_trip(s.image, 90), s.semantic, s.anomaly, s.depth, s.name) for s in streets.samples
    ]
    reference = evaluate_dataset(
        segmenter, ListDataset(decoded, streets.info), tmp_path / "ref", mode="exact", progress=False
    )
    assert jpeg["bag"]["cameras"] == {"camera": "/camera/image/compressed"}
    assert_same_metrics(jpeg, reference)
    assert_same_metrics(
        raw, evaluate_dataset(segmenter, streets, tmp_path / "raw_ref", mode="exact", progress=False)
    )
    for key in ("ap", "auroc", "fpr95"):
        assert abs(jpeg["anomaly"][key] - raw["anomaly"][key]) < 0.1, key
    assert abs(jpeg["segmentation"]["miou"] - raw["segmentation"]["miou"]) < 0.05


def test_sparse_depth_and_ground_truth(segmenter: Segmenter, streets: ListDataset, tmp_path: Path) -> None:
    """Depth missing on frames 2 and 5, ground truth only on every 5th frame (0 and 5)."""
    sparse = []
    for index, sample in enumerate(streets.samples):
        has_gt = index % 5 == 0
        sparse.append(
            Sample(
                sample.image,
                sample.semantic if has_gt else None,
                sample.anomaly if has_gt else None,
                None if index in (2, 5) else sample.depth,
                sample.name,
            )
        )
    bag = tmp_path / "bag"
    write_dataset_bag(ListDataset(sparse, streets.info), bag, storage="sqlite3", progress=False)
    metrics = _evaluate(segmenter, bag, tmp_path / "eval", batch_size=3)

    frames = metrics["frames"]
    assert (frames["evaluated"], frames["with_depth"], frames["with_anomaly_gt"], frames["skipped"]) == (
        10,
        8,
        2,
        0,
    )
    labelled = [(s.anomaly != 255).sum() for s in sparse if s.anomaly is not None]
    anomaly = metrics["anomaly"]
    assert anomaly["n_pos"] + anomaly["n_neg"] == sum(labelled)
    # Only frame 0 has both ground truth and depth: it alone fills the distance bins.
    first, edges = sparse[0], DEFAULT_DISTANCE_EDGES_M
    in_range = (first.anomaly != 255) & (first.depth >= edges[0]) & (first.depth < edges[-1])
    assert sum(entry["n_pos"] + entry["n_neg"] for entry in metrics["per_distance"]) == in_range.sum()
    reference = evaluate_dataset(
        segmenter,
        ListDataset(sparse, streets.info),
        tmp_path / "ref",
        batch_size=3,
        mode="exact",
        progress=False,
    )
    assert_same_metrics(metrics, reference)


def test_cameras_are_paired_separately_and_selectable(
    segmenter: Segmenter, streets: ListDataset, tmp_path: Path
) -> None:
    """Two cameras of different sizes in one bag; the rear one's messages come 20 ms after the front's."""
    rear = SyntheticStreets(4, seed=9, height=48, width=64, anomalies=True)
    rear_samples = [rear[i] for i in range(4)]
    bag = tmp_path / "bag"
    with BagWriter(bag) as writer:
        for index in range(4):
            stamp = START_STAMP_NS + index * STEP_NS
            write_sample(writer, streets[index], "front", stamp)
            write_sample(writer, rear_samples[index], "rear", stamp + 20_000_000)
    both = _evaluate(segmenter, bag, tmp_path / "both", batch_size=2)
    only_rear = _evaluate(segmenter, bag, tmp_path / "rear", cameras=["rear"])

    assert both["bag"]["cameras"] == {"front": "/front/image", "rear": "/rear/image"}
    reference = ListDataset([*streets.samples[:4], *rear_samples], streets.info)
    assert_same_metrics(
        both, evaluate_dataset(segmenter, reference, tmp_path / "ref", mode="exact", progress=False)
    )
    rear_reference = ListDataset(rear_samples, streets.info)
    expected = evaluate_dataset(
        segmenter, rear_reference, tmp_path / "rear_ref", mode="exact", progress=False
    )
    assert_same_metrics(only_rear, expected)
    assert only_rear["bag"]["cameras"] == {"rear": "/rear/image"}


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_bag_is_evaluated_up_to_the_damage(
    storage: str, checkpoint: Path, streets: ListDataset, tmp_path: Path
) -> None:
    bag = tmp_path / "bag"
    write_dataset_bag(streets, bag, storage=storage, progress=False)
    storage_file = _storage_file(bag)
    with storage_file.open("r+b") as stream:
        stream.truncate(storage_file.stat().st_size // 2)
    out = tmp_path / "eval"
    evaluate = ["eval-bag", str(bag), "--checkpoint", str(checkpoint), "--out", str(out), "--exact"]
    assert main([*evaluate, "--device", "cpu", "--no-progress"]) == EXIT_DAMAGED_BAG
    metrics = json.loads((out / "metrics.json").read_text())

    frames, problems = metrics["frames"], metrics["bag"]["problems"]
    with_gt = frames["with_anomaly_gt"]
    assert 0 < with_gt < FRAMES and frames["evaluated"] in (with_gt, with_gt + 1)
    assert frames["evaluated"] + frames["skipped: unreadable (bag damaged)"] == FRAMES
    assert problems and ("truncated" in problems[-1] or "SQLite cannot read further" in problems[-1])
    # The frames that got ground truth are the first ones: their pixels, counted here, are the metrics'.
    labels = [s.anomaly for s in streets.samples[:with_gt]]
    assert metrics["anomaly"]["n_pos"] == sum(int((a == 1).sum()) for a in labels)
    assert metrics["anomaly"]["n_neg"] == sum(int((a == 0).sum()) for a in labels)
    assert "unreadable (bag damaged)" in (out / "report.md").read_text()


def _small_bag(
    path: Path, storage: StoragePlugin, compress: bool, count: int = 40
) -> list[tuple[int, bytes]]:
    """``count`` 30 kB Images on one topic; returns (bag time, serialised message) as written."""
    store = typestore()
    factories = rosbags_factories(store)
    written = []
    rng = np.random.default_rng(0)
    writer = Writer(path, version=8, storage_plugin=storage)
    if compress:
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    with writer:
        connection = writer.add_connection("/cam/image", topics.IMAGE, typestore=store)
        for index in range(count):
            pixels = rng.integers(0, 256, (64, 160, 3), dtype=np.uint8)
            message = numpy_to_image(
                pixels, "rgb8", factories.header(index * STEP_NS), msg_factory=factories.image
            )
            data = store.serialize_cdr(message, topics.IMAGE)
            writer.write(connection, index * STEP_NS, data)
            written.append((index * STEP_NS, bytes(data)))
    return written


@pytest.mark.parametrize(
    ("storage", "compress"),
    [(StoragePlugin.MCAP, False), (StoragePlugin.MCAP, True), (StoragePlugin.SQLITE3, False)],
)
def test_reader_salvages_the_intact_front_of_a_cut_file(
    storage: StoragePlugin, compress: bool, tmp_path: Path
) -> None:
    bag = tmp_path / "bag"
    written = _small_bag(bag, storage, compress)
    with BagReader(bag) as reader:
        assert [(m.log_time_ns, bytes(m.data)) for m in reader.messages()] == written
        assert reader.problems == []
    storage_file = _storage_file(bag)
    with storage_file.open("r+b") as stream:
        stream.truncate(int(storage_file.stat().st_size * 0.6))
    with BagReader(bag) as reader:
        assert reader.topics["/cam/image"].count == len(written)
        salvaged = [(m.log_time_ns, bytes(m.data)) for m in reader.messages()]
        assert reader.problems
    assert 0 < len(salvaged) < len(written)
    assert salvaged == written[: len(salvaged)]


def test_record_by_record_reading_keeps_the_first_frames_depth_and_ground_truth(
    streets: ListDataset, tmp_path: Path
) -> None:
    """Without metadata.yaml a cut file's topics are met one by one; the first image comes before its
    depth and ground truth, which must still pair with it."""
    bag = tmp_path / "bag"
    write_dataset_bag(streets, bag, progress=False)
    (bag / "metadata.yaml").unlink()
    storage_file = _storage_file(bag)
    with storage_file.open("r+b") as stream:
        stream.truncate(int(storage_file.stat().st_size * 0.7))
    statistics = ReadStatistics()
    with BagReader(bag) as reader:
        assert reader.topics == {}  # nothing announced: every route is found on first sight
        frames = list(read_frames(reader, statistics))
        assert reader.problems
    assert 1 < len(frames) < FRAMES
    # The last frame read may have lost its streams to the cut; every earlier one has all of them.
    for frame, sample in zip(frames[:-1], streets.samples, strict=False):
        assert frame.depth is not None and frame.gt_anomaly is not None and frame.gt_semantic is not None
        assert np.array_equal(image_to_numpy(frame.gt_semantic), sample.semantic)
    assert statistics.ground_truth_without_image == {}


@pytest.mark.parametrize("cut_bytes", [1, 8, 12, 28])
def test_an_mcap_file_cut_just_before_its_end_is_damaged(
    cut_bytes: int, streets: ListDataset, tmp_path: Path
) -> None:
    """The closing magic (8 bytes) and the footer (29) hold no message, but a cut there is damage."""
    bag = tmp_path / "bag"
    write_dataset_bag(streets, bag, max_frames=3, progress=False)
    storage_file = _storage_file(bag)
    with storage_file.open("r+b") as stream:
        stream.truncate(storage_file.stat().st_size - cut_bytes)
    with BagReader(storage_file) as reader:
        assert len([m for m in reader.messages() if m.topic == "/camera/image"]) == 3
        assert reader.problems and "truncated" in reader.problems[-1]


def _first_chunk(data: bytes) -> tuple[int, int, bytes]:
    """(file offset of the stored CRC, the CRC, the chunk's records) of an uncompressed first chunk."""
    offset = 8 + 9 + struct.unpack_from("<Q", data, 9)[0]  # magic, then the header record
    assert data[offset] == 0x06  # a chunk record
    body = offset + 9
    crc = struct.unpack_from("<I", data, body + 24)[0]
    (compression_length,) = struct.unpack_from("<I", data, body + 28)
    assert compression_length == 0  # make-bag writes uncompressed chunks
    (records_length,) = struct.unpack_from("<Q", data, body + 32)
    return body + 24, crc, data[body + 40 : body + 40 + records_length]


def test_make_bag_writes_chunk_crcs_and_eval_bag_reports_a_damaged_payload(
    checkpoint: Path, streets: ListDataset, tmp_path: Path
) -> None:
    bag = tmp_path / "bag"
    write_dataset_bag(streets, bag, max_frames=3, progress=False)
    storage_file = _storage_file(bag)
    data = bytearray(storage_file.read_bytes())
    _, crc, records = _first_chunk(bytes(data))
    assert crc != 0 and crc == zlib.crc32(records)

    evaluate = ["eval-bag", str(bag), "--checkpoint", str(checkpoint), "--device", "cpu", "--no-progress"]
    assert main([*evaluate, "--out", str(tmp_path / "intact")]) == 0
    crc_offset = _first_chunk(bytes(data))[0]
    data[crc_offset + 16 + len(records) // 2] ^= 0x10  # one bit of a message inside the chunk
    storage_file.write_bytes(bytes(data))
    out = tmp_path / "damaged"
    assert main([*evaluate, "--out", str(out)]) == EXIT_DAMAGED_BAG
    problems = json.loads((out / "metrics.json").read_text())["bag"]["problems"]
    assert any("checksum" in text for text in problems)
    assert (out / "report.md").is_file()


def test_pairer_hand_computed() -> None:
    pairer = StampPairer("image", ["depth"], slop_ns=10, queue_size=3)
    pairer.add("image", 100, "i100")
    pairer.add("depth", 95, "d95")
    pairer.add("depth", 103, "d103")
    assert pairer.pop_ready() == []  # depth has not passed 110 yet: a nearer partner may still come
    pairer.add("depth", 111, "d111")
    (frame,) = pairer.pop_ready()
    assert (frame.stamp_ns, frame.messages) == (100, {"image": "i100", "depth": "d103"})
    assert pairer.discarded == []  # d95 could still pair with an image stamped up to 105
    for stamp in (200, 300, 400, 500):  # depth fell silent: the queue bound releases the oldest
        pairer.add("image", stamp, f"i{stamp}")
    (frame,) = pairer.pop_ready()
    assert (frame.stamp_ns, frame.messages) == (200, {"image": "i200"})
    assert pairer.discarded == [Discarded("depth", 95), Discarded("depth", 111)]  # too old for 200 on
    pairer.add("gt", 300, "g300")  # a stream that appears later joins
    frames = pairer.pop_ready(flush=True)
    assert [(f.stamp_ns, sorted(f.messages)) for f in frames] == [
        (300, ["gt", "image"]),
        (400, ["image"]),
        (500, ["image"]),
    ]
    assert len(pairer.discarded) == 2

    bounded = StampPairer("image", slop_ns=10, queue_size=2)
    for stamp in (1, 2, 3):  # no image comes: the oldest unpaired message goes
        bounded.add("depth", stamp, stamp)
    assert bounded.discarded == [Discarded("depth", 1)]


def test_topic_names_round_trip() -> None:
    assert topics.parse_camera_topic("/front/left/image/compressed", topics.COMPRESSED_IMAGE) == (
        "front/left",
        "image/compressed",
    )
    assert topics.parse_camera_topic("/front/image", topics.IMAGE) == ("front", "image")
    assert topics.parse_camera_topic("/front/gt/semantic", topics.IMAGE) == ("front", "gt/semantic")
    assert topics.parse_camera_topic("/front/image", "std_msgs/msg/String") is None
    assert topics.parse_camera_topic("/front/anomaly_score", topics.IMAGE) is None
    assert topics.camera_topic("/front/", "depth") == "front/depth"


def test_live_evaluation_pairs_node_outputs_with_ground_truth(
    segmenter: Segmenter, streets: ListDataset, tmp_path: Path
) -> None:
    """Messages as eval-live receives them: ground truth and depth first, the node's outputs later,
    frame 3 dropped by the node. The report equals the accumulator fed with the same arrays."""
    factories = rosbags_factories(typestore())
    live = LiveEvaluation(segmenter.card.class_names, slop_s=0.01, mode="exact")
    reference = EvaluationAccumulator(segmenter.card.class_names, mode="exact")

    def message(pixels: np.ndarray, encoding: str, stamp: int) -> object:
        return numpy_to_image(pixels, encoding, factories.header(stamp, "cam"), msg_factory=factories.image)

    for index, sample in enumerate(streets.samples[:6]):
        stamp, now = START_STAMP_NS + index * STEP_NS, float(index)
        live.add("front", "image", message(sample.image, "rgb8", stamp), now)
        live.add("front", "depth", message(sample.depth, "32FC1", stamp), now)
        live.add("front", "gt/anomaly", message(sample.anomaly, "mono8", stamp), now)
        live.add("front", "gt/semantic", message(sample.semantic, "mono8", stamp), now)
        if index == 3:
            continue
        result = segmenter.segment([sample.image])
        live.add("front", "semantic", message(result.semantic[0], "mono8", stamp), now + 0.25)
        live.add("front", "anomaly_score", message(result.anomaly_score[0], "32FC1", stamp), now + 0.25)
        live.add("front", "open_set", message(result.open_set[0], "mono8", stamp), now + 0.25)
        depth = np.where(np.isfinite(sample.depth) & (sample.depth > 0), sample.depth, np.nan).astype(
            np.float32
        )
        reference.update(
            result.anomaly_score[0],
            result.semantic[0],
            result.open_set[0],
            sample.anomaly,
            sample.semantic,
            depth,
        )
    metrics = live.finish(tmp_path / "live")
    expected = reference.compute()
    for section in METRIC_SECTIONS:
        assert_close(metrics[section], jsonable(expected[section]), section)
    assert metrics["frames"]["evaluated"] == 5
    assert metrics["frames"]["skipped: ground truth without node output"] == 1
    assert metrics["latency_ms"]["node end-to-end"]["p50"] == pytest.approx(250.0)
    assert (tmp_path / "live" / "report.md").is_file()


def test_bag_writer_refuses_existing_paths_and_removes_failed_bags(tmp_path: Path) -> None:
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError):
        BagWriter(tmp_path / "exists")
    with pytest.raises(RuntimeError), BagWriter(tmp_path / "failed") as bag:
        pixels = np.zeros((2, 2, 3), np.uint8)
        image = numpy_to_image(pixels, "rgb8", bag.factories.header(1), msg_factory=bag.factories.image)
        bag.write("cam/image", image, 1)
        raise RuntimeError("disk full")
    assert not (tmp_path / "failed").exists()


def test_cli_errors_are_one_line(checkpoint: Path, streets: ListDataset, tmp_path: Path, capsys) -> None:
    bag = tmp_path / "bag"
    write_dataset_bag(streets, bag, max_frames=2, progress=False)
    assert (
        main(
            [
                "eval-bag",
                str(bag),
                "--checkpoint",
                str(checkpoint),
                "--camera",
                "rear",
                "--out",
                str(tmp_path / "e"),
            ]
        )
        == 2
    )
    assert "camera(s) rear not in" in capsys.readouterr().err
    assert main(["make-bag", "--dataset", "synthetic_streets", "--out", str(bag), "--frames", "1"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["make-bag", "--dataset", "folder", "--out", str(tmp_path / "b2")]) == 2
    assert "--root is required" in capsys.readouterr().err
    try:
        import rclpy  # noqa: F401
    except ImportError:
        assert main(["eval-live", "--checkpoint", str(checkpoint)]) == 2
        assert "needs ROS 2" in capsys.readouterr().err
