/* Block format v2's codecs for doubles that are no scaled integers, in C: codec 0x04 (Gorilla's
 * XOR) and 0x08 (split doubles: sign, exponent below the block's top, raw mantissa), the same bytes
 * as turok_core/storage/block_codec_doubles.py. Included once, by _blockcodec.c, which picks the
 * smallest: xor_size and split_size count a codec's bytes without writing them, encode_* append
 * the codec byte and its bit stream, decode_* read m doubles from the bytes after the codec byte
 * (Py_None on success, a borrowed marker; NULL with a ValueError set for a broken stream).
 */
#ifndef TUROK_BLOCKCODEC_DOUBLES_H
#define TUROK_BLOCKCODEC_DOUBLES_H

#include "_blockcodec_bits.h"

#define CODEC_XOR 4
#define CODEC_SPLIT 8
#define SPLIT_ESCAPE 8    /* an exponent this far below the top or more: 8 one bits, then its field */
#define SIGNS_EACH 2      /* codec 0x08's sign mode with a bit per value (0: all 0, 1: all 1) */
#define FIELD 0x7FF
#define MANTISSA ((UINT64_C(1) << 52) - 1)

/* ---- encoding */

static int encode_xor(Out *o, const double *values, Py_ssize_t m) {
    if (out_byte(o, CODEC_XOR)) return -1;
    uint64_t previous = word_of(values[0]);
    if (out_bits(o, previous, 64)) return -1;
    int window_lead = -1, window_trail = -1;
    for (Py_ssize_t i = 1; i < m; i++) {
        uint64_t word = word_of(values[i]);
        uint64_t x = word ^ previous;
        previous = word;
        if (!x) {
            if (out_bits(o, 0, 1)) return -1;
            continue;
        }
        int lead = clz64(x), trail = ctz64(x);
        if (lead > 31) lead = 31;
        if (window_lead >= 0 && lead >= window_lead && trail >= window_trail) {
            if (out_bits(o, 2, 2) || out_bits(o, x >> window_trail, 64 - window_lead - window_trail)) return -1;
        } else {
            int size = 64 - lead - trail;
            if (out_bits(o, 3, 2) || out_bits(o, (uint64_t)lead, 5) || out_bits(o, (uint64_t)(size - 1), 6)
                || out_bits(o, x >> trail, size)) return -1;
            window_lead = lead;
            window_trail = trail;
        }
    }
    return out_flush_bits(o);
}

/* codec 0x04's size in bytes, its codec byte included: encode_xor's bits counted, none written */
static size_t xor_size(const double *values, Py_ssize_t m) {
    uint64_t previous = word_of(values[0]), bits = 64;
    int window_lead = -1, window_trail = -1;
    for (Py_ssize_t i = 1; i < m; i++) {
        uint64_t word = word_of(values[i]);
        uint64_t x = word ^ previous;
        previous = word;
        if (!x) { bits += 1; continue; }
        int lead = clz64(x), trail = ctz64(x);
        if (lead > 31) lead = 31;
        if (window_lead >= 0 && lead >= window_lead && trail >= window_trail) {
            bits += 2 + (uint64_t)(64 - window_lead - window_trail);
        } else {
            bits += 2 + 5 + 6 + (uint64_t)(64 - lead - trail);
            window_lead = lead;
            window_trail = trail;
        }
    }
    return 1 + (size_t)((bits + 7) / 8);
}

/* codec 0x08's size in bytes, its codec byte included; *mode and *top set for encode_split */
static size_t split_size(const double *values, Py_ssize_t m, int *mode, int *top) {
    uint64_t any_negative = 0, all_negative = 1;
    int highest = 0;
    for (Py_ssize_t i = 0; i < m; i++) {
        uint64_t word = word_of(values[i]);
        int field = (int)(word >> 52 & FIELD);
        if (field > highest) highest = field;
        any_negative |= word >> 63;
        all_negative &= word >> 63;
    }
    *mode = all_negative ? 1 : any_negative ? SIGNS_EACH : 0;
    *top = highest;
    uint64_t bits = 13 + (uint64_t)m * (52 + (*mode == SIGNS_EACH));
    for (Py_ssize_t i = 0; i < m; i++) {
        int below = highest - (int)(word_of(values[i]) >> 52 & FIELD);
        bits += below < SPLIT_ESCAPE ? (uint64_t)below + 1 : SPLIT_ESCAPE + 11;
    }
    return 1 + (size_t)((bits + 7) / 8);
}

