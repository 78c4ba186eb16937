"""SQS bodies: many Turok messages per SQS message, and the design's plain JSON form.

A Turok body is base64 text of one flag byte and a msgpack envelope, columnar since version 2::

    {"v": 2, "groups": [[start_time, resolution, aggregation_type, names, values], ...]}

A group holds the windows of one slot (epoch seconds), resolution (seconds) and aggregation:
``names`` is their metric names, sorted, joined by newlines (a list of strings if a name holds a
newline); ``values`` pairs with them: a number for a window of one value, a list of numbers for
more. Integral floats travel as msgpack ints and decode as floats. Version 1 envelopes (one row
per message: ``{"v": 1, "fields": [...], "messages": [[...], ...]}`` with the design's text time
and resolution) are still decoded.

The flag says whether the envelope is zlib-compressed (done when it makes the body smaller).
``encode_messages`` cuts a batch into bodies that never exceed the queue's maximum message
size. ``decode_columns`` gives a body's groups as ``Column``s (no object per window: turokd's
path; version 2 envelopes are read in C by ``_envelope.c`` when it is built, the msgpack code
here being the reference), ``decode_body`` as messages; both also accept a JSON object (or array of objects) in the
design's form, so other producers can feed Turok without this library.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import zlib
from array import array
from itertools import chain, compress, islice
from operator import attrgetter
from typing import Iterable, NamedTuple, Sequence, cast

import msgpack

from turok_core.model.aggregation import AGGREGATION_TYPES, aggregate
from turok_core.model.extensions import load_extension
from turok_core.model.message import WIRE_FIELDS, MessageError, TurokMessage, message_from_wire, validate_message
from turok_core.model.resolution import parse_resolution
from turok_core.model.timefmt import from_wire_time
from turok_core.wire.groups import GroupedWindows

ENVELOPE_VERSION = 2
FLAG_RAW = b"\x00"
FLAG_ZLIB = b"\x01"
COMPRESS_MIN_BYTES = 512
# zlib level for bodies. Level 6 costs 1.3-2.6x the encoding CPU of level 1 and saves 0-4% of
# the bytes with one value per window (BENCHMARKS.md, "Envelope v2"); SQS bills per 64 KB
# chunk, cents per billion points either way.
DEFAULT_COMPRESSION_LEVEL = 1
# A window holding more raw values than this is sent as its exact aggregate instead: the
# message carries the whole window, so reducing it here gives what turokd would compute.
MAX_RAW_DATAPOINTS = 2048
# Inflated envelopes are refused past this: a real one is a few times its body (at most 1 MiB),
# a zlib bomb of 272 KB would otherwise inflate to 200 MB in turokd
MAX_ENVELOPE_BYTES = 16 * 1024 * 1024
NAME_SEPARATOR = "\n"  # never inside a plaintext name; a group whose names hold it sends a list
_EMPTY_NAME = NAME_SEPARATOR * 2
# msgpack ints are at most 64 bits: integral floats beyond this stay floats
_INT_LIMIT = float(2 ** 62)
# Fill a body to this fraction of the limit when guessing its window count from the last one:
# a body over the limit is encoded again in halves, which costs a compression.
_FILL = 0.85
_FIRST_GUESS_BYTES_PER_WINDOW = 8.0
# version 2 envelopes read into columns in C (``_envelope.c``); None: the msgpack path below, the
# reference, does it (not built, or TUROK_PURE_PYTHON=1)
native = load_extension("turok_core.wire._envelope")


def _compact(values: list) -> list:
    """Integral floats as ints (1-5 msgpack bytes instead of 9); decode turns them back."""
    types = set(map(type, values))
    if types == {float}:
        integral = list(map(float.is_integer, values))
        if True not in integral:  # nothing to convert: no Python work per value
            return values
        if min(values) > -_INT_LIMIT and max(values) < _INT_LIMIT:
            if False not in integral:
                return list(map(int, values))
            values = values.copy()  # Python work only for the integral ones
            for i in compress(range(len(values)), integral):
                values[i] = int(values[i])
            return values
    limit = _INT_LIMIT
    return [int(v) if type(v) is float and v.is_integer() and -limit < v < limit else v for v in values]


class _Group:
    """One envelope group: sorted names and their packed values, for one slot/step/aggregation."""
    __slots__ = ("slot", "step", "aggregation", "names", "values")

    def __init__(self, slot: int, step: int, aggregation: str, names: list[str], windows: list) -> None:
        """``windows`` pairs with ``names`` (sorted): a bare value or a list of values each."""
        self.slot, self.step, self.aggregation = slot, step, aggregation
        self.names = names
        if list not in set(map(type, windows)):  # one value per window: a flat list of numbers
            self.values = _compact(windows)
            return
        # some windows hold several values: compact them all in one flat pass, then cut it up
        windows = [window if type(window) is list else [window] for window in windows]
        lengths = list(map(len, windows))
        if max(lengths) > MAX_RAW_DATAPOINTS:
            windows = [[aggregate(aggregation, window)] if len(window) > MAX_RAW_DATAPOINTS else window
                       for window in windows]
            lengths = list(map(len, windows))
        flat = iter(_compact(list(chain.from_iterable(windows))))
        self.values = [next(flat) if length == 1 else list(islice(flat, length)) for length in lengths]

    def pack(self, packer: msgpack.Packer, lo: int, hi: int) -> bytes:
        names = self.names[lo:hi]
        joined: str | list[str] = NAME_SEPARATOR.join(names)
        if joined.count(NAME_SEPARATOR) != len(names) - 1:
            joined = names  # a name holds the separator
        return packer.pack([self.slot, self.step, self.aggregation, joined, self.values[lo:hi]])


def _groups_of(messages: Iterable[TurokMessage] | GroupedWindows) -> list[_Group]:
    """Envelope groups for windows already grouped (``groups.py``) or for any messages."""
    groups = []
    # read as the protocol says (an attribute ``groups``): a runtime-checked isinstance costs
    # 20-40 µs a call, more than encoding one small message
    window_groups = getattr(messages, "groups", None)
    if window_groups is not None:
        for slot, step, aggregation, windows in window_groups:
            # names sorted together compress about tenfold: neighbours share long prefixes
            names = sorted(windows)
            if names:
                groups.append(_Group(slot, step, aggregation, names, list(map(windows.__getitem__, names))))
        return groups
    # other callers may send one metric twice for a slot: keep every message, in order
    grouped: dict[tuple[int, int, str], list[TurokMessage]] = {}
    for m in cast(Iterable[TurokMessage], messages):
        key = (m.start_time, m.resolution, m.aggregation_type)
        rows = grouped.get(key)
        if rows is None:
            rows = grouped[key] = []
        rows.append(m)
    for key in sorted(grouped):
        rows = sorted(grouped[key], key=attrgetter("metric"))  # stable: repeats keep their order
        groups.append(_Group(*key, [m.metric for m in rows], [m.datapoints for m in rows]))
    return groups


class _Encoder:
    def __init__(self, groups: list[_Group], limit: int, level: int) -> None:
        self._groups = groups
        self._limit = limit
        self._level = level
        self._packer = msgpack.Packer(use_bin_type=True)
        self._head = self._packer.pack_map_header(2) + self._packer.pack("v") + self._packer.pack(ENVELOPE_VERSION) \
            + self._packer.pack("groups")
        self._per_window = _FIRST_GUESS_BYTES_PER_WINDOW
        self.attempts = 0  # bodies encoded, counting those too large that were split again

    def body(self, spans: list[tuple[_Group, int, int]]) -> str:
        self.attempts += 1
        packer = self._packer
        envelope = self._head + packer.pack_array_header(len(spans)) \
            + b"".join(group.pack(packer, lo, hi) for group, lo, hi in spans)
        payload = FLAG_RAW + envelope
        if len(envelope) >= COMPRESS_MIN_BYTES:
            compressed = zlib.compress(envelope, self._level)
            if len(compressed) < len(envelope):
                payload = FLAG_ZLIB + compressed
        return base64.b64encode(payload).decode("ascii")

    def encode(self) -> list[str]:
        """Bodies for every window, each filled close to the limit, in the groups' order."""
        bodies: list[str] = []
        cursor = [(group, 0) for group in reversed(self._groups)]  # a stack: next group on top
        while cursor:
            want = max(1, int(self._limit * _FILL / self._per_window))
            spans, taken = [], 0
            while cursor and taken < want:
                group, lo = cursor.pop()
                hi = min(len(group.names), lo + want - taken)
                spans.append((group, lo, hi))
                taken += hi - lo
                if hi < len(group.names):
                    cursor.append((group, hi))
            self._fit(spans, taken, bodies)
        return bodies

    def _fit(self, spans: list[tuple[_Group, int, int]], count: int, out: list[str]) -> None:
        """Append bodies for ``spans`` (``count`` windows), halving until each fits the limit."""
        body = self.body(spans)
        self._per_window = max(len(body) / count, 0.5)
        if len(body) <= self._limit:
            out.append(body)
            return
        if count == 1:
            raise MessageError(f"one message encodes to {len(body)} bytes, over the {self._limit}-byte limit")
        half = count // 2
        first, second, seen = [], [], 0
        for group, lo, hi in spans:
            cut = min(max(half - seen, 0), hi - lo)
            if cut:
                first.append((group, lo, lo + cut))
            if lo + cut < hi:
                second.append((group, lo + cut, hi))
            seen += hi - lo
        self._fit(first, half, out)
        self._fit(second, count - half, out)


