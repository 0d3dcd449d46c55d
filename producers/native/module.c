/* latscope.producers._native: the Path type (one agent's data path) and the method table;
 * the work is in the files native.h lists. producers/native_path.py builds the Path's
 * configuration and wraps it in the Grouper's interface. */
#include "native.h"

PyObject *path_set_xdp_names(Path *p, PyObject *names);

/* cfg[name]; a KeyError naming it when missing. */
static PyObject *cfg_get(PyObject *cfg, const char *name)
{
    PyObject *o = PyDict_GetItemString(cfg, name);
    if (o == NULL)
        PyErr_Format(PyExc_KeyError, "Path config: %s missing", name);
    return o;
}

/* cfg[name] as an integer within [lo, hi]. */
static int cfg_int(PyObject *cfg, const char *name, long long lo, long long hi, long long *v)
{
    PyObject *o = cfg_get(cfg, name);
    if (o == NULL)
        return -1;
    *v = PyLong_AsLongLong(o);
    if (*v == -1 && PyErr_Occurred())
        return -1;
    if (*v < lo || *v > hi) {
        PyErr_Format(PyExc_ValueError, "Path config: %s = %lld out of [%lld, %lld]", name, *v,
                     lo, hi);
        return -1;
    }
    return 0;
}

static int cfg_obj(PyObject *cfg, const char *name, PyObject **out)
{
    PyObject *o = cfg_get(cfg, name);
    if (o == NULL)
        return -1;
    Py_XSETREF(*out, Py_NewRef(o));
    return 0;
}

/* A point set (what: its name in errors): a sequence of point numbers -> mask. */
static int seq_mask(PyObject *o, const char *what, int npoints, uint32_t *mask)
{
    PyObject *seq = PySequence_Fast(o, "a point set is a sequence of point numbers");
    if (seq == NULL)
        return -1;
    *mask = 0;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        if (v < 0 || v >= npoints) {
            Py_DECREF(seq);
            PyErr_Format(PyExc_ValueError, "Path config: %s: point %ld out of range", what, v);
            return -1;
        }
        *mask |= 1u << v;
    }
    Py_DECREF(seq);
    return 0;
}

static int cfg_mask(PyObject *cfg, const char *name, int npoints, uint32_t *mask)
{
    PyObject *o = cfg_get(cfg, name);
    return o == NULL ? -1 : seq_mask(o, name, npoints, mask);
}