/* codec 0x08: the sign mode and top field, then per value its sign (mode 2), exponent code, mantissa */
static int encode_split(Out *o, const double *values, Py_ssize_t m, int mode, int top) {
    if (out_byte(o, CODEC_SPLIT) || out_bits(o, (uint64_t)(mode << 11 | top), 13)) return -1;
    for (Py_ssize_t i = 0; i < m; i++) {
        uint64_t word = word_of(values[i]), field = word >> 52 & FIELD, code;
        int below = top - (int)field, size;
        if (below < SPLIT_ESCAPE) {  /* below ones, a zero */
            code = ((UINT64_C(1) << below) - 1) << 1;
            size = below + 1;
        } else {  /* 8 ones, the field */
            code = ((UINT64_C(1) << SPLIT_ESCAPE) - 1) << 11 | field;
            size = SPLIT_ESCAPE + 11;
        }
        if (mode == SIGNS_EACH) code |= (word >> 63) << size++;
        if (out_bits(o, code, size) || out_bits(o, word & MANTISSA, 52)) return -1;
    }
    return out_flush_bits(o);
}

/* ---- decoding */

static PyObject *decode_xor(In *in, Py_ssize_t m, double *values) {
    uint64_t word, v;
    if (in_bits(in, 64, &word)) return bad("truncated values");
    memcpy(&values[0], &word, 8);
    int window_lead = -1, window_trail = -1;
    for (Py_ssize_t i = 1; i < m; i++) {
        if (in_bits(in, 1, &v)) return bad("truncated values");
        if (v) {
            if (in_bits(in, 1, &v)) return bad("truncated values");
            if (v) {
                uint64_t lead, size;
                if (in_bits(in, 5, &lead) || in_bits(in, 6, &size)) return bad("truncated values");
                window_lead = (int)lead;
                window_trail = 64 - window_lead - (int)(size + 1);
                if (window_trail < 0) return bad("bad XOR window");
            } else if (window_lead < 0) {
                return bad("XOR window used before it is set");
            }
            int size = 64 - window_lead - window_trail;
            if (in_bits(in, size, &v)) return bad("truncated values");
            word ^= v << window_trail;
        }
        memcpy(&values[i], &word, 8);
    }
    if ((in->len - in->pos) * 8 - in->bit >= 8) return bad("bytes after the values");
    return Py_None;
}

/* codec 0x08: every read bound-checked by in_bits; refuses what block_codec_doubles.decode_split refuses */
static PyObject *decode_split(In *in, Py_ssize_t m, double *values) {
    uint64_t mode, top, bit, field, mantissa;
    if (in_bits(in, 2, &mode) || in_bits(in, 11, &top)) return bad("truncated values");
    if (mode > SIGNS_EACH) return bad("bad sign mode");
    for (Py_ssize_t i = 0; i < m; i++) {
        uint64_t sign = mode;
        if (mode == SIGNS_EACH && in_bits(in, 1, &sign)) return bad("truncated values");
        /* the next 8 bits at most, ones standing in for the bits past the end: a zero among
         * them ends the unary code; 8 ones, or fewer than 8 bits before the end, an escape */
        Py_ssize_t left = (in->len - in->pos) * 8 - in->bit;
        int peek = left < SPLIT_ESCAPE ? (int)left : SPLIT_ESCAPE;
        if (in_bits(in, peek, &bit)) return bad("truncated values");
        bit = bit << (SPLIT_ESCAPE - peek) | ((UINT64_C(1) << (SPLIT_ESCAPE - peek)) - 1);
        int below = clz64(~bit << (64 - SPLIT_ESCAPE));  /* leading ones; 64 when all 8 are */
        if (below > SPLIT_ESCAPE) below = SPLIT_ESCAPE;
        in->bit -= peek - (below < SPLIT_ESCAPE ? below + 1 : SPLIT_ESCAPE);  /* give back what the code did not take */
        if (below < SPLIT_ESCAPE) {
            if ((uint64_t)below > top) return bad("bad exponent code");
            field = top - (uint64_t)below;
        } else {
            if (in_bits(in, 11, &field)) return bad("truncated values");
            if (field + SPLIT_ESCAPE > top) return bad("bad exponent code");
        }
        if (in_bits(in, 52, &mantissa)) return bad("truncated values");
        if (field == FIELD && mantissa) return bad("NaN in split doubles");  /* a gap is never a value */
        uint64_t word = sign << 63 | field << 52 | mantissa;
        memcpy(&values[i], &word, 8);
    }
    if ((in->len - in->pos) * 8 - in->bit >= 8) return bad("bytes after the values");
    return Py_None;
}

#endif
