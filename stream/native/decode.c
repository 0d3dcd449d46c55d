/* LayerEvent / LayerEventBatch bodies -> the codec's dicts (see stream/layer_avro.py).
 *
 * Why C: the stream worker reads three LayerEvents (~16 point hits) per joined sample;
 * Python spent ~0.65 µs per hit reading varints and building its dict. Here what repeats
 * (a host and flow's head; a hit's point, ifindex, device, netns and cpu) is skipped over
 * to find its extent, then looked up by its bytes in a small cache of ready objects; only
 * the numbers that change (seq, ts_ns) are decoded per record. Avro fields delimit
 * themselves, so equal bytes are an equal parse.
 *
 * Anything but the plain, valid form returns NotImplemented and the codec decides (decodes
 * it or raises its error): a varint over 9 bytes, a negative (sized) array block, an enum
 * or union index out of range, a boolean byte other than 0/1, bad UTF-8, a truncated or
 * overlong body.
 */
#include "native.h"

#include <string.h>

/* -- reading ------------------------------------------------------------------------- */

typedef struct {
    const unsigned char *p, *end;
    int bad; /* set once anything is not the plain form: the result is NotImplemented */
} reader;

/* A zigzag varint of at most 9 bytes (63 bits); longer ones are the codec's. */
static inline int64_t rd_long(reader *r)
{
    uint64_t v = 0;
    int shift = 0;
    while (r->p < r->end) {
        unsigned char b = *r->p++;
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80))
            return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
        shift += 7;
        if (shift > 56)
            break;
    }
    r->bad = 1;
    r->p = r->end;
    return 0;
}

/* Skip a string: its bytes are [*s, *s + *n). */
static inline void rd_string(reader *r, const unsigned char **s, Py_ssize_t *n)
{
    int64_t len = rd_long(r);
    if (r->bad || len < 0 || len > r->end - r->p) {
        r->bad = 1;
        r->p = r->end;
        *s = r->p;
        *n = 0;
        return;
    }
    *s = r->p;
    *n = (Py_ssize_t)len;
    r->p += len;
}

static inline PyObject *string_at(const unsigned char *s, Py_ssize_t n)
{
    return PyUnicode_DecodeUTF8((const char *)s, n, "strict");
}

/* -- caches: bytes -> ready object ----------------------------------------------------- */

#define SLOTS 4096 /* per cache; a colliding entry replaces the old one */
#define KEY_MAX 240

typedef struct {
    uint32_t len;
    unsigned char key[KEY_MAX];
    PyObject *value;
} slot;

static slot heads[SLOTS], tails[SLOTS];

static inline uint32_t hash_bytes(unsigned char first, const unsigned char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL ^ first;
    h *= 1099511628211ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ULL;
    }
    return (uint32_t)(h ^ (h >> 29)) & (SLOTS - 1);
}

/* The slot for (first, s[0:n]): hit when its value is set and its key matches. */
static inline slot *slot_for(slot *table, unsigned char first, const unsigned char *s,
                             size_t n, int *hit)
{
    slot *e = &table[hash_bytes(first, s, n)];
    *hit = e->value != NULL && e->len == n + 1 && e->key[0] == first &&
           memcmp(e->key + 1, s, n) == 0;
    return e;
}

static inline void slot_store(slot *e, unsigned char first, const unsigned char *s, size_t n,
                              PyObject *value)
{
    Py_XDECREF(e->value);
    e->len = (uint32_t)n + 1;
    e->key[0] = first;
    memcpy(e->key + 1, s, n);
    e->value = value; /* the slot's reference */
}

/* The LayerEvent version this reader takes (its schema_version; stream/layer_avro.py
 * checks the schema says so), and SocketWait's fields. */
#define LAYER_EVENT_VERSION 2
#define NWAIT 8

/* -- names (interned once) -------------------------------------------------------------- */

static PyObject *k_schema_version, *k_host, *k_flow_id, *k_flow, *k_seq, *k_retrans,
    *k_complete, *k_hits, *k_proto, *k_family, *k_src, *k_dst, *k_sport, *k_dport, *k_point,
    *k_ts_ns, *k_ifindex, *k_dev, *k_netns, *k_cpu, *k_wait, *k_causes[NWAIT];

/* SocketWait's fields (schemas/layer_event.avsc), in order; the fingerprint pins them. */
static const char *const cause_names[NWAIT] = {
    "nagle_us", "cwnd_us", "rwnd_us", "sndbuf_us", "pacing_us", "other_us", "unread_us",
    "ooo_us"};