static int path_init(Path *p, PyObject *args, PyObject *kwds)
{
    PyObject *cfg;
    static char *kwlist[] = {"config", NULL};
    if (p->open.b != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Path is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!", kwlist, &PyDict_Type, &cfg))
        return -1;
    long long v;
    const long long I64 = INT64_MAX;
#define INT(name, field, lo, hi) \
    if (cfg_int(cfg, name, lo, hi, &v) < 0) \
        return -1; \
    p->field = v;
    INT("size", size, 1, UINT32_MAX)
    INT("linger_ns", linger_ns, 0, I64)
    INT("hold_ns", hold_ns, 0, I64)
    INT("queued_ns", queued_ns, 0, I64)
    INT("owed_ns", owed_ns, 0, I64)
    INT("recent_ns", recent_ns, 0, I64)
    INT("rate_cap", rate_cap, 0, I64)
    INT("max_open", max_open, 1, PY_SSIZE_T_MAX)   /* >= 1: see grouping.c's evict */
    INT("max_recent", max_recent, 0, PY_SSIZE_T_MAX)
    INT("flow_cache", flow_cache, 0, PY_SSIZE_T_MAX)
    INT("filter_retrans", filter_retrans, 0, 1)
    INT("check_gaps", check_gaps, 0, 1)
    INT("udp_reads", udp_reads, 0, 1)
    INT("refill_ns", refill_ns, INT64_MIN, I64)
    INT("event_size", ev_size, 1, 1 << 16)
    INT("npoints", npoints, 1, MAX_POINTS - 1)
    INT("retrans_point", retrans_point, 0, 255)
    INT("xdp_point", xdp_point, 0, MAX_POINTS - 1)
    INT("flag_udp", flag_udp, 0, 255)
    INT("flag_resent", flag_resent, 0, 255)
    INT("flag_wait", flag_wait, 0, 255)
    INT("send", send, 0, MAX_POINTS - 1)
    INT("recv", recv, 0, MAX_POINTS - 1)
    INT("tcp_rx", tcp_rx, 0, MAX_POINTS - 1)
    INT("queue", queue, 0, MAX_POINTS - 1)
    INT("udp_unread_last", udp_unread_last, 0, MAX_POINTS - 1)
#undef INT
    p->tokens = (double)p->rate_cap;
    int np = p->npoints;
    if (cfg_mask(cfg, "exit", np, &p->m_exit) < 0 || cfg_mask(cfg, "socket", np, &p->m_socket) < 0 ||
        cfg_mask(cfg, "sent_here", np, &p->m_sent_here) < 0 ||
        cfg_mask(cfg, "delivered_here", np, &p->m_delivered) < 0 ||
        cfg_mask(cfg, "flush", np, &p->m_flush) < 0 || cfg_mask(cfg, "read", np, &p->m_read) < 0 ||
        cfg_mask(cfg, "takes_read", np, &p->m_takes_read) < 0 ||
        cfg_mask(cfg, "attached", np, &p->attached) < 0 ||
        cfg_mask(cfg, "tcp_layer", np, &p->m_tcp_layer) < 0)
        return -1;
    /* offsets: the event fields, F_* order; each checked against the event's size */
    PyObject *offs = PyDict_GetItemString(cfg, "offsets");
    static const Py_ssize_t width[F_COUNT] = {8, 8, 16, 16, 4, 4, 4, 4, 2, 2, 1, 1, 1, 1, 16,
                                                     4 * NWAIT};
    if (offs == NULL || !PyTuple_Check(offs) || PyTuple_GET_SIZE(offs) != F_COUNT) {
        PyErr_SetString(PyExc_ValueError, "Path config: offsets: one per event field");
        return -1;
    }
    for (int i = 0; i < F_COUNT; i++) {
        p->off[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(offs, i));
        if (p->off[i] == -1 && PyErr_Occurred())
            return -1;
        if (p->off[i] < 0 || p->off[i] + width[i] > p->ev_size) {
            PyErr_SetString(PyExc_ValueError, "Path config: an offset past the event");
            return -1;
        }
    }
    /* implies: {point: [points]}; local: [(point, [points])] */
    PyObject *implies = PyDict_GetItemString(cfg, "implies");
    PyObject *local = PyDict_GetItemString(cfg, "local");
    PyObject *points = PyDict_GetItemString(cfg, "point_enc");
    if (implies == NULL || !PyDict_Check(implies) || local == NULL || !PyList_Check(local) ||
        PyList_GET_SIZE(local) > MAX_LOCAL || points == NULL || !PyTuple_Check(points) ||
        PyTuple_GET_SIZE(points) != np) {
        PyErr_SetString(PyExc_ValueError, "Path config: implies, local or point_enc malformed");
        return -1;
    }
    Py_ssize_t pos = 0;
    PyObject *k, *val;
    while (PyDict_Next(implies, &pos, &k, &val)) {
        long pt = PyLong_AsLong(k);
        if (pt < 0 || pt >= np) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "Path config: implies: point out of range");
            return -1;
        }
        if (seq_mask(val, "implies", np, &p->implies[pt]) < 0)
            return -1;
        p->m_implies |= 1u << pt;
    }
    p->nlocal = (int)PyList_GET_SIZE(local);
    for (int i = 0; i < p->nlocal; i++) {
        PyObject *need;
        int pt;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(local, i), "iO", &pt, &need))
            return -1;
        if (seq_mask(need, "local", np, &p->local_need[i]) < 0)
            return -1;
        if (pt < 0 || pt >= np) {
            PyErr_SetString(PyExc_ValueError, "Path config: local: point out of range");
            return -1;
        }
        p->local_p[i] = pt;
    }
    for (int i = 0; i < np; i++) {
        PyObject *e = PyTuple_GET_ITEM(points, i);
        if (e == Py_None)
            continue;           /* no such point: its events raise KeyError, as names[] */
        if (!PyBytes_Check(e)) {
            PyErr_SetString(PyExc_TypeError, "Path config: point_enc: bytes or None");
            return -1;
        }
        p->point_enc[i] = Py_NewRef(e);
    }
    if (cfg_obj(cfg, "last", &p->last) < 0 || cfg_obj(cfg, "flow_of", &p->flow_of) < 0 ||
        cfg_obj(cfg, "describe", &p->describe) < 0 || cfg_obj(cfg, "dev_enc", &p->dev_enc) < 0)
        return -1;
    if (!PyDict_Check(p->last)) {
        PyErr_SetString(PyExc_TypeError, "Path config: last: a dict");
        return -1;
    }
    PyObject *none_enc = PyObject_CallOneArg(p->dev_enc, Py_None);
    if (none_enc == NULL)
        return -1;
    if (!PyBytes_Check(none_enc) ||
        (p->dev_none.enc = PyMem_Malloc(PyBytes_GET_SIZE(none_enc) + 1)) == NULL) {
        Py_DECREF(none_enc);
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        return -1;
    }
    p->dev_none.len = PyBytes_GET_SIZE(none_enc);
    memcpy(p->dev_none.enc, PyBytes_AS_STRING(none_enc), p->dev_none.len);
    p->dev_none.none = 1;
    Py_DECREF(none_enc);
    if ((p->by_tuple = PyDict_New()) == NULL)
        return -1;
    Omap *maps[] = {&p->open, &p->held, &p->queued, &p->resent, &p->capped, &p->recent,
                    &p->owed};
    for (size_t i = 0; i < sizeof(maps) / sizeof(maps[0]); i++)
        if (om_init(maps[i]) < 0)
            return -1;
    if (bm_init(&p->raw, RAW_FLOW_KEY) < 0 || bm_init(&p->devs, 16) < 0 ||
        bm_init(&p->xdp, 12) < 0 || bm_init(&p->exits, 12) < 0 ||
        bm_init(&p->only, 8) < 0)
        return -1;
    return 0;
}

