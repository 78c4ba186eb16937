/* Block format v2 in C: the same bytes as the reference, turok_core/storage/block_codec.py
 * (which defines the format), a whole block per call.
 *
 *   encode(values) -> bytes   values: a buffer of doubles (array('d'), NaN for gaps) or a
 *                             sequence of float/int/None (None or NaN for gaps)
 *   decode(blob) -> list      floats, None for gaps, trailing gaps not returned;
 *                             ValueError for anything that is not a valid v2 blob
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_blockcodec_bits.h"
#include "_blockcodec_doubles.h"

#define VERSION 2
#define MAX_SCALE 9
#define MAX_SCALED (UINT64_C(1) << 53)
#define MAX_RESIDUAL (UINT64_C(1) << 55)
#define MAX_WIDTH 57
#define MAX_SLOTS 86400
#define CODEC_INTS 1
#define CODEC_ULPS 5
#define MAX_ULPS 128
#define MAX_ULP_WIDTH 8
#define EXPONENT UINT64_C(0x7FF0000000000000)

static const double POWERS[MAX_SCALE + 1] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9};
#define N_DIVISORS 5
static const double DIVISORS[N_DIVISORS] = {1, 3, 6, 12, 60};
/* (divisor index, scale) by increasing q = divisor * 10**scale, as block_codec._CANDIDATES */
static const unsigned char CANDIDATES[][2] = {
    {0, 0}, {1, 0}, {2, 0}, {0, 1}, {3, 0}, {1, 1}, {2, 1}, {4, 0}, {0, 2}, {3, 1}, {1, 2}, {2, 2}, {4, 1},
    {0, 3}, {3, 2}, {1, 3}, {2, 3}, {4, 2}, {0, 4}, {3, 3}, {1, 4}, {2, 4}, {4, 3}, {0, 5}, {3, 4}, {1, 5},
    {2, 5}, {4, 4}, {0, 6}, {3, 5}, {1, 6}, {2, 6}, {4, 5}, {0, 7}, {3, 6}, {1, 7}, {2, 7}, {4, 6}, {0, 8},
    {3, 7}, {1, 8}, {2, 8}, {4, 7}, {0, 9}, {3, 8}, {1, 9}, {2, 9}, {4, 8}, {3, 9}, {4, 9},
};
#define N_CANDIDATES ((int)(sizeof(CANDIDATES) / sizeof(CANDIDATES[0])))

static uint64_t zigzag(int64_t value) {
    return value >= 0 ? (uint64_t)value << 1 : (((uint64_t)(-(value + 1))) << 1) + 1;
}

static int svarint_size(int64_t value) {
    uint64_t z = zigzag(value);
    int size = 1;
    while (z >= 0x80) { z >>= 7; size++; }
    return size;
}

/* ---- encoding */

static int is_gap(double v) { return v != v; }

/* value's bits are those of k / q plus at most max_ulps (0: k / q exactly, bits and sign):
 * 1 with *k and *ulp set, else 0 */
static int scaled_one(double value, double q, int64_t max_ulps, int64_t *k, int64_t *ulp) {
    double x = value * q;
    if (!(fabs(x) <= (double)MAX_SCALED)) return 0;
    *k = (int64_t)nearbyint(x);  /* half to even, as Python's round */
    *ulp = (int64_t)(word_of(value) - word_of((double)*k / q));  /* bits: also tells -0.0 from 0.0 */
    return *ulp >= -max_ulps && *ulp <= max_ulps;
}

/* every value is k / q (plus at most max_ulps) for the first candidate q from `from` on that
 * fits: its index (ks and ulps filled), or -1. The value that failed the last candidate is tried
 * first: it mostly fails again. */
static int find_scale(const double *values, Py_ssize_t m, int64_t max_ulps, int from, int64_t *ks, int64_t *ulps) {
    Py_ssize_t failed = 0;
    for (int c = from; c < N_CANDIDATES; c++) {
        double q = DIVISORS[CANDIDATES[c][0]] * POWERS[CANDIDATES[c][1]];
        if (!scaled_one(values[failed], q, max_ulps, &ks[failed], &ulps[failed])) continue;
        Py_ssize_t i;
        for (i = 0; i < m; i++)
            if (!scaled_one(values[i], q, max_ulps, &ks[i], &ulps[i])) break;
        if (i == m) return c;
        failed = i;
    }
    return -1;
}

static int header_of(int candidate) { return CANDIDATES[candidate][0] << 4 | CANDIDATES[candidate][1]; }

