/* turok_core.parse._speedups: the gateway's per-point work in C, for the common clean input only.
 *
 * Each function either does exactly what the pure-Python code in turok_core.parse.plaintext,
 * turok_core.parse.carbon_pickle and turok_core.statsd.parse would, or leaves the input ("look
 * closer": None, or where it stopped) to that code, which owns every rule about bad input. So the
 * C side never refuses or counts a point: it only goes fast when nothing is unusual, and its tests
 * (tests/parse/test_speedups.py) compare it with the Python reference on generated input.
 *
 *   parse_lines(data, now, max_line_length, max_name_bytes)
 *       carbon plaintext lines -> (names, values, timestamps), or None
 *   pickle_is_plain(frame)
 *       True when a pickle only builds plain data with bounded memo indices, so the C unpickler
 *       (_pickle) may load it: see carbon_pickle.py for why the C unpickler is not safe otherwise
 *   pickle_columns(points, now, max_path_bytes, max_name_bytes)
 *       unpickled [(path, (timestamp, value)), ...] -> (names, values, timestamps), or None
 *   statsd_apply(data, keys, counters, timers, timer_counts, gauges, max_line_length)
 *       applies a datagram's clean lines to turok_core.statsd.parse.StatsdAggregator's state and
 *       stops at the first line it does not take on, for the Python code to go on from there
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

/* 9999-12-31 23:59:59 UTC, as turok_core.parse.batch.MAX_TIMESTAMP */
#define MAX_TIMESTAMP 253402300799LL
/* a path component must fit a whisper file name (turok_core.model.metric_names.MAX_COMPONENT_BYTES) */
#define MAX_COMPONENT_BYTES 251

/* bytes.split()'s whitespace */
static inline int is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\x0b' || c == '\x0c';
}

/* 1 for bytes a clean metric name may hold without a closer look (metric_names.quick_ok) */
static unsigned char name_byte_ok[256];

static void init_tables(void) {
    for (int c = 0; c < 256; c++)
        name_byte_ok[c] = c > 32 && c < 127 && !strchr("*?[]{};", c);
}

/* True when the metric-name rule certainly leaves this name as it is. */
static int name_is_clean(const unsigned char *name, Py_ssize_t size, Py_ssize_t max_bytes) {
    if (size == 0 || size > max_bytes || size > MAX_COMPONENT_BYTES)
        return 0;
    if (name[0] == '.' || name[size - 1] == '.')
        return 0;
    for (Py_ssize_t i = 0; i < size; i++) {
        unsigned char c = name[i];
        if (!name_byte_ok[c] || (c == '.' && name[i + 1] == '.'))  /* name[size-1] != '.' */
            return 0;
    }
    return 1;
}

static PyObject *ascii_str(const unsigned char *text, Py_ssize_t size) {
    PyObject *str = PyUnicode_New(size, 127);
    if (str != NULL)
        memcpy(PyUnicode_1BYTE_DATA(str), text, size);
    return str;
}

/* An integer timestamp token (optional sign, 1..18 digits); 0 when it needs Python's int(). */
static int parse_stamp(const unsigned char *s, Py_ssize_t size, long long *out) {
    int negative = 0;
    Py_ssize_t i = 0;
    if (size && (s[0] == '-' || s[0] == '+')) {
        negative = s[0] == '-';
        i = 1;
    }
    if (size - i < 1 || size - i > 18)
        return 0;
    long long value = 0;
    for (; i < size; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        value = value * 10 + (s[i] - '0');
    }
    *out = negative ? -value : value;
    return 1;
}

static const double powers_of_ten[] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

/* A plain decimal ([+-]digits[.digits]) of at most 15 significant digits, converted exactly as
 * float() does: the mantissa and 10**k are both exact doubles, so one IEEE division rounds
 * correctly (Clinger's fast path). 0 for anything else: then PyOS_string_to_double, as float(). */