def encode_messages(messages: Iterable[TurokMessage] | GroupedWindows, max_body_bytes: int = 262144,
                    compression_level: int = DEFAULT_COMPRESSION_LEVEL) -> list[str]:
    """Encode messages into as few SQS bodies as fit, each at most ``max_body_bytes`` long.

    ``messages`` may be ``GroupedWindows`` (``groups.py``; ``WindowBuffer.release`` gives them):
    their groups are encoded as they are, without a message object per window.
    """
    groups = _groups_of(messages)
    if not groups:
        return []
    level = min(max(compression_level, 0), 9)  # a bad setting must not make every body unencodable
    return _Encoder(groups, max_body_bytes, level).encode()


class Column(NamedTuple):
    """One decoded group: the windows of one slot, step and aggregation, without an object per window.

    ``values`` pairs with ``names``: a float for a window of one value, a list of floats for more;
    an ``array('d')`` when every window of a version 2 group holds one value (the usual case).
    """
    slot: int
    step: int
    aggregation: str
    names: list[str]
    values: Sequence


def decode_body(body: str) -> list[TurokMessage]:
    """Decode an SQS body (Turok envelope or the design's JSON) into validated messages.

    Raises ``MessageError`` with the reason when the body cannot be accepted as a whole.
    """
    decoded = _decode(body)
    if decoded and isinstance(decoded[0], Column):
        return [TurokMessage(name, column.slot, value if type(value) is list else [value], column.step,
                             column.aggregation)
                for column in decoded for name, value in zip(column.names, column.values)]
    return cast(list[TurokMessage], decoded)