int ls_decode_init(PyObject *module)
{
#define NAME(var, s)                                    \
    if ((var = PyUnicode_InternFromString(s)) == NULL) \
        return -1;
    NAME(k_schema_version, "schema_version")
    NAME(k_host, "host")
    NAME(k_flow_id, "flow_id")
    NAME(k_flow, "flow")
    NAME(k_seq, "seq")
    NAME(k_retrans, "retrans")
    NAME(k_complete, "complete")
    NAME(k_hits, "hits")
    NAME(k_proto, "proto")
    NAME(k_family, "family")
    NAME(k_src, "src")
    NAME(k_dst, "dst")
    NAME(k_sport, "sport")
    NAME(k_dport, "dport")
    NAME(k_point, "point")
    NAME(k_ts_ns, "ts_ns")
    NAME(k_ifindex, "ifindex")
    NAME(k_dev, "dev")
    NAME(k_netns, "netns")
    NAME(k_cpu, "cpu")
    NAME(k_wait, "wait")
    for (int i = 0; i < NWAIT; i++)
        NAME(k_causes[i], cause_names[i])
#undef NAME
    return 0;
}

/* -- records ---------------------------------------------------------------------------- */

/* A dict of keys[i] -> values[i] (references stolen, even on failure), in this order. */
static PyObject *dict_of(PyObject **keys, PyObject **values, int n)
{
    PyObject *d = PyDict_New();
    int ok = d != NULL;
    for (int i = 0; i < n; i++) {
        if (ok && (values[i] == NULL || PyDict_SetItem(d, keys[i], values[i]) < 0))
            ok = 0;
        Py_XDECREF(values[i]);
    }
    if (!ok)
        Py_CLEAR(d);
    return d;
}

/* Bad UTF-8 is the codec's to report: NotImplemented; other errors stay errors. */
static PyObject *unicode_error(void)
{
    if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
        return NULL;
    PyErr_Clear();
    return Py_NewRef(Py_NotImplemented);
}

/* The event template of a head (schema_version .. flow): a dict with this head's values
 * and placeholders for the rest, in the codec's key order. */
static PyObject *parse_head(PyObject *protos, const unsigned char *start,
                            const unsigned char *end)
{
    reader r = {start, end, 0};
    const unsigned char *host, *fid, *src, *dst;
    Py_ssize_t nhost, nfid, nsrc, ndst;
    int64_t version = rd_long(&r);
    rd_string(&r, &host, &nhost);
    rd_string(&r, &fid, &nfid);
    int64_t proto = rd_long(&r);
    int64_t family = rd_long(&r);
    rd_string(&r, &src, &nsrc);
    rd_string(&r, &dst, &ndst);
    int64_t sport = rd_long(&r);
    int64_t dport = rd_long(&r);
    if (r.bad || proto < 0 || proto >= PyTuple_GET_SIZE(protos))
        return Py_NewRef(Py_NotImplemented);
    PyObject *s_host = string_at(host, nhost), *s_fid = NULL, *s_src = NULL, *s_dst = NULL;
    if (s_host == NULL || (s_fid = string_at(fid, nfid)) == NULL ||
        (s_src = string_at(src, nsrc)) == NULL || (s_dst = string_at(dst, ndst)) == NULL) {
        Py_XDECREF(s_host);
        Py_XDECREF(s_fid);
        Py_XDECREF(s_src);
        return unicode_error();
    }
    PyObject *fk[] = {k_proto, k_family, k_src, k_dst, k_sport, k_dport};
    PyObject *fv[] = {Py_NewRef(PyTuple_GET_ITEM(protos, proto)),
                      PyLong_FromLongLong(family), s_src, s_dst,
                      PyLong_FromLongLong(sport), PyLong_FromLongLong(dport)};
    PyObject *flow = dict_of(fk, fv, 6);
    PyObject *ek[] = {k_schema_version, k_host, k_flow_id, k_flow, k_seq, k_retrans,
                      k_complete, k_hits};
    PyObject *ev[] = {PyLong_FromLongLong(version), s_host, s_fid, flow,
                      Py_NewRef(Py_None), Py_NewRef(Py_None), Py_NewRef(Py_None),
                      Py_NewRef(Py_None)};
    return dict_of(ek, ev, 8);
}

