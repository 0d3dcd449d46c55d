/* latscope.sinks._native: the module table; the work is in the files native.h lists. */
#include "native.h"

static PyMethodDef methods[] = {
    {"sample_line", ls_sample_line, METH_VARARGS,
     "sample_line(head, seq, end_to_end, segments, names, layer_of, wall_ns) -> "
     "str | NotImplemented"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native", "The sinks' hot path in C.", -1, methods,
};

PyMODINIT_FUNC PyInit__native(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (ls_line_init(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
