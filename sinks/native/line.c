/* A raw sample's InfluxDB line (sinks/influx.py sample_line): the per-sample numbers in C.
 *
 * Python keeps what is cold and cached: the measurement + tags head (ending in "seq=") and
 * a path's field names, each already escaped and laid out as ",name=" (the segments', then
 * the layers'), with each segment's layer ordinal. Here: each segment's duration_ns, each
 * layer's sum, seq, end_to_end and the timestamp, written into one str.
 *
 * Only exact ints that fit in 64 bits (sums included), exact dicts and an exact list or
 * tuple of them are taken; anything else (a bool, float or str duration, an int subclass,
 * a mapping that is not a dict, a missing key, a sum past 64 bits) returns NotImplemented
 * and the caller formats the sample in Python, the reference, which also raises its errors.
 */
#include "native.h"

#define NOT_MINE 1          /* a helper's "return NotImplemented"; -1 is an exception set */
#define MAX_LAYERS 256      /* layer ordinals come as bytes */
#define STACK_SEGS 64       /* a 3-host path has 15 segments */
#define DIGITS 20           /* "-9223372036854775808" */

static PyObject *k_duration;

/* An exact int in 64 bits. */
static int as_i64(PyObject *o, long long *v)
{
    if (!PyLong_CheckExact(o))
        return NOT_MINE;
    int overflow;
    *v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow)
        return NOT_MINE;
    return *v == -1 && PyErr_Occurred() ? -1 : 0;
}

/* v in decimal, right-aligned ending at end; returns the first digit's position. */
static char *decimal(long long v, char *end)
{
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--end = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--end = '-';
    return end;
}

/* The output str, written at pos: the result's kind is at least every piece's. */
typedef struct {
    int kind;
    void *data;
    Py_ssize_t pos;
} Out;

static void put_str(Out *o, PyObject *s)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    int kind = PyUnicode_KIND(s);
    const void *src = PyUnicode_DATA(s);
    if (kind == o->kind) {
        memcpy((char *)o->data + o->pos * kind, src, n * kind);
    } else {
        for (Py_ssize_t i = 0; i < n; i++)
            PyUnicode_WRITE(o->kind, o->data, o->pos + i, PyUnicode_READ(kind, src, i));
    }
    o->pos += n;
}

static void put_ascii(Out *o, const char *s, Py_ssize_t n)
{
    if (o->kind == PyUnicode_1BYTE_KIND) {
        memcpy((char *)o->data + o->pos, s, n);
    } else {
        for (Py_ssize_t i = 0; i < n; i++)
            PyUnicode_WRITE(o->kind, o->data, o->pos + i, (Py_UCS1)s[i]);
    }
    o->pos += n;
}

static void put_int(Out *o, long long v)
{
    char buf[DIGITS], *end = buf + DIGITS;
    char *p = decimal(v, end);
    put_ascii(o, p, end - p);
}

static Py_ssize_t int_len(long long v)
{
    char buf[DIGITS], *end = buf + DIGITS;
    return end - decimal(v, end);
}

/* Each segment's duration into ds[0..k): 0, NOT_MINE or -1. */
static int durations(PyObject *segs, Py_ssize_t k, long long *ds)
{
    if (!PyList_CheckExact(segs) && !PyTuple_CheckExact(segs))
        return NOT_MINE;
    for (Py_ssize_t i = 0; i < k; i++) {
        /* Re-read the size every time: a lookup can run Python code (a key's __eq__). */
        if (PySequence_Fast_GET_SIZE(segs) != k)
            return NOT_MINE;
        PyObject *seg = PySequence_Fast_GET_ITEM(segs, i);
        if (!PyDict_CheckExact(seg))
            return NOT_MINE;
        Py_INCREF(seg);
        PyObject *d = PyDict_GetItemWithError(seg, k_duration);
        int r = d == NULL ? (PyErr_Occurred() ? -1 : NOT_MINE) : as_i64(d, &ds[i]);
        Py_DECREF(seg);
        if (r)
            return r;
    }
    return 0;
}

/* The line, given scratch space ds[k] and sums[n_layers]: a new str, NotImplemented or
 * NULL with an exception set. */