static int parse_simple_decimal(const unsigned char *s, Py_ssize_t size, double *out) {
    Py_ssize_t i = 0;
    int negative = 0, digits = 0, fraction = -1;
    unsigned long long mantissa = 0;
    if (size == 0)
        return 0;
    if (s[0] == '-' || s[0] == '+') {
        negative = s[0] == '-';
        i = 1;
    }
    for (; i < size; i++) {
        unsigned char c = s[i];
        if (c >= '0' && c <= '9') {
            if (mantissa || c != '0')
                digits++;
            mantissa = mantissa * 10 + (c - '0');
            if (fraction >= 0)
                fraction++;
            if (digits > 15)
                return 0;
        } else if (c == '.' && fraction < 0) {
            fraction = 0;
        } else {
            return 0;
        }
    }
    /* at least one digit: "", "-", "." and "-." are not numbers */
    if (size - (negative || s[0] == '+') - (fraction >= 0) < 1 || fraction > 22)
        return 0;
    double value = (double)mantissa;
    if (fraction > 0)
        value /= powers_of_ten[fraction];
    *out = negative ? -value : value;
    return 1;
}

/* now for -1; 0 (look closer) for other stamps carbon refuses */
static int usable_stamp(long long stamp, long long now, long long *out) {
    if (stamp == -1)
        stamp = now;
    else if (stamp <= 0 || stamp > MAX_TIMESTAMP)
        return 0;
    *out = stamp;
    return 1;
}

/* Three lists of the same length, filled by index; trimmed to `count` before returning. */
typedef struct {
    PyObject *names, *values, *stamps;
    PyObject *last_stamp;  /* consecutive points share one int object */
    long long last_stamp_value;
    Py_ssize_t count;
} Columns;

static int columns_init(Columns *c, Py_ssize_t capacity) {
    c->names = PyList_New(capacity);
    c->values = PyList_New(capacity);
    c->stamps = PyList_New(capacity);
    c->last_stamp = NULL;
    c->count = 0;
    return c->names && c->values && c->stamps ? 0 : -1;
}

static void columns_clear(Columns *c) {
    Py_XDECREF(c->names);
    Py_XDECREF(c->values);
    Py_XDECREF(c->stamps);
    Py_XDECREF(c->last_stamp);
}

/* Appends one point, taking the references to name and value. */
static int columns_add(Columns *c, PyObject *name, PyObject *value, long long stamp) {
    if (name == NULL || value == NULL) {
        Py_XDECREF(name);
        Py_XDECREF(value);
        return -1;
    }
    if (c->last_stamp == NULL || c->last_stamp_value != stamp) {
        PyObject *fresh = PyLong_FromLongLong(stamp);
        if (fresh == NULL) {
            Py_DECREF(name);
            Py_DECREF(value);
            return -1;
        }
        Py_XSETREF(c->last_stamp, fresh);
        c->last_stamp_value = stamp;
    }
    Py_INCREF(c->last_stamp);
    PyList_SET_ITEM(c->names, c->count, name);
    PyList_SET_ITEM(c->values, c->count, value);
    PyList_SET_ITEM(c->stamps, c->count, c->last_stamp);
    c->count++;
    return 0;
}

/* (names, values, timestamps), the lists cut to the points added; steals the lists. */
static PyObject *columns_result(Columns *c) {
    Py_ssize_t capacity = PyList_GET_SIZE(c->names);
    if (c->count < capacity) {
        if (PyList_SetSlice(c->names, c->count, capacity, NULL) < 0 ||
            PyList_SetSlice(c->values, c->count, capacity, NULL) < 0 ||
            PyList_SetSlice(c->stamps, c->count, capacity, NULL) < 0) {
            columns_clear(c);
            return NULL;
        }
    }
    PyObject *result = PyTuple_Pack(3, c->names, c->values, c->stamps);
    columns_clear(c);
    return result;
}

