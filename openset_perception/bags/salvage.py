"""Reading the intact front of a damaged MCAP or SQLite storage file, record by record.

``rosbags`` opens MCAP files from their footer and summary and SQLite files through their schema, so a
file cut short by a crash, a full disk or a partial copy cannot be opened at all. These scanners read
forward from the start instead and raise :class:`DamagedBagError` at the first record that is cut off
or corrupt, after yielding every message before it.
"""

from __future__ import annotations

import sqlite3
import struct
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

MCAP_MAGIC = b"\x89MCAP0\r\n"
_FOOTER, _SCHEMA, _CHANNEL, _MESSAGE, _CHUNK = 0x02, 0x03, 0x04, 0x05, 0x06
_RECORD_HEAD = struct.Struct("<BQ")
_MESSAGE_HEAD = struct.Struct("<HIQQ")  # channel id, sequence, log time, publish time
_CHUNK_HEAD = struct.Struct("<QQQI")  # start time, end time, uncompressed size, uncompressed CRC


class DamagedBagError(Exception):
    """The storage file cannot be read past this point; the message says where and why."""


class RawMessage(NamedTuple):
    topic: str
    msgtype: str
    log_time_ns: int
    data: bytes | memoryview


def scan_mcap(path: Path) -> Iterator[RawMessage]:
    """Messages of an MCAP file in file order, up to its footer or its first damaged record."""
    size = path.stat().st_size
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}
    with path.open("rb") as stream:
        if stream.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
            raise DamagedBagError(f"{path.name} does not start with the MCAP magic bytes")
        offset = len(MCAP_MAGIC)
        while True:
            if offset + _RECORD_HEAD.size > size:
                raise DamagedBagError(
                    f"{path.name}: file ends at byte {size} without an MCAP footer (truncated)"
                )
            op, length = _RECORD_HEAD.unpack(stream.read(_RECORD_HEAD.size))
            body_start = offset + _RECORD_HEAD.size
            if op == _FOOTER:
                _check_end(stream, path, body_start + length, size)
                return
            complete = body_start + length <= size
            if op in (_SCHEMA, _CHANNEL, _MESSAGE, _CHUNK) and (complete or op == _CHUNK):
                body = memoryview(stream.read(length))
                records = _chunk_records(body, offset, path, complete) if op == _CHUNK else [(op, body)]
                for record_op, record in records:
                    message = _read_record(record_op, record, schemas, channels)
                    if message is not None:
                        yield message
            else:
                stream.seek(length, 1)
            if not complete:
                raise DamagedBagError(
                    f"{path.name}: record at byte {offset} needs {length} bytes, the file ends after "
                    f"{size - body_start} (truncated)"
                )
            offset = body_start + length


def _check_end(stream: BinaryIO, path: Path, footer_end: int, size: int) -> None:
    """A file cut inside its footer or its closing magic bytes is damaged too, however little is lost."""
    stream.seek(footer_end)
    if footer_end + len(MCAP_MAGIC) > size or stream.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
        raise DamagedBagError(
            f"{path.name}: file ends at byte {size} inside its MCAP footer or closing magic (truncated)"
        )


def _string(body: memoryview, position: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<I", body, position)
    start = position + 4
    return bytes(body[start : start + length]).decode("utf-8"), start + length


def _read_record(
    op: int, body: memoryview, schemas: dict[int, str], channels: dict[int, tuple[str, str]]
) -> RawMessage | None:
    if op == _SCHEMA:
        (schema_id,) = struct.unpack_from("<H", body, 0)
        schemas[schema_id], _ = _string(body, 2)
    elif op == _CHANNEL:
        channel_id, schema_id = struct.unpack_from("<HH", body, 0)
        topic, _ = _string(body, 4)
        channels[channel_id] = (topic, schemas.get(schema_id, ""))
    elif op == _MESSAGE:
        channel_id, _, log_time, _ = _MESSAGE_HEAD.unpack_from(body, 0)
        if channel_id in channels:
            topic, msgtype = channels[channel_id]
            return RawMessage(topic, msgtype, log_time, body[_MESSAGE_HEAD.size :])
    return None


def _chunk_records(body: memoryview, offset: int, path: Path, complete: bool) -> list[tuple[int, memoryview]]:
    """The records of a chunk; of a cut-off chunk, the complete records its readable part holds."""
    try:
        _, _, uncompressed_size, crc = _CHUNK_HEAD.unpack_from(body, 0)
        compression, position = _string(body, _CHUNK_HEAD.size)
        (records_length,) = struct.unpack_from("<Q", body, position)
        payload = bytes(body[position + 8 : position + 8 + records_length])
        records = memoryview(_decompress(payload, compression, complete))
    except Exception as error:  # every decoder has its own error types; all mean a corrupt chunk
        if not complete:
            return []
        raise DamagedBagError(f"{path.name}: chunk at byte {offset} is corrupt ({error})") from None
    if complete and (len(records) != uncompressed_size or (crc and zlib.crc32(records) != crc)):
        raise DamagedBagError(f"{path.name}: chunk at byte {offset} fails its size or checksum test")
    found = []
    position = 0
    while position + _RECORD_HEAD.size <= len(records):
        op, length = _RECORD_HEAD.unpack_from(records, position)
        start = position + _RECORD_HEAD.size
        if start + length > len(records):
            if complete:
                raise DamagedBagError(f"{path.name}: chunk at byte {offset} holds a cut-off record")
            break
        found.append((op, records[start : start + length]))
        position = start + length
    return found


def _decompress(payload: bytes, compression: str, complete: bool) -> bytes:
    """Decompressed chunk records; streaming decoders return what a cut-off payload still holds."""
    if compression == "":
        return payload
    if compression == "zstd":
        if sys.version_info >= (3, 14):
            from compression import zstd
        else:
            from backports import zstd
        return zstd.decompress(payload) if complete else zstd.ZstdDecompressor().decompress(payload)
    if compression == "lz4":
        import lz4.frame

        if complete:
            return lz4.frame.decompress(payload)
        return lz4.frame.LZ4FrameDecompressor().decompress(payload)
    raise ValueError(f"unsupported chunk compression '{compression}'")


def scan_sqlite(path: Path) -> Iterator[RawMessage]:
    """Messages of a rosbag2 SQLite file in insertion order, up to the first unreadable page."""
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?immutable=1", uri=True)
    try:
        # A cut file often loses tables that the schema still names (e.g. sqlite_stat1, written at
        # close); SQLite then refuses the whole database unless schema errors are tolerated.
        connection.execute("PRAGMA writable_schema=ON")
        topic_rows = connection.execute("SELECT id, name, type FROM topics").fetchall()
        topics = {topic_id: (name, msgtype) for topic_id, name, msgtype in topic_rows}
        rows = connection.execute("SELECT topic_id, timestamp, data FROM messages ORDER BY id")
        for topic_id, timestamp, data in rows:
            if topic_id in topics:
                name, msgtype = topics[topic_id]
                yield RawMessage(name, msgtype, timestamp, data)
    except sqlite3.DatabaseError as error:
        raise DamagedBagError(f"{path.name}: SQLite cannot read further ({error})") from None
    finally:
        connection.close()
