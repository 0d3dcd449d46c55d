/* Breakdown dict -> its Avro body (schemas/breakdown.avsc, flow_key.avsc), byte for byte what
 * latscope.schemas.codec (fastavro) writes, for the stream worker's hot path.
 *
 * Only the plain form breakdown() builds is written here: exact dicts, lists or tuples, str,
 * int, float, bool and None, every field present, ints within Avro's range. Anything else
 * (a missing field the codec would default, a bool given as an int or a truthy int given as
 * a bool, a float duration, a str subclass, a surrogate, an unknown enum symbol) returns
 * NotImplemented: the codec then writes it or raises. The enum indexes come from the
 * caller (built from the schema files), so no symbol is hardcoded here.
 *
 * The body is written into a stack buffer (heap once a record outgrows it) and copied into
 * one bytes object at the end. Dict lookups can run Python code (a key's __eq__ on a hash
 * collision), so every container that is looked into is held by a strong reference while
 * it is, and the segments' count re-read, never trusted across a lookup.
 */
#include "native.h"

#define NOT_MINE 1          /* a helper's "return NotImplemented"; -1 is an exception set */
#define STACK_BYTES 2048    /* a 3-host, 15-segment breakdown is ~900 bytes */

typedef struct {
    char *p;
    Py_ssize_t len, cap;
    int heap;
    char stack[STACK_BYTES];
} Buf;

/* Interned keys, in schema order. */
enum {
    K_SCHEMA_VERSION, K_FLOW_ID, K_FLOW, K_SEQ, K_SRC_HOST, K_DST_HOST, K_TS_NS, K_E2E,
    K_COMPLETE, K_RETRANS, K_HOSTS, K_MISSING_HOSTS, K_SEGMENTS,
    K_PROTO, K_FAMILY, K_SRC, K_DST, K_SPORT, K_DPORT,
    K_FROM, K_TO, K_LAYER, K_DEVICE, K_DURATION, K_BOUND, K_WAIT,
    K_W_NAGLE, K_W_CWND, K_W_RWND, K_W_SNDBUF, K_W_PACING, K_W_OTHER, K_W_UNREAD, K_W_OOO,
    K_COUNT
};
static const char *const key_names[K_COUNT] = {
    "schema_version", "flow_id", "flow", "seq", "src_host", "dst_host", "ts_ns",
    "end_to_end_ns", "complete", "retrans", "hosts", "missing_hosts", "segments",
    "proto", "family", "src", "dst", "sport", "dport",
    "from", "to", "layer", "device", "duration_ns", "error_bound_ns", "wait",
    "nagle_us", "cwnd_us", "rwnd_us", "sndbuf_us", "pacing_us", "other_us", "unread_us",
    "ooo_us",
};
static PyObject *keys[K_COUNT];

static int reserve(Buf *b, Py_ssize_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    if (extra > PY_SSIZE_T_MAX / 2 - b->len) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t cap = b->cap * 2;
    if (cap < b->len + extra)
        cap = b->len + extra;
    char *p;
    if (b->heap) {
        p = PyMem_Realloc(b->p, cap);
    } else {
        p = PyMem_Malloc(cap);
        if (p != NULL)
            memcpy(p, b->p, b->len);
    }
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    b->heap = 1;
    return 0;
}

/* Avro long/int: zigzag, then unsigned LEB128 (at most 10 bytes). */
static int put_long(Buf *b, long long v)
{
    if (reserve(b, 10) < 0)
        return -1;
    uint64_t n = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    unsigned char *o = (unsigned char *)b->p + b->len;
    while (n > 0x7F) {
        *o++ = (unsigned char)((n & 0x7F) | 0x80);
        n >>= 7;
    }
    *o++ = (unsigned char)n;
    b->len = (char *)o - b->p;
    return 0;
}

static int put_byte(Buf *b, char c)
{
    if (reserve(b, 1) < 0)
        return -1;
    b->p[b->len++] = c;
    return 0;
}

/* A dict's fields, read in schema order. breakdown() builds its dicts with the schema's
 * keys in the schema's order (source literals, interned like ours), so the next entry is
 * usually the field wanted: taken by key identity, no lookup. From the first entry that is
 * not, every field is looked up. */
typedef struct {
    PyObject *d;
    Py_ssize_t pos;
    int in_order;
} Fields;

static int fields_of(Fields *f, PyObject *d)
{
    if (!PyDict_CheckExact(d))
        return NOT_MINE;
    f->d = d;
    f->pos = 0;
    f->in_order = 1;
    return 0;
}

/* Field k: 0 with *out borrowed, NOT_MINE if absent (the codec may default it). */
static int field(Fields *f, int k, PyObject **out)
{
    if (f->in_order) {
        PyObject *key;
        if (PyDict_Next(f->d, &f->pos, &key, out) && key == keys[k])
            return 0;
        f->in_order = 0;
    }
    *out = PyDict_GetItemWithError(f->d, keys[k]);
    if (*out == NULL)
        return PyErr_Occurred() ? -1 : NOT_MINE;
    return 0;
}