static PyObject *columns_give_up(Columns *c) {
    columns_clear(c);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(parse_lines_doc,
"parse_lines(data, now, max_line_length, max_name_bytes) -> (names, values, timestamps) | None\n\n"
"Carbon plaintext lines of a bytes chunk when every line is clean: three fields, a finite value,\n"
"an integer timestamp (-1 = now) in range, a name the metric-name rule leaves unchanged, no line\n"
"over max_line_length (0: no limit). None when any line needs turok_core.parse.plaintext's parser.");

static PyObject *parse_lines(PyObject *module, PyObject *args) {
    Py_buffer view;
    long long now;
    Py_ssize_t max_line, max_name;
    if (!PyArg_ParseTuple(args, "y*Lnn:parse_lines", &view, &now, &max_line, &max_name))
        return NULL;
    /* the bytes object's trailing NUL ends the last token for PyOS_string_to_double */
    if (!PyBytes_Check(view.obj)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_TypeError, "parse_lines() needs bytes");
        return NULL;
    }
    const unsigned char *data = view.buf, *end = data + view.len;
    Py_ssize_t lines = 1;
    for (const unsigned char *p = data; (p = memchr(p, '\n', end - p)) != NULL; p++)
        lines++;
    Columns c;
    if (columns_init(&c, lines) < 0) {
        columns_clear(&c);
        PyBuffer_Release(&view);
        return NULL;
    }
    const unsigned char *line = data;
    while (line < end) {
        const unsigned char *eol = memchr(line, '\n', end - line);
        if (eol == NULL)
            eol = end;
        if (max_line > 0 && eol - line > max_line)
            goto look_closer;
        const unsigned char *start[3], *stop[3];
        int fields = 0;
        const unsigned char *p = line;
        while (p < eol) {
            while (p < eol && is_space(*p))
                p++;
            if (p == eol)
                break;
            if (fields == 3)
                goto look_closer;
            start[fields] = p;
            while (p < eol && !is_space(*p))
                p++;
            stop[fields++] = p;
        }
        line = eol + 1;
        if (fields == 0)
            continue;  /* a blank line */
        if (fields != 3)
            goto look_closer;
        Py_ssize_t name_size = stop[0] - start[0];
        if (!name_is_clean(start[0], name_size, max_name))
            goto look_closer;
        double value;
        if (!parse_simple_decimal(start[1], stop[1] - start[1], &value)) {
            char *value_end;
            value = PyOS_string_to_double((const char *)start[1], &value_end, NULL);
            if (value == -1.0 && PyErr_Occurred()) {
                PyErr_Clear();
                goto look_closer;
            }
            if ((const unsigned char *)value_end != stop[1] || !isfinite(value))
                goto look_closer;
        }
        long long stamp;
        if (!parse_stamp(start[2], stop[2] - start[2], &stamp) || !usable_stamp(stamp, now, &stamp))
            goto look_closer;
        if (columns_add(&c, ascii_str(start[0], name_size), PyFloat_FromDouble(value), stamp) < 0) {
            columns_clear(&c);
            PyBuffer_Release(&view);
            return NULL;
        }
    }
    PyBuffer_Release(&view);
    return columns_result(&c);
look_closer:
    PyBuffer_Release(&view);
    return columns_give_up(&c);
}

/* --- pickles ------------------------------------------------------------------------------ */

/* How each opcode's argument is laid out; REFUSED for opcodes the fast path leaves to Python:
 * everything that loads or calls code, dicts, sets, out-of-band buffers, unknown bytes, and
 * protocol 0's text opcodes (INT, FLOAT, STRING, PUT, …), whose C parsing differs from the
 * Python unpickler's on odd input (`I0012` is octal 10 in C, an error in Python). */
enum { REFUSED = 0, NO_ARG, FIXED, SIZED, PUT_4 };
typedef struct { unsigned char kind, size; } OpArg;
static OpArg opcode_args[256];

static void init_opcodes(void) {
    static const struct { unsigned char op, kind, size; } table[] = {
        {'(', NO_ARG, 0}, {'.', NO_ARG, 0}, {'0', NO_ARG, 0}, {'1', NO_ARG, 0}, {'2', NO_ARG, 0},
        {'N', NO_ARG, 0}, {'a', NO_ARG, 0}, {'e', NO_ARG, 0}, {'l', NO_ARG, 0}, {']', NO_ARG, 0},
        {'t', NO_ARG, 0}, {')', NO_ARG, 0}, {0x85, NO_ARG, 0}, {0x86, NO_ARG, 0}, {0x87, NO_ARG, 0},
        {0x88, NO_ARG, 0}, {0x89, NO_ARG, 0}, {0x94, NO_ARG, 0},             /* MEMOIZE */
        {'K', FIXED, 1}, {'M', FIXED, 2}, {'J', FIXED, 4}, {'G', FIXED, 8},  /* ints, BINFLOAT */
        {'h', FIXED, 1}, {'j', FIXED, 4}, {'q', FIXED, 1},                   /* BINGET, BINPUT */
        {0x80, FIXED, 1}, {0x95, FIXED, 8},                                   /* PROTO, FRAME */
        {'U', SIZED, 1}, {'C', SIZED, 1}, {0x8a, SIZED, 1}, {0x8c, SIZED, 1}, /* 1-byte sizes */
        {'T', SIZED, 4}, {'X', SIZED, 4}, {'B', SIZED, 4}, {0x8b, SIZED, 4},  /* 4-byte sizes */
        {0x8d, SIZED, 8}, {0x8e, SIZED, 8},                                   /* 8-byte sizes */
        {'r', PUT_4, 4},                                                      /* LONG_BINPUT */
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        opcode_args[table[i].op].kind = table[i].kind;
        opcode_args[table[i].op].size = table[i].size;
    }
}

