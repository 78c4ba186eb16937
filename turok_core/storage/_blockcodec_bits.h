/* Block format v2's byte and bit streams, for _blockcodec.c and _blockcodec_doubles.h (one
 * translation unit: everything here is static). Out appends bytes, LEB128 varints and bit fields
 * (most significant bit first, zero-padded to a byte by out_flush_bits) to a growing buffer; In
 * reads them back, every read checked against the end of the blob (-1 past it, never a read
 * beyond); bad() raises the ValueError every refusal of a broken blob is.
 */
#ifndef TUROK_BLOCKCODEC_BITS_H
#define TUROK_BLOCKCODEC_BITS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* ---- output buffer and bit writer */

typedef struct {
    unsigned char *data;
    size_t len, cap;
    uint64_t acc;   /* pending bits, right-aligned */
    int nacc;       /* how many */
} Out;

static int out_reserve(Out *o, size_t more) {
    if (o->len + more <= o->cap) return 0;
    size_t cap = o->cap ? o->cap : 256;
    while (cap < o->len + more) cap *= 2;
    unsigned char *data = PyMem_Realloc(o->data, cap);
    if (!data) { PyErr_NoMemory(); return -1; }
    o->data = data;
    o->cap = cap;
    return 0;
}

static int out_byte(Out *o, unsigned value) {
    if (out_reserve(o, 1)) return -1;
    o->data[o->len++] = (unsigned char)value;
    return 0;
}

static int out_uvarint(Out *o, uint64_t value) {
    if (out_reserve(o, 10)) return -1;
    while (value >= 0x80) {
        o->data[o->len++] = (unsigned char)((value & 0x7F) | 0x80);
        value >>= 7;
    }
    o->data[o->len++] = (unsigned char)value;
    return 0;
}

/* append the low `count` bits of value (count <= 64), most significant first */
static int out_bits(Out *o, uint64_t value, int count) {
    if (count > 32) {
        if (out_bits(o, value >> 32, count - 32)) return -1;
        value &= 0xFFFFFFFFu;
        count = 32;
    }
    if (count == 0) return 0;
    if (out_reserve(o, 8)) return -1;
    o->acc = (o->acc << count) | (value & ((UINT64_C(1) << count) - 1));
    o->nacc += count;
    while (o->nacc >= 8) {
        o->nacc -= 8;
        o->data[o->len++] = (unsigned char)(o->acc >> o->nacc);
    }
    o->acc &= (UINT64_C(1) << o->nacc) - 1;
    return 0;
}

static int out_flush_bits(Out *o) {
    if (o->nacc) return out_bits(o, 0, 8 - o->nacc);
    return 0;
}

static uint64_t word_of(double v) { uint64_t w; memcpy(&w, &v, 8); return w; }

static int clz64(uint64_t x) { return x ? __builtin_clzll(x) : 64; }
static int ctz64(uint64_t x) { return x ? __builtin_ctzll(x) : 64; }

/* ---- input: a blob read byte by byte, then as a bit stream */

typedef struct {
    const unsigned char *data;
    Py_ssize_t len, pos;   /* byte position */
    Py_ssize_t bit;        /* bit position inside the bit stream, from `pos` on */
} In;

static PyObject *bad(const char *why) {
    PyErr_Format(PyExc_ValueError, "block v2: %s", why);
    return NULL;
}

static int in_byte(In *in, unsigned *value) {
    if (in->pos >= in->len) return -1;
    *value = in->data[in->pos++];
    return 0;
}

static int in_uvarint(In *in, uint64_t *value) {
    uint64_t result = 0;
    for (int shift = 0; shift <= 63; shift += 7) {
        unsigned byte;
        if (in_byte(in, &byte)) return -1;
        if (shift == 63 && (byte & 0x7E)) return -1;  /* beyond 64 bits */
        result |= (uint64_t)(byte & 0x7F) << shift;
        if (byte < 0x80) { *value = result; return 0; }
    }
    return -1;
}

static int in_svarint(In *in, int64_t *value) {
    uint64_t z;
    if (in_uvarint(in, &z)) return -1;
    *value = (int64_t)(z >> 1) ^ -(int64_t)(z & 1);
    return 0;
}

/* the next `count` bits (<= 64) of the stream from in->pos; -1 past the end */
static int in_bits(In *in, int count, uint64_t *value) {
    if (in->bit + count > (in->len - in->pos) * 8) return -1;
    if (count > 56) {  /* a window of 8 bytes holds 56 bits past any bit offset */
        uint64_t high, low;
        in_bits(in, count - 32, &high);
        in_bits(in, 32, &low);
        *value = (high << 32) | low;
        return 0;
    }
    if (count == 0) { *value = 0; return 0; }
    Py_ssize_t at = in->pos + in->bit / 8, avail = in->len - at;
    const unsigned char *p = in->data + at;
    uint64_t window = 0;
    for (int i = 0; i < 8; i++)
        window = (window << 8) | (i < avail ? p[i] : 0);
    *value = (window << (in->bit % 8)) >> (64 - count);
    in->bit += count;
    return 0;
}

#endif
