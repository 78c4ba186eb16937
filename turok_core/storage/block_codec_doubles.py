"""Block format v2's codecs for doubles that are no scaled integers, and its bit-stream reading.

``block_codec.py`` defines the format (its docstring has the grammar) and picks the codec; this
module writes and reads the values part of codec ``0x04`` (Gorilla's XOR of consecutive doubles)
and ``0x08`` (split doubles: sign, exponent coded below the block's top, raw 52-bit mantissa).
``encode_xor`` / ``encode_split`` append the codec byte and the bit stream (most significant bit
first, zero-padded to a byte) to ``out``; ``decode_xor`` / ``decode_split`` read ``m`` doubles
back from the bytes after the codec byte, exact bit for bit, and raise ValueError for a stream
that is short, long or inconsistent (and, for 0x08, for a NaN or an exponent code no encoder
writes). ``bit_string`` is the bit reader every codec of the reference shares.
"""
from __future__ import annotations

import struct
from typing import Sequence

CODEC_XOR = 0x04
CODEC_SPLIT = 0x08
SPLIT_ESCAPE = 8  # an exponent this far below the top or more: that many 1 bits, then its field
SIGNS_POSITIVE, SIGNS_NEGATIVE, SIGNS_EACH = 0, 1, 2  # codec 0x08's sign modes
_FIELD = 0x7FF  # an exponent field: all ones is inf (mantissa 0) or NaN
_MANTISSA = (1 << 52) - 1


def bit_string(data: bytes, count: int) -> str:
    """``data``'s bits as a string of 0/1; ValueError when it holds fewer than ``count``."""
    if count > 8 * len(data):
        raise ValueError("block v2: truncated values")
    return format(int.from_bytes(data, "big"), f"0{8 * len(data)}b") if data else ""


def _append_stream(out: bytearray, codec: int, bits: list[str]) -> None:
    """The codec byte, then the bit stream most significant bit first, zero-padded to a byte."""
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    out.append(codec)
    out += int(stream, 2).to_bytes(len(stream) // 8, "big")


def _leading_zeros(x: int) -> int:
    return 64 - x.bit_length()


def _trailing_zeros(x: int) -> int:
    return (x & -x).bit_length() - 1


def encode_xor(values: Sequence[float], out: bytearray) -> None:
    """Codec 0x04 of one or more doubles, its codec byte first, appended to ``out``."""
    words = struct.unpack(f"<{len(values)}Q", struct.pack(f"<{len(values)}d", *values))
    bits = [format(words[0], "064b")]
    previous = words[0]
    window_lead = window_trail = -1  # no window yet
    for word in words[1:]:
        x = word ^ previous
        previous = word
        if not x:
            bits.append("0")
            continue
        lead, trail = min(_leading_zeros(x), 31), _trailing_zeros(x)
        if window_lead >= 0 and lead >= window_lead and trail >= window_trail:
            size = 64 - window_lead - window_trail
            bits.append("10" + format(x >> window_trail, f"0{size}b"))
        else:
            size = 64 - lead - trail
            bits.append("11" + format(lead, "05b") + format(size - 1, "06b") + format(x >> trail, f"0{size}b"))
            window_lead, window_trail = lead, trail
    _append_stream(out, CODEC_XOR, bits)


def decode_xor(data: bytes, m: int) -> list[float]:
    """The ``m`` doubles of codec 0x04's bit stream ``data`` (the bytes after the codec byte)."""
    bits = bit_string(data, 64)
    length = len(bits)
    words = [int(bits[:64], 2)]
    position = 64
    window_lead = window_trail = -1

    def take(count: int) -> int:
        nonlocal position
        if position + count > length:
            raise ValueError("block v2: truncated values")
        position += count
        return int(bits[position - count:position], 2) if count else 0

    for _ in range(m - 1):
        if not take(1):
            words.append(words[-1])
            continue
        if take(1):
            window_lead = take(5)
            size = take(6) + 1
            window_trail = 64 - window_lead - size
            if window_trail < 0:
                raise ValueError("block v2: bad XOR window")
        elif window_lead < 0:
            raise ValueError("block v2: XOR window used before it is set")
        size = 64 - window_lead - window_trail
        words.append(words[-1] ^ (take(size) << window_trail))
    if (length - position) >= 8:
        raise ValueError("block v2: bytes after the values")
    return list(struct.unpack(f"<{m}d", struct.pack(f"<{m}Q", *words)))


def encode_split(values: Sequence[float], out: bytearray) -> None:
    """Codec 0x08 of one or more doubles (none NaN), its codec byte first, appended to ``out``."""
    words = struct.unpack(f"<{len(values)}Q", struct.pack(f"<{len(values)}d", *values))
    fields = [word >> 52 & _FIELD for word in words]
    top = max(fields)
    signs = {word >> 63 for word in words}
    mode = SIGNS_EACH if len(signs) == 2 else signs.pop()
    bits = [format(mode, "02b"), format(top, "011b")]
    for word, field in zip(words, fields):
        if mode == SIGNS_EACH:
            bits.append("1" if word >> 63 else "0")
        below = top - field
        bits.append("1" * below + "0" if below < SPLIT_ESCAPE else "1" * SPLIT_ESCAPE + format(field, "011b"))
        bits.append(format(word & _MANTISSA, "052b"))
    _append_stream(out, CODEC_SPLIT, bits)


def decode_split(data: bytes, m: int) -> list[float]:
    """The ``m`` doubles of codec 0x08's bit stream ``data`` (the bytes after the codec byte)."""
    bits = bit_string(data, 13)
    length = len(bits)
    mode, top = int(bits[:2], 2), int(bits[2:13], 2)
    if mode > SIGNS_EACH:
        raise ValueError("block v2: bad sign mode")
    position = 13
    words = []
    for _ in range(m):
        sign = mode
        if mode == SIGNS_EACH:
            if position >= length:
                raise ValueError("block v2: truncated values")
            sign = int(bits[position])
            position += 1
        zero = bits.find("0", position, position + SPLIT_ESCAPE)
        if zero >= 0:  # the distance below the top in unary
            field = top - (zero - position)
            position = zero + 1
            if field < 0:
                raise ValueError("block v2: bad exponent code")
        else:  # escaped: the field itself, never one that unary codes
            if position + SPLIT_ESCAPE + 11 > length:
                raise ValueError("block v2: truncated values")
            field = int(bits[position + SPLIT_ESCAPE:position + SPLIT_ESCAPE + 11], 2)
            position += SPLIT_ESCAPE + 11
            if field > top - SPLIT_ESCAPE:
                raise ValueError("block v2: bad exponent code")
        if position + 52 > length:
            raise ValueError("block v2: truncated values")
        mantissa = int(bits[position:position + 52], 2)
        position += 52
        if field == _FIELD and mantissa:
            raise ValueError("block v2: NaN in split doubles")  # a gap is never a value
        words.append(sign << 63 | field << 52 | mantissa)
    if length - position >= 8:
        raise ValueError("block v2: bytes after the values")
    return list(struct.unpack(f"<{m}d", struct.pack(f"<{m}Q", *words)))