static PyObject *write_line(PyObject *head, long long seq, const long long *e2e,
                            PyObject *segs, PyObject *names, PyObject *layer_of,
                            long long wall, long long *ds, long long *sums)
{
    Py_ssize_t k = PyBytes_GET_SIZE(layer_of);
    Py_ssize_t n_fields = PyTuple_GET_SIZE(names), n_layers = n_fields - k;
    const unsigned char *lay = (const unsigned char *)PyBytes_AS_STRING(layer_of);
    int r = k > 0 ? durations(segs, k, ds) : 0;
    if (r)
        return r < 0 ? NULL : Py_NewRef(Py_NotImplemented);
    memset(sums, 0, n_layers * sizeof(*sums));
    for (Py_ssize_t i = 0; i < k; i++) {
        if (lay[i] >= n_layers || __builtin_add_overflow(sums[lay[i]], ds[i], &sums[lay[i]]))
            Py_RETURN_NOTIMPLEMENTED;
    }

    /* "<head><seq>i[,end_to_end=<e2e>i]{<name><duration>i}{<name><sum>i} <wall>" */
    static const char E2E[] = ",end_to_end=";
    Py_ssize_t len = PyUnicode_GET_LENGTH(head) + int_len(seq) + 1 + 1 + int_len(wall);
    Py_UCS4 maxchar = PyUnicode_MAX_CHAR_VALUE(head);
    if (e2e != NULL)
        len += sizeof(E2E) - 1 + int_len(*e2e) + 1;
    for (Py_ssize_t i = 0; i < n_fields; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        if (!PyUnicode_CheckExact(name))
            Py_RETURN_NOTIMPLEMENTED;
        Py_UCS4 mc = PyUnicode_MAX_CHAR_VALUE(name);
        if (mc > maxchar)
            maxchar = mc;
        len += PyUnicode_GET_LENGTH(name) + int_len(i < k ? ds[i] : sums[i - k]) + 1;
    }

    PyObject *line = PyUnicode_New(len, maxchar);
    if (line == NULL)
        return NULL;
    Out o = {PyUnicode_KIND(line), PyUnicode_DATA(line), 0};
    put_str(&o, head);
    put_int(&o, seq);
    put_ascii(&o, "i", 1);
    if (e2e != NULL) {
        put_ascii(&o, E2E, sizeof(E2E) - 1);
        put_int(&o, *e2e);
        put_ascii(&o, "i", 1);
    }
    for (Py_ssize_t i = 0; i < n_fields; i++) {
        put_str(&o, PyTuple_GET_ITEM(names, i));
        put_int(&o, i < k ? ds[i] : sums[i - k]);
        put_ascii(&o, "i", 1);
    }
    put_ascii(&o, " ", 1);
    put_int(&o, wall);
    assert(o.pos == len);
    return line;
}

/* sample_line(head, seq, end_to_end, segments, names, layer_of, wall_ns)
 *   -> str | NotImplemented
 * names: k segment then n_layers layer field prefixes (",name="), or None: not for C;
 * layer_of: bytes, segment i's layer ordinal; k = len(layer_of), segments is not looked at
 * when k is 0 (no segments). */
PyObject *ls_sample_line(PyObject *self, PyObject *args)
{
    PyObject *head, *seq_o, *e2e_o, *segs, *names, *layer_of, *wall_o;
    if (!PyArg_ParseTuple(args, "OOOOOOO:sample_line", &head, &seq_o, &e2e_o, &segs,
                          &names, &layer_of, &wall_o))
        return NULL;
    if (!PyUnicode_CheckExact(head) || !PyTuple_CheckExact(names) ||
        !PyBytes_CheckExact(layer_of))
        Py_RETURN_NOTIMPLEMENTED;
    Py_ssize_t k = PyBytes_GET_SIZE(layer_of);
    Py_ssize_t n_layers = PyTuple_GET_SIZE(names) - k;
    long long seq, e2e = 0, wall;
    int has_e2e = e2e_o != Py_None;
    int r = 0;
    if (n_layers < 0 || n_layers > MAX_LAYERS || (k > 0 && n_layers == 0))
        r = NOT_MINE;
    if (r || (r = as_i64(seq_o, &seq)) || (has_e2e && (r = as_i64(e2e_o, &e2e))) ||
        (r = as_i64(wall_o, &wall)))
        return r < 0 ? NULL : Py_NewRef(Py_NotImplemented);

    long long stack_ds[STACK_SEGS], *ds = stack_ds, sums[MAX_LAYERS];
    if (k > STACK_SEGS && (ds = PyMem_Malloc(k * sizeof(*ds))) == NULL)
        return PyErr_NoMemory();
    PyObject *line = write_line(head, seq, has_e2e ? &e2e : NULL, segs, names, layer_of,
                                wall, ds, sums);
    if (ds != stack_ds)
        PyMem_Free(ds);
    return line;
}

int ls_line_init(PyObject *module)
{
    k_duration = PyUnicode_InternFromString("duration_ns");
    return k_duration == NULL ? -1 : 0;
}
