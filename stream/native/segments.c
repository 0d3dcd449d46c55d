/* The per-sample end of stream/segments.py breakdown() for a path whose shape is known:
 *   plain_refs     the hosts' timestamps in path order, on the reference clock
 *   fill_segments  the Segment dicts from the path's templates and those timestamps
 *
 * Why C: a 3-host sample has ~16 points and ~15 segments; gathering, correcting and
 * subtracting them, and copying each segment's template, cost ~7 µs a sample in Python.
 * The arithmetic is Python's, step for step (see plain_refs), so results are identical.
 */
#include "native.h"

#include <math.h>

static PyObject *k_hosts, *k_duration_ns, *k_error_bound_ns, *k_ts_ns;

int ls_segments_init(PyObject *module)
{
    if ((k_hosts = PyUnicode_InternFromString("hosts")) == NULL ||
        (k_duration_ns = PyUnicode_InternFromString("duration_ns")) == NULL ||
        (k_error_bound_ns = PyUnicode_InternFromString("error_bound_ns")) == NULL ||
        (k_ts_ns = PyUnicode_InternFromString("ts_ns")) == NULL)
        return -1;
    return 0;
}

/* fill_segments(templates, refs, bounds) -> list[dict]
 *   templates: tuple of (Segment dict to copy, its hosts tuple, host pair or None)
 *   refs:      list of int, one per point (len(templates) + 1 or more: extra ones unused)
 *   bounds:    dict host pair -> error bound (float), for the cross-host segments
 * Each segment: a copy of its template with hosts (a new list), duration_ns = refs[i+1] -
 * refs[i] and, for a host pair, error_bound_ns = bounds[pair]. */
PyObject *ls_fill_segments(PyObject *self, PyObject *args)
{
    PyObject *templates, *refs, *bounds;
    if (!PyArg_ParseTuple(args, "O!O!O!", &PyTuple_Type, &templates, &PyList_Type, &refs,
                          &PyDict_Type, &bounds))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(templates);
    if (PyList_GET_SIZE(refs) - 1 < n)
        n = PyList_GET_SIZE(refs) - 1; /* zip() semantics: the shorter decides */
    if (n < 0)
        n = 0;
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyTuple_GET_ITEM(templates, i);
        if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != 3) {
            PyErr_SetString(PyExc_TypeError, "fill_segments: a template is not a 3-tuple");
            goto fail;
        }
        PyObject *tmpl = PyTuple_GET_ITEM(t, 0), *hosts = PyTuple_GET_ITEM(t, 1),
                 *pair = PyTuple_GET_ITEM(t, 2);
        if (!PyDict_CheckExact(tmpl) || !PyTuple_CheckExact(hosts)) {
            PyErr_SetString(PyExc_TypeError, "fill_segments: template (dict, tuple, pair)");
            goto fail;
        }
        PyObject *seg = PyDict_Copy(tmpl);
        if (seg == NULL)
            goto fail;
        PyList_SET_ITEM(out, i, seg);
        PyObject *hl = PySequence_List(hosts);
        PyObject *d = PyNumber_Subtract(PyList_GET_ITEM(refs, i + 1), PyList_GET_ITEM(refs, i));
        int err = hl == NULL || d == NULL || PyDict_SetItem(seg, k_hosts, hl) < 0 ||
                  PyDict_SetItem(seg, k_duration_ns, d) < 0;
        Py_XDECREF(hl);
        Py_XDECREF(d);
        if (err)
            goto fail;
        if (pair != Py_None) {
            PyObject *b = PyDict_GetItemWithError(bounds, pair);
            if (b == NULL) {
                if (!PyErr_Occurred())
                    PyErr_SetObject(PyExc_KeyError, pair);
                goto fail;
            }
            if (PyDict_SetItem(seg, k_error_bound_ns, b) < 0)
                goto fail;
        }
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* clock.to_reference rounded, as segments.py computes it: round((t - off + lift) / scale).
 * t - off is exact in Python when off is an int (then converted), else a float. */
static PyObject *to_ref(long long t, PyObject *off, double lift, double scale)
{
    double x;
    if (PyFloat_CheckExact(off)) {
        x = (double)t - PyFloat_AS_DOUBLE(off);
    } else {
        long long o = PyLong_AsLongLong(off);
        long long d;
        if (o == -1 && PyErr_Occurred())
            return NULL;
        if (__builtin_sub_overflow(t, o, &d)) {
            PyErr_SetString(PyExc_OverflowError, "plain_refs: t - offset overflows");
            return NULL;
        }
        x = (double)d;
    }
    return PyLong_FromDouble(nearbyint((x + lift) / scale)); /* round half to even */
}

