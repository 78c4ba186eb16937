/* turokd's hot loops in C, each the same as its pure-Python reference.
 *
 * Rollups of whole blocks: the same doubles as turok_core/turokd/rollup.py (rollup_into,
 * known_span), which defines them.
 *
 *   known_span(values) -> (count, first, last)
 *       values: a buffer of doubles (array('d'), NaN for gaps); how many slots hold a value, the
 *       first and the last such index ((0, -1, -1) when none)
 *   rollup_into(values, offset, coarse, index, count, ratio, method, xff) -> None
 *       for k in range(count): the finer slots values[offset + k*ratio : offset + (k+1)*ratio]
 *       roll up into coarse[index + k] (a writable buffer of doubles): left as it is when none
 *       holds a value, NaN when their known fraction is below xff, else the aggregate by method
 *       (0 average, 1 sum, 2 minimum, 3 maximum, 4 last)
 *
 * The arithmetic is CPython 3.11's sum() of floats (a double added left to right from 0.0), and
 * min()/max() keeping the first of equal values, so results are bit-for-bit the reference's.
 *
 * Slot values placed into open blocks (turok_core/turokd/open_blocks.py, py_place):
 *
 *   place(block, window, index, empty) -> None
 *       block: {metric: array('d')}; window: {metric: value}; each metric's value is set at
 *       index of its array, a copy of empty (the block's slots, all gaps) for a metric new to it
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

enum { AVERAGE, SUM, MINIMUM, MAXIMUM, LAST, METHODS };

/* a C-contiguous buffer of doubles, or -1 with TypeError */
static int doubles_of(PyObject *values, Py_buffer *view, int writable) {
    if (PyObject_GetBuffer(values, view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)))
        return -1;
    if (view->itemsize != 8 || !view->format || strcmp(view->format, "d") != 0) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_TypeError, "a buffer of doubles (array('d')) is needed");
        return -1;
    }
    return 0;
}

static PyObject *known_span(PyObject *self, PyObject *values) {
    Py_buffer view;
    if (doubles_of(values, &view, 0)) return NULL;
    const double *v = view.buf;
    Py_ssize_t n = view.len / 8, count = 0, first = -1, last = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (v[i] == v[i]) {
            if (first < 0) first = i;
            last = i;
            count++;
        }
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(nnn)", count, first, last);
}

static PyObject *rollup_into(PyObject *self, PyObject *args) {
    PyObject *values, *coarse;
    Py_ssize_t offset, index, count, ratio;
    int method;
    double xff;
    if (!PyArg_ParseTuple(args, "OnOnnnid", &values, &offset, &coarse, &index, &count, &ratio, &method, &xff))
        return NULL;
    if (method < 0 || method >= METHODS) {
        PyErr_Format(PyExc_ValueError, "unknown aggregation method %d", method);
        return NULL;
    }
    Py_buffer fine_view, coarse_view;
    if (doubles_of(values, &fine_view, 0)) return NULL;
    if (doubles_of(coarse, &coarse_view, 1)) { PyBuffer_Release(&fine_view); return NULL; }
    const double *fine = fine_view.buf;
    double *out = coarse_view.buf;
    Py_ssize_t n = fine_view.len / 8, slots = coarse_view.len / 8;
    if (count < 0 || ratio < 1 || offset < 0 || index < 0 || offset + count * ratio > n || index + count > slots) {
        PyBuffer_Release(&fine_view);
        PyBuffer_Release(&coarse_view);
        PyErr_SetString(PyExc_IndexError, "rollup_into: slots outside the blocks");
        return NULL;
    }
    for (Py_ssize_t k = 0; k < count; k++) {
        const double *w = fine + offset + k * ratio;
        Py_ssize_t known = 0;
        double total = 0.0, best = 0.0, latest = 0.0;
        for (Py_ssize_t i = 0; i < ratio; i++) {
            double x = w[i];
            if (x != x) continue;  /* a gap */
            if (!known) best = x;
            else if (method == MINIMUM ? x < best : method == MAXIMUM ? x > best : 0) best = x;
            total += x;
            latest = x;
            known++;
        }
        if (!known) continue;
        if ((double)known / (double)ratio < xff) { out[index + k] = Py_NAN; continue; }
        switch (method) {
            case AVERAGE: out[index + k] = total / (double)known; break;
            case SUM: out[index + k] = total; break;
            case LAST: out[index + k] = latest; break;
            default: out[index + k] = best;
        }
    }
    PyBuffer_Release(&fine_view);
    PyBuffer_Release(&coarse_view);
    Py_RETURN_NONE;
}

static PyObject *place(PyObject *self, PyObject *args) {
    PyObject *block, *window, *empty;
    Py_ssize_t index;
    if (!PyArg_ParseTuple(args, "O!O!nO", &PyDict_Type, &block, &PyDict_Type, &window, &index, &empty)) return NULL;
    PyObject *metric, *value;
    Py_ssize_t position = 0;
    while (PyDict_Next(window, &position, &metric, &value)) {
        double v = PyFloat_AsDouble(value);
        if (v == -1.0 && PyErr_Occurred()) return NULL;
        PyObject *slots = PyDict_GetItemWithError(block, metric);  /* borrowed */
        if (!slots) {
            if (PyErr_Occurred()) return NULL;
            slots = PySequence_GetSlice(empty, 0, PY_SSIZE_T_MAX);  /* a copy: array('d') slices copy */
            if (!slots) return NULL;
            Py_INCREF(metric);
            PyUnicode_InternInPlace(&metric);  /* as py_place: one string per name kept */
            int failed = PyDict_SetItem(block, metric, slots);
            Py_DECREF(metric);
            Py_DECREF(slots);  /* the block holds it */
            if (failed) return NULL;
        }
        Py_buffer view;
        if (doubles_of(slots, &view, 1)) return NULL;
        if (index < 0 || index >= view.len / 8) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_IndexError, "place: slot index outside the block");
            return NULL;
        }
        ((double *)view.buf)[index] = v;
        PyBuffer_Release(&view);
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"known_span", known_span, METH_O, "(count, first, last) of the slots holding a value in a buffer of doubles."},
    {"rollup_into", rollup_into, METH_VARARGS,
     "rollup_into(values, offset, coarse, index, count, ratio, method, xff): whole coarse slots from finer ones."},
    {"place", place, METH_VARARGS, "place(block, window, index, empty): slot values set into open blocks."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups", "turokd's hot loops (see rollup.py and open_blocks.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    return PyModule_Create(&module);
}