static unsigned long long little_endian(const unsigned char *p, int size) {
    unsigned long long value = 0;
    for (int i = size - 1; i >= 0; i--)
        value = value << 8 | p[i];
    return value;
}

PyDoc_STRVAR(pickle_is_plain_doc,
"pickle_is_plain(frame) -> bool\n\n"
"True when every opcode of the pickle up to its STOP only builds plain data (lists, tuples,\n"
"numbers, strings, bytes, None, booleans) and every memo index it stores is below the frame's\n"
"length, so the C unpickler can load it without running code or sizing its memo from an\n"
"attacker's index. False means: use turok_core.parse.carbon_pickle.SafeUnpickler.");

static PyObject *pickle_is_plain(PyObject *module, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *p = view.buf, *end = p + view.len;
    /* a pickler numbers its memo entries from 0, one per PUT of at least 2 bytes */
    unsigned long long memo_bound = (unsigned long long)view.len;
    /* Inside a FRAME (protocol 4) every opcode must end within it and a new FRAME may only start
     * where the last one ended: the two unpicklers treat frames that break this differently. */
    const unsigned char *limit = end, *frame_end = NULL;
    int plain = 0;
    while (p < end) {
        if (p == frame_end)
            limit = end, frame_end = NULL;
        unsigned char op = *p++;
        OpArg arg = opcode_args[op];
        unsigned long long size = 0;
        if (op == '.') {
            plain = 1;
            break;
        }
        if (arg.kind == REFUSED || (unsigned long long)(limit - p) < arg.size)
            break;
        if (arg.kind == SIZED) {
            size = little_endian(p, arg.size);
            if (size > (unsigned long long)(limit - p - arg.size))
                break;
        } else if (arg.kind == PUT_4 && little_endian(p, 4) >= memo_bound) {
            break;
        }
        p += arg.size + size;
        if (op == 0x95) {  /* FRAME */
            unsigned long long frame_size = little_endian(p - 8, 8);
            if (frame_end != NULL || frame_size > (unsigned long long)(end - p))
                break;
            frame_end = limit = p + frame_size;
        }
    }
    PyBuffer_Release(&view);
    return PyBool_FromLong(plain);
}

