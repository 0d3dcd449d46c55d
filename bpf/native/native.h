/* The platform layer's C (module latscope.bpf._native).
 *
 * Each file holds one job:
 *   ring.c  a BPF ring buffer's committed records, read from its mmap (RingBuffer.read)
 */
#ifndef LATSCOPE_BPF_NATIVE_H
#define LATSCOPE_BPF_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

PyObject *ls_ring_read(PyObject *self, PyObject *args);

#endif
