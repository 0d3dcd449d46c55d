/* A host record's shape (stream/segments.py _Shape: its hosts' (point, dev) sequence)
 * remembered by the identity of the objects it is made of.
 *
 * Why C: the stream worker looks up three shapes a sample; building the (point, dev)
 * tuple key and hashing it in Python cost ~1 µs a record. The decoder hands out the same
 * host, point and device str objects record after record (stream/native/decode.c caches
 * them), so a key of their addresses finds the shape without building anything. The
 * cache holds references to every object of a key: an address in it cannot be reused by
 * another object while the entry lives, so equal addresses are equal names. Different
 * objects with equal names simply miss, and Python's lookup by value decides.
 */
#include "native.h"

#include <string.h>

#define SHAPE_SLOTS 1024
#define SHAPE_HITS 32 /* longer records are not remembered here */

typedef struct {
    PyObject *host;
    Py_ssize_t n;
    PyObject *pd[2 * SHAPE_HITS]; /* point, dev (Py_None when absent) per hit */
    PyObject *value;
} shape_slot;

static shape_slot shapes[SHAPE_SLOTS];
static PyObject *k_point, *k_dev;

int ls_shapes_init(PyObject *module)
{
    if ((k_point = PyUnicode_InternFromString("point")) == NULL ||
        (k_dev = PyUnicode_InternFromString("dev")) == NULL)
        return -1;
    return 0;
}

/* The (point, dev) objects of hits, borrowed, into pd; their count, or -1 (not a list of
 * at most SHAPE_HITS dicts with a point each: not remembered here) or -2 (an error). */
static Py_ssize_t key_of(PyObject *hits, PyObject **pd)
{
    if (!PyList_CheckExact(hits) || PyList_GET_SIZE(hits) > SHAPE_HITS)
        return -1;
    Py_ssize_t n = PyList_GET_SIZE(hits);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *hit = PyList_GET_ITEM(hits, i);
        if (!PyDict_CheckExact(hit))
            return -1;
        PyObject *point = PyDict_GetItemWithError(hit, k_point);
        if (point == NULL)
            return PyErr_Occurred() ? -2 : -1;
        PyObject *dev = PyDict_GetItemWithError(hit, k_dev);
        if (dev == NULL && PyErr_Occurred())
            return -2;
        pd[2 * i] = point;
        pd[2 * i + 1] = dev == NULL ? Py_None : dev;
    }
    return n;
}

static shape_slot *slot_of(PyObject *host, PyObject **pd, Py_ssize_t n)
{
    uint64_t h = (uint64_t)(uintptr_t)host * 0x9E3779B97F4A7C15ULL;
    for (Py_ssize_t i = 0; i < 2 * n; i++)
        h = (h ^ (uint64_t)(uintptr_t)pd[i]) * 0x100000001B3ULL;
    return &shapes[(h ^ (h >> 32)) & (SHAPE_SLOTS - 1)];
}

/* The slot of (host, hits), its key in pd and *n; NULL with *n -1 (not remembered here)
 * or -2 (an error). */
static shape_slot *slot_for_hits(PyObject *host, PyObject *hits, PyObject **pd, Py_ssize_t *n)
{
    *n = key_of(hits, pd);
    return *n >= 0 ? slot_of(host, pd, *n) : NULL;
}

/* shape_cached(host, hits) -> the remembered shape, or None */
PyObject *ls_shape_cached(PyObject *self, PyObject *args)
{
    PyObject *host, *hits, *pd[2 * SHAPE_HITS];
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "OO", &host, &hits))
        return NULL;
    shape_slot *e = slot_for_hits(host, hits, pd, &n);
    if (n == -2)
        return NULL;
    if (e != NULL && e->value != NULL && e->host == host && e->n == n &&
        memcmp(e->pd, pd, 2 * n * sizeof(PyObject *)) == 0)
        return Py_NewRef(e->value);
    Py_RETURN_NONE;
}

static void slot_clear(shape_slot *e)
{
    if (e->value == NULL)
        return;
    Py_CLEAR(e->value);
    Py_CLEAR(e->host);
    for (Py_ssize_t i = 0; i < 2 * e->n; i++)
        Py_CLEAR(e->pd[i]);
    e->n = 0;
}

/* shape_remember(host, hits, shape) -> None: shape_cached(host, hits) is shape from now on
 * (while these very objects are used, and until another key takes its slot) */
PyObject *ls_shape_remember(PyObject *self, PyObject *args)
{
    PyObject *host, *hits, *value, *pd[2 * SHAPE_HITS];
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "OOO", &host, &hits, &value))
        return NULL;
    shape_slot *e = slot_for_hits(host, hits, pd, &n);
    if (n == -2)
        return NULL;
    if (e != NULL) {
        slot_clear(e);
        e->host = Py_NewRef(host);
        e->n = n;
        for (Py_ssize_t i = 0; i < 2 * n; i++)
            e->pd[i] = Py_NewRef(pd[i]);
        e->value = Py_NewRef(value);
    }
    Py_RETURN_NONE;
}

/* shape_forget() -> None: every entry dropped (the Python caches were cleared) */
PyObject *ls_shape_forget(PyObject *self, PyObject *args)
{
    for (int i = 0; i < SHAPE_SLOTS; i++)
        slot_clear(&shapes[i]);
    Py_RETURN_NONE;
}