/* An exact int within [lo, hi]. */
static int as_int(PyObject *o, long long lo, long long hi, long long *v)
{
    if (!PyLong_CheckExact(o))
        return NOT_MINE;
    int overflow;
    *v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow)
        return NOT_MINE;
    if (*v == -1 && PyErr_Occurred())
        return -1;
    return *v < lo || *v > hi ? NOT_MINE : 0;
}

static int put_int_of(Buf *b, PyObject *o, long long lo, long long hi)
{
    long long v;
    int r = as_int(o, lo, hi, &v);
    return r ? r : put_long(b, v);
}

static int put_int32(Buf *b, PyObject *o) { return put_int_of(b, o, INT32_MIN, INT32_MAX); }
static int put_int64(Buf *b, PyObject *o) { return put_int_of(b, o, LLONG_MIN, LLONG_MAX); }

static int put_str(Buf *b, PyObject *o)
{
    if (!PyUnicode_CheckExact(o))
        return NOT_MINE;
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(o, &n);
    if (s == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
            return -1;
        PyErr_Clear();      /* a surrogate: the codec raises its own error */
        return NOT_MINE;
    }
    if (put_long(b, n) < 0 || reserve(b, n) < 0)
        return -1;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

/* Enum: the symbol (an exact str) looked up in the caller's symbol -> index dict. */
static int put_enum(Buf *b, PyObject *o, PyObject *symbols)
{
    if (!PyUnicode_CheckExact(o))
        return NOT_MINE;
    PyObject *i = PyDict_GetItemWithError(symbols, o);
    if (i == NULL)
        return PyErr_Occurred() ? -1 : NOT_MINE;
    long long v;
    int r = as_int(i, 0, INT32_MAX, &v);
    if (r == NOT_MINE) {
        PyErr_SetString(PyExc_TypeError, "encode_breakdown: enum indexes must be ints >= 0");
        return -1;
    }
    return r ? r : put_long(b, v);
}

static int put_bool(Buf *b, PyObject *o)
{
    if (o == Py_True)
        return put_byte(b, 1);
    if (o == Py_False)
        return put_byte(b, 0);
    return NOT_MINE;        /* truthy objects: the codec's call */
}

/* Avro array of strings: one block (count, items), then 0. Nothing between the items runs
 * Python code, so the size read once holds. */
static int put_strings(Buf *b, PyObject *o)
{
    PyObject **items;
    Py_ssize_t n;
    if (PyList_CheckExact(o)) {
        items = ((PyListObject *)o)->ob_item;
        n = PyList_GET_SIZE(o);
    } else if (PyTuple_CheckExact(o)) {
        items = ((PyTupleObject *)o)->ob_item;
        n = PyTuple_GET_SIZE(o);
    } else {
        return NOT_MINE;
    }
    if (n > 0 && put_long(b, n) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        int r = put_str(b, items[i]);
        if (r)
            return r;
    }
    return put_byte(b, 0);
}

#define TRY(expr) do { int r_ = (expr); if (r_) return r_; } while (0)

/* Field k of d written with put(b, value). */
#define PUT_FIELD(f, k, put) do { PyObject *v_; TRY(field(f, k, &v_)); TRY(put(b, v_)); } while (0)

static int put_enum_field(Buf *b, Fields *f, int k, PyObject *symbols)
{
    PyObject *v;
    TRY(field(f, k, &v));
    return put_enum(b, v, symbols);
}

static int put_flow(Buf *b, PyObject *flow, PyObject *protos)
{
    Fields f;
    TRY(fields_of(&f, flow));
    TRY(put_enum_field(b, &f, K_PROTO, protos));
    PUT_FIELD(&f, K_FAMILY, put_int32);
    PUT_FIELD(&f, K_SRC, put_str);
    PUT_FIELD(&f, K_DST, put_str);
    PUT_FIELD(&f, K_SPORT, put_int32);
    PUT_FIELD(&f, K_DPORT, put_int32);
    return 0;
}

/* ["null", X]: index 0, or index 1 and X. */
static int put_optional(Buf *b, PyObject *o, int (*put)(Buf *, PyObject *))
{
    if (o == Py_None)
        return put_byte(b, 0);
    TRY(put_byte(b, 2));
    return put(b, o);
}

static int put_device(Buf *b, PyObject *o) { return put_optional(b, o, put_str); }
static int put_e2e(Buf *b, PyObject *o) { return put_optional(b, o, put_int64); }

/* double: a float as is, an int as float(v) (what fastavro writes), little-endian. */
static int put_double(Buf *b, PyObject *o)
{
    double d;
    if (PyFloat_CheckExact(o)) {
        d = PyFloat_AS_DOUBLE(o);
    } else if (PyLong_CheckExact(o)) {
        d = PyLong_AsDouble(o);
        if (d == -1.0 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError))
                return -1;
            PyErr_Clear();  /* beyond a double: the codec raises */
            return NOT_MINE;
        }
    } else {
        return NOT_MINE;
    }
    if (reserve(b, 8) < 0 || PyFloat_Pack8(d, b->p + b->len, 1) < 0)
        return -1;
    b->len += 8;
    return 0;
}