/* plain_refs(hits, orders, rx_pairs, tie_swaps, models) -> (refs, swapped) | NotImplemented
 *   hits:      list, per host in path order, of its hit dicts
 *   orders:    tuple, per host, of hit indexes in stack order
 *   rx_pairs:  tuple, per host, of where a two-point receive block starts in that order
 *              (-1: none); the two are ordered by time, a tie per tie_swaps (bools)
 *   models:    list, per host, of (offset_ns, drift * ref_ns, 1 + drift) or None
 * swapped: bit i set where host i's receive pair came the other way round.
 * NotImplemented when a timestamp is not an exact int (the general path takes it). */
PyObject *ls_plain_refs(PyObject *self, PyObject *args)
{
    PyObject *hits, *orders, *rx_pairs, *tie_swaps, *models;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!", &PyList_Type, &hits, &PyTuple_Type, &orders,
                          &PyTuple_Type, &rx_pairs, &PyTuple_Type, &tie_swaps, &PyList_Type,
                          &models))
        return NULL;
    Py_ssize_t nh = PyList_GET_SIZE(hits);
    if (PyTuple_GET_SIZE(orders) != nh || PyTuple_GET_SIZE(rx_pairs) != nh ||
        PyTuple_GET_SIZE(tie_swaps) != nh || PyList_GET_SIZE(models) != nh) {
        PyErr_SetString(PyExc_ValueError, "plain_refs: one entry per host in every argument");
        return NULL;
    }
    PyObject *refs = PyList_New(0);
    if (refs == NULL)
        return NULL;
    unsigned long long swapped = 0;
    long long ts[64];
    for (Py_ssize_t i = 0; i < nh; i++) {
        PyObject *host_hits = PyList_GET_ITEM(hits, i), *order = PyTuple_GET_ITEM(orders, i);
        PyObject *model = PyList_GET_ITEM(models, i);
        if (!PyList_CheckExact(host_hits) || !PyTuple_CheckExact(order) ||
            PyTuple_GET_SIZE(order) > 64 || i >= 64)
            goto not_mine;
        Py_ssize_t n = PyTuple_GET_SIZE(order);
        for (Py_ssize_t k = 0; k < n; k++) {
            Py_ssize_t j = PyLong_AsSsize_t(PyTuple_GET_ITEM(order, k));
            if (j < 0 || j >= PyList_GET_SIZE(host_hits)) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_IndexError, "plain_refs: order out of range");
                goto fail;
            }
            PyObject *hit = PyList_GET_ITEM(host_hits, j);
            PyObject *t = PyDict_CheckExact(hit) ? PyDict_GetItemWithError(hit, k_ts_ns) : NULL;
            if (t == NULL && PyErr_Occurred())
                goto fail;
            if (t == NULL || !PyLong_CheckExact(t))
                goto not_mine;
            int overflow;
            ts[k] = PyLong_AsLongLongAndOverflow(t, &overflow);
            if (overflow)
                goto not_mine;
        }
        Py_ssize_t at = PyLong_AsSsize_t(PyTuple_GET_ITEM(rx_pairs, i));
        if (at == -1 && PyErr_Occurred())
            goto fail;
        if (at >= 0 && at + 1 < n) {
            long long a = ts[at], b = ts[at + 1];
            if (b < a || (b == a && PyObject_IsTrue(PyTuple_GET_ITEM(tie_swaps, i)) == 1)) {
                ts[at] = b;
                ts[at + 1] = a;
                swapped |= 1ULL << i;
            }
        }
        PyObject *off = NULL;
        double lift = 0, scale = 1;
        if (model != Py_None) {
            if (!PyTuple_CheckExact(model) || PyTuple_GET_SIZE(model) != 3)
                goto not_mine;
            off = PyTuple_GET_ITEM(model, 0);
            lift = PyFloat_AsDouble(PyTuple_GET_ITEM(model, 1));
            scale = PyFloat_AsDouble(PyTuple_GET_ITEM(model, 2));
            if (PyErr_Occurred())
                goto fail;
            if (!PyFloat_CheckExact(off) && !PyLong_CheckExact(off))
                goto not_mine;
        }
        for (Py_ssize_t k = 0; k < n; k++) {
            PyObject *r = off == NULL ? PyLong_FromLongLong(ts[k]) : to_ref(ts[k], off, lift, scale);
            if (r == NULL)
                goto fail;
            int err = PyList_Append(refs, r);
            Py_DECREF(r);
            if (err < 0)
                goto fail;
        }
    }
    return Py_BuildValue("(NK)", refs, swapped);
not_mine:
    Py_DECREF(refs);
    Py_RETURN_NOTIMPLEMENTED;
fail:
    Py_DECREF(refs);
    return NULL;
}