static void residuals_of(const int64_t *ks, Py_ssize_t m, int order, int64_t *out) {
    /* out[j] = residual of value order + j */
    for (Py_ssize_t i = order; i < m; i++) {
        if (order == 0) out[i] = ks[i];
        else if (order == 1) out[i - 1] = ks[i] - ks[i - 1];
        else out[i - 2] = ks[i] - 2 * ks[i - 1] + ks[i - 2];
    }
}

static int bit_length(uint64_t x) {
    int n = 0;
    while (x) { n++; x >>= 1; }
    return n;
}

static int encode_ints(Out *o, int codec, int header, const int64_t *ks, Py_ssize_t m, int64_t *work) {
    int best_order = -1, best_width = 0;
    int64_t best_base = 0, best_cost = 0;
    int orders = m < 3 ? (int)m : 3;
    for (int order = 0; order < orders; order++) {
        Py_ssize_t count = m - order;
        residuals_of(ks, m, order, work);
        int64_t lo = work[0], hi = work[0];
        for (Py_ssize_t j = 1; j < count; j++) {
            if (work[j] < lo) lo = work[j];
            if (work[j] > hi) hi = work[j];
        }
        int width = bit_length((uint64_t)(hi - lo));
        int64_t cost = svarint_size(lo) + ((int64_t)width * count + 7) / 8;
        if (order >= 1) cost += svarint_size(ks[0]);
        if (order == 2) cost += svarint_size(ks[1] - ks[0]);
        if (best_order < 0 || cost < best_cost) {
            best_order = order; best_cost = cost; best_base = lo; best_width = width;
        }
    }
    int order = best_order;
    if (out_byte(o, (unsigned)(codec + order)) || out_byte(o, (unsigned)header)) return -1;
    if (order >= 1 && out_uvarint(o, zigzag(ks[0]))) return -1;
    if (order == 2 && out_uvarint(o, zigzag(ks[1] - ks[0]))) return -1;
    if (out_uvarint(o, zigzag(best_base)) || out_byte(o, (unsigned)best_width)) return -1;
    if (best_width) {
        residuals_of(ks, m, order, work);
        for (Py_ssize_t j = 0; j < m - order; j++)
            if (out_bits(o, (uint64_t)(work[j] - best_base), best_width)) return -1;
        if (out_flush_bits(o)) return -1;
    }
    return 0;
}

/* codec 0x05-0x07's corrections: their width, then per value a 0 bit, or a 1 bit and zigzag - 1 */
static int encode_ulps(Out *o, const int64_t *ulps, Py_ssize_t m) {
    uint64_t widest = 0;
    for (Py_ssize_t i = 0; i < m; i++)
        if (ulps[i] && zigzag(ulps[i]) - 1 > widest) widest = zigzag(ulps[i]) - 1;
    int width = bit_length(widest);
    if (out_byte(o, (unsigned)width)) return -1;
    for (Py_ssize_t i = 0; i < m; i++) {
        if (!ulps[i]) {
            if (out_bits(o, 0, 1)) return -1;
        } else if (out_bits(o, 1, 1) || out_bits(o, zigzag(ulps[i]) - 1, width)) {
            return -1;
        }
    }
    return out_flush_bits(o);
}

/* the block's slots as doubles (NaN for gaps): *owned is set when the caller must free them */
static double *slots_of(PyObject *values, Py_ssize_t *n, Py_buffer *view, int *has_view, double **owned) {
    *has_view = 0;
    *owned = NULL;
    if (PyObject_CheckBuffer(values) && !PyBytes_Check(values) && !PyByteArray_Check(values)) {
        if (PyObject_GetBuffer(values, view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) == 0) {
            if (view->itemsize == 8 && view->format && strcmp(view->format, "d") == 0) {
                *has_view = 1;
                *n = view->len / 8;
                return (double *)view->buf;
            }
            PyBuffer_Release(view);
        }
        PyErr_Clear();
    }
    PyObject *seq = PySequence_Fast(values, "encode: values must be a sequence or a buffer of doubles");
    if (!seq) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    double *slots = PyMem_Malloc((size_t)(count ? count : 1) * sizeof(double));
    if (!slots) { Py_DECREF(seq); PyErr_NoMemory(); return NULL; }
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < count; i++) {
        if (items[i] == Py_None) { slots[i] = NAN; continue; }
        double v = PyFloat_AsDouble(items[i]);
        if (v == -1.0 && PyErr_Occurred()) { PyMem_Free(slots); Py_DECREF(seq); return NULL; }
        slots[i] = v;
    }
    Py_DECREF(seq);
    *n = count;
    *owned = slots;
    return slots;
}