/* A (timestamp, value) item's timestamp as carbon_pickle._decode_fast takes it; 0: look closer. */
static int pickle_stamp(PyObject *raw, long long now, long long *out) {
    long long stamp;
    if (PyLong_CheckExact(raw)) {
        int overflow;
        stamp = PyLong_AsLongLongAndOverflow(raw, &overflow);
        if (overflow || (stamp == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 0;
        }
    } else if (PyFloat_CheckExact(raw)) {
        double value = PyFloat_AS_DOUBLE(raw);
        if (value == -1.0)
            stamp = -1;
        else if (value >= 1.0 && value <= (double)MAX_TIMESTAMP)
            stamp = (long long)value;  /* truncated, as int() does */
        else
            return 0;
    } else {
        return 0;
    }
    return usable_stamp(stamp, now, out);
}

/* The value as a new float reference, or NULL without an error set: look closer. */
static PyObject *pickle_value(PyObject *raw) {
    if (PyFloat_CheckExact(raw)) {
        if (!isfinite(PyFloat_AS_DOUBLE(raw)))
            return NULL;
        Py_INCREF(raw);
        return raw;
    }
    if (PyLong_CheckExact(raw)) {
        double value = PyLong_AsDouble(raw);
        if (value == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return NULL;
        }
        return PyFloat_FromDouble(value);
    }
    return NULL;
}

/* The path as a new str reference when it is a clean name, else NULL without an error set. */
static PyObject *pickle_name(PyObject *path, Py_ssize_t max_path, Py_ssize_t max_name) {
    const unsigned char *text;
    Py_ssize_t size;
    if (PyUnicode_CheckExact(path)) {
        if (PyUnicode_READY(path) < 0 || !PyUnicode_IS_ASCII(path)) {
            PyErr_Clear();
            return NULL;
        }
        text = PyUnicode_1BYTE_DATA(path);
        size = PyUnicode_GET_LENGTH(path);
    } else if (PyBytes_CheckExact(path)) {
        text = (const unsigned char *)PyBytes_AS_STRING(path);
        size = PyBytes_GET_SIZE(path);
    } else {
        return NULL;
    }
    if ((max_path > 0 && size > max_path) || !name_is_clean(text, size, max_name))
        return NULL;
    if (PyUnicode_CheckExact(path)) {
        Py_INCREF(path);
        return path;
    }
    return ascii_str(text, size);
}

/* item[0], item[1] of an exact tuple or list of two, else 0 */
static int pair_of(PyObject *item, PyObject **first, PyObject **second) {
    if (PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) == 2) {
        *first = PyTuple_GET_ITEM(item, 0);
        *second = PyTuple_GET_ITEM(item, 1);
        return 1;
    }
    if (PyList_CheckExact(item) && PyList_GET_SIZE(item) == 2) {
        *first = PyList_GET_ITEM(item, 0);
        *second = PyList_GET_ITEM(item, 1);
        return 1;
    }
    return 0;
}

PyDoc_STRVAR(pickle_columns_doc,
"pickle_columns(points, now, max_path_bytes, max_name_bytes) -> (names, values, timestamps) | None\n\n"
"A list of unpickled (path, (timestamp, value)) points as parallel lists when every point is\n"
"clean (ASCII path the metric-name rule leaves unchanged, int or float finite value, usable\n"
"timestamp); None when any needs turok_core.parse.carbon_pickle's decoder.");

static PyObject *pickle_columns(PyObject *module, PyObject *args) {
    PyObject *points;
    long long now;
    Py_ssize_t max_path, max_name;
    if (!PyArg_ParseTuple(args, "O!Lnn:pickle_columns", &PyList_Type, &points, &now, &max_path, &max_name))
        return NULL;
    /* Our own references to everything read: an allocation below may run the garbage collector,
     * and with it a finalizer that changes the caller's list or an inner list. */
    PyObject *items = PyList_GetSlice(points, 0, PyList_GET_SIZE(points));
    if (items == NULL)
        return NULL;
    Py_ssize_t count = PyList_GET_SIZE(items);
    Columns c;
    if (columns_init(&c, count) < 0) {
        columns_clear(&c);
        Py_DECREF(items);
        return NULL;
    }
    PyObject *result = NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *path, *pair, *raw_stamp, *raw_value, *name, *value;
        long long stamp;
        if (!pair_of(PyList_GET_ITEM(items, i), &path, &pair) || !pair_of(pair, &raw_stamp, &raw_value)
            || !pickle_stamp(raw_stamp, now, &stamp))
            goto give_up;
        Py_INCREF(path);
        Py_INCREF(raw_value);
        name = pickle_name(path, max_path, max_name);
        value = name == NULL ? NULL : pickle_value(raw_value);
        Py_DECREF(path);
        Py_DECREF(raw_value);
        if (value == NULL) {
            Py_XDECREF(name);
            if (PyErr_Occurred())
                goto fail;
            goto give_up;
        }
        if (columns_add(&c, name, value, stamp) < 0)
            goto fail;
    }
    result = columns_result(&c);
    Py_DECREF(items);
    return result;
give_up:
    Py_DECREF(items);
    return columns_give_up(&c);
fail:
    Py_DECREF(items);
    columns_clear(&c);
    return NULL;
}

/* --- StatsD ------------------------------------------------------------------------------ */

