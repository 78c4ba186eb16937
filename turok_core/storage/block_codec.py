"""Block format v2: a block's slot values compressed; the pure-Python reference that defines it.

``encode(values)`` takes one block's slots (floats, ``None`` or NaN for a gap) and returns bytes;
``decode(blob)`` returns the slots as a list (``None`` for gaps, floats otherwise), without the
trailing gaps; ``decode_into(blob, row, offset)`` sets them into a reader's row instead. Round
trips are exact bit for bit for every double but NaN (±0.0, subnormals, ±inf, integers beyond
2**53). The C extension ``turok_core.storage._blockcodec`` produces the same bytes
(tests/storage/test_block_codec.py compares both); ``block_layout.py`` picks one and also reads v1.

Layout (slots are implicit, in the spirit of Gorilla / M3TSZ: only values and gaps are stored)::

    blob    = 0x02  n:uvarint  runs  values          (v1 msgpack lists start with 0x90-0x9f/0xdc/0xdd)
    runs    = (gaps:uvarint present:uvarint)*        pairs until they cover the n slots; present >= 1
    values  = nothing                                when n == 0 (no value at all)
            | 0x01+o  ints                           scaled integers
            | 0x04  xor-bits                         XOR doubles
            | 0x05+o  ints  uwidth:u8  ulp-bits      scaled integers with ulp corrections
            | 0x08  split-bits                       split doubles
    ints    = divisor<<4|scale:u8  head:svarint*o  base:svarint  width:u8  packed
    ulp-bits = (0 | 1 zigzag(c)-1:uwidth)*           one per value, zero-padded to a byte
    split-bits = signs:2  top:11  (sign:1? exponent mantissa:52)*    zero-padded to a byte
    exponent = 1{d} 0                                d = top - field < 8 (unary)
             | 1{8} field:11                         field <= top - 8 (escape)

``n`` is the index of the last value plus one. uvarint is LEB128; svarint is a zigzag-mapped
uvarint. **Scaled integers** (codec ``0x01``-``0x03``): every value equals ``k / q`` exactly
(``float(k) / q``, bits and sign included) with ``|k| <= 2**53``, ``q = DIVISORS[divisor] *
10.0**scale`` (scale 0-9), and ``q`` the smallest that works for the whole block (ties: the lower
divisor index): integers, short decimals, and averages of integers over 3, 6, 12 or 60 slots
(turokd's rollups) are all scaled integers. ``o`` (0-2) is the residual order: the
residuals are the ``k`` themselves, their deltas, or their deltas of deltas; ``head`` holds what
the first ``o`` values need (``k[0]``, then ``k[1] - k[0]``), and each residual minus ``base``
(the smallest) is packed in ``width`` bits, most significant first, the stream zero-padded to a
byte. The encoder takes the order with the fewest bytes (the lower on a tie). **XOR doubles**
(``0x04``): Gorilla's encoding, a bit stream, most significant bit first,
zero-padded to a byte: the first value's 64 bits; then per value its bits XOR the previous
value's: ``0`` when equal; ``10`` and the XOR's bits inside the previous window when its leading
and trailing zeros are at least the window's; else ``11``, 5 bits of leading zeros (at most 31),
6 bits of the significant length minus one, and the significant bits, which become the window.

**Scaled integers with ulp corrections** (codec ``0x05``-``0x07``), for turokd's averages and sums
of decimals: ``float(sum) / count`` of two-decimal gauges is ``k / (100 * count)`` but for the
rounding of the sum, about half the time an ulp or two away, which XOR stores in ~7.6 bytes a
value. ``k = round(value * q)`` (half to even); each value's bits, as an unsigned 64-bit word,
are ``float(k) / q``'s plus a correction ``c`` (mod 2**64), ``|c| <= MAX_ULPS`` (128), at the
smallest candidate ``q`` where every value's is (a zero of the other sign, inf and ``|k| >
2**53`` never are). ``ints`` as for ``0x01``-``0x03``, its order chosen alike; ``uwidth`` (0-8)
is the bit length of the largest ``zigzag(c) - 1``; per value a bit ``0`` (``c == 0``) or ``1``
and ``zigzag(c) - 1`` in ``uwidth`` bits. A reader refuses a correction that makes a NaN or an
inf. On turokd's rollups of two-decimal gauges these flags take 1.7-3.8 bits a value,
``zigzag(c)`` in a fixed width 2.6-4.0, a list of (index, c) 5.6-12 (docs/benchmarks.md).

**Split doubles** (codec ``0x08``, ``block_codec_doubles.py``), for noisy full-precision doubles,
whose 52 mantissa bits XOR cannot shrink (~7.5 bytes a value): each value's IEEE sign, 11-bit
exponent field and raw 52-bit mantissa. ``signs`` is 0 (every sign bit 0, none stored), 1 (every
sign bit 1, none stored) or 2 (a sign bit per value); ``top`` is the largest exponent field of the
block; a value's exponent is its distance ``d`` below ``top`` in unary (``d`` ones, a zero) when
``d < 8``, else 8 ones and the field itself (zeros and subnormals have field 0, inf 0x7ff with
mantissa 0). Values spread over a range lie mostly in the top binades (half in the top one, a
quarter in the next…): ~2 bits of exponent, ~6.75 bytes a value. The escape after 8 ones
measured best among 4-20 (``bench/codec.py --blocks``): within 0.01 byte a value of the best on
uniform doubles, and cheaper zeros (19 bits of exponent) than a longer one. A reader refuses sign
mode 3, a unary distance below field 0, an escaped field within 8 of the top (no encoder writes
these) and a NaN.

**Which codec.** ``0x01``-``0x03`` whenever every value is ``k / q`` exactly (those blocks'
bytes are what they were before codecs ``0x05`` and ``0x08`` existed); otherwise the smallest of
``0x04``, ``0x05``-``0x07`` (when some ``q`` keeps every correction in bounds) and ``0x08``, a tie
going to the older codec: XOR, then ``0x05``-``0x07``, then ``0x08``. The version byte stays 2: a
reader from before codec ``0x05`` (this module and ``_blockcodec.c`` alike) refuses such a blob
with ``ValueError("block v2: unknown values codec 5")``, one from before ``0x08`` refuses a split
block with ``"unknown values codec 8"``, so an old finder or turokd fails loudly on a new block
and never misreads it.
"""
from __future__ import annotations

