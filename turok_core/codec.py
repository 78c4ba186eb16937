"""SQS bodies: many Turok messages per SQS message, and the design's plain JSON form.

A Turok body is base64 text of one flag byte and a msgpack envelope::

    {"v": 1, "fields": [metric, start_time, datapoints, resolution, aggregation_type],
     "messages": [[...], [...], ...]}

The flag says whether the envelope is zlib-compressed (done when it makes the body smaller).
``encode_messages`` cuts a batch into bodies that never exceed the queue's maximum message
size. ``decode_body`` also accepts a JSON object (or array of objects) in the design's form,
so other producers can feed Turok without this library.
"""
from __future__ import annotations

import base64
import binascii
import json
import zlib
from typing import Iterable, Sequence

import msgpack

from .aggregation import aggregate
from .message import WIRE_FIELDS, MessageError, TurokMessage, message_from_wire, validate_message
from .resolution import format_resolution, parse_resolution
from .timefmt import from_wire_time, to_wire_time

ENVELOPE_VERSION = 1
FLAG_RAW = b"\x00"
FLAG_ZLIB = b"\x01"
COMPRESS_MIN_BYTES = 512
# A window holding more raw values than this is sent as its exact aggregate instead: the
# message carries the whole window, so reducing it here gives what turokd would compute.
MAX_RAW_DATAPOINTS = 2048
# Envelope bytes before compression that we try to fit in one body; halved until it fits.
_RAW_TARGET_FACTOR = 3