/* A StatsD number (value or sample rate) as Python's float() reads it; 0 when Python must. */
static int statsd_number(const unsigned char *text, Py_ssize_t size, double *out) {
    if (size == 0 || memchr(text, '_', size) != NULL)  /* float() takes 1_000, JavaScript not */
        return 0;
    if (parse_simple_decimal(text, size, out))
        return 1;
    /* the text is followed by '|', '\n' or the bytes' NUL, where strtod stops */
    char *end;
    double value = PyOS_string_to_double((const char *)text, &end, NULL);
    if (value == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    *out = value;
    return (const unsigned char *)end == text + size && isfinite(value);
}

/* mapping[key] = value; 1 done, -1 error */
static int set_float(PyObject *mapping, PyObject *key, double value) {
    PyObject *number = PyFloat_FromDouble(value);
    if (number == NULL)
        return -1;
    int failed = PyDict_SetItem(mapping, key, number);
    Py_DECREF(number);
    return failed ? -1 : 1;
}

/* mapping[key] = mapping.get(key, 0.0) + add, for a dict of floats; -1 error, 0 look closer */
static int add_to_float(PyObject *mapping, PyObject *key, double add) {
    PyObject *old = PyDict_GetItemWithError(mapping, key);
    double total;
    if (old == NULL) {
        if (PyErr_Occurred())
            return -1;
        total = 0.0 + add;
    } else if (PyFloat_CheckExact(old)) {
        total = PyFloat_AS_DOUBLE(old) + add;
    } else {
        return 0;
    }
    return set_float(mapping, key, total);
}

/* Applies one parsed line; 1 done, 0 look closer, -1 error. */
static int statsd_line(PyObject *key, const unsigned char *text, Py_ssize_t text_size, const unsigned char *kind,
                       Py_ssize_t kind_size, double rate, PyObject *counters, PyObject *timers,
                       PyObject *timer_counts, PyObject *gauges) {
    double value;
    if (!statsd_number(text, text_size, &value))
        return 0;
    if (kind_size == 1 && kind[0] == 'c')
        return add_to_float(counters, key, value * (1.0 / rate));
    if ((kind_size == 2 && kind[0] == 'm' && kind[1] == 's') || (kind_size == 1 && kind[0] == 'h')) {
        if (value < 0.0)
            return 0;
        /* the count's type first: nothing may be half applied when this line goes to Python */
        PyObject *count = PyDict_GetItemWithError(timer_counts, key);
        if ((count == NULL && PyErr_Occurred()) || (count != NULL && !PyFloat_CheckExact(count)))
            return count == NULL ? -1 : 0;
        PyObject *samples = PyDict_GetItemWithError(timers, key);
        if (samples == NULL) {
            if (PyErr_Occurred())
                return -1;
            samples = PyList_New(0);
            if (samples == NULL || PyDict_SetItem(timers, key, samples) < 0) {
                Py_XDECREF(samples);
                return -1;
            }
        } else if (PyList_CheckExact(samples)) {
            Py_INCREF(samples);  /* ours while allocating: a finalizer could change the dict */
        } else {
            return 0;
        }
        PyObject *sample = PyFloat_FromDouble(value);
        int failed = sample == NULL || PyList_Append(samples, sample) < 0;
        Py_XDECREF(sample);
        Py_DECREF(samples);
        if (failed)
            return -1;
        return add_to_float(timer_counts, key, 1.0 / rate) < 0 ? -1 : 1;
    }
    if (kind_size == 1 && kind[0] == 'g') {
        PyObject *old = PyDict_GetItemWithError(gauges, key);
        if (old == NULL && PyErr_Occurred())
            return -1;
        if ((text[0] == '+' || text[0] == '-') && old != NULL) {
            if (!PyFloat_CheckExact(old))
                return 0;
            value = PyFloat_AS_DOUBLE(old) + value;
        }
        return set_float(gauges, key, value);
    }
    return 0;  /* sets, unknown types: Python */
}

PyDoc_STRVAR(statsd_apply_doc,
"statsd_apply(data, keys, counters, timers, timer_counts, gauges, max_line_length) -> (offset, lines)\n\n"
"Applies the clean lines at the start of a StatsD datagram (bytes) to the dicts of\n"
"turok_core.statsd.parse.StatsdAggregator:\n"
"ASCII `key:value|c|ms|h|g[|@rate]` lines, one value each, no tags, whose raw key is in `keys`\n"
"with a non-empty name. Stops at the first other line: returns the offset where it stopped\n"
"(len(data) when it took every line) and how many non-blank lines it applied.");

static PyObject *statsd_apply(PyObject *module, PyObject *args) {
    Py_buffer view;
    PyObject *keys, *counters, *timers, *timer_counts, *gauges;
    Py_ssize_t max_line;
    if (!PyArg_ParseTuple(args, "y*O!O!O!O!O!n:statsd_apply", &view, &PyDict_Type, &keys, &PyDict_Type, &counters,
                          &PyDict_Type, &timers, &PyDict_Type, &timer_counts, &PyDict_Type, &gauges, &max_line))
        return NULL;
    if (!PyBytes_Check(view.obj)) {  /* its trailing NUL ends the last number for strtod */
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_TypeError, "statsd_apply() needs bytes");
        return NULL;
    }
    const unsigned char *data = view.buf, *end = data + view.len, *line = data;
    Py_ssize_t applied = 0;
    int failed = 0;
    while (line < end) {
        const unsigned char *eol = memchr(line, '\n', end - line);
        if (eol == NULL)
            eol = end;
        Py_ssize_t size = eol - line;
        if (size == 0) {
            line = eol + 1;
            continue;
        }
        if (max_line > 0 && size > max_line)
            break;
        const unsigned char *colon = NULL, *bar1 = NULL, *bar2 = NULL;
        int usual = 1;
        for (const unsigned char *p = line; p < eol && usual; p++) {
            unsigned char ch = *p;
            if (ch >= 0x80 || ch == '#')
                usual = 0;  /* UTF-8 or tags: Python */
            else if (ch == ':')
                usual = colon == NULL, colon = p;
            else if (ch == '|' && colon != NULL) {
                if (bar1 == NULL)
                    bar1 = p;
                else
                    usual = bar2 == NULL, bar2 = p;
            }
        }
        if (!usual || colon == NULL || bar1 == NULL)
            break;
        double rate = 1.0;
        const unsigned char *kind_end = bar2 != NULL ? bar2 : eol;
        if (bar2 != NULL) {
            if (eol - bar2 < 2 || bar2[1] != '@' || !statsd_number(bar2 + 2, eol - bar2 - 2, &rate)
                || !(rate > 0.0))
                break;
        }
        PyObject *raw_key = ascii_str(line, colon - line);
        if (raw_key == NULL) {
            failed = 1;
            break;
        }
        PyObject *key = PyDict_GetItemWithError(keys, raw_key);
        Py_DECREF(raw_key);
        if (key == NULL) {
            failed = PyErr_Occurred() != NULL;
            break;  /* a key not seen yet: Python sanitises it */
        }
        if (!PyUnicode_CheckExact(key) || PyUnicode_GET_LENGTH(key) == 0)
            break;  /* refused by the name rule: a bad line */
        Py_INCREF(key);
        int done = statsd_line(key, colon + 1, bar1 - colon - 1, bar1 + 1, kind_end - bar1 - 1, rate, counters,
                               timers, timer_counts, gauges);
        Py_DECREF(key);
        if (done <= 0) {
            failed = done < 0;
            break;
        }
        applied++;
        line = eol + 1;
    }
    PyBuffer_Release(&view);
    if (failed)
        return NULL;
    Py_ssize_t offset = line < end ? line - data : (Py_ssize_t)(end - data);
    return Py_BuildValue("(nn)", offset, applied);
}

static PyMethodDef methods[] = {
    {"parse_lines", parse_lines, METH_VARARGS, parse_lines_doc},
    {"pickle_is_plain", pickle_is_plain, METH_O, pickle_is_plain_doc},
    {"pickle_columns", pickle_columns, METH_VARARGS, pickle_columns_doc},
    {"statsd_apply", statsd_apply, METH_VARARGS, statsd_apply_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "turok_core.parse._speedups",
    "The gateway's per-point parsing in C for clean input; None means: use the Python code.",
    -1, methods,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    init_tables();
    init_opcodes();
    return PyModule_Create(&module_def);
}