import math
import struct
from typing import Any, Iterable, MutableSequence, Optional, Sequence

from turok_core.storage.block_codec_doubles import (
    CODEC_SPLIT,
    CODEC_XOR,
    bit_string,
    decode_split,
    decode_xor,
    encode_split,
    encode_xor,
)

VERSION = 2
MAX_SCALE = 9
MAX_SCALED = 2 ** 53  # |k| bound: exact as a double, and deltas of deltas stay inside int64
MAX_RESIDUAL = 4 * MAX_SCALED  # deltas of deltas
MAX_WIDTH = 57  # bits of the largest residual range, 2 * MAX_RESIDUAL
MAX_SLOTS = 86400  # a day of 1 s slots: no block is longer
CODEC_INTS = 0x01  # + residual order (0, 1, 2)
CODEC_ULPS = 0x05  # + residual order (0, 1, 2)
MAX_ULPS = 128  # |correction| of codec 0x05-0x07: zigzag(correction) - 1 fits MAX_ULP_WIDTH bits
MAX_ULP_WIDTH = 8
DIVISORS = (1, 3, 6, 12, 60)  # besides powers of ten: averages of 3, 6 (10 s → 1 min), 12 and 60 slots
_POWERS = [10.0 ** s for s in range(MAX_SCALE + 1)]
# (q, header byte) in the order the encoder tries them
_CANDIDATES = sorted((float(d) * _POWERS[s], i << 4 | s) for i, d in enumerate(DIVISORS) for s in range(MAX_SCALE + 1))
_MASK64 = (1 << 64) - 1
_EXPONENT = 0x7FF << 52


