/* turok_core.wire._envelope: version 2 envelopes read into columns in C, for well-formed ones only.
 *
 *   groups(data, aggregations, max_name_bytes=-1) -> [(slot, step, aggregation, names, values), ...] or None
 *       data: an inflated envelope (msgpack bytes, see turok_core/wire/codec.py);
 *       aggregations: the aggregation names accepted (codec.AGGREGATION_TYPES);
 *       max_name_bytes: a name longer in UTF-8 is left to the reference, which refuses it
 *       (negative: no limit; codec.decode_columns's max_name_bytes).
 *       names: a list of str, split from the group's newline-joined text (or its list of names);
 *       values: an array('d') when every window holds one value, else a list of floats and
 *       (for windows of several values) lists of floats.
 *
 * It reads the msgpack bytes straight into these columns: no msgpack object per window, no text
 * of all names split again, no float built and checked in Python per value. It takes on only
 * envelopes it is sure of, exactly those codec._decode_groups accepts (every check of it made
 * here: group shape, slot and step, aggregation, names non-empty and paired with values, values
 * finite numbers, windows non-empty, names within max_name_bytes), and returns None for anything else (another version,
 * trailing bytes, a map key it does not know, a truncated or corrupt envelope, invalid UTF-8,
 * an empty group): the Python reference then decides and gives the reason. So the C side never
 * refuses a body on its own; tests/wire/test_envelope_native.py compares both on random and
 * broken envelopes. Every length is checked against the bytes left before anything is read or
 * allocated, so no input reads past the end of data or allocates more than its size allows.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

enum { DEFER = 0, OK = 1, FAILED = -1 };  /* FAILED: a Python exception is set (memory) */

typedef struct {
    const unsigned char *p, *end;
} Reader;

static PyObject *array_type;  /* array.array */

static inline Py_ssize_t left(const Reader *r) { return r->end - r->p; }

static inline uint64_t be(const unsigned char *p, int size) {
    uint64_t v = 0;
    for (int i = 0; i < size; i++) v = (v << 8) | p[i];
    return v;
}

/* a container header (fix form at fix..fix+15, then the 16- and 32-bit forms at wide, wide+1):
   its length, or DEFER when the next item is not of that kind or its length cannot fit in what is
   left (each element takes at least `per` bytes: 1 an array's, 2 a map's key and value) */
static int container_header(Reader *r, Py_ssize_t *n, unsigned char fix, unsigned char wide, Py_ssize_t per) {
    if (left(r) < 1) return DEFER;
    unsigned char c = *r->p;
    int size;
    if (c >= fix && c <= fix + 0x0f) { *n = c & 0x0f; r->p++; }
    else if (c == wide || c == wide + 1) {
        size = c == wide ? 2 : 4;
        if (left(r) < 1 + size) return DEFER;
        *n = (Py_ssize_t)be(r->p + 1, size);
        r->p += 1 + size;
    } else return DEFER;
    return *n <= left(r) / per ? OK : DEFER;
}

static int array_header(Reader *r, Py_ssize_t *n) { return container_header(r, n, 0x90, 0xdc, 1); }

static int map_header(Reader *r, Py_ssize_t *n) { return container_header(r, n, 0x80, 0xde, 2); }

/* a msgpack str: where its bytes are */
static int str_bytes(Reader *r, const unsigned char **text, Py_ssize_t *size) {
    if (left(r) < 1) return DEFER;
    unsigned char c = *r->p;
    int head;
    if (c >= 0xa0 && c <= 0xbf) { *size = c & 0x1f; head = 1; }
    else if (c == 0xd9 || c == 0xda || c == 0xdb) {
        head = c == 0xd9 ? 2 : c == 0xda ? 3 : 5;
        if (left(r) < head) return DEFER;
        *size = (Py_ssize_t)be(r->p + 1, head - 1);
    } else return DEFER;
    if (*size > left(r) - head) return DEFER;
    *text = r->p + head;
    r->p += head + *size;
    return OK;
}