/* The hit template of a point and tail (ifindex .. cpu): ts_ns to be set. */
static PyObject *parse_hit(PyObject *point, const unsigned char *start,
                           const unsigned char *end)
{
    reader r = {start, end, 0};
    int64_t ifindex = rd_long(&r);
    int64_t u = rd_long(&r);
    const unsigned char *dev = NULL;
    Py_ssize_t ndev = 0;
    if (u == 1)
        rd_string(&r, &dev, &ndev);
    else if (u != 0)
        r.bad = 1;
    int64_t netns = rd_long(&r);
    int64_t cpu = rd_long(&r);
    int64_t w = rd_long(&r), causes[NWAIT];
    if (w == 1) {
        for (int i = 0; i < NWAIT; i++)
            causes[i] = rd_long(&r);
    } else if (w != 0) {
        r.bad = 1;
    }
    if (r.bad)
        return Py_NewRef(Py_NotImplemented);
    PyObject *s_dev = Py_None;
    if (dev != NULL && (s_dev = string_at(dev, ndev)) == NULL)
        return unicode_error();
    PyObject *wait = Py_NewRef(Py_None);
    if (w == 1) {
        PyObject *cv[NWAIT];
        for (int i = 0; i < NWAIT; i++)
            cv[i] = PyLong_FromLongLong(causes[i]);
        Py_DECREF(wait);
        wait = dict_of(k_causes, cv, NWAIT);
        if (wait == NULL) {
            Py_XDECREF(s_dev == Py_None ? NULL : s_dev);
            return NULL;
        }
    }
    PyObject *hk[] = {k_point, k_ts_ns, k_ifindex, k_dev, k_netns, k_cpu, k_wait};
    PyObject *hv[] = {Py_NewRef(point), PyLong_FromLong(0), PyLong_FromLongLong(ifindex),
                      s_dev == Py_None ? Py_NewRef(Py_None) : s_dev,
                      PyLong_FromLongLong(netns), PyLong_FromLongLong(cpu), wait};
    return dict_of(hk, hv, 7);
}

/* Skip a head / a hit's tail: where it ends (r->bad on anything not plain). */
static inline void skip_head(reader *r)
{
    const unsigned char *s;
    Py_ssize_t n;
    rd_long(r);
    rd_string(r, &s, &n);
    rd_string(r, &s, &n);
    rd_long(r);
    rd_long(r);
    rd_string(r, &s, &n);
    rd_string(r, &s, &n);
    rd_long(r);
    rd_long(r);
}

static inline void skip_tail(reader *r)
{
    const unsigned char *s;
    Py_ssize_t n;
    rd_long(r);
    int64_t u = rd_long(r);
    if (u == 1)
        rd_string(r, &s, &n);
    else if (u != 0)
        r->bad = 1;
    rd_long(r);
    rd_long(r);
    u = rd_long(r);         /* wait: null, or SocketWait's longs */
    if (u == 1)
        for (int i = 0; i < NWAIT; i++)
            rd_long(r);
    else if (u != 0)
        r->bad = 1;
}

/* The template for bytes [start, end) (first: a tag byte): from the cache, else parsed
 * and, when shorter than KEY_MAX, cached; a new reference, NotImplemented (a new
 * reference too), or NULL with an exception. */
static PyObject *cached(slot *table, unsigned char first, const unsigned char *start,
                        const unsigned char *end,
                        PyObject *(*parse)(PyObject *, const unsigned char *,
                                           const unsigned char *),
                        PyObject *arg)
{
    size_t n = (size_t)(end - start);
    slot *e = NULL;
    if (n < KEY_MAX) {   /* longer ones are rare: parsed every time */
        int hit;
        e = slot_for(table, first, start, n, &hit);
        if (hit)
            return Py_NewRef(e->value);
    }
    PyObject *v = parse(arg, start, end);
    if (e != NULL && v != NULL && v != Py_NotImplemented)
        slot_store(e, first, start, n, Py_NewRef(v));
    return v;
}

