/* latscope.stream._native: the module table; the work is in the files native.h lists. */
#include "native.h"

static PyMethodDef methods[] = {
    {"decode_events", ls_decode_events, METH_VARARGS,
     "decode_events(data, pos, batch, points, protos) -> list[dict] | NotImplemented"},
    {"encode_breakdown", ls_encode_breakdown, METH_VARARGS,
     "encode_breakdown(bd, layers, protos) -> bytes | NotImplemented"},
    {"fill_segments", ls_fill_segments, METH_VARARGS,
     "fill_segments(templates, refs, bounds) -> list[dict]"},
    {"plain_refs", ls_plain_refs, METH_VARARGS,
     "plain_refs(hits, orders, rx_pairs, tie_swaps, models) -> (refs, swapped) | NotImplemented"},
    {"shape_cached", ls_shape_cached, METH_VARARGS,
     "shape_cached(host, hits) -> the shape remembered for these objects, or None"},
    {"shape_remember", ls_shape_remember, METH_VARARGS,
     "shape_remember(host, hits, shape) -> None"},
    {"shape_forget", ls_shape_forget, METH_NOARGS, "shape_forget() -> None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native", "The stream worker's hot path in C.", -1, methods,
};

PyMODINIT_FUNC PyInit__native(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (ls_decode_init(m) < 0 || ls_encode_init(m) < 0 ||
        ls_segments_init(m) < 0 || ls_shapes_init(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