static PyObject *codec_encode(PyObject *self, PyObject *values) {
    Py_buffer view;
    int has_view;
    double *owned;
    Py_ssize_t total;
    const double *slots = slots_of(values, &total, &view, &has_view, &owned);
    if (!slots) return NULL;
    PyObject *result = NULL;
    Out o = {0};
    double *present = NULL;
    int64_t *ks = NULL, *work = NULL, *ulps = NULL, *exact_ks = NULL;
    Py_ssize_t n = total;
    while (n && is_gap(slots[n - 1])) n--;
    if (total > MAX_SLOTS) {
        PyErr_Format(PyExc_ValueError, "a block holds at most %d slots, not %zd", MAX_SLOTS, total);
        goto done;
    }
    present = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(double));
    if (!present) { PyErr_NoMemory(); goto done; }
    if (out_byte(&o, VERSION) || out_uvarint(&o, (uint64_t)n)) goto done;
    Py_ssize_t m = 0, i = 0;
    while (i < n) {
        Py_ssize_t start = i;
        while (is_gap(slots[i])) i++;  /* slots[n - 1] is a value: stops */
        if (out_uvarint(&o, (uint64_t)(i - start))) goto done;
        start = i;
        while (i < n && !is_gap(slots[i])) present[m++] = slots[i++];
        if (out_uvarint(&o, (uint64_t)(i - start))) goto done;
    }
    if (m) {
        ks = PyMem_Malloc((size_t)m * sizeof(int64_t));
        work = PyMem_Malloc((size_t)m * sizeof(int64_t));
        ulps = PyMem_Malloc((size_t)m * sizeof(int64_t));
        exact_ks = PyMem_Malloc((size_t)m * sizeof(int64_t));
        if (!ks || !work || !ulps || !exact_ks) { PyErr_NoMemory(); goto done; }
        /* The first q within MAX_ULPS of every value. None: no q is exact either (XOR). Every
         * correction 0: it is the first exact q. Else an exact q further on still wins (those
         * blocks keep the bytes they had before codec 0x05), and only then do the corrections
         * meet XOR, the smaller taken (a tie keeps XOR). */
        int near = find_scale(present, m, MAX_ULPS, 0, ks, ulps), exact = -1;
        if (near >= 0) {
            Py_ssize_t i = 0;
            while (i < m && !ulps[i]) i++;
            exact = i == m ? near : find_scale(present, m, 0, near + 1, exact_ks, work);
        }
        if (exact >= 0) {
            if (encode_ints(&o, CODEC_INTS, header_of(exact), exact == near ? ks : exact_ks, m, work)) goto done;
        } else {
            /* the smallest of XOR, the corrections and split doubles, a tie to the older codec (in
             * that order); XOR's and the split's sizes are counted, only the chosen one written */
            int mode, top;
            size_t xor = xor_size(present, m), split = split_size(present, m, &mode, &top), mark = o.len;
            if (near >= 0) {
                if (encode_ints(&o, CODEC_ULPS, header_of(near), ks, m, work) || encode_ulps(&o, ulps, m)) goto done;
                if (o.len - mark < xor && o.len - mark <= split) goto encoded;
                o.len = mark;  /* the bit writer is flushed: nothing pending */
            }
            if (split < xor ? encode_split(&o, present, m, mode, top) : encode_xor(&o, present, m)) goto done;
        }
    }
encoded:
    result = PyBytes_FromStringAndSize((const char *)o.data, (Py_ssize_t)o.len);
done:
    PyMem_Free(o.data);
    PyMem_Free(present);
    PyMem_Free(ks);
    PyMem_Free(work);
    PyMem_Free(ulps);
    PyMem_Free(exact_ks);
    if (has_view) PyBuffer_Release(&view);
    PyMem_Free(owned);
    return result;
}

/* ---- decoding */

/* |v| without overflow (INT64_MIN included), to compare with the bounds */
static uint64_t abs64(int64_t v) { return v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v; }

static PyObject *decode_ulps(In *in, Py_ssize_t m, double *values);