static inline int is_array(unsigned char c) { return (c >= 0x90 && c <= 0x9f) || c == 0xdc || c == 0xdd; }

static inline int is_int(unsigned char c) {
    return c <= 0x7f || c >= 0xe0 || (c >= 0xcc && c <= 0xcf) || (c >= 0xd0 && c <= 0xd3);
}

/* a msgpack int that fits 64 signed bits (a larger one: DEFER) */
static int int64_of(Reader *r, long long *out) {
    if (left(r) < 1) return DEFER;
    unsigned char c = *r->p;
    if (c <= 0x7f) { *out = c; r->p++; return OK; }
    if (c >= 0xe0) { *out = (signed char)c; r->p++; return OK; }
    int size;
    switch (c) {
        case 0xcc: case 0xd0: size = 1; break;
        case 0xcd: case 0xd1: size = 2; break;
        case 0xce: case 0xd2: size = 4; break;
        case 0xcf: case 0xd3: size = 8; break;
        default: return DEFER;
    }
    if (left(r) < 1 + size) return DEFER;
    uint64_t u = be(r->p + 1, size);
    if (c >= 0xd0) {  /* signed: sign-extend */
        if (size < 8 && (u >> (size * 8 - 1)) & 1) u |= ~(uint64_t)0 << (size * 8);
        *out = (long long)u;
    } else {
        if (u > (uint64_t)INT64_MAX) return DEFER;
        *out = (long long)u;
    }
    r->p += 1 + size;
    return OK;
}

/* a number (int or float) as float(x) gives it, finite; anything else: DEFER */
static int number(Reader *r, double *out) {
    if (left(r) < 1) return DEFER;
    unsigned char c = *r->p;
    if (c == 0xcb || c == 0xca) {
        int size = c == 0xcb ? 8 : 4;
        if (left(r) < 1 + size) return DEFER;
        uint64_t u = be(r->p + 1, size);
        double v;
        if (size == 8) memcpy(&v, &u, 8);
        else { uint32_t w = (uint32_t)u; float f; memcpy(&f, &w, 4); v = f; }
        if (!isfinite(v)) return DEFER;
        *out = v;
        r->p += 1 + size;
        return OK;
    }
    if (c == 0xcf) {  /* uint64: may exceed int64; float(int) rounds to nearest, as the cast does */
        if (left(r) < 9) return DEFER;
        *out = (double)be(r->p + 1, 8);
        r->p += 9;
        return OK;
    }
    long long i;
    if (!is_int(c) || int64_of(r, &i) != OK) return DEFER;
    *out = (double)i;
    return OK;
}

static PyObject *new_str(const unsigned char *text, Py_ssize_t size, int ascii) {
    if (!ascii) return PyUnicode_DecodeUTF8((const char *)text, size, NULL);
    PyObject *str = PyUnicode_New(size, 127);
    if (str != NULL) memcpy(PyUnicode_1BYTE_DATA(str), text, size);
    return str;
}

/* DEFER on invalid UTF-8 (the reference refuses it), FAILED on memory errors */
static int str_failed(void) {
    if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) { PyErr_Clear(); return DEFER; }
    return FAILED;
}

static int all_ascii(const unsigned char *text, Py_ssize_t size) {
    unsigned char any = 0;
    for (Py_ssize_t i = 0; i < size; i++) any |= text[i];
    return any < 0x80;
}

/* the group's names: a newline-joined text or a list of non-empty str; DEFER for an empty one or
   one longer than max_bytes (negative: no limit) */
