/* A finished group -> its LayerEvent body, appended to `out` as (flow_id, body, first hit's
 * ts): the body byte for byte LayerEventEncoder.body() of the Record the Python path would
 * emit. The parts that know the schema come from Python (producers/avro.py): a flow's
 * header (host, flow id, flow key), each point's enum encoding, each device's union
 * encoding. Here: the record's frame (seq, retrans, complete, the hits array) and the hits'
 * longs. */
#include "native.h"

static int reserve(Buf *b, Py_ssize_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 1024;
    while (cap - b->len < extra) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    char *p = PyMem_Realloc(b->p, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

/* Avro long: zigzag, then LEB128 (room for 10 bytes reserved by the caller). */
static inline void put_long(Buf *b, int64_t v)
{
    uint64_t n = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    unsigned char *o = (unsigned char *)b->p + b->len;
    while (n > 0x7F) {
        *o++ = (unsigned char)((n & 0x7F) | 0x80);
        n >>= 7;
    }
    *o++ = (unsigned char)n;
    b->len = (char *)o - b->p;
}

static inline void put_raw(Buf *b, const char *s, Py_ssize_t n)
{
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

/* A timestamp or inode past Avro's long, as avro_write.long refuses it. */
static int check_long(uint64_t v, const char *what)
{
    if (v > (uint64_t)INT64_MAX) {
        PyErr_Format(PyExc_OverflowError, "%s %llu does not fit an Avro long", what,
                     (unsigned long long)v);
        return -1;
    }
    return 0;
}

/* Stable by ts (list.sort(key=_ts)): insertion sort, the hits are few and nearly sorted. */
static void sort_hits(Hit *h, int n)
{
    for (int i = 1; i < n; i++) {
        Hit x = h[i];
        int j = i - 1;
        while (j >= 0 && h[j].ts > x.ts) {
            h[j + 1] = h[j];
            j--;
        }
        h[j + 1] = x;
    }
}

int emit_record(Path *p, uint32_t flow, uint32_t seq, Group *g, int retrans, int complete,
                PyObject *out)
{
    Flow *f = p->flows[flow];
    Buf *b = &p->buf;
    sort_hits(g->hits, g->n);
    b->len = 0;
    if (reserve(b, f->prefix_len + 10 + 2 + 10 + 1) < 0)
        return -1;
    put_raw(b, f->prefix, f->prefix_len);
    put_long(b, seq);
    b->p[b->len++] = retrans ? 1 : 0;
    b->p[b->len++] = complete ? 1 : 0;
    if (g->n) {
        put_long(b, g->n);
        for (int i = 0; i < g->n; i++) {
            const Hit *h = &g->hits[i];
            PyObject *pe = p->point_enc[h->point];
            Py_ssize_t plen = PyBytes_GET_SIZE(pe);
            if (check_long(h->ts, "ts_ns") < 0 || check_long(h->netns, "netns") < 0 ||
                reserve(b, plen + h->dev->len + 41 + 5 * NWAIT) < 0)
                return -1;
            put_raw(b, PyBytes_AS_STRING(pe), plen);
            put_long(b, (int64_t)h->ts);
            put_long(b, h->ifindex);
            put_raw(b, h->dev->enc, h->dev->len);
            put_long(b, (int64_t)h->netns);
            put_long(b, h->cpu);
            if (h->wslot) {         /* wait: the SocketWait branch of its union */
                b->p[b->len++] = 2;
                for (int w = 0; w < NWAIT; w++)
                    put_long(b, g->wait[h->wslot - 1][w]);
            } else {
                b->p[b->len++] = 0;
            }
        }
    }
    b->p[b->len++] = 0;
    PyObject *body = PyBytes_FromStringAndSize(b->p, b->len);
    if (body == NULL)
        return -1;
    /* its first hit: how long the publisher may keep it (publish.LayerEventPublisher) */
    PyObject *first = PyLong_FromUnsignedLongLong(g->n ? g->hits[0].ts : 0);
    PyObject *rec = first ? PyTuple_New(3) : NULL;
    if (rec == NULL) {
        Py_DECREF(body);
        Py_XDECREF(first);
        return -1;
    }
    Py_INCREF(f->fid);
    PyTuple_SET_ITEM(rec, 0, f->fid);
    PyTuple_SET_ITEM(rec, 1, body);
    PyTuple_SET_ITEM(rec, 2, first);
    PyObject_GC_UnTrack(rec);   /* str, bytes, int: no cycle; the collector need not visit */
    int r = PyList_Append(out, rec);
    Py_DECREF(rec);
    return r;
}
