/* latscope.bpf._native: the module table; the work is in the files native.h lists. */
#include "native.h"

static PyMethodDef methods[] = {
    {"ring_read", ls_ring_read, METH_VARARGS,
     "ring_read(consumer position, producer position, data area, mask) -> list[bytes]: "
     "the committed records, consumed"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native", "The platform layer's hot path in C.", -1, methods,
};

PyMODINIT_FUNC PyInit__native(void)
{
    return PyModule_Create(&module);
}