static int names_of(Reader *r, Py_ssize_t max_bytes, PyObject **out) {
    if (max_bytes < 0) max_bytes = PY_SSIZE_T_MAX;
    const unsigned char *text;
    Py_ssize_t size, n;
    if (left(r) >= 1 && ((*r->p >= 0xa0 && *r->p <= 0xbf) || (*r->p >= 0xd9 && *r->p <= 0xdb))) {
        if (str_bytes(r, &text, &size) != OK) return DEFER;
        /* the reference's bad_names: empty text, a separator first, last or twice in a row */
        if (size == 0 || text[0] == '\n' || text[size - 1] == '\n') return DEFER;
        n = 1;
        for (const unsigned char *p = text, *end = text + size; (p = memchr(p, '\n', end - p)) != NULL; p++) {
            if (p[1] == '\n') return DEFER;  /* p < end - 1: the text does not end with one */
            n++;
        }
        int ascii = all_ascii(text, size);
        PyObject *names = PyList_New(n);
        if (names == NULL) return FAILED;
        const unsigned char *start = text, *end = text + size;
        for (Py_ssize_t i = 0; i < n; i++) {
            const unsigned char *stop = i == n - 1 ? end : memchr(start, '\n', end - start);
            if (stop - start > max_bytes) { Py_DECREF(names); return DEFER; }
            PyObject *name = new_str(start, stop - start, ascii);
            if (name == NULL) { Py_DECREF(names); return str_failed(); }
            PyList_SET_ITEM(names, i, name);
            start = stop + 1;
        }
        *out = names;
        return OK;
    }
    if (array_header(r, &n) != OK || n == 0) return DEFER;
    PyObject *names = PyList_New(n);
    if (names == NULL) return FAILED;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (str_bytes(r, &text, &size) != OK || size == 0 || size > max_bytes) { Py_DECREF(names); return DEFER; }
        PyObject *name = PyUnicode_DecodeUTF8((const char *)text, size, NULL);
        if (name == NULL) { Py_DECREF(names); return str_failed(); }
        PyList_SET_ITEM(names, i, name);
    }
    *out = names;
    return OK;
}

/* a window of several values: a non-empty list of floats */
static int window_of(Reader *r, PyObject **out) {
    Py_ssize_t n;
    if (array_header(r, &n) != OK || n == 0) return DEFER;
    PyObject *window = PyList_New(n);
    if (window == NULL) return FAILED;
    for (Py_ssize_t i = 0; i < n; i++) {
        double v;
        if (number(r, &v) != OK) { Py_DECREF(window); return DEFER; }
        PyObject *value = PyFloat_FromDouble(v);
        if (value == NULL) { Py_DECREF(window); return FAILED; }
        PyList_SET_ITEM(window, i, value);
    }
    *out = window;
    return OK;
}

/* the group's values, n of them: array('d') while each is one number, a list once one is a list */
static int values_of(Reader *r, Py_ssize_t count, PyObject **out) {
    Py_ssize_t n;
    if (array_header(r, &n) != OK || n != count) return DEFER;
    PyObject *raw = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(double));
    if (raw == NULL) return FAILED;
    double *doubles = (double *)PyBytes_AS_STRING(raw);
    Py_ssize_t i = 0;
    for (; i < n; i++) {
        if (left(r) >= 1 && is_array(*r->p))
            break;  /* a window of several values: go on as a list */
        if (number(r, &doubles[i]) != OK) { Py_DECREF(raw); return DEFER; }
    }
    if (i == n) {
        *out = PyObject_CallFunction(array_type, "sO", "d", raw);
        Py_DECREF(raw);
        return *out == NULL ? FAILED : OK;
    }
    PyObject *values = PyList_New(n);
    if (values == NULL) { Py_DECREF(raw); return FAILED; }
    for (Py_ssize_t k = 0; k < i; k++) {
        PyObject *value = PyFloat_FromDouble(doubles[k]);
        if (value == NULL) { Py_DECREF(raw); Py_DECREF(values); return FAILED; }
        PyList_SET_ITEM(values, k, value);
    }
    Py_DECREF(raw);
    for (; i < n; i++) {
        PyObject *value = NULL;
        int status;
        if (left(r) >= 1 && is_array(*r->p))
            status = window_of(r, &value);
        else {
            double v;
            status = number(r, &v);
            if (status == OK && (value = PyFloat_FromDouble(v)) == NULL) status = FAILED;
        }
        if (status != OK) { Py_DECREF(values); return status; }
        PyList_SET_ITEM(values, i, value);
    }
    *out = values;
    return OK;
}

