/* The stream worker's hot path in C (module latscope.stream._native).
 *
 * Each file holds one job:
 *   decode.c    LayerEvent / LayerEventBatch bodies -> the codec's dicts
 *   encode.c    Breakdown dict -> its Avro body
 *   segments.c  a known path's reference timestamps and Segment dicts, per sample
 *   shapes.c    a host record's cached shape, found by the identity of its names
 * (The window sketches' C is latscope.stats._native, stats/native/; the InfluxDB line
 * formatter's latscope.sinks._native, sinks/native/.)
 * stream/layer_avro.py and stream/breakdown_avro.py keep the schema pins and the fall-back
 * to the generic codec and hand only the plain form to C: decode and encode return
 * NotImplemented for input they do not take on (the codec decides), never a guess.
 */
#ifndef LATSCOPE_NATIVE_H
#define LATSCOPE_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

PyObject *ls_decode_events(PyObject *self, PyObject *args);
PyObject *ls_encode_breakdown(PyObject *self, PyObject *args);
PyObject *ls_fill_segments(PyObject *self, PyObject *args);
PyObject *ls_plain_refs(PyObject *self, PyObject *args);
PyObject *ls_shape_cached(PyObject *self, PyObject *args);
PyObject *ls_shape_remember(PyObject *self, PyObject *args);
PyObject *ls_shape_forget(PyObject *self, PyObject *args);
int ls_decode_init(PyObject *module);
int ls_segments_init(PyObject *module);
int ls_shapes_init(PyObject *module);
int ls_encode_init(PyObject *module);

#endif
