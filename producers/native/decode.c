/* Ring-buffer events -> hits of sampled bytes, as Agent.process does it: each event's flow
 * (flow_of, cached per raw key), its device name (cached per raw name; the XDP point's from
 * the agent's name table), its range expanded into sampled bytes (sampling.sampled_bytes),
 * and each byte's hit handed to the grouping (or, at the retransmit tracepoint, the byte
 * marked resent).
 *
 * Flows are canonical per flow tuple (the grouping compares flows by value): a raw key
 * whose tuple is known maps to the same Flow. A Flow lives while a map entry or a raw cache
 * slot names it; the raw cache is emptied past flow_cache keys (agent.FLOW_CACHE) and
 * the flows nothing names any more are dropped then. */
#include "native.h"
#include "../../bpf/native/ring.h"

static inline uint64_t rd64(const char *s) { uint64_t v; memcpy(&v, s, 8); return v; }
static inline uint32_t rd32(const char *s) { uint32_t v; memcpy(&v, s, 4); return v; }
static inline uint16_t rd16(const char *s) { uint16_t v; memcpy(&v, s, 2); return v; }

void flow_unref(Path *p, uint32_t id)
{
    p->flows[id]->refs--;
}

static void flow_drop(Path *p, uint32_t id)
{
    Flow *f = p->flows[id];
    Py_XDECREF(f->tuple);
    Py_XDECREF(f->fid);
    PyMem_Free(f->prefix);
    PyMem_Free(f);
    p->flows[id] = NULL;
    p->free_ids[p->nfree_ids++] = id;
}

void flows_free(Path *p)
{
    for (uint32_t i = 0; i < p->nflows; i++)
        if (p->flows[i] != NULL)
            flow_drop(p, i);
    PyMem_Free(p->flows);
    PyMem_Free(p->free_ids);
    p->flows = NULL;
    p->free_ids = NULL;
    p->nflows = p->flows_cap = p->nfree_ids = 0;
}

static void raw_drop(Path *p, void *val)
{
    flow_unref(p, (uint32_t)((uintptr_t)val - 1));
}

/* Empty the raw cache; drop the flows no map entry names. */
static int flows_sweep(Path *p)
{
    p->memo_flow_ok = 0;
    bm_clear(&p->raw, raw_drop, p);
    for (uint32_t i = 0; i < p->nflows; i++) {
        Flow *f = p->flows[i];
        if (f == NULL || f->refs > 0)
            continue;
        if (PyDict_DelItem(p->by_tuple, f->tuple) < 0)
            return -1;
        flow_drop(p, i);
    }
    return 0;
}

/* A new Flow for a flow tuple: its id and prefix from Python (describe), once per flow. */
static int flow_new(Path *p, PyObject *tuple, uint32_t *id)
{
    if (!PyTuple_Check(tuple) || PyTuple_GET_SIZE(tuple) < 1) {
        PyErr_SetString(PyExc_TypeError, "flow_of must return a flow tuple");
        return -1;
    }
    PyObject *d = PyObject_CallOneArg(p->describe, tuple);
    if (d == NULL)
        return -1;
    PyObject *fid, *prefix;
    if (!PyArg_ParseTuple(d, "UO!", &fid, &PyBytes_Type, &prefix)) {
        Py_DECREF(d);
        return -1;
    }
    PyObject *last = PyDict_GetItemWithError(p->last, PyTuple_GET_ITEM(tuple, 0));
    if (last == NULL && PyErr_Occurred()) {
        Py_DECREF(d);
        return -1;
    }
    Flow *f = PyMem_Calloc(1, sizeof(Flow));
    if (f == NULL || (f->prefix = PyMem_Malloc(PyBytes_GET_SIZE(prefix) + 1)) == NULL) {
        PyMem_Free(f);
        Py_DECREF(d);
        PyErr_NoMemory();
        return -1;
    }
    f->prefix_len = PyBytes_GET_SIZE(prefix);
    memcpy(f->prefix, PyBytes_AS_STRING(prefix), f->prefix_len);
    f->fid = Py_NewRef(fid);
    f->tuple = Py_NewRef(tuple);
    Py_DECREF(d);
    f->last = last != NULL ? (int)PyLong_AsLong(last) : -1;
    f->tcp = PyUnicode_Check(PyTuple_GET_ITEM(tuple, 0)) &&
             PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(tuple, 0), "tcp") == 0;
    if (p->nfree_ids) {
        *id = p->free_ids[--p->nfree_ids];
    } else {
        if (p->nflows == p->flows_cap) {
            uint32_t cap = p->flows_cap ? p->flows_cap * 2 : 64;
            Flow **flows = PyMem_Realloc(p->flows, sizeof(Flow *) * cap);
            uint32_t *ids = flows ? PyMem_Realloc(p->free_ids, sizeof(uint32_t) * cap) : NULL;
            if (flows != NULL)
                p->flows = flows;
            if (ids != NULL)
                p->free_ids = ids;
            if (flows == NULL || ids == NULL) {
                Py_DECREF(f->fid);
                Py_DECREF(f->tuple);
                PyMem_Free(f->prefix);
                PyMem_Free(f);
                PyErr_NoMemory();
                return -1;
            }
            p->flows_cap = cap;
        }
        *id = p->nflows++;
    }
    p->flows[*id] = f;
    PyObject *idx = PyLong_FromUnsignedLong(*id);
    if (idx == NULL || PyDict_SetItem(p->by_tuple, tuple, idx) < 0) {
        Py_XDECREF(idx);
        flow_drop(p, *id);
        return -1;
    }
    Py_DECREF(idx);
    return 0;
}

