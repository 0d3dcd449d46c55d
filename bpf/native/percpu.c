/* One slot of a per-CPU u64 array, summed over the CPUs: the agent reads its ring-buffer
 * drop counter after every batch that brought events, and the ctypes lookup and per-CPU
 * split in Python cost more than the batch's grouping (py-spy on an agent at 5 Gbit/s). */
#include "native.h"

#include <errno.h>
#include <linux/bpf.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_CPUS 4096

PyObject *ls_percpu_sum(PyObject *self, PyObject *args)
{
    int fd, ncpus;
    unsigned int key;
    (void)self;
    if (!PyArg_ParseTuple(args, "iIi", &fd, &key, &ncpus))
        return NULL;
    if (ncpus < 1 || ncpus > MAX_CPUS) {
        PyErr_Format(PyExc_ValueError, "percpu_sum: %d CPUs", ncpus);
        return NULL;
    }
    uint64_t stack[64], *vals = ncpus <= 64 ? stack : PyMem_Malloc(sizeof(uint64_t) * ncpus);
    if (vals == NULL)
        return PyErr_NoMemory();
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.map_fd = fd;
    attr.key = (uint64_t)(uintptr_t)&key;
    attr.value = (uint64_t)(uintptr_t)vals;
    long r = syscall(__NR_bpf, BPF_MAP_LOOKUP_ELEM, &attr, sizeof(attr));
    unsigned long long sum = 0;
    if (r == 0)
        for (int i = 0; i < ncpus; i++)
            sum += vals[i];
    int err = errno;
    if (vals != stack)
        PyMem_Free(vals);
    if (r != 0) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromUnsignedLongLong(sum);
}