/* One LayerEvent at r->p: a new dict, NotImplemented (r->bad), or NULL with an exception. */
static PyObject *event(reader *r, PyObject *points, PyObject *protos)
{
    const unsigned char *hs = r->p;
    reader peek = *r;
    if (rd_long(&peek) != LAYER_EVENT_VERSION)  /* another version's shape: the codec's */
        return Py_NewRef(Py_NotImplemented);
    skip_head(r);
    if (r->bad)
        return Py_NewRef(Py_NotImplemented);
    PyObject *tmpl = cached(heads, 0, hs, r->p, parse_head, protos);
    if (tmpl == NULL || tmpl == Py_NotImplemented)
        return tmpl;
    int64_t seq = rd_long(r);
    if (r->p + 2 > r->end)
        r->bad = 1;
    if (r->bad) {
        Py_DECREF(tmpl);
        return Py_NewRef(Py_NotImplemented);
    }
    unsigned char retrans = r->p[0], complete = r->p[1];
    r->p += 2;
    if (retrans > 1 || complete > 1) {
        Py_DECREF(tmpl);
        return Py_NewRef(Py_NotImplemented);
    }
    PyObject *ev = PyDict_Copy(tmpl);
    Py_DECREF(tmpl);
    PyObject *hits = PyList_New(0);
    if (ev == NULL || hits == NULL)
        goto fail;
    PyObject *flow = PyDict_GetItemWithError(ev, k_flow); /* borrowed: the template's */
    if (flow == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_SystemError, "decode_events: a head without its flow");
        goto fail;
    }
    PyObject *flow_copy = PyDict_Copy(flow);
    PyObject *seq_obj = PyLong_FromLongLong(seq);
    int err = flow_copy == NULL || seq_obj == NULL ||
              PyDict_SetItem(ev, k_flow, flow_copy) < 0 ||
              PyDict_SetItem(ev, k_seq, seq_obj) < 0 ||
              PyDict_SetItem(ev, k_retrans, retrans ? Py_True : Py_False) < 0 ||
              PyDict_SetItem(ev, k_complete, complete ? Py_True : Py_False) < 0 ||
              PyDict_SetItem(ev, k_hits, hits) < 0;
    Py_XDECREF(flow_copy);
    Py_XDECREF(seq_obj);
    if (err)
        goto fail;
    Py_ssize_t npoints = PyTuple_GET_SIZE(points);
    for (;;) {
        int64_t count = rd_long(r);
        if (r->bad || count < 0)
            goto not_mine;
        if (count == 0)
            break;
        for (int64_t i = 0; i < count; i++) {
            int64_t point = rd_long(r);
            int64_t ts = rd_long(r);
            const unsigned char *ts_end = r->p;
            skip_tail(r);
            if (r->bad || point < 0 || point >= npoints)
                goto not_mine;
            PyObject *ht = cached(tails, (unsigned char)point, ts_end, r->p, parse_hit,
                                  PyTuple_GET_ITEM(points, point));
            if (ht == NULL)
                goto fail;
            if (ht == Py_NotImplemented) {
                Py_DECREF(ht);
                goto not_mine;
            }
            PyObject *hit = PyDict_Copy(ht);
            Py_DECREF(ht);
            PyObject *ts_obj = PyLong_FromLongLong(ts);
            err = hit == NULL || ts_obj == NULL || PyDict_SetItem(hit, k_ts_ns, ts_obj) < 0 ||
                  PyList_Append(hits, hit) < 0;
            Py_XDECREF(hit);
            Py_XDECREF(ts_obj);
            if (err)
                goto fail;
        }
    }
    Py_DECREF(hits);
    return ev;
not_mine:
    r->bad = 1;
    Py_XDECREF(ev);
    Py_XDECREF(hits);
    return Py_NewRef(Py_NotImplemented);
fail:
    Py_XDECREF(ev);
    Py_XDECREF(hits);
    return NULL;
}

/* decode_events(data, pos, batch, points, protos): the records of a LayerEventBatch body
 * (batch true) or of one LayerEvent body starting at data[pos], which must end exactly at
 * the end of data. points / protos: the Point and Proto enum symbols (tuples of str). */
PyObject *ls_decode_events(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t pos;
    int batch;
    PyObject *points, *protos;
    if (!PyArg_ParseTuple(args, "y*npO!O!", &buf, &pos, &batch, &PyTuple_Type, &points,
                          &PyTuple_Type, &protos))
        return NULL;
    PyObject *out = NULL;
    if (pos < 0 || pos > buf.len) {
        PyErr_SetString(PyExc_ValueError, "decode_events: pos outside data");
        goto done;
    }
    if ((out = PyList_New(0)) == NULL)
        goto done;
    reader r = {(const unsigned char *)buf.buf + pos, (const unsigned char *)buf.buf + buf.len,
                0};
    int64_t count = batch ? 0 : 1;
    do {
        if (batch) {
            count = rd_long(&r);
            if (r.bad || count < 0)
                goto not_mine;
        }
        for (int64_t i = 0; i < count; i++) {
            PyObject *ev = event(&r, points, protos);
            if (ev == NULL) {
                Py_CLEAR(out);
                goto done;
            }
            if (ev == Py_NotImplemented) {
                Py_DECREF(ev);
                goto not_mine;
            }
            int err = PyList_Append(out, ev);
            Py_DECREF(ev);
            if (err < 0) {
                Py_CLEAR(out);
                goto done;
            }
        }
    } while (batch && count != 0);
    if (r.p == r.end)
        goto done;
not_mine:
    Py_CLEAR(out);
    out = Py_NewRef(Py_NotImplemented);
done:
    PyBuffer_Release(&buf);
    return out;
}
