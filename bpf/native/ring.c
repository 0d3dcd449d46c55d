/* A BPF ring buffer's committed records, as the kernel's own consumer reads them
 * (tools/lib/bpf/ringbuf.c's protocol): the producer position with acquire ordering, each
 * record header with acquire ordering (a BUSY record stops the batch: it is still being
 * written), DISCARDed records skipped, and the consumer position stored with release
 * ordering once the batch is copied, so the kernel reuses no byte before it is read.
 * The data area is mapped twice back to back, so a record crossing the end is contiguous.
 * Why C: the ctypes loop cost about a microsecond per record, more than grouping and
 * encoding one in the agent's native path. */
#include "native.h"

#define RB_BUSY (1U << 31)
#define RB_DISCARD (1U << 30)
#define RB_HDR 8

PyObject *ls_ring_read(PyObject *self, PyObject *args)
{
    unsigned long long cons_addr, prod_addr, data_addr, mask;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKKK", &cons_addr, &prod_addr, &data_addr, &mask))
        return NULL;
    uint64_t *cons_pos = (uint64_t *)(uintptr_t)cons_addr;
    const uint64_t *prod_pos = (const uint64_t *)(uintptr_t)prod_addr;
    const char *data = (const char *)(uintptr_t)data_addr;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    uint64_t cons = __atomic_load_n(cons_pos, __ATOMIC_ACQUIRE);
    uint64_t prod = __atomic_load_n(prod_pos, __ATOMIC_ACQUIRE);
    while (cons < prod) {
        const uint32_t *hdr = (const uint32_t *)(data + (cons & mask));
        uint32_t len = __atomic_load_n(hdr, __ATOMIC_ACQUIRE);
        if (len & RB_BUSY)
            break;
        uint32_t n = len & ~(RB_BUSY | RB_DISCARD);
        if (!(len & RB_DISCARD)) {
            PyObject *rec = PyBytes_FromStringAndSize(data + ((cons + RB_HDR) & mask), n);
            if (rec == NULL || PyList_Append(out, rec) < 0) {
                Py_XDECREF(rec);
                Py_DECREF(out);
                return NULL;           /* nothing consumed: the next read starts here */
            }
            Py_DECREF(rec);
        }
        cons += (n + RB_HDR + 7) & ~(uint64_t)7;
    }
    __atomic_store_n(cons_pos, cons, __ATOMIC_RELEASE);
    return out;
}
