/* latscope.bpf._native: the module table; the work is in the files native.h lists. */
#include "native.h"

static PyMethodDef methods[] = {
    {"ring_read", ls_ring_read, METH_VARARGS,
     "ring_read(consumer position, producer position, data area, mask) -> list[bytes]: "
     "the committed records, consumed"},
    {"ring_span", ls_ring_span, METH_VARARGS,
     "ring_span(consumer position, producer position, data area, mask) -> (start, end): "
     "the committed records' positions, nothing consumed"},
    {"ring_pending", ls_ring_pending, METH_VARARGS,
     "ring_pending(consumer position, producer position) -> int: unread bytes, read after "
     "a full memory fence"},
    {"percpu_sum", ls_percpu_sum, METH_VARARGS,
     "percpu_sum(map fd, u32 key, possible CPUs) -> int: a per-CPU u64 slot's total"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native", "The platform layer's hot path in C.", -1, methods,
};

PyMODINIT_FUNC PyInit__native(void)
{
    return PyModule_Create(&module);
}
