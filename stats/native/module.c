/* latscope.stats._native: the module table; the work is in the files native.h lists. */
#include "native.h"

static PyMethodDef methods[] = {
    {"sketch_add_all", ls_sketch_add_all, METH_VARARGS,
     "sketch_add_all(values, log_gamma, pos, neg, count, total, lo, hi, zeros) -> "
     "(count, total, lo, hi, zeros)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native", "The statistics' hot path in C.", -1, methods,
};

PyMODINIT_FUNC PyInit__native(void)
{
    return PyModule_Create(&module);
}
