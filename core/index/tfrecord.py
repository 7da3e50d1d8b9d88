"""Read AudioSet embedding TFRecords (``tf.train.SequenceExample``) without TensorFlow.

Why a hand-rolled reader: the framing (u64 length, masked CRC32C of the length, payload, masked
CRC32C of the payload) and the few protobuf fields we need are simple, and skipping the
TensorFlow import and the generic proto machinery keeps a full bal_train ingest to a few seconds.
A shard that does not parse raises :class:`ShardError` so the builder can skip it, count it and
report it instead of aborting the build.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import EchoVidsError

EMBEDDING_DIM = 128


class ShardError(EchoVidsError):
    """One TFRecord shard is unreadable (truncated, corrupt framing, malformed record)."""


@dataclass
class AudioSetRecord:
    video_id: str
    start_time_seconds: float
    end_time_seconds: float
    labels: list[int]
    embeddings: np.ndarray  # uint8 [n, 128]


# -- CRC32C (Castagnoli), only used on the 8-byte length header ----------------------------------
def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def iter_tfrecord(data: bytes, *, name: str = "shard", check_data_crc: bool = False) -> Iterator[bytes]:
    """Yield the payloads of a TFRecord file's bytes; the length CRC is always checked.

    The payload CRC costs a pure-Python pass over every byte, so it is opt-in; a corrupt payload
    is still caught by the protobuf parse that follows.
    """
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 12:
            raise ShardError(f"{name}: truncated record header at byte {pos}")
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (len_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if masked_crc32c(header) != len_crc:
            raise ShardError(f"{name}: bad length checksum at byte {pos}")
        start = pos + 12
        stop = start + length
        if stop + 4 > end:
            raise ShardError(f"{name}: truncated record at byte {pos}")
        payload = data[start:stop]
        if check_data_crc:
            (data_crc,) = struct.unpack("<I", data[stop:stop + 4])
            if masked_crc32c(payload) != data_crc:
                raise ShardError(f"{name}: bad data checksum at byte {pos}")
        yield payload
        pos = stop + 4


# -- minimal protobuf wire-format decoding ---------------------------------------------------------
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """Yield (field number, wire type, value) where value is an int or a bytes slice."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > end:
                raise ValueError("truncated length-delimited field")
            value = buf[pos:pos + n]
            pos += n
        elif wire == 5:
            value = buf[pos:pos + 4]
            pos += 4
        elif wire == 1:
            value = buf[pos:pos + 8]
            pos += 8
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield field, wire, value


def _map_entries(buf: bytes) -> Iterator[tuple[str, bytes]]:
    """Entries of a ``map<string, Message>`` stored as field 1 of ``buf``."""
    for field, wire, entry in _fields(buf):
        if field != 1 or wire != 2:
            continue
        key, value = "", b""
        for f, w, v in _fields(entry):  # type: ignore[arg-type]
            if f == 1 and w == 2:
                key = bytes(v).decode("utf-8")  # type: ignore[arg-type]
            elif f == 2 and w == 2:
                value = v  # type: ignore[assignment]
        yield key, value


def _feature(buf: bytes) -> tuple[str, list]:
    """Decode a ``tf.train.Feature`` into ("bytes"|"float"|"int64", values)."""
    for field, wire, inner in _fields(buf):
        if wire != 2:
            continue
        if field == 1:
            return "bytes", [bytes(v) for f, w, v in _fields(inner) if f == 1 and w == 2]  # type: ignore[arg-type]
        if field == 2:
            values: list = []
            for f, w, v in _fields(inner):  # type: ignore[arg-type]
                if f == 1 and w == 2:
                    values.extend(struct.unpack(f"<{len(v) // 4}f", v))  # type: ignore[arg-type]
                elif f == 1 and w == 5:
                    values.append(struct.unpack("<f", v)[0])
            return "float", values
        if field == 3:
            values = []
            for f, w, v in _fields(inner):  # type: ignore[arg-type]
                if f == 1 and w == 2:
                    p = 0
                    while p < len(v):  # type: ignore[arg-type]
                        x, p = _varint(v, p)  # type: ignore[arg-type]
                        values.append(x - (1 << 64) if x >> 63 else x)
                elif f == 1 and w == 0:
                    values.append(v)
            return "int64", values
    return "empty", []


def parse_sequence_example(payload: bytes) -> AudioSetRecord:
    """Decode one AudioSet ``SequenceExample``; raises ValueError when a required field is missing."""
    context: dict[str, tuple[str, list]] = {}
    frames: list[bytes] = []
    for field, wire, value in _fields(payload):
        if wire != 2:
            continue
        if field == 1:
            for key, feat in _map_entries(value):  # type: ignore[arg-type]
                context[key] = _feature(feat)
        elif field == 2:
            for key, flist in _map_entries(value):  # type: ignore[arg-type]
                if key != "audio_embedding":
                    continue
                for f, w, feat in _fields(flist):
                    if f == 1 and w == 2:
                        kind, vals = _feature(feat)  # type: ignore[arg-type]
                        if kind != "bytes" or not vals:
                            raise ValueError("audio_embedding frame is not bytes")
                        frames.append(vals[0])
    try:
        video_id = context["video_id"][1][0].decode("utf-8")
        start = float(context["start_time_seconds"][1][0])
    except (KeyError, IndexError, UnicodeDecodeError) as err:
        raise ValueError(f"record lacks video_id/start_time_seconds ({err})") from None
    end_vals = context.get("end_time_seconds", ("float", []))[1]
    end = float(end_vals[0]) if end_vals else start + len(frames)
    labels = [int(x) for x in context.get("labels", ("int64", []))[1]]
    if any(len(f) != EMBEDDING_DIM for f in frames):
        raise ValueError("audio_embedding frame is not 128 bytes")
    emb = np.frombuffer(b"".join(frames), dtype=np.uint8).reshape(len(frames), EMBEDDING_DIM)
    return AudioSetRecord(video_id, start, end, labels, emb)


def read_shard(path: str | Path, *, check_data_crc: bool = False) -> list[AudioSetRecord]:
    """All records of one shard, or :class:`ShardError` naming the file and what is wrong."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ShardError(f"{path.name}: cannot read ({err.strerror})") from None
    records = []
    for i, payload in enumerate(iter_tfrecord(data, name=path.name, check_data_crc=check_data_crc)):
        try:
            records.append(parse_sequence_example(payload))
        except (ValueError, struct.error) as err:
            raise ShardError(f"{path.name}: record {i} is malformed ({err})") from None
    return records


def list_shards(dirs: Sequence[str | Path]) -> list[Path]:
    """Every ``*.tfrecord`` under the given directories (recursive), sorted for reproducible builds."""
    out: list[Path] = []
    for d in dirs:
        d = Path(d)
        if d.is_file():
            out.append(d)
        elif d.is_dir():
            out.extend(sorted(p for p in d.rglob("*.tfrecord") if p.is_file()))
        else:
            raise ShardError(f"AudioSet folder not found: {d}")
    return out
