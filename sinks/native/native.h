/* The sinks' hot path in C (module latscope.sinks._native).
 *
 *   line.c      a raw sample's InfluxDB line: its numbers into the cached head and names
 * sinks/influx.py keeps the cached heads and names and the Python reference, which formats
 * whatever C hands back (NotImplemented).
 */
#ifndef LATSCOPE_SINKS_NATIVE_H
#define LATSCOPE_SINKS_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

PyObject *ls_sample_line(PyObject *self, PyObject *args);
int ls_line_init(PyObject *module);

#endif