static void path_dealloc(Path *p)
{
    Omap *maps[] = {&p->open, &p->held, &p->queued, &p->resent, &p->capped, &p->recent,
                    &p->owed};
    for (size_t i = 0; i < sizeof(maps) / sizeof(maps[0]); i++)
        om_free(p, maps[i]);
    bm_free(&p->raw, NULL, p);
    bm_free(&p->devs, dev_drop, p);
    bm_free(&p->xdp, dev_drop, p);
    bm_free(&p->exits, NULL, p);
    bm_free(&p->only, NULL, p);
    flows_free(p);
    while (p->free_entries != NULL) {
        Entry *e = p->free_entries;
        p->free_entries = e->next;
        PyMem_Free(e);
    }
    while (p->free_groups != NULL) {
        Group *g = p->free_groups;
        p->free_groups = g->next_free;
        PyMem_Free(g);
    }
    PyMem_Free(p->buf.p);
    PyMem_Free(p->dev_none.enc);
    for (int i = 0; i < MAX_POINTS; i++)
        Py_CLEAR(p->point_enc[i]);
    Py_CLEAR(p->last);
    Py_CLEAR(p->flow_of);
    Py_CLEAR(p->describe);
    Py_CLEAR(p->dev_enc);
    Py_CLEAR(p->by_tuple);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static int ready(Path *p)
{
    if (p->open.b == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Path not initialised");
        return 0;
    }
    return 1;
}

static PyObject *m_process(Path *p, PyObject *args)
{
    return ready(p) ? path_process(p, args) : NULL;
}

static PyObject *m_process_ring(Path *p, PyObject *args)
{
    return ready(p) ? path_process_ring(p, args) : NULL;
}

static PyObject *m_expire(Path *p, PyObject *args)
{
    PyObject *out;
    long long now;
    if (!ready(p) || !PyArg_ParseTuple(args, "O!L", &PyList_Type, &out, &now))
        return NULL;
    if (grp_expire(p, out, now) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *m_flush_all(Path *p, PyObject *out)
{
    if (!ready(p))
        return NULL;
    if (!PyList_Check(out)) {
        PyErr_SetString(PyExc_TypeError, "flush_all: a list");
        return NULL;
    }
    if (grp_flush_all(p, out) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Make m the set of keys an iterable gives, each read by key(item, out): 0, or -1 with a
 * Python error set. */
static PyObject *set_of_keys(Path *p, Bmap *m, PyObject *items,
                             int (*key)(PyObject *, unsigned char *))
{
    if (!ready(p))
        return NULL;
    PyObject *it = PyObject_GetIter(items);
    if (it == NULL)
        return NULL;
    bm_clear(m, NULL, p);
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        unsigned char k[BKEY_MAX];
        int bad = key(item, k);
        Py_DECREF(item);
        if (bad || (bm_get(m, k) == NULL && bm_put(m, k, (void *)1) < 0))
            break;
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

/* (netns, ifindex) -> 12 bytes */
static int device_key(PyObject *item, unsigned char *k)
{
    unsigned long long netns;
    unsigned int ifindex;
    if (!PyArg_ParseTuple(item, "KI", &netns, &ifindex))
        return -1;
    uint64_t ns = netns;
    uint32_t ifi = ifindex;
    memcpy(k, &ns, 8);
    memcpy(k + 8, &ifi, 4);
    return 0;
}

/* a netns inode -> 8 bytes */
static int netns_key(PyObject *item, unsigned char *k)
{
    uint64_t ns = PyLong_AsUnsignedLongLong(item);
    if (PyErr_Occurred())
        return -1;
    memcpy(k, &ns, 8);
    return 0;
}

static PyObject *m_set_exit_devices(Path *p, PyObject *devices)
{
    return set_of_keys(p, &p->exits, devices, device_key);
}

static PyObject *m_restride(Path *p, PyObject *args)
{
    PyObject *out;
    unsigned long long size;
    if (!ready(p) || !PyArg_ParseTuple(args, "O!K", &PyList_Type, &out, &size))
        return NULL;
    if (size == 0) {
        PyErr_SetString(PyExc_ValueError, "restride: a stride of 0");
        return NULL;
    }
    if (grp_restride(p, out, size) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *m_set_size(Path *p, PyObject *arg)
{
    unsigned long long size = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred())
        return NULL;
    if (size == 0 || size > 0xffffffffULL) {
        PyErr_Format(PyExc_ValueError, "set_size: %llu is not a stride in 1..2^32-1", size);
        return NULL;
    }
    p->size = size;
    Py_RETURN_NONE;
}

static PyObject *m_set_netns(Path *p, PyObject *inodes)
{
    return set_of_keys(p, &p->only, inodes, netns_key);
}

static PyObject *m_set_udp_reads(Path *p, PyObject *arg)
{
    if (!ready(p))
        return NULL;
    int on = PyObject_IsTrue(arg);
    if (on < 0)
        return NULL;
    p->udp_reads = on;
    Py_RETURN_NONE;
}

static PyObject *m_set_attached(Path *p, PyObject *arg)
{
    if (!ready(p))
        return NULL;
    if (seq_mask(arg, "attached", p->npoints, &p->attached) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *m_set_xdp_names(Path *p, PyObject *names)
{
    return ready(p) ? path_set_xdp_names(p, names) : NULL;
}

static PyObject *m_counters(Path *p, PyObject *unused)
{
    (void)unused;
    Counters *c = &p->c;
    return Py_BuildValue("(LLLLLLLLLL)", c->samples, c->records, c->rate_capped, c->retrans,
                         c->retrans_dropped, c->evicted, c->late_socket, c->gaps, c->overrun,
                         c->restrided);
}

static PyObject *m_set_overrun(Path *p, PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0)
        return NULL;
    p->overrun = on;
    Py_RETURN_NONE;
}

static PyObject *m_gap_points(Path *p, PyObject *unused)
{
    (void)unused;
    PyObject *t = PyTuple_New(p->npoints);
    if (t == NULL)
        return NULL;
    for (int i = 0; i < p->npoints; i++) {
        PyObject *n = PyLong_FromLongLong(p->gap_points[i]);
        if (n == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, n);
    }
    return t;
}

static PyObject *m_sizes(Path *p, PyObject *unused)
{
    (void)unused;
    return Py_BuildValue("{snsnsnsnsnsnsnsnsIsn}", "open", (Py_ssize_t)p->open.len,
                         "held", (Py_ssize_t)p->held.len, "queued", (Py_ssize_t)p->queued.len,
                         "resent", (Py_ssize_t)p->resent.len, "capped", (Py_ssize_t)p->capped.len,
                         "recent", (Py_ssize_t)p->recent.len, "owed", (Py_ssize_t)p->owed.len,
                         "raw_flows", (Py_ssize_t)p->raw.len,
                         "flows", p->nflows - p->nfree_ids, "devs", (Py_ssize_t)p->devs.len);
}

static PyMethodDef path_methods[] = {
    {"process", (PyCFunction)m_process, METH_VARARGS,
     "process(recs, out, now) -> sampled hits: group a batch of ring-buffer events; finished "
     "records are appended to out as (flow_id, LayerEvent body)"},
    {"process_ring", (PyCFunction)m_process_ring, METH_VARARGS,
     "process_ring((consumer, producer, data, mask), out, now, limit, commit=True) -> "
     "(events, sampled hits): group the committed ring-buffer events in place, up to "
     "position limit; commit: give them back to the kernel"},
    {"expire", (PyCFunction)m_expire, METH_VARARGS, "expire(out, now): Grouper.expire"},
    {"flush_all", (PyCFunction)m_flush_all, METH_O, "flush_all(out): Grouper.flush_all"},
    {"set_exit_devices", (PyCFunction)m_set_exit_devices, METH_O,
     "set_exit_devices(iterable of (netns, ifindex))"},
    {"restride", (PyCFunction)m_restride, METH_VARARGS,
     "restride(out, stride): Grouper.restride"},
    {"set_size", (PyCFunction)m_set_size, METH_O,
     "set_size(stride): expand ranges at this stride from the next batch on"},
    {"set_netns", (PyCFunction)m_set_netns, METH_O,
     "set_netns(iterable of netns inodes): group only their hits (empty: every namespace's); "
     "resend marks from any"},
    {"set_overrun", (PyCFunction)m_set_overrun, METH_O,
     "set_overrun(bool): Grouper.overrun"},
    {"set_attached", (PyCFunction)m_set_attached, METH_O,
     "set_attached(point numbers): Grouper.points"},
    {"set_udp_reads", (PyCFunction)m_set_udp_reads, METH_O,
     "set_udp_reads(bool): Grouper.udp_reads"},
    {"set_xdp_names", (PyCFunction)m_set_xdp_names, METH_O,
     "set_xdp_names({(netns, ifindex): name}): the XDP point's device names"},
    {"counters", (PyCFunction)m_counters, METH_NOARGS,
     "counters() -> GroupCounters' fields, in order"},
    {"gap_points", (PyCFunction)m_gap_points, METH_NOARGS,
     "gap_points() -> records that lacked each point, by point number"},
    {"sizes", (PyCFunction)m_sizes, METH_NOARGS, "sizes() -> entries per map (memory bounds)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "latscope.producers._native.Path",
    .tp_basicsize = sizeof(Path),
    .tp_dealloc = (destructor)path_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One agent's data path: events -> grouped LayerEvent bodies (grouping.Grouper).",
    .tp_methods = path_methods,
    .tp_init = (initproc)path_init,
    .tp_new = PyType_GenericNew,
};

static PyMethodDef module_methods[] = {
    {"bucket", batching_bucket, METH_VARARGS,
     "bucket(records, pending, due, group_of, wait) -> records added "
     "(publish.LayerEventPublisher.publish_encoded)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_native",
    .m_doc = "The agent's data path in C.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__native(void)
{
    if (PyType_Ready(&PathType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Path", (PyObject *)&PathType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
