/* The agent's data path in C (module latscope.producers._native): ring-buffer events in,
 * LayerEvent bodies out, byte for byte what the Python path (Agent.process, Grouper,
 * LayerEventEncoder.body) produces; tests/producers/test_native_grouping.py holds them equal.
 *
 * Each file holds one job:
 *   maps.c      the ordered maps (OrderedDict's twin: insertion order, move_to_end,
 *               popitem(last=False)) and the byte-keyed caches
 *   decode.c    events (a list, or the ring buffer in place: bpf/native/ring.h) -> flows,
 *               devices, sampled bytes (producers/sampling.py), hits
 *   grouping.c  producers/grouping.py's Grouper, rule for rule
 *   encode.c    a finished group -> its LayerEvent body
 *   module.c    the Path type and the method table
 *
 * Python (producers/native_path.py) keeps the configuration, the schema and the point
 * table: field offsets, point numbers, the rules' point sets and the encodings of points,
 * devices and a flow's header all come from it, so nothing here knows a point by name.
 */
#ifndef LATSCOPE_PRODUCERS_NATIVE_H
#define LATSCOPE_PRODUCERS_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define MAX_POINTS 32       /* point numbers are bit positions in a uint32_t mask */
#define MAX_LOCAL 8
#define INLINE_HITS 16      /* a byte's hits on one host: ~11 with every point */
#define RAW_FLOW_KEY 38     /* saddr[16] daddr[16] sport dport family proto */
#define BKEY_MAX 40
#define POOL_MAX 4096           /* freed entries and groups kept for reuse */

/* Event fields C reads, in the order producers/native_path.py gives their offsets. */
enum { F_TS, F_NETNS, F_SADDR, F_DADDR, F_SEQ, F_LEN, F_IFINDEX, F_CPU, F_SPORT, F_DPORT,
       F_POINT, F_FAMILY, F_PROTO, F_FLAGS, F_DEV, F_WAIT, F_COUNT };
#define NWAIT 8             /* ls_event's wait_* fields (enum ls_wait), from F_WAIT on */

/* A device name's PointHit encoding (the dev union), cached per raw name. */
typedef struct {
    char *enc;
    Py_ssize_t len;
    int none;               /* no device name (an empty one) */
} Dev;

typedef struct {
    uint64_t ts, netns;
    uint32_t ifindex, cpu;
    int point;
    /* socket-wait causes: while a hit is being added, `wait` points at them (NULL: none);
     * in a group, wslot says where the group keeps them (Group.wait[wslot - 1]; 0: none) */
    int wslot;
    const uint32_t *wait;
    const Dev *dev;
} Hit;

/* The hits of one copy of a byte (grouping._Group). */
typedef struct Group {
    Hit *hits;
    int n, cap;
    int64_t last_ns;
    int exited;
    struct Group *next_free;
    uint32_t wait[2][NWAIT];    /* the causes of its hits with wslot 1 (sender), 2 (receiver) */
    Hit small[INLINE_HITS];
} Group;

/* grouping._Resent */
typedef struct {
    int copies, plain, marked, read;
} Resent;

/* One entry of an ordered map, keyed (flow, seq, copy); copy is 0 in the byte-keyed maps.
 * One entry type for every map: the fields a map does not use stay 0. */
typedef struct Entry {
    struct Entry *hnext, *prev, *next;
    uint64_t hash;
    uint32_t flow, seq, copy;
    Group *g;               /* open, held, queued */
    int64_t t;              /* capped, owed, recent: when */
    Resent r;               /* resent; recent when has_r */
    int has_r, read;        /* recent: (t, r or None, read) */
} Entry;

typedef struct {
    Entry **b;
    size_t mask, len;
    Entry head;             /* sentinel: head.next is the oldest, head.prev the newest */
} Omap;

/* A byte-keyed hash map (fixed key length per map), no order. */
typedef struct BEntry {
    struct BEntry *next;
    uint64_t hash;
    void *val;
    unsigned char key[BKEY_MAX];
} BEntry;

typedef struct {
    BEntry **b;
    size_t mask, len;
    int klen;
} Bmap;

/* A flow, canonical per flow tuple (grouping keys compare flows by value). */
typedef struct {
    PyObject *tuple;        /* FlowT, from flow_of */
    PyObject *fid;          /* its flow id (str) */
    char *prefix;           /* the LayerEvent body up to seq */
    Py_ssize_t prefix_len;
    int tcp, last;          /* proto is tcp; its last point (-1: none) */
    Py_ssize_t refs;        /* map entries and raw cache slots naming it */
} Flow;

typedef struct {
    long long samples, records, rate_capped, retrans, retrans_dropped, evicted, late_socket,
        gaps, overrun, restrided;
} Counters;

