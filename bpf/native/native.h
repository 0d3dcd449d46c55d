/* The platform layer's C (module latscope.bpf._native).
 *
 * Each file holds one job:
 *   ring.h    the ring buffer's consumer protocol (also the agent's native path's)
 *   ring.c    a BPF ring buffer's committed records, copied from its mmap (RingBuffer.read),
 *             or where they end (RingBuffer.span)
 *   percpu.c  one slot of a per-CPU u64 array, summed (counters.total)
 */
#ifndef LATSCOPE_BPF_NATIVE_H
#define LATSCOPE_BPF_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

PyObject *ls_ring_read(PyObject *self, PyObject *args);
PyObject *ls_ring_span(PyObject *self, PyObject *args);
PyObject *ls_ring_pending(PyObject *self, PyObject *args);
PyObject *ls_percpu_sum(PyObject *self, PyObject *args);

#endif
