/* The publisher's bucketing (publish.LayerEventPublisher.publish_encoded) in C: its loop
 * runs once for every record an agent publishes. */
#include "native.h"

/* bucket(records, pending, due, group_of, wait): for each (flow id, body, first hit) of
 * `records` (a list), its group g = group_of(flow id) (called once per flow id and call);
 * body appended to pending[g] (a new list when absent, due[g] = first + wait), else due[g]
 * lowered to first + wait when earlier. Returns the number of records. */
PyObject *batching_bucket(PyObject *self, PyObject *args)
{
    PyObject *records, *pending, *due, *group_of;
    long long wait;
    if (!PyArg_ParseTuple(args, "O!O!O!OL", &PyList_Type, &records, &PyDict_Type, &pending,
                          &PyDict_Type, &due, &group_of, &wait))
        return NULL;
    PyObject *where = PyDict_New();          /* flow id -> its group, for this call */
    if (where == NULL)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(records);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *rec = PyList_GET_ITEM(records, i);
        if (!PyTuple_Check(rec) || PyTuple_GET_SIZE(rec) != 3) {
            PyErr_Format(PyExc_TypeError, "bucket: record %zd is not a (flow id, body, "
                         "first hit) tuple", i);
            goto fail;
        }
        PyObject *fid = PyTuple_GET_ITEM(rec, 0), *body = PyTuple_GET_ITEM(rec, 1);
        long long t = PyLong_AsLongLong(PyTuple_GET_ITEM(rec, 2));
        if (t == -1 && PyErr_Occurred())
            goto fail;
        t += wait;
        PyObject *g = PyDict_GetItemWithError(where, fid);      /* borrowed */
        if (g == NULL) {
            if (PyErr_Occurred())
                goto fail;
            g = PyObject_CallOneArg(group_of, fid);
            if (g == NULL)
                goto fail;
            int r = PyDict_SetItem(where, fid, g);
            Py_DECREF(g);                    /* where holds it */
            if (r < 0)
                goto fail;
        }
        PyObject *bodies = PyDict_GetItemWithError(pending, g);
        int set_due = 0;
        if (bodies == NULL) {
            if (PyErr_Occurred() || (bodies = PyList_New(0)) == NULL)
                goto fail;
            int r = PyDict_SetItem(pending, g, bodies);
            Py_DECREF(bodies);               /* pending holds it */
            if (r < 0)
                goto fail;
            set_due = 1;
        } else {
            PyObject *cur = PyDict_GetItemWithError(due, g);
            if (cur == NULL) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_KeyError, "bucket: a pending group without its due");
                goto fail;
            }
            long long c = PyLong_AsLongLong(cur);
            if (c == -1 && PyErr_Occurred())
                goto fail;
            set_due = t < c;
        }
        if (set_due) {
            PyObject *tv = PyLong_FromLongLong(t);
            if (tv == NULL)
                goto fail;
            int r = PyDict_SetItem(due, g, tv);
            Py_DECREF(tv);
            if (r < 0)
                goto fail;
        }
        if (PyList_Append(bodies, body) < 0)
            goto fail;
    }
    Py_DECREF(where);
    return PyLong_FromSsize_t(n);
fail:
    Py_DECREF(where);
    return NULL;
}