# --- encoding

def _uvarint(value: int, out: bytearray) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _zigzag(value: int) -> int:
    return value << 1 if value >= 0 else ((-value) << 1) - 1


def _svarint_size(value: int) -> int:
    return max(1, (_zigzag(value).bit_length() + 6) // 7)


def _word(value: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", value))[0]


def _scaled(values: Sequence[float], max_ulps: int) -> Optional[tuple[int, list[int], list[int]]]:
    """``(header byte, k per value, ulps per value)`` for the first ``q`` at which every value's
    bits are ``float(k) / q``'s plus at most ``max_ulps`` (0: exactly ``k / q``); else None."""
    for power, header in _CANDIDATES:
        ks, ulps = [], []
        for value in values:
            x = value * power
            if not abs(x) <= MAX_SCALED:  # also inf
                break
            k = round(x)  # half to even, as C's nearbyint
            approx = float(k) / power
            if approx == value and (k or math.copysign(1.0, value) > 0):
                ulp = 0
            else:  # the difference of the bits, so -0.0 is no 0.0
                ulp = (_word(value) - _word(approx) + (1 << 63)) % (1 << 64) - (1 << 63)
                if abs(ulp) > max_ulps:
                    break
            ks.append(k)
            ulps.append(ulp)
        else:
            return header, ks, ulps
    return None


def _residuals(ks: list[int], order: int) -> tuple[list[int], list[int]]:
    """``(head, residuals)`` of the scaled integers at residual ``order``."""
    if order == 0:
        return [], ks
    deltas = [b - a for a, b in zip(ks, ks[1:])]
    if order == 1:
        return [ks[0]], deltas
    return [ks[0], deltas[0]], [b - a for a, b in zip(deltas, deltas[1:])]


def _pack(numbers: Iterable[int], width: int, out: bytearray) -> None:
    if not width:
        return
    bits = "".join(format(number, f"0{width}b") for number in numbers)
    bits += "0" * (-len(bits) % 8)
    if bits:
        out += int(bits, 2).to_bytes(len(bits) // 8, "big")


def _encode_ints(codec: int, header: int, ks: list[int], out: bytearray) -> None:
    best: Optional[tuple[int, int, list[int], list[int], int, int]] = None
    for order in range(min(3, len(ks))):
        head, residuals = _residuals(ks, order)
        base = min(residuals)
        width = (max(residuals) - base).bit_length()
        cost = sum(_svarint_size(h) for h in head) + _svarint_size(base) + (width * len(residuals) + 7) // 8
        if best is None or cost < best[0]:
            best = (cost, order, head, residuals, base, width)
    assert best is not None
    _cost, order, head, residuals, base, width = best
    out.append(codec + order)
    out.append(header)
    for h in head:
        _uvarint(_zigzag(h), out)
    _uvarint(_zigzag(base), out)
    out.append(width)
    _pack((r - base for r in residuals), width, out)


def _binary(number: int, width: int) -> str:
    return format(number, f"0{width}b") if width else ""


def _encode_ulps(ulps: list[int], out: bytearray) -> None:
    """The corrections: their width byte, then per value a 0 bit, or a 1 bit and ``zigzag - 1``."""
    width = max(_zigzag(ulp) - 1 for ulp in ulps if ulp).bit_length()  # 0: every correction is -1
    out.append(width)
    bits = "".join("1" + _binary(_zigzag(ulp) - 1, width) if ulp else "0" for ulp in ulps)
    bits += "0" * (-len(bits) % 8)
    out += int(bits, 2).to_bytes(len(bits) // 8, "big")


def encode(values: Iterable[Optional[float]]) -> bytes:
    """One block's slots (``None`` or NaN for gaps) as a v2 blob; trailing gaps are not stored."""
    slots = [math.nan if value is None else float(value) for value in values]
    n = len(slots)
    if n > MAX_SLOTS:
        raise ValueError(f"a block holds at most {MAX_SLOTS} slots, not {n}")
    while n and slots[n - 1] != slots[n - 1]:
        n -= 1
    out = bytearray([VERSION])
    _uvarint(n, out)
    present: list[float] = []
    index = 0
    while index < n:
        start = index
        while slots[index] != slots[index]:
            index += 1
        _uvarint(index - start, out)
        start = index
        while index < n and slots[index] == slots[index]:
            index += 1
        _uvarint(index - start, out)
        present.extend(slots[start:index])
    if not present:
        return bytes(out)
    near = _scaled(present, MAX_ULPS)
    exact = None  # and with no q near, none is exact
    if near is not None:
        exact = near if not any(near[2]) else _scaled(present, 0)
    if exact is not None:
        _encode_ints(CODEC_INTS, exact[0], exact[1], out)
        return bytes(out)
    chosen = bytearray()
    encode_xor(present, chosen)
    if near is not None:
        corrected = bytearray()
        _encode_ints(CODEC_ULPS, near[0], near[1], corrected)
        _encode_ulps(near[2], corrected)
        if len(corrected) < len(chosen):  # a tie keeps XOR
            chosen = corrected
    split = bytearray()
    encode_split(present, split)
    if len(split) < len(chosen):  # a tie keeps XOR or 0x05, which older readers read
        chosen = split
    out += chosen
    return bytes(out)


# --- decoding

class _Reader:
    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.offset = 0

    def byte(self) -> int:
        if self.offset >= len(self.blob):
            raise ValueError("block v2: truncated")
        self.offset += 1
        return self.blob[self.offset - 1]

    def uvarint(self) -> int:
        value = shift = 0
        while True:
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
            if shift > 63:
                raise ValueError("block v2: varint too long")
        if value > _MASK64:
            raise ValueError("block v2: varint too large")
        return value

    def svarint(self) -> int:
        value = self.uvarint()
        return (value >> 1) ^ -(value & 1)

    def take(self, count: int) -> bytes:
        """The next ``count`` bytes (fewer at the end: the caller checks)."""
        taken, self.offset = self.blob[self.offset:self.offset + count], min(len(self.blob), self.offset + count)
        return taken

    def rest(self) -> bytes:
        rest, self.offset = self.blob[self.offset:], len(self.blob)
        return rest


def _decode_ints(order: int, reader: _Reader, m: int, corrected: bool) -> list[float]:
    """Codec 0x01-0x03 (``corrected`` False) or 0x05-0x07, of residual ``order``."""
    header = reader.byte()
    scale, divisor = header & 0x0F, header >> 4
    if scale > MAX_SCALE or divisor >= len(DIVISORS) or order >= m:
        raise ValueError("block v2: bad scaled-integer header")
    head = [reader.svarint() for _ in range(order)]
    base = reader.svarint()
    width = reader.byte()
    if width > MAX_WIDTH or abs(base) > MAX_RESIDUAL:
        raise ValueError("block v2: bad residual base or width")
    count = m - order
    size = (width * count + 7) // 8
    data = reader.take(size) if corrected else reader.rest()
    if len(data) != size:
        raise ValueError("block v2: values of the wrong length")
    bits = bit_string(data, width * count)
    residuals = [base + int(bits[i * width:(i + 1) * width], 2) for i in range(count)] if width else [base] * count
    # the bounds a valid encoder keeps (and C's int64 arithmetic relies on), checked as we go
    if order == 0:
        ks = residuals
    else:
        ks = [head[0]]
        delta = head[1] if order == 2 else 0
        if order == 2:
            ks.append(head[0] + delta)
        for r in residuals:
            if order == 1:
                delta = r
            else:
                delta += r
            if abs(delta) > 2 * MAX_SCALED:
                raise ValueError("block v2: scaled integer out of range")
            ks.append(ks[-1] + delta)
    if any(abs(k) > MAX_SCALED for k in ks):
        raise ValueError("block v2: scaled integer out of range")
    q = float(DIVISORS[divisor]) * _POWERS[scale]
    if not corrected:
        return [float(k) / q for k in ks]
    words = [(_word(float(k) / q) + ulp) & _MASK64 for k, ulp in zip(ks, _decode_ulps(reader, m))]
    if any(word & _EXPONENT == _EXPONENT for word in words):
        raise ValueError("block v2: ulp correction out of range")  # NaN or inf: no encoder writes it
    return list(struct.unpack(f"<{m}d", struct.pack(f"<{m}Q", *words)))


def _decode_ulps(reader: _Reader, m: int) -> list[int]:
    width = reader.byte()
    if width > MAX_ULP_WIDTH:
        raise ValueError("block v2: bad ulp correction width")
    data = reader.rest()
    bits = bit_string(data, 0)
    position, ulps = 0, []
    for _ in range(m):
        if position >= len(bits):
            raise ValueError("block v2: truncated values")
        if bits[position] == "0":
            ulps.append(0)
            position += 1
            continue
        end = position + 1 + width
        if end > len(bits):
            raise ValueError("block v2: truncated values")
        z = int(bits[position + 1:end] or "0", 2) + 1  # the correction's zigzag
        ulps.append((z >> 1) ^ -(z & 1))
        position = end
    if len(bits) - position >= 8:
        raise ValueError("block v2: bytes after the values")
    return ulps


def decode(blob: bytes) -> list[Optional[float]]:
    """A v2 blob's slots: ``None`` for gaps; ValueError for anything that is not a valid v2 blob."""
    reader = _Reader(bytes(blob))
    if reader.byte() != VERSION:
        raise ValueError("not a v2 block")
    n = reader.uvarint()
    if n > MAX_SLOTS:
        raise ValueError("block v2: too many slots")
    runs: list[tuple[int, int]] = []
    covered = m = 0
    while covered < n:
        gaps, present = reader.uvarint(), reader.uvarint()
        if not present or covered + gaps + present > n:
            raise ValueError("block v2: gap runs do not cover the block")
        runs.append((gaps, present))
        covered += gaps + present
        m += present
    if not m:
        if reader.offset != len(reader.blob):
            raise ValueError("block v2: bytes after the values")
        return []
    codec = reader.byte()
    if CODEC_INTS <= codec < CODEC_INTS + 3:
        values = _decode_ints(codec - CODEC_INTS, reader, m, False)
    elif CODEC_ULPS <= codec < CODEC_ULPS + 3:
        values = _decode_ints(codec - CODEC_ULPS, reader, m, True)
    elif codec == CODEC_XOR:
        values = decode_xor(reader.rest(), m)
    elif codec == CODEC_SPLIT:
        values = decode_split(reader.rest(), m)
    else:
        raise ValueError(f"block v2: unknown values codec {codec}")
    slots: list[Optional[float]] = []
    taken = 0
    for gaps, present in runs:
        slots.extend([None] * gaps)
        slots.extend(values[taken:taken + present])
        taken += present
    return slots


def decode_into(blob: bytes, row: MutableSequence[Any], offset: int) -> None:
    """Set a v2 blob's values into ``row`` (a list, or an ``array('d')``): slot ``i`` goes to
    ``row[offset + i]``; gaps and slots outside the row leave the row as it is (a read places each
    block into its series, turokd unpacks a held coarse block)."""
    length = len(row)
    for index, value in enumerate(decode(blob)):
        slot = offset + index
        if value is not None and 0 <= slot < length:
            row[slot] = value