/* The flow of an event's raw addresses and ports. */
static int flow_of_event(Path *p, const char *ev, uint32_t *id)
{
    unsigned char k[RAW_FLOW_KEY];
    memcpy(k, ev + p->off[F_SADDR], 16);
    memcpy(k + 16, ev + p->off[F_DADDR], 16);
    memcpy(k + 32, ev + p->off[F_SPORT], 2);
    memcpy(k + 34, ev + p->off[F_DPORT], 2);
    k[36] = (unsigned char)ev[p->off[F_FAMILY]];
    k[37] = (unsigned char)ev[p->off[F_PROTO]];
    if (p->memo_flow_ok && memcmp(k, p->memo_flow_key, RAW_FLOW_KEY) == 0) {
        *id = p->memo_flow;
        return 0;
    }
    void *v = bm_get(&p->raw, k);
    if (v != NULL) {
        *id = p->memo_flow = (uint32_t)((uintptr_t)v - 1);
        memcpy(p->memo_flow_key, k, RAW_FLOW_KEY);
        p->memo_flow_ok = 1;
        return 0;
    }
    if ((Py_ssize_t)p->raw.len > p->flow_cache && flows_sweep(p) < 0)
        return -1;
    PyObject *tuple = PyObject_CallFunction(
        p->flow_of, "y#y#iiii", ev + p->off[F_SADDR], (Py_ssize_t)16, ev + p->off[F_DADDR],
        (Py_ssize_t)16, (int)rd16(ev + p->off[F_SPORT]), (int)rd16(ev + p->off[F_DPORT]),
        (int)(unsigned char)ev[p->off[F_FAMILY]], (int)(unsigned char)ev[p->off[F_PROTO]]);
    if (tuple == NULL)
        return -1;
    PyObject *known = PyDict_GetItemWithError(p->by_tuple, tuple);
    int r = 0;
    if (known != NULL)
        *id = (uint32_t)PyLong_AsUnsignedLong(known);
    else if (PyErr_Occurred())
        r = -1;
    else
        r = flow_new(p, tuple, id);
    Py_DECREF(tuple);
    if (r < 0)
        return -1;
    if (bm_put(&p->raw, k, (void *)((uintptr_t)*id + 1)) < 0)
        return -1;
    p->flows[*id]->refs++;
    p->memo_flow = *id;
    memcpy(p->memo_flow_key, k, RAW_FLOW_KEY);
    p->memo_flow_ok = 1;
    return 0;
}

void dev_drop(Path *p, void *val)
{
    (void)p;
    Dev *d = val;
    PyMem_Free(d->enc);
    PyMem_Free(d);
}

/* A device's encoding from Python's dev_enc(name or None). */
static Dev *dev_new(Path *p, PyObject *name)
{
    PyObject *enc = PyObject_CallOneArg(p->dev_enc, name);
    if (enc == NULL)
        return NULL;
    if (!PyBytes_Check(enc)) {
        Py_DECREF(enc);
        PyErr_SetString(PyExc_TypeError, "dev_enc must return bytes");
        return NULL;
    }
    Dev *d = PyMem_Calloc(1, sizeof(Dev));
    if (d == NULL || (d->enc = PyMem_Malloc(PyBytes_GET_SIZE(enc) + 1)) == NULL) {
        PyMem_Free(d);
        Py_DECREF(enc);
        PyErr_NoMemory();
        return NULL;
    }
    d->len = PyBytes_GET_SIZE(enc);
    memcpy(d->enc, PyBytes_AS_STRING(enc), d->len);
    d->none = name == Py_None;
    Py_DECREF(enc);
    return d;
}

