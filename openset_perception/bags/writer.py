"""Writing rosbag2 bags with ``rosbags``: datasets as camera streams (make-bag) and engine outputs.

Bags use the ROS 2 Jazzy message definitions, which are identical to Humble's for every type written
here, and rosbag2 metadata version 8, which ``ros2 bag info`` / ``ros2 bag play`` read from Humble on
(MCAP needs the ``rosbag2_storage_mcap`` plugin on Humble; sqlite3 is built in).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from tqdm import tqdm

from openset_perception.bags import topics
from openset_perception.bags.mcap_checksums import write_chunk_checksums
from openset_perception.data.sample import Dataset, Sample, validate_sample
from openset_perception.image_codec import numpy_to_compressed, numpy_to_image, rosbags_factories

STORAGE_FORMATS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
METADATA_VERSION = 8
# A fixed first stamp keeps bags reproducible; play them with --clock and use_sim_time (see README).
START_STAMP_NS = 1_700_000_000 * 1_000_000_000
CLASS_NAMES_KEY = "openset_perception.class_names"
LOGGER = logging.getLogger(__name__)


def typestore() -> Any:
    """The message definitions every bag of this package is written and read with."""
    return get_typestore(Stores.ROS2_JAZZY)


class BagWriter:
    """A new rosbag2 folder; topics are registered on first use, messages serialised on write.

    Use as a context manager. ``path`` must not exist yet; if writing fails, the partial bag is removed.
    MCAP chunks get CRCs (rosbags writes none), so readers can detect damaged payloads.
    """

    def __init__(self, path: str | Path, storage: str = "mcap") -> None:
        if storage not in STORAGE_FORMATS:
            raise ValueError(f"storage must be one of {', '.join(STORAGE_FORMATS)}, got '{storage}'")
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path} already exists; rosbag2 bags are never overwritten")
        self.storage = storage
        self.typestore = typestore()
        self.factories = rosbags_factories(self.typestore)
        self._writer = Writer(self.path, version=METADATA_VERSION, storage_plugin=STORAGE_FORMATS[storage])
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> BagWriter:
        self._writer.open()
        return self

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        if exc_type is None:
            self._writer.close()
            for storage_file in self.path.glob("*.mcap"):
                write_chunk_checksums(storage_file)
            return
        self._writer.abort()
        shutil.rmtree(self.path, ignore_errors=True)

    def set_custom_data(self, key: str, value: str) -> None:
        """A string in metadata.yaml's custom_data (call before leaving the context)."""
        self._writer.set_custom_data(key, value)

    def write(self, topic: str, message: Any, log_time_ns: int) -> None:
        """Append ``message`` (a typestore message) to the absolute ``topic``."""
        topic = "/" + topic.strip("/")
        msgtype = message.__msgtype__
        connection = self._connections.get(topic)
        if connection is None:
            connection = self._writer.add_connection(topic, msgtype, typestore=self.typestore)
            self._connections[topic] = connection
            self.counts[topic] = 0
        elif connection.msgtype != msgtype:
            raise ValueError(f"topic {topic} carries {connection.msgtype}, cannot write {msgtype}")
        self._writer.write(connection, log_time_ns, self.typestore.serialize_cdr(message, msgtype))
        self.counts[topic] += 1


def camera_info(bag: BagWriter, header: Any, height: int, width: int, focal_px: float | None) -> Any:
    """A pinhole CameraInfo with the principal point in the image centre; all zero when focal_px is None
    (the ROS convention for an uncalibrated camera)."""
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    if focal_px is None:
        k, p = np.zeros(9), np.zeros(12)
    else:
        f = float(focal_px)
        k = np.array([f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0])
        p = np.array([f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0])
    types = bag.typestore.types
    return types[topics.CAMERA_INFO](
        header=header,
        height=height,
        width=width,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=k,
        r=np.eye(3).reshape(-1),
        p=p,
        binning_x=0,
        binning_y=0,
        roi=types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        ),
    )


def frame_id(camera: str) -> str:
    return camera.strip("/").replace("/", "_") + "_optical_frame"


def write_sample(
    bag: BagWriter,
    sample: Sample,
    camera: str,
    stamp_ns: int,
    focal_px: float | None = None,
    compressed: bool = False,
    jpeg_quality: int = 90,
) -> None:
    """All streams of one frame, every message with the same header and bag time.

    Depth and ground truth are written only where the sample has them.
    """
    header = bag.factories.header(stamp_ns, frame_id(camera))
    height, width = sample.image.shape[:2]
    if compressed:
        image = numpy_to_compressed(
            sample.image,
            "jpeg",
            header,
            msg_factory=bag.factories.compressed_image,
            jpeg_quality=jpeg_quality,
        )
        bag.write(topics.camera_topic(camera, topics.COLOR_COMPRESSED), image, stamp_ns)
    else:
        image = numpy_to_image(sample.image, "rgb8", header, msg_factory=bag.factories.image)
        bag.write(topics.camera_topic(camera, topics.COLOR), image, stamp_ns)
    streams = (
        (topics.DEPTH, sample.depth, "32FC1"),
        (topics.GT_ANOMALY, sample.anomaly, "mono8"),
        (topics.GT_SEMANTIC, sample.semantic, "mono8"),
    )
    for kind, pixels, encoding in streams:
        if pixels is not None:
            message = numpy_to_image(pixels, encoding, header, msg_factory=bag.factories.image)
            bag.write(topics.camera_topic(camera, kind), message, stamp_ns)
    info = camera_info(bag, header, height, width, focal_px)
    bag.write(topics.camera_topic(camera, topics.CAMERA_INFO_KIND), info, stamp_ns)


@dataclass(frozen=True)
class WrittenBag:
    counts: dict[str, int]  # messages per topic
    skipped: list[str]  # "frame index: reason" for samples that could not be read


def write_dataset_bag(
    dataset: Dataset,
    out: str | Path,
    camera: str = "camera",
    storage: str = "mcap",
    rate_hz: float = 10.0,
    compressed: bool = False,
    jpeg_quality: int = 90,
    max_frames: int | None = None,
    start_ns: int = START_STAMP_NS,
    progress: bool = True,
) -> WrittenBag:
    """Write a dataset's frames (streamed) as one camera at ``rate_hz``: frame i is stamped
    ``start_ns + i / rate_hz``. A sample that cannot be read leaves a gap and is reported.

    The class names go to metadata.yaml's custom_data, so eval-bag can check them against a model.
    """
    if not rate_hz > 0:
        raise ValueError(f"rate must be > 0 Hz, got {rate_hz}")
    info = dataset.info
    focal = (info.camera or {}).get("focal_px")
    total = len(dataset) if max_frames is None else min(len(dataset), max_frames)
    skipped = []
    with BagWriter(out, storage) as bag:
        bag.set_custom_data(CLASS_NAMES_KEY, json.dumps(list(info.class_names)))
        for index in tqdm(range(total), unit="frame", desc="writing bag", disable=not progress):
            try:
                sample = dataset[index]
                validate_sample(sample, info)
            except Exception as error:  # any reader failure is one missing frame, not a failed bag
                LOGGER.warning("frame %d left out of the bag: %s", index, error)
                skipped.append(f"{index}: {error}")
                continue
            stamp = start_ns + round(index * 1e9 / rate_hz)
            write_sample(bag, sample, camera, stamp, focal, compressed, jpeg_quality)
    return WrittenBag(dict(bag.counts), skipped)
