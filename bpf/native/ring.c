/* A BPF ring buffer's committed records, copied out, or their span (ring.h walks them).
 * Why C: the ctypes loop cost about a microsecond per record, more than grouping and
 * encoding one in the agent's native path. */
#include "native.h"
#include "ring.h"

PyObject *ls_ring_read(PyObject *self, PyObject *args)
{
    unsigned long long cons_addr, prod_addr, data_addr, mask;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKKK", &cons_addr, &prod_addr, &data_addr, &mask))
        return NULL;
    uint64_t *cons_pos = (uint64_t *)(uintptr_t)cons_addr;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    LsRingWalk w;
    ls_ring_begin(&w, cons_pos, (const uint64_t *)(uintptr_t)prod_addr,
                  (const char *)(uintptr_t)data_addr, mask, UINT64_MAX);
    const char *rec;
    uint32_t n;
    while ((rec = ls_ring_next(&w, &n)) != NULL) {
        PyObject *b = PyBytes_FromStringAndSize(rec, n);
        if (b == NULL || PyList_Append(out, b) < 0) {
            Py_XDECREF(b);
            Py_DECREF(out);
            return NULL;           /* nothing consumed: the next read starts here */
        }
        Py_DECREF(b);
    }
    ls_ring_commit(cons_pos, w.pos);
    return out;
}

PyObject *ls_ring_span(PyObject *self, PyObject *args)
{
    unsigned long long cons_addr, prod_addr, data_addr, mask;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKKK", &cons_addr, &prod_addr, &data_addr, &mask))
        return NULL;
    LsRingWalk w;
    ls_ring_begin(&w, (const uint64_t *)(uintptr_t)cons_addr,
                  (const uint64_t *)(uintptr_t)prod_addr, (const char *)(uintptr_t)data_addr,
                  mask, UINT64_MAX);
    uint64_t start = w.pos;
    uint32_t n;
    while (ls_ring_next(&w, &n) != NULL)
        ;
    return Py_BuildValue("KK", (unsigned long long)start, (unsigned long long)w.pos);
}

/* Unread bytes (reserved or committed), after a full fence: a store the caller made just
 * before (the agent's "wake me" flag, Probes.set_idle) is visible to every CPU before the
 * producer position is read, so a probe that reserved after that position was read sees
 * the flag (it reads the flag after its commit, also a full fence). */
PyObject *ls_ring_pending(PyObject *self, PyObject *args)
{
    unsigned long long cons_addr, prod_addr;
    (void)self;
    if (!PyArg_ParseTuple(args, "KK", &cons_addr, &prod_addr))
        return NULL;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint64_t prod = __atomic_load_n((const uint64_t *)(uintptr_t)prod_addr, __ATOMIC_ACQUIRE);
    uint64_t cons = __atomic_load_n((const uint64_t *)(uintptr_t)cons_addr, __ATOMIC_ACQUIRE);
    return PyLong_FromUnsignedLongLong(prod - cons);
}
