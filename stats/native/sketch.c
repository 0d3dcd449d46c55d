/* Sketch.add_all (stats/sketch.py): a batch of values into a sketch's buckets.
 *
 * Why C: the stream worker folds ~16 durations per joined sample into the window sketches;
 * Python's loop cost ~0.2 µs a value. The arithmetic is Sketch.add's, step for step
 * (float conversion, log, division, ceil), so the buckets are the same bucket for bucket.
 */
#include "native.h"

#include <math.h>

/* 2**53: ints at least this large are compared as Python compares them, not as doubles */
#define EXACT_LIMIT 9007199254740992.0

/* v < (op Py_LT) or > (Py_GT) the current extreme, as Python decides it. */
static inline int beyond(PyObject *v, double dv, PyObject *cur, double dcur, int op)
{
    if (PyFloat_CheckExact(cur) && (PyFloat_CheckExact(v) || fabs(dv) < EXACT_LIMIT))
        return op == Py_LT ? dv < dcur : dv > dcur;
    return PyObject_RichCompareBool(v, cur, op);
}

/* sketch_add_all(values, log_gamma, pos, neg, count, total, lo, hi, zeros)
 *   -> (count, total, lo, hi, zeros)
 * values: any iterable of int or float; pos/neg: bucket index -> count, updated in place. */
PyObject *ls_sketch_add_all(PyObject *self, PyObject *args)
{
    PyObject *values, *pos, *neg, *lo, *hi;
    double log_gamma, total;
    Py_ssize_t count, zeros;
    if (!PyArg_ParseTuple(args, "OdO!O!ndOOn", &values, &log_gamma, &PyDict_Type, &pos,
                          &PyDict_Type, &neg, &count, &total, &lo, &hi, &zeros))
        return NULL;
    PyObject *seq = PySequence_Fast(values, "sketch values must be iterable");
    if (seq == NULL)
        return NULL;
    Py_INCREF(lo);
    Py_INCREF(hi);
    double dlo = PyFloat_Check(lo) ? PyFloat_AS_DOUBLE(lo) : 0.0;
    double dhi = PyFloat_Check(hi) ? PyFloat_AS_DOUBLE(hi) : 0.0;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *v = items[k];
        double dv;
        if (PyLong_CheckExact(v))
            dv = PyLong_AsDouble(v);
        else if (PyFloat_CheckExact(v))
            dv = PyFloat_AS_DOUBLE(v);
        else {
            PyErr_Format(PyExc_TypeError, "sketch values must be int or float, not %.100s",
                         Py_TYPE(v)->tp_name);
            goto fail;
        }
        if (dv == -1.0 && PyErr_Occurred())
            goto fail;
        count += 1;
        total += dv;
        int b = beyond(v, dv, lo, dlo, Py_LT);
        if (b < 0)
            goto fail;
        if (b) {
            Py_SETREF(lo, Py_NewRef(v));
            dlo = dv;
        }
        b = beyond(v, dv, hi, dhi, Py_GT);
        if (b < 0)
            goto fail;
        if (b) {
            Py_SETREF(hi, Py_NewRef(v));
            dhi = dv;
        }
        double mag = fabs(dv);
        if (mag < 1.0) { /* sketch._ZERO: timestamps are integer ns */
            zeros += 1;
            continue;
        }
        PyObject *store = dv > 0 ? pos : neg;
        PyObject *key = PyLong_FromDouble(ceil(log(mag) / log_gamma));
        if (key == NULL)
            goto fail;
        PyObject *old = PyDict_GetItemWithError(store, key);
        long c = 0;
        if (old == NULL && PyErr_Occurred()) {
            Py_DECREF(key);
            goto fail;
        }
        if (old != NULL && (c = PyLong_AsLong(old)) == -1 && PyErr_Occurred()) {
            Py_DECREF(key);
            goto fail;
        }
        PyObject *nc = PyLong_FromLong(c + 1);
        int err = nc == NULL || PyDict_SetItem(store, key, nc) < 0;
        Py_DECREF(key);
        Py_XDECREF(nc);
        if (err)
            goto fail;
    }
    Py_DECREF(seq);
    return Py_BuildValue("(ndNNn)", count, total, lo, hi, zeros);
fail:
    Py_DECREF(seq);
    Py_DECREF(lo);
    Py_DECREF(hi);
    return NULL;
}