/* one group: (slot, step, aggregation, names, values) */
static int group_of(Reader *r, PyObject *aggregations, Py_ssize_t max_name_bytes, PyObject **out) {
    Py_ssize_t n, size;
    long long slot, step;
    const unsigned char *text;
    if (array_header(r, &n) != OK || n != 5) return DEFER;
    if (int64_of(r, &slot) != OK || int64_of(r, &step) != OK || step <= 0 || slot % step) return DEFER;
    if (str_bytes(r, &text, &size) != OK) return DEFER;
    PyObject *aggregation = PyUnicode_DecodeUTF8((const char *)text, size, NULL);
    if (aggregation == NULL) return str_failed();
    int known = PySequence_Contains(aggregations, aggregation);
    if (known != 1) { Py_DECREF(aggregation); return known < 0 ? FAILED : DEFER; }
    PyObject *names = NULL, *values = NULL;
    int status = names_of(r, max_name_bytes, &names);
    if (status == OK) status = values_of(r, PyList_GET_SIZE(names), &values);
    if (status != OK) { Py_DECREF(aggregation); Py_XDECREF(names); return status; }
    *out = Py_BuildValue("(LLNNN)", slot, step, aggregation, names, values);
    return *out == NULL ? FAILED : OK;
}

static int is_key(const unsigned char *text, Py_ssize_t size, const char *key) {
    return (size_t)size == strlen(key) && memcmp(text, key, size) == 0;
}

static PyObject *groups(PyObject *self, PyObject *args) {
    Py_buffer data;
    PyObject *aggregations;
    Py_ssize_t max_name_bytes = -1;
    if (!PyArg_ParseTuple(args, "y*O|n", &data, &aggregations, &max_name_bytes)) return NULL;
    Reader r = {data.buf, (const unsigned char *)data.buf + data.len};
    Py_ssize_t keys, size, count;
    const unsigned char *text;
    int version_seen = 0;
    PyObject *result = NULL;
    /* the map: "v": 2 and "groups": [...], each once, in either order, and nothing after it */
    int status = map_header(&r, &keys);
    for (Py_ssize_t k = 0; status == OK && k < keys; k++) {
        if (str_bytes(&r, &text, &size) != OK) status = DEFER;
        else if (is_key(text, size, "v") && !version_seen) {
            long long version;
            version_seen = 1;
            if (left(&r) < 1 || !is_int(*r.p) || int64_of(&r, &version) != OK || version != 2) status = DEFER;
        } else if (is_key(text, size, "groups") && result == NULL) {
            if (array_header(&r, &count) != OK) { status = DEFER; break; }
            if ((result = PyList_New(count)) == NULL) { status = FAILED; break; }
            for (Py_ssize_t g = 0; status == OK && g < count; g++) {
                PyObject *group = NULL;
                status = group_of(&r, aggregations, max_name_bytes, &group);
                if (status == OK) PyList_SET_ITEM(result, g, group);
            }
        } else status = DEFER;
    }
    if (status == OK && (!version_seen || result == NULL || r.p != r.end)) status = DEFER;
    PyBuffer_Release(&data);
    if (status != OK) {
        Py_XDECREF(result);
        if (status == FAILED) return NULL;
        Py_RETURN_NONE;
    }
    return result;
}

static PyMethodDef methods[] = {
    {"groups", groups, METH_VARARGS,
     "groups(data, aggregations, max_name_bytes=-1): a version 2 envelope's groups as columns, or None to leave it to codec.py."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_envelope", "Version 2 envelopes read into columns (see codec.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__envelope(void) {
    PyObject *array = PyImport_ImportModule("array");
    if (array == NULL) return NULL;
    array_type = PyObject_GetAttrString(array, "array");
    Py_DECREF(array);
    if (array_type == NULL) return NULL;
    return PyModule_Create(&module);
}