/* The event's device: its name up to the first NUL, decoded as UTF-8 (strictly, as the
 * Python path does), an empty name none. */
static const Dev *dev_of_event(Path *p, const char *ev)
{
    const char *raw = ev + p->off[F_DEV];
    if (raw[0] == 0)
        return &p->dev_none;
    if (p->memo_dev != NULL && memcmp(raw, p->memo_dev_key, 16) == 0)
        return p->memo_dev;
    unsigned char k[16] = {0};
    size_t n = strnlen(raw, 16);
    memcpy(k, raw, n);
    Dev *d = bm_get(&p->devs, k);
    if (d != NULL) {
        memcpy(p->memo_dev_key, raw, 16);
        return p->memo_dev = d;
    }
    PyObject *name = PyUnicode_DecodeUTF8(raw, (Py_ssize_t)n, NULL);
    if (name == NULL)
        return NULL;
    d = dev_new(p, name);
    Py_DECREF(name);
    if (d == NULL)
        return NULL;
    if (bm_put(&p->devs, k, d) < 0) {
        dev_drop(p, d);
        return NULL;
    }
    return d;
}

/* Path.set_xdp_names({(netns, ifindex): name}): names for the XDP point's hits. */
PyObject *path_set_xdp_names(Path *p, PyObject *names)
{
    if (!PyDict_Check(names)) {
        PyErr_SetString(PyExc_TypeError, "set_xdp_names: a dict");
        return NULL;
    }
    bm_clear(&p->xdp, dev_drop, p);
    Py_ssize_t pos = 0;
    PyObject *key, *name;
    while (PyDict_Next(names, &pos, &key, &name)) {
        unsigned long long netns;
        unsigned int ifindex;
        if (!PyArg_ParseTuple(key, "KI", &netns, &ifindex))
            return NULL;
        unsigned char k[12];
        uint64_t ns = netns;
        uint32_t ifi = ifindex;
        memcpy(k, &ns, 8);
        memcpy(k + 8, &ifi, 4);
        if (bm_get(&p->xdp, k) != NULL)
            continue;
        Dev *d = dev_new(p, name);
        if (d == NULL)
            return NULL;
        if (bm_put(&p->xdp, k, d) < 0) {
            dev_drop(p, d);
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

/* One event: its sampled bytes' hits grouped (retransmission marks applied); 0, or -1 with
 * a Python error set. */
static int path_event(Path *p, const char *ev, PyObject *out, long long now,
                      long long *sampled)
{
    const uint64_t space = 1ull << 32, size = p->size;
    if (p->only.len && (unsigned char)ev[p->off[F_POINT]] != p->retrans_point) {
        uint64_t ns = rd64(ev + p->off[F_NETNS]);
        if (bm_get(&p->only, &ns) == NULL)
            return 0;           /* another host name's namespace: its own path groups it */
    }
    uint32_t flow;
    if (flow_of_event(p, ev, &flow) < 0)
        return -1;
    uint64_t seq = rd32(ev + p->off[F_SEQ]), len = rd32(ev + p->off[F_LEN]);
    unsigned flags = (unsigned char)ev[p->off[F_FLAGS]];
    int point = (unsigned char)ev[p->off[F_POINT]];
    /* the sampled bytes of [seq, seq+len) mod 2^32: the first run up to 2^32, then
     * from 0 when the range wraps (sampled_bytes) */
    uint64_t first, end, wrap_end = 0;
    if (flags & p->flag_udp) {
        first = seq;
        end = seq + 1;
    } else {
        uint64_t off = seq % size;
        first = off ? seq + size - off : seq;
        end = seq + len;
        if (end > space) {
            wrap_end = end - space;
            end = space;
        }
    }
    Hit hit;
    uint32_t wait[NWAIT];
    int resent = 0;
    if (point != p->retrans_point) {
        if (point >= p->npoints || p->point_enc[point] == NULL) {
            PyObject *k = PyLong_FromLong(point);
            if (k != NULL) {
                PyErr_SetObject(PyExc_KeyError, k);
                Py_DECREF(k);
            }
            return -1;
        }
        const Dev *dev = dev_of_event(p, ev);
        if (dev == NULL)
            return -1;
        hit.ts = rd64(ev + p->off[F_TS]);
        hit.netns = rd64(ev + p->off[F_NETNS]);
        hit.ifindex = rd32(ev + p->off[F_IFINDEX]);
        hit.cpu = rd32(ev + p->off[F_CPU]);
        hit.point = point;
        hit.wait = NULL;
        hit.wslot = 0;
        if (flags & p->flag_wait) {
            for (int w = 0; w < NWAIT; w++)
                wait[w] = rd32(ev + p->off[F_WAIT] + 4 * w);
            hit.wait = wait;
            hit.wslot = point == p->recv ? 2 : 1;
        }
        if (dev->none && point == p->xdp_point && p->xdp.len) {
            unsigned char k[12];
            memcpy(k, &hit.netns, 8);
            memcpy(k + 8, &hit.ifindex, 4);
            const Dev *named = bm_get(&p->xdp, k);
            if (named != NULL)
                dev = named;
        }
        hit.dev = dev;
        resent = (flags & p->flag_resent) != 0;
    }
    for (int run = 0; run < 2; run++) {
        for (uint64_t b = first; b < end; b += size) {
            int r;
            if (point == p->retrans_point) {
                r = grp_mark_retrans(p, flow, (uint32_t)b, out);
            } else {
                (*sampled)++;
                r = grp_add(p, flow, (uint32_t)b, &hit, out, now, resent);
            }
            if (r < 0)
                return -1;
        }
        if (!wrap_end)
            break;
        first = 0;
        end = wrap_end;
    }
    return 0;
}

/* Path.process(recs, out, now) -> the number of (point, sampled byte) hits. */
PyObject *path_process(Path *p, PyObject *args)
{
    PyObject *recs, *out;
    long long now;
    if (!PyArg_ParseTuple(args, "O!O!L", &PyList_Type, &recs, &PyList_Type, &out, &now))
        return NULL;
    long long sampled = 0;
    /* recs and each event are held: grouping can run Python code (a flow's description) */
    Py_INCREF(recs);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(recs); i++) {
        PyObject *raw = PyList_GET_ITEM(recs, i);
        if (!PyBytes_Check(raw) || PyBytes_GET_SIZE(raw) != p->ev_size) {
            PyErr_Format(PyExc_ValueError, "event %zd: not %zd bytes", i, p->ev_size);
            goto fail;
        }
        Py_INCREF(raw);
        int r = path_event(p, PyBytes_AS_STRING(raw), out, now, &sampled);
        Py_DECREF(raw);
        if (r < 0)
            goto fail;
    }
    Py_DECREF(recs);
    return PyLong_FromLongLong(sampled);
fail:
    Py_DECREF(recs);
    return NULL;
}

/* Path.process_ring((consumer, producer, data, mask), out, now, limit[, commit]) ->
 * (events, sampled hits): the committed events up to position limit, in place. */
PyObject *path_process_ring(Path *p, PyObject *args)
{
    unsigned long long cons_addr, prod_addr, data_addr, mask, limit;
    PyObject *out;
    long long now;
    int commit = 1;
    if (!PyArg_ParseTuple(args, "(KKKK)O!LK|p", &cons_addr, &prod_addr, &data_addr, &mask,
                          &PyList_Type, &out, &now, &limit, &commit))
        return NULL;
    uint64_t *cons_pos = (uint64_t *)(uintptr_t)cons_addr;
    LsRingWalk w;
    ls_ring_begin(&w, cons_pos, (const uint64_t *)(uintptr_t)prod_addr,
                  (const char *)(uintptr_t)data_addr, mask, limit);
    long long sampled = 0, events = 0;
    const char *ev;
    uint32_t n;
    int r = 0;
    while ((ev = ls_ring_next(&w, &n)) != NULL) {
        events++;
        if (n != (uint32_t)p->ev_size) {
            PyErr_Format(PyExc_ValueError, "ring-buffer record of %u bytes, not an event (%zd)",
                         n, p->ev_size);
            r = -1;
        } else {
            r = path_event(p, ev, out, now, &sampled);
        }
        if (r < 0)
            break;              /* the records up to the bad one are given back: no retry loop */
    }
    if (commit)
        ls_ring_commit(cons_pos, w.pos);
    if (r < 0)
        return NULL;
    return Py_BuildValue("LL", events, sampled);
}