typedef struct {
    char *p;
    Py_ssize_t len, cap;
} Buf;

typedef struct {
    PyObject_HEAD
    /* configuration (grouping.Grouper's fields) */
    uint64_t size;
    int64_t linger_ns, hold_ns, queued_ns, owed_ns, recent_ns, rate_cap;
    Py_ssize_t max_open, max_recent;
    int filter_retrans, check_gaps;
    int udp_reads;          /* Grouper.udp_reads */
    int overrun;            /* Grouper.overrun: records come out incomplete */
    /* the event layout (latscope.h, via producers/layout.py) */
    Py_ssize_t ev_size, off[F_COUNT];
    int npoints, retrans_point, xdp_point;
    unsigned flag_udp, flag_resent, flag_wait;
    /* the rules' points (grouping.py's module constants) */
    int send, recv, tcp_rx, queue;
    int udp_unread_last;    /* UDP's last point when no sock_recv is attached (ip_in) */
    uint32_t m_exit, m_socket, m_sent_here, m_delivered, m_flush, m_read, m_takes_read;
    uint32_t m_tcp_layer;   /* TCP's own points: never a UDP datagram's gap */
    uint32_t implies[MAX_POINTS], m_implies;
    int nlocal, local_p[MAX_LOCAL];
    uint32_t local_need[MAX_LOCAL];
    uint32_t attached;      /* Grouper.points */
    PyObject *last;         /* proto -> last point */
    /* encoding */
    PyObject *point_enc[MAX_POINTS];
    PyObject *flow_of, *describe, *dev_enc;
    /* state */
    Omap open, held, queued, resent, capped, recent, owed;
    double tokens;
    int64_t refill_ns;
    Counters c;
    long long gap_points[MAX_POINTS];
    Flow **flows;
    uint32_t nflows, flows_cap, *free_ids, nfree_ids;
    PyObject *by_tuple;     /* flow tuple -> index in flows */
    Py_ssize_t flow_cache;  /* raw flow keys cached at most (agent.FLOW_CACHE) */
    Bmap raw, devs, xdp, exits;
    /* the namespaces whose hits this path groups (empty: every one); a resend mark is
     * taken from any (agent.GroupSet: one path per host name an agent publishes under) */
    Bmap only;
    Dev dev_none;
    /* the previous event's raw flow key and device: consecutive events of a batch are
     * mostly of one flow, on one device (reset when the flow cache is swept) */
    unsigned char memo_flow_key[RAW_FLOW_KEY], memo_dev_key[16];
    uint32_t memo_flow;
    int memo_flow_ok;
    const Dev *memo_dev;
    Entry *free_entries;
    Group *free_groups;
    int nfree_entries, nfree_groups;
    Buf buf;
} Path;

/* maps.c */
int om_init(Omap *m);
void om_free(Path *p, Omap *m);
Entry *om_get(Omap *m, uint32_t flow, uint32_t seq, uint32_t copy);
Entry *om_add(Path *p, Omap *m, uint32_t flow, uint32_t seq, uint32_t copy);
Entry *om_set(Path *p, Omap *m, uint32_t flow, uint32_t seq, uint32_t copy);
void om_unlink(Omap *m, Entry *e);
void om_release(Path *p, Entry *e);
void om_move_end(Omap *m, Entry *e);
static inline Entry *om_first(Omap *m) { return m->len ? m->head.next : NULL; }
int bm_init(Bmap *m, int klen);
void *bm_get(Bmap *m, const void *key);
int bm_put(Bmap *m, const void *key, void *val);
void bm_clear(Bmap *m, void (*drop)(Path *, void *), Path *p);
void bm_free(Bmap *m, void (*drop)(Path *, void *), Path *p);
Group *group_new(Path *p, int64_t now);
void group_release(Path *p, Group *g);
int group_append(Group *g, const Hit *h);

/* decode.c */
PyObject *path_process(Path *p, PyObject *args);
PyObject *path_process_ring(Path *p, PyObject *args);
void flow_unref(Path *p, uint32_t id);
void flows_free(Path *p);
void dev_drop(Path *p, void *val);

/* grouping.c */
int grp_add(Path *p, uint32_t flow, uint32_t seq, const Hit *hit, PyObject *out, int64_t now,
            int resent);
int grp_mark_retrans(Path *p, uint32_t flow, uint32_t seq, PyObject *out);
int grp_expire(Path *p, PyObject *out, int64_t now);
int grp_flush_all(Path *p, PyObject *out);
int grp_restride(Path *p, PyObject *out, uint64_t size);
PyObject *batching_bucket(PyObject *self, PyObject *args);

/* encode.c */
int emit_record(Path *p, uint32_t flow, uint32_t seq, Group *g, int retrans, int complete,
                PyObject *out);

#endif
