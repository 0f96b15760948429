"""Chunk checksums for the MCAP files ``rosbags`` writes.

rosbags' MCAP writer leaves every chunk's CRC at 0 ("not computed"), so readers cannot tell a damaged
payload from a good one. :func:`write_chunk_checksums` fills in the CRC-32 of each chunk's uncompressed
records, in place. Each CRC is one 4-byte write of a value computed from the file itself: a file whose
patching was interrupted holds correct CRCs and zeros, both of which readers accept, so the bag stays
valid at every moment. rosbags' reader and the salvage scanner then check every non-zero CRC.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from openset_perception.bags.salvage import (
    _CHUNK,
    _CHUNK_HEAD,
    _FOOTER,
    _RECORD_HEAD,
    MCAP_MAGIC,
    _decompress,
    _string,
)

_CRC_OFFSET = _RECORD_HEAD.size + 24  # after the chunk's start time, end time and uncompressed size


def write_chunk_checksums(path: str | Path) -> int:
    """Set the CRC of every chunk of the MCAP file at ``path`` that has none; returns how many were set.

    Raises ValueError for a file that is not a complete MCAP file (checksums are for files just written).
    """
    path = Path(path)
    size = path.stat().st_size
    written = 0
    with path.open("r+b") as stream:
        if stream.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
            raise ValueError(f"{path} is not an MCAP file")
        offset = len(MCAP_MAGIC)
        while offset + _RECORD_HEAD.size <= size:
            stream.seek(offset)
            op, length = _RECORD_HEAD.unpack(stream.read(_RECORD_HEAD.size))
            if op == _FOOTER:
                break
            if offset + _RECORD_HEAD.size + length > size:
                raise ValueError(f"{path}: record at byte {offset} runs past the end of the file")
            if op == _CHUNK:
                body = memoryview(stream.read(length))
                _, _, uncompressed_size, crc = _CHUNK_HEAD.unpack_from(body, 0)
                if crc == 0:
                    compression, position = _string(body, _CHUNK_HEAD.size)
                    (records_length,) = struct.unpack_from("<Q", body, position)
                    payload = bytes(body[position + 8 : position + 8 + records_length])
                    records = _decompress(payload, compression, complete=True)
                    if len(records) != uncompressed_size:
                        raise ValueError(f"{path}: chunk at byte {offset} does not match its stated size")
                    stream.seek(offset + _CRC_OFFSET)
                    stream.write(struct.pack("<I", zlib.crc32(records)))
                    written += 1
            offset += _RECORD_HEAD.size + length
        stream.flush()
        os.fsync(stream.fileno())
    return written