def base64_size(raw_size: int) -> int:
    return 4 * ((raw_size + 2) // 3)


class _EnvelopeWriter:
    def __init__(self) -> None:
        packer = msgpack.Packer(use_bin_type=True)
        self._packer = packer
        self._head = (packer.pack_map_header(3) + packer.pack("v") + packer.pack(ENVELOPE_VERSION)
                      + packer.pack("fields") + packer.pack(list(WIRE_FIELDS)) + packer.pack("messages"))
        self._times: dict[int, str] = {}
        self._resolutions: dict[int, str] = {}

    def row(self, message: TurokMessage) -> bytes:
        wire_time = self._times.get(message.start_time)
        if wire_time is None:
            wire_time = self._times[message.start_time] = to_wire_time(message.start_time)
        resolution = self._resolutions.get(message.resolution)
        if resolution is None:
            resolution = self._resolutions[message.resolution] = format_resolution(message.resolution)
        datapoints = message.datapoints
        if len(datapoints) > MAX_RAW_DATAPOINTS:
            datapoints = [aggregate(message.aggregation_type, datapoints)]
        return self._packer.pack([message.metric, wire_time, datapoints, resolution,
                                  message.aggregation_type])

    def body(self, rows: Sequence[bytes]) -> str:
        envelope = self._head + self._packer.pack_array_header(len(rows)) + b"".join(rows)
        payload = FLAG_RAW + envelope
        if len(envelope) >= COMPRESS_MIN_BYTES:
            compressed = zlib.compress(envelope, 6)
            if len(compressed) < len(envelope):
                payload = FLAG_ZLIB + compressed
        return base64.b64encode(payload).decode("ascii")


def encode_messages(messages: Iterable[TurokMessage], max_body_bytes: int = 262144) -> list[str]:
    """Encode messages into as few SQS bodies as fit, each at most ``max_body_bytes`` long."""
    writer = _EnvelopeWriter()
    rows = [writer.row(m) for m in messages]
    if not rows:
        return []
    raw_target = max_body_bytes * _RAW_TARGET_FACTOR
    bodies: list[str] = []
    start = 0
    while start < len(rows):
        end, size = start, 0
        while end < len(rows) and (end == start or size + len(rows[end]) <= raw_target):
            size += len(rows[end])
            end += 1
        _encode_fitting(writer, rows, start, end, max_body_bytes, bodies)
        start = end
    return bodies


def _encode_fitting(writer: _EnvelopeWriter, rows: Sequence[bytes], start: int, end: int,
                    limit: int, out: list[str]) -> None:
    """Append bodies for rows[start:end], splitting the range in halves until each fits."""
    pending = [(start, end)]
    while pending:
        lo, hi = pending.pop()
        body = writer.body(rows[lo:hi])
        if len(body) <= limit:
            out.append(body)
        elif hi - lo == 1:
            raise MessageError(f"one message encodes to {len(body)} bytes, over the {limit}-byte limit")
        else:
            mid = (lo + hi) // 2
            pending.append((mid, hi))  # popped second: bodies keep the messages' order
            pending.append((lo, mid))


def decode_body(body: str) -> list[TurokMessage]:
    """Decode an SQS body (Turok envelope or the design's JSON) into validated messages.

    Raises ``MessageError`` with the reason when the body cannot be accepted as a whole.
    """
    text = body.lstrip()
    if text[:1] in ("{", "["):
        return _decode_json(text)
    try:
        payload = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MessageError("body is neither JSON nor base64") from None
    if not payload:
        raise MessageError("empty body")
    flag, data = payload[:1], payload[1:]
    try:
        if flag == FLAG_ZLIB:
            data = zlib.decompress(data)
        elif flag != FLAG_RAW:
            raise MessageError(f"unknown envelope flag {flag!r}")
        envelope = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except MessageError:
        raise
    except Exception as exc:  # msgpack and zlib raise many types for corrupt input
        raise MessageError(f"undecodable envelope: {type(exc).__name__}: {exc}") from None
    return _decode_envelope(envelope)


def _decode_envelope(envelope) -> list[TurokMessage]:
    if not isinstance(envelope, dict):
        raise MessageError("envelope is not a map")
    if envelope.get("v") != ENVELOPE_VERSION:
        raise MessageError(f"unsupported envelope version {envelope.get('v')!r}")
    fields, rows = envelope.get("fields"), envelope.get("messages")
    if not isinstance(fields, list) or not isinstance(rows, list):
        raise MessageError("envelope lacks fields or messages")
    try:
        positions = [fields.index(name) for name in WIRE_FIELDS]
    except ValueError:
        raise MessageError(f"envelope fields {fields!r} lack one of {WIRE_FIELDS}") from None
    times: dict[str, int] = {}
    resolutions: dict[str, int] = {}
    messages = []
    i_metric, i_time, i_points, i_res, i_agg = positions
    for row in rows:
        try:
            if not isinstance(row, list) or len(row) != len(fields):
                raise MessageError(f"envelope row {row!r:.80} does not match its fields")
            wire_time, wire_res = row[i_time], row[i_res]
            start_time = times.get(wire_time)
            if start_time is None:
                start_time = times[wire_time] = from_wire_time(wire_time)
            resolution = resolutions.get(wire_res)
            if resolution is None:
                resolution = resolutions[wire_res] = parse_resolution(wire_res)
        except MessageError:
            raise
        except (TypeError, ValueError, AttributeError) as exc:
            raise MessageError(f"malformed envelope row: {exc}") from None
        messages.append(validate_message(row[i_metric], start_time, row[i_points], resolution, row[i_agg]))
    return messages


def _decode_json(text: str) -> list[TurokMessage]:
    try:
        decoded = json.loads(text)
    except ValueError as exc:
        raise MessageError(f"invalid JSON: {exc}") from None
    items = decoded if isinstance(decoded, list) else [decoded]
    if not items or not all(isinstance(item, dict) for item in items):
        raise MessageError("JSON body must be a message object or a non-empty array of them")
    return [message_from_wire(item) for item in items]


def encode_json(message: TurokMessage) -> str:
    """The design's JSON form, with ``datapoints`` as a JSON-encoded list string."""
    wire = message.to_wire()
    wire["datapoints"] = json.dumps(wire["datapoints"])
    return json.dumps(wire)
