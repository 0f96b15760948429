"""Reading rosbag2 bags (folders or single .mcap / .db3 files) with ``rosbags``, tolerating damage.

A bag that ``rosbags`` cannot open is read record by record from the start of each storage file
(:mod:`openset_perception.bags.salvage`); a bag that fails while being read stops there. Either way
the reader keeps going with the next storage file and records what happened in ``problems``, so an
evaluation covers everything up to the damage and can say what it could not read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rosbags.rosbag2 import Reader

from openset_perception.bags.salvage import DamagedBagError, RawMessage, scan_mcap, scan_sqlite

LOGGER = logging.getLogger(__name__)
STORAGE_SUFFIXES = {".mcap": "mcap", ".db3": "sqlite3"}
_SCANNERS = {"mcap": scan_mcap, "sqlite3": scan_sqlite}


@dataclass(frozen=True)
class TopicInfo:
    msgtype: str
    count: int | None  # messages the bag's metadata promises; None when unknown


class BagReader:
    """Messages of one bag in bag-time order (file order for damaged files); see the module docstring.

    ``topics`` lists what the metadata (or the readable storage) announces, ``custom_data`` is
    metadata.yaml's custom_data, ``problems`` collects one line per damage met while reading.
    Use as a context manager.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"bag not found: {self.path}")
        self.topics: dict[str, TopicInfo] = {}
        self.custom_data: dict[str, str] = {}
        self.problems: list[str] = []
        metadata = _read_metadata(self.path)
        if metadata is not None:
            self.custom_data = {str(k): str(v) for k, v in (metadata.get("custom_data") or {}).items()}
            for entry in metadata.get("topics_with_message_count") or []:
                topic = entry["topic_metadata"]
                self.topics[topic["name"]] = TopicInfo(topic["type"], int(entry["message_count"]))
        self._storage_files = _storage_files(self.path, metadata)
        if not self._storage_files:
            raise FileNotFoundError(f"{self.path} holds no rosbag2 storage file (.mcap or .db3)")
        self.storage = STORAGE_SUFFIXES.get(self._storage_files[0].suffix, self._storage_files[0].suffix)
        self._standard: Reader | None = None
        if self.path.is_dir() and metadata is not None:
            self._standard = self._open_standard(self.path)
        if not self.topics:
            self._topics_from_files()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._standard is not None and self._standard.is_open:
            self._standard.close()

    def messages(self) -> Iterator[RawMessage]:
        """Every readable message, in one pass; damage ends a storage file early and is noted in
        ``problems``."""
        if self._standard is not None:
            yield from self._read_standard(self._standard, self.path.name)
            return
        for file in self._storage_files:
            if file.suffix not in STORAGE_SUFFIXES:
                self._problem(f"{file.name}: not readable without its metadata (unsupported storage file)")
                continue
            reader = self._open_standard(file, quiet=True)
            if reader is not None:
                yield from self._read_standard(reader, file.name)
                continue
            try:
                yield from _SCANNERS[STORAGE_SUFFIXES[file.suffix]](file)
            except DamagedBagError as error:
                self._problem(str(error))
            except Exception as error:  # whatever else a broken file raises is damage too
                self._problem(f"{file.name}: unreadable from here on ({type(error).__name__}: {error})")

    def _open_standard(self, path: Path, quiet: bool = False) -> Reader | None:
        try:
            reader = Reader(path)
            reader.open()
        except Exception as error:  # rosbags and its storage libraries raise many types for bad files
            if not quiet:
                self._problem(f"{path.name} cannot be opened normally ({error}); reading it record by record")
            return None
        return reader

    def _read_standard(self, reader: Reader, name: str) -> Iterator[RawMessage]:
        try:
            for connection, log_time, data in reader.messages():
                yield RawMessage(connection.topic, connection.msgtype, log_time, data)
        except Exception as error:  # same as above: a storage failure mid-bag is damage, not a crash
            self._problem(f"{name}: unreadable from here on ({type(error).__name__}: {error})")
        finally:
            reader.close()

    def _topics_from_files(self) -> None:
        for file in self._storage_files:
            try:
                reader = Reader(file)
                reader.open()
            except Exception:  # a damaged file: its topics show up while it is read
                continue
            for connection in reader.connections:
                self.topics.setdefault(connection.topic, TopicInfo(connection.msgtype, connection.msgcount))
            reader.close()

    def _problem(self, text: str) -> None:
        LOGGER.warning("%s: %s", self.path, text)
        self.problems.append(text)


def _read_metadata(path: Path) -> dict[str, Any] | None:
    metadata_path = path / "metadata.yaml"
    if not metadata_path.is_file():
        return None
    try:
        content = yaml.safe_load(metadata_path.read_text())
        return content["rosbag2_bagfile_information"]
    except (yaml.YAMLError, KeyError, TypeError) as error:
        LOGGER.warning("%s: ignoring unreadable metadata.yaml (%s)", path, error)
        return None


def _storage_files(path: Path, metadata: dict[str, Any] | None) -> list[Path]:
    if path.is_file():
        return [path]
    if metadata is not None and metadata.get("relative_file_paths"):
        listed = [path / Path(name).name for name in metadata["relative_file_paths"]]
        missing = [file.name for file in listed if not file.exists()]
        if missing:
            LOGGER.warning("%s: storage files listed in metadata.yaml are missing: %s", path, missing)
        return [file for file in listed if file.exists()]
    return sorted(file for file in path.iterdir() if file.suffix in STORAGE_SUFFIXES)
