/* A breakdown's Segment dicts from its path's templates and reference timestamps
 * (stream/segments.py breakdown(): the per-sample end of the hot path).
 *
 * Why C: a 3-host sample has ~15 segments; copying each template and filling in its
 * numbers from Python cost ~0.5 µs a segment.
 */
#include "native.h"

static PyObject *k_hosts, *k_duration_ns, *k_error_bound_ns;

int ls_segments_init(PyObject *module)
{
    if ((k_hosts = PyUnicode_InternFromString("hosts")) == NULL ||
        (k_duration_ns = PyUnicode_InternFromString("duration_ns")) == NULL ||
        (k_error_bound_ns = PyUnicode_InternFromString("error_bound_ns")) == NULL)
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
