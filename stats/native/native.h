/* The statistics' hot path in C (module latscope.stats._native): shared by the stream worker,
 * which folds durations into window sketches, and the sinks, which keep a freshness sketch.
 *
 *   sketch.c    Sketch.add_all: a batch of values into a sketch's buckets
 */
#ifndef LATSCOPE_STATS_NATIVE_H
#define LATSCOPE_STATS_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

PyObject *ls_sketch_add_all(PyObject *self, PyObject *args);

#endif