/* codec 0x01-0x03 (corrected 0) or 0x05-0x07, of residual `order` */
static PyObject *decode_ints(In *in, int order, Py_ssize_t m, double *values, int corrected) {
    unsigned header, width;
    int64_t head[2] = {0, 0}, base;
    if (in_byte(in, &header)) return bad("truncated");
    unsigned scale = header & 0x0F, divisor = header >> 4;
    if (scale > MAX_SCALE || divisor >= N_DIVISORS || order >= m) return bad("bad scaled-integer header");
    for (int h = 0; h < order; h++)
        if (in_svarint(in, &head[h])) return bad("truncated");
    if (in_svarint(in, &base) || in_byte(in, &width)) return bad("truncated");
    if (width > MAX_WIDTH || abs64(base) > MAX_RESIDUAL) return bad("bad residual base or width");
    Py_ssize_t count = m - order;
    Py_ssize_t size = ((Py_ssize_t)width * count + 7) / 8;
    if (corrected ? in->len - in->pos < size : in->len - in->pos != size) return bad("values of the wrong length");
    if (order >= 1 && abs64(head[0]) > MAX_SCALED) return bad("scaled integer out of range");
    if (order == 2 && abs64(head[1]) > 2 * MAX_SCALED) return bad("scaled integer out of range");
    double power = DIVISORS[divisor] * POWERS[scale];
    int64_t k = head[0], delta = head[1];
    Py_ssize_t i = 0;
    if (order >= 1) values[i++] = (double)k / power;
    if (order == 2) {
        k += delta;
        if (abs64(k) > MAX_SCALED) return bad("scaled integer out of range");
        values[i++] = (double)k / power;
    }
    for (Py_ssize_t j = 0; j < count; j++) {
        uint64_t packed = 0;
        if (width && in_bits(in, (int)width, &packed)) return bad("truncated values");
        int64_t r = base + (int64_t)packed;
        if (order == 0) k = r;
        else {
            delta = order == 1 ? r : delta + r;
            if (abs64(delta) > 2 * MAX_SCALED) return bad("scaled integer out of range");
            k += delta;
        }
        if (abs64(k) > MAX_SCALED) return bad("scaled integer out of range");
        values[i++] = (double)k / power;
    }
    if (!corrected) return Py_None;  /* success marker, not a new reference */
    in->pos += size;
    in->bit = 0;
    return decode_ulps(in, m, values);
}

/* codec 0x05-0x07's corrections added to the bits of values[] */
static PyObject *decode_ulps(In *in, Py_ssize_t m, double *values) {
    unsigned width;
    uint64_t flag, z;
    if (in_byte(in, &width)) return bad("truncated");
    if (width > MAX_ULP_WIDTH) return bad("bad ulp correction width");
    for (Py_ssize_t i = 0; i < m; i++) {
        if (in_bits(in, 1, &flag)) return bad("truncated values");
        if (!flag) continue;
        if (in_bits(in, (int)width, &z)) return bad("truncated values");
        z += 1;  /* the correction's zigzag */
        uint64_t word = word_of(values[i]) + (uint64_t)((int64_t)(z >> 1) ^ -(int64_t)(z & 1));
        if ((word & EXPONENT) == EXPONENT) return bad("ulp correction out of range");  /* NaN or inf */
        memcpy(&values[i], &word, 8);
    }
    if ((in->len - in->pos) * 8 - in->bit >= 8) return bad("bytes after the values");
    return Py_None;
}

/* A v2 blob's gap runs (gaps, present, gaps, present, ...) and its m present values: 0, or -1
 * with an exception set. *runs and *values are PyMem blocks the caller frees (also on error). */
static int parse_block(In *in, uint64_t *n_out, Py_ssize_t **runs_out, Py_ssize_t *nruns_out, double **values_out) {
    unsigned version, codec;
    uint64_t n, gaps, present;
    if (in_byte(in, &version) || version != VERSION) { bad("not a v2 block"); return -1; }
    if (in_uvarint(in, &n)) { bad("truncated"); return -1; }
    if (n > MAX_SLOTS) { bad("too many slots"); return -1; }
    Py_ssize_t *runs = *runs_out = PyMem_Malloc((size_t)(2 * n + 2) * sizeof(Py_ssize_t));
    if (!runs) { PyErr_NoMemory(); return -1; }
    Py_ssize_t nruns = 0, m = 0;
    uint64_t covered = 0;
    while (covered < n) {
        if (in_uvarint(in, &gaps) || in_uvarint(in, &present)) { bad("truncated"); return -1; }
        if (!present || gaps > n || present > n || covered + gaps + present > n) {
            bad("gap runs do not cover the block");
            return -1;
        }
        runs[nruns++] = (Py_ssize_t)gaps;
        runs[nruns++] = (Py_ssize_t)present;
        covered += gaps + present;
        m += (Py_ssize_t)present;
    }
    *n_out = n;
    *nruns_out = nruns;
    if (!m) {
        if (in->pos != in->len) { bad("bytes after the values"); return -1; }
        return 0;
    }
    double *values = *values_out = PyMem_Malloc((size_t)m * sizeof(double));
    if (!values) { PyErr_NoMemory(); return -1; }
    if (in_byte(in, &codec)) { bad("truncated"); return -1; }
    PyObject *ok;
    if (codec >= CODEC_INTS && codec < CODEC_INTS + 3) ok = decode_ints(in, (int)(codec - CODEC_INTS), m, values, 0);
    else if (codec >= CODEC_ULPS && codec < CODEC_ULPS + 3) ok = decode_ints(in, (int)(codec - CODEC_ULPS), m, values, 1);
    else if (codec == CODEC_XOR) ok = decode_xor(in, m, values);
    else if (codec == CODEC_SPLIT) ok = decode_split(in, m, values);
    else ok = PyErr_Format(PyExc_ValueError, "block v2: unknown values codec %u", codec);
    return ok ? 0 : -1;
}