/* SocketWait: its longs in order (a dict with exactly its fields). */
static int put_causes(Buf *b, PyObject *o)
{
    Fields f;
    TRY(fields_of(&f, o));
    if (PyDict_GET_SIZE(o) != K_W_OOO - K_W_NAGLE + 1)
        return NOT_MINE;
    for (int k = K_W_NAGLE; k <= K_W_OOO; k++)
        PUT_FIELD(&f, k, put_int64);
    return 0;
}

static int put_wait(Buf *b, PyObject *o) { return put_optional(b, o, put_causes); }

static int put_segment(Buf *b, PyObject *seg, PyObject *layers)
{
    Fields f;
    TRY(fields_of(&f, seg));
    PUT_FIELD(&f, K_FROM, put_str);
    PUT_FIELD(&f, K_TO, put_str);
    TRY(put_enum_field(b, &f, K_LAYER, layers));
    PUT_FIELD(&f, K_HOSTS, put_strings);
    PUT_FIELD(&f, K_DEVICE, put_device);
    PUT_FIELD(&f, K_DURATION, put_int64);
    PUT_FIELD(&f, K_BOUND, put_double);
    PUT_FIELD(&f, K_WAIT, put_wait);
    return 0;
}

/* The segments array. Its items' lookups may run Python code that changes the list: each
 * item is held while written and the size re-read; a changed size is not ours to judge. */
static int put_segments(Buf *b, PyObject *segs, PyObject *layers)
{
    int list = PyList_CheckExact(segs);
    if (!list && !PyTuple_CheckExact(segs))
        return NOT_MINE;
    Py_ssize_t n = Py_SIZE(segs);
    if (n > 0 && put_long(b, n) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (Py_SIZE(segs) != n)
            return NOT_MINE;
        PyObject *seg = list ? PyList_GET_ITEM(segs, i) : PyTuple_GET_ITEM(segs, i);
        Py_INCREF(seg);
        int r = put_segment(b, seg, layers);
        Py_DECREF(seg);
        if (r)
            return r;
    }
    if (Py_SIZE(segs) != n)
        return NOT_MINE;
    return put_byte(b, 0);
}

/* A container field held by a strong reference while put writes it. */
static int put_held(Buf *b, Fields *f, int k, PyObject *aux,
                    int (*put)(Buf *, PyObject *, PyObject *))
{
    PyObject *v;
    TRY(field(f, k, &v));
    Py_INCREF(v);
    int r = put(b, v, aux);
    Py_DECREF(v);
    return r;
}

static int put_breakdown(Buf *b, PyObject *bd, PyObject *layers, PyObject *protos)
{
    Fields f;
    TRY(fields_of(&f, bd));
    PUT_FIELD(&f, K_SCHEMA_VERSION, put_int32);
    PUT_FIELD(&f, K_FLOW_ID, put_str);
    TRY(put_held(b, &f, K_FLOW, protos, put_flow));
    PUT_FIELD(&f, K_SEQ, put_int64);
    PUT_FIELD(&f, K_SRC_HOST, put_str);
    PUT_FIELD(&f, K_DST_HOST, put_str);
    PUT_FIELD(&f, K_TS_NS, put_int64);
    PUT_FIELD(&f, K_E2E, put_e2e);
    PUT_FIELD(&f, K_COMPLETE, put_bool);
    PUT_FIELD(&f, K_RETRANS, put_bool);
    PUT_FIELD(&f, K_HOSTS, put_strings);
    PUT_FIELD(&f, K_MISSING_HOSTS, put_strings);
    TRY(put_held(b, &f, K_SEGMENTS, layers, put_segments));
    return 0;
}

PyObject *ls_encode_breakdown(PyObject *self, PyObject *args)
{
    PyObject *bd, *layers, *protos;
    if (!PyArg_ParseTuple(args, "OO!O!:encode_breakdown", &bd, &PyDict_Type, &layers,
                          &PyDict_Type, &protos))
        return NULL;
    Buf b;
    b.p = b.stack;
    b.len = 0;
    b.cap = STACK_BYTES;
    b.heap = 0;
    int r = put_breakdown(&b, bd, layers, protos);     /* args holds bd, layers, protos */
    PyObject *out = NULL;
    if (r == 0)
        out = PyBytes_FromStringAndSize(b.p, b.len);
    else if (r == NOT_MINE)
        out = Py_NewRef(Py_NotImplemented);
    if (b.heap)
        PyMem_Free(b.p);
    return out;
}

int ls_encode_init(PyObject *module)
{
    for (int k = 0; k < K_COUNT; k++) {
        keys[k] = PyUnicode_InternFromString(key_names[k]);
        if (keys[k] == NULL)
            return -1;
    }
    return 0;
}