def decode_columns(body: str, max_name_bytes: int | None = None) -> list[Column]:
    """Decode an SQS body as ``decode_body`` does, refusing exactly what it refuses, into columns:
    a version 2 envelope's groups as they are, any other body one column per message.

    ``max_name_bytes``: a body holding a metric name longer than this in UTF-8 is refused too.
    """
    decoded = _decode(body, max_name_bytes)
    if decoded and isinstance(decoded[0], TurokMessage):
        return [Column(m.start_time, m.resolution, m.aggregation_type, [m.metric],
                       [m.datapoints[0] if len(m.datapoints) == 1 else m.datapoints])
                for m in decoded]
    return cast(list[Column], decoded)


def _check_names(decoded: list[TurokMessage] | list[Column], max_name_bytes: int | None) -> None:
    """Refuse a body holding a name longer than ``max_name_bytes`` in UTF-8 (None: any length)."""
    if max_name_bytes is None or not decoded:
        return
    names: list[str] = []
    for item in decoded:
        names += item.names if isinstance(item, Column) else [item.metric]
    if names and max(map(len, names)) * 4 > max_name_bytes:  # UTF-8: at most 4 bytes a character
        for name in names:
            if len(name.encode("utf-8")) > max_name_bytes:
                raise MessageError(f"metric name of {len(name)} characters is too long to store")