static PyObject *codec_decode(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE)) return NULL;
    In in = {view.buf, view.len, 0, 0};
    PyObject *result = NULL;
    Py_ssize_t *runs = NULL, nruns = 0;
    double *values = NULL;
    uint64_t n = 0;
    if (parse_block(&in, &n, &runs, &nruns, &values)) goto done;
    result = PyList_New(values ? (Py_ssize_t)n : 0);
    if (!result || !values) goto done;
    Py_ssize_t slot = 0, taken = 0;
    for (Py_ssize_t r = 0; r < nruns; r += 2) {
        for (Py_ssize_t g = 0; g < runs[r]; g++) {
            Py_INCREF(Py_None);
            PyList_SET_ITEM(result, slot++, Py_None);
        }
        for (Py_ssize_t p = 0; p < runs[r + 1]; p++) {
            PyObject *value = PyFloat_FromDouble(values[taken++]);
            if (!value) { Py_CLEAR(result); goto done; }
            PyList_SET_ITEM(result, slot++, value);
        }
    }
done:
    PyMem_Free(runs);
    PyMem_Free(values);
    PyBuffer_Release(&view);
    return result;
}

/* decode_into(blob, row, offset): the blob's values set into ``row`` (a list, or an array('d')) at ``offset`` + their
 * slot (slots outside the row left out, gaps leave the row as it is); no list per block. */
static PyObject *codec_decode_into(PyObject *self, PyObject *args) {
    Py_buffer view;
    PyObject *row;
    Py_ssize_t offset;
    if (!PyArg_ParseTuple(args, "y*On", &view, &row, &offset)) return NULL;
    In in = {view.buf, view.len, 0, 0};
    PyObject *result = NULL;
    Py_ssize_t *runs = NULL, nruns = 0;
    double *values = NULL;
    uint64_t n = 0;
    /* a list gets floats; an array('d') (any writable buffer of doubles) its doubles in place */
    int is_list = PyList_Check(row);
    Py_buffer target = {0};
    if (!is_list) {
        if (PyObject_GetBuffer(row, &target, PyBUF_WRITABLE | PyBUF_FORMAT)) goto done;
        if (!target.format || strcmp(target.format, "d") != 0) {
            PyErr_SetString(PyExc_TypeError, "decode_into: row must be a list or an array('d')");
            goto done;
        }
    }
    if (parse_block(&in, &n, &runs, &nruns, &values)) goto done;
    Py_ssize_t length = is_list ? PyList_GET_SIZE(row) : target.len / 8, slot = offset, taken = 0;
    for (Py_ssize_t r = 0; r < nruns; r += 2) {
        slot += runs[r];
        for (Py_ssize_t p = 0; p < runs[r + 1]; p++, slot++, taken++) {
            if (slot < 0 || slot >= length) continue;
            if (!is_list) {
                ((double *)target.buf)[slot] = values[taken];
                continue;
            }
            PyObject *value = PyFloat_FromDouble(values[taken]);
            if (!value) goto done;
            PyObject *old = PyList_GET_ITEM(row, slot);
            PyList_SET_ITEM(row, slot, value);
            Py_DECREF(old);
        }
    }
    result = Py_None;
    Py_INCREF(result);
done:
    PyMem_Free(runs);
    PyMem_Free(values);
    PyBuffer_Release(&view);
    if (target.obj) PyBuffer_Release(&target);
    return result;
}

static PyMethodDef methods[] = {
    {"encode", codec_encode, METH_O, "One block's slots (a buffer of doubles or a sequence; None/NaN = gap) as a v2 blob."},
    {"decode", codec_decode, METH_O, "A v2 blob's slots as a list: floats, None for gaps."},
    {"decode_into", codec_decode_into, METH_VARARGS,
     "decode_into(blob, row, offset): the blob's values into row (a list or an array('d')) at offset + slot (gaps and slots outside left)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_blockcodec", "Block format v2 (see turok_core/storage/block_codec.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__blockcodec(void) {
    return PyModule_Create(&module);
}