def _decode(body: str, max_name_bytes: int | None = None) -> list[TurokMessage] | list[Column]:
    text = body.lstrip()
    if text[:1] in ("{", "["):
        messages = _decode_json(text)
        _check_names(messages, max_name_bytes)
        return messages
    try:
        payload = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MessageError("body is neither JSON nor base64") from None
    if not payload:
        raise MessageError("empty body")
    flag, data = payload[:1], payload[1:]
    try:
        if flag == FLAG_ZLIB:
            inflater = zlib.decompressobj()
            data = inflater.decompress(data, MAX_ENVELOPE_BYTES)
            if inflater.unconsumed_tail:  # a zlib bomb: refused before it can fill memory
                raise MessageError(f"envelope inflates past {MAX_ENVELOPE_BYTES} bytes")
        elif flag != FLAG_RAW:
            raise MessageError(f"unknown envelope flag {flag!r}")
    except MessageError:
        raise
    except Exception as exc:  # zlib raises many types for corrupt input
        raise MessageError(f"undecodable envelope: {type(exc).__name__}: {exc}") from None
    if native is not None:
        # the C reading takes on only version 2 envelopes _decode_groups accepts, giving the same
        # columns; anything else (None) is left to the reference below, which gives the reason
        groups = native.groups(data, AGGREGATION_TYPES, -1 if max_name_bytes is None else max_name_bytes)
        if groups is not None:
            return [Column(*group) for group in groups]
    try:
        envelope = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises many types for corrupt input
        raise MessageError(f"undecodable envelope: {type(exc).__name__}: {exc}") from None
    decoded = _decode_envelope(envelope)
    _check_names(decoded, max_name_bytes)
    return decoded


def _decode_envelope(envelope: object) -> list[TurokMessage] | list[Column]:
    if not isinstance(envelope, dict):
        raise MessageError("envelope is not a map")
    version = envelope.get("v")
    if version == ENVELOPE_VERSION:
        return _decode_groups(envelope.get("groups"))
    if version == 1:
        return _decode_rows(envelope)
    raise MessageError(f"unsupported envelope version {version!r}")


def _decode_groups(groups: object) -> list[Column]:
    """Version 2: ``[slot, step, aggregation, names, values]`` per group (see the module doc)."""
    if not isinstance(groups, list):
        raise MessageError("envelope lacks groups")
    columns: list[Column] = []
    for group in groups:
        if not isinstance(group, list) or len(group) != 5:
            raise MessageError(f"envelope group {group!r:.80} is not [slot, step, aggregation, names, values]")
        slot, step, aggregation, names, values = group
        if type(slot) is not int or type(step) is not int or step <= 0 or slot % step:
            raise MessageError(f"envelope group has a bad slot {slot!r} or step {step!r}")
        if aggregation not in AGGREGATION_TYPES:
            raise MessageError(f"unknown aggregation_type {aggregation!r}")
        if isinstance(names, str):
            # split names are strings, and one is empty only where the text is, starts or ends
            # with the separator, or holds two in a row: checked on the text, not name by name
            bad_names = not names or names[0] == NAME_SEPARATOR or names[-1] == NAME_SEPARATOR \
                or _EMPTY_NAME in names
            names = names.split(NAME_SEPARATOR)
        else:
            bad_names = isinstance(names, list) and (not all(names) or not _STR.issuperset(map(type, names)))
        if not isinstance(names, list) or not isinstance(values, list) or len(names) != len(values):
            raise MessageError("envelope group's names and values do not pair up")
        if not names:  # the encoder never writes one; nothing to store, and a name is needed for errors
            raise MessageError("envelope group holds no windows")
        if bad_names:
            raise MessageError("envelope group holds an empty or non-string metric name")
        columns.append(Column(slot, step, aggregation, names, _decode_values(values)))
    return columns


_NUMBER_TYPES = {int, float}
_STR = {str}


def _floats(values: list) -> list[float]:
    if not _NUMBER_TYPES.issuperset(map(type, values)):
        raise MessageError("datapoints hold a non-number")
    try:
        floats = list(map(float, values))
    except OverflowError:
        raise MessageError("datapoints hold a number too large for a float") from None
    if not all(map(math.isfinite, floats)):
        raise MessageError("datapoints hold a non-finite number")
    return floats


def _decode_values(values: list) -> Sequence:
    """Each window's value, or its values when it holds more (a non-empty list in the envelope);
    an ``array('d')`` when each window holds one."""
    if list not in set(map(type, values)):
        return array("d", _floats(values))
    windows: list = []
    for value in values:
        if type(value) is list:
            if not value:
                raise MessageError("a window's datapoints are empty")
            windows.append(_floats(value))
        else:
            windows.append(_floats([value])[0])
    return windows


def _decode_rows(envelope: dict) -> list[TurokMessage]:
    """Version 1: one ``fields``-ordered row per message, times and resolutions as text."""
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
