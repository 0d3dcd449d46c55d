/* producers/grouping.py's Grouper in C, rule for rule and in the same order (its docstring
 * says why each rule is there; the names here are its names). A group key is (flow, seq,
 * copy), flow an index into Path.flows; a byte key is (flow, seq) with copy 0. Point sets
 * are bit masks of point numbers, all given by producers/native_path.py.
 *
 * An entry pointer is only held across a call that may emit when the Python code holds
 * the object across the same call and the entry cannot be removed by it (see _add_copy).
 */
#include "native.h"

#define BIT(point) (1u << (point))

static int emit(Path *p, uint32_t flow, uint32_t seq, uint32_t copy, Group *g, int complete,
                PyObject *out, int owed, int resend);

static uint32_t names_of(const Group *g)
{
    uint32_t m = 0;
    for (int i = 0; i < g->n; i++)
        m |= BIT(g->hits[i].point);
    return m;
}

static int seen(const Group *g, int point, uint32_t ifindex, uint64_t netns)
{
    for (int i = 0; i < g->n; i++) {
        const Hit *h = &g->hits[i];
        if (h->point == point && h->ifindex == ifindex && h->netns == netns)
            return 1;
    }
    return 0;
}

static int is_exit(Path *p, uint64_t netns, uint32_t ifindex)
{
    unsigned char k[12];
    if (p->exits.len == 0)
        return 0;
    memcpy(k, &netns, 8);
    memcpy(k + 8, &ifindex, 4);
    return bm_get(&p->exits, k) != NULL;
}

/* _reads_udp: are UDP reads reported (sock_recv attached, by a hook that sees them)? */
static int reads_udp(const Path *p)
{
    return p->udp_reads && (p->attached & BIT(p->recv));
}

static int admit(Path *p, int64_t now)
{
    if (now != p->refill_ns) {
        /* Python: tokens += (now - refill) * cap / 1e9, the product exact, then rounded
         * once to a double */
        __int128 prod = (__int128)(now - p->refill_ns) * p->rate_cap;
        p->tokens += (double)prod / 1e9;
        if (p->tokens > (double)p->rate_cap)
            p->tokens = (double)p->rate_cap;
        p->refill_ns = now;
    }
    if (p->tokens >= 1.0) {
        p->tokens -= 1.0;
        return 1;
    }
    return 0;
}

/* _group: the open group of one copy; a held or queued one is reopened (last). */
static Entry *group_entry(Path *p, uint32_t flow, uint32_t seq, uint32_t copy)
{
    Entry *e = om_get(&p->open, flow, seq, copy);
    if (e == NULL && (p->held.len || p->queued.len)) {
        Omap *from = &p->held;
        Entry *h = om_get(from, flow, seq, copy);
        if (h == NULL) {
            from = &p->queued;
            h = om_get(from, flow, seq, copy);
        }
        if (h != NULL) {
            Group *g = h->g;
            om_unlink(from, h);
            h->g = NULL;
            om_release(p, h);
            e = om_set(p, &p->open, flow, seq, copy);
            if (e == NULL) {
                group_release(p, g);
                return NULL;
            }
            e->g = g;
        }
    }
    return e;
}

static Group *peek(Path *p, uint32_t flow, uint32_t seq, uint32_t copy)
{
    Entry *e = om_get(&p->open, flow, seq, copy);
    if (e == NULL)
        e = om_get(&p->held, flow, seq, copy);
    if (e == NULL)
        e = om_get(&p->queued, flow, seq, copy);
    return e != NULL ? e->g : NULL;
}

/* _start: a new sampled byte, admitted by the rate cap (1) or dropped whole (0). */
static int start(Path *p, uint32_t flow, uint32_t seq, int64_t now)
{
    if (om_get(&p->capped, flow, seq, 0) != NULL)
        return 0;
    if (!admit(p, now)) {
        p->c.rate_capped++;
        Entry *e = om_add(p, &p->capped, flow, seq, 0);
        if (e == NULL)
            return -1;
        e->t = now;
        return 0;
    }
    p->c.samples++;
    return 1;
}

static int evict(Path *p, PyObject *out)
{
    if ((Py_ssize_t)p->open.len > p->max_open) {
        Entry *e = om_first(&p->open);
        uint32_t flow = e->flow, seq = e->seq, copy = e->copy;
        Group *g = e->g;
        om_unlink(&p->open, e);
        p->c.evicted++;
        /* the entry holds the flow until emit is done with it */
        int r = emit(p, flow, seq, copy, g, 0, out, 0, 0);
        group_release(p, g);
        e->g = NULL;
        om_release(p, e);
        return r;
    }
    return 0;
}

/* A new open group for (flow, seq, copy), last (d[k] = _Group(...)). */
static Entry *open_new(Path *p, uint32_t flow, uint32_t seq, uint32_t copy, int64_t now)
{
    Group *g = group_new(p, now);
    if (g == NULL)
        return NULL;
    Entry *e = om_set(p, &p->open, flow, seq, copy);
    if (e == NULL) {
        group_release(p, g);
        return NULL;
    }
    if (e->g != NULL)
        group_release(p, e->g);
    e->g = g;
    return e;
}

/* Remove an entry from its map (open, held or queued) and emit its group. */
static int close_entry(Path *p, Omap *m, Entry *e, int complete, PyObject *out, int owed,
                       int resend)
{
    uint32_t flow = e->flow, seq = e->seq, copy = e->copy;
    Group *g = e->g;
    om_unlink(m, e);
    int r = emit(p, flow, seq, copy, g, complete, out, owed, resend);
    group_release(p, g);
    e->g = NULL;
    om_release(p, e);
    return r;
}

static int close_open(Path *p, Entry *e, int complete, PyObject *out, int resend)
{
    return close_entry(p, &p->open, e, complete, out, 0, resend);
}

/* _awaits_send */
static int awaits_send(Path *p, uint32_t flow, uint32_t copy, Group *g)
{
    if (copy == 0 && p->flows[flow]->tcp) {
        uint32_t names = names_of(g);
        if (!(names & BIT(p->send)) && (names & p->m_sent_here)) {
            g->exited = 1;
            return 1;
        }
    }
    return 0;
}

/* _flush_at: the hit may be its copy's last point on this host. */
static int flush_at(Path *p, Entry *e, const Hit *hit, PyObject *out)
{
    Group *g = e->g;
    int point = hit->point, done;
    Flow *f = p->flows[e->flow];
    if (point == p->send)
        done = g->exited;
    else if (f->last == point || (!f->tcp && point == p->udp_unread_last && !reads_udp(p)))
        done = !awaits_send(p, e->flow, e->copy, g);
    else if ((p->m_exit & BIT(point)) && is_exit(p, hit->netns, hit->ifindex))
        done = !awaits_send(p, e->flow, e->copy, g);
    else
        return 0;
    return done ? close_open(p, e, 1, out, 0) : 0;
}

/* _append */
static int append(Path *p, Entry *e, const Hit *hit, int64_t now, PyObject *out)
{
    if (group_append(e->g, hit) < 0)
        return -1;
    e->g->last_ns = now;
    if (p->m_flush & BIT(hit->point))
        return flush_at(p, e, hit, out);
    return 0;
}

/* _forget_if_idle: a resent byte with no copy open any more is remembered as closed. */
static int forget_if_idle(Path *p, Entry *re, int64_t now)
{
    uint32_t flow = re->flow, seq = re->seq;
    for (int c = 0; c < re->r.copies; c++)
        if (peek(p, flow, seq, (uint32_t)c) != NULL)
            return 0;
    Resent r = re->r;
    om_unlink(&p->resent, re);
    Entry *e = om_set(p, &p->recent, flow, seq, 0);
    om_release(p, re);
    if (e == NULL)
        return -1;
    e->t = now;
    e->r = r;
    e->has_r = 1;
    e->read = r.read;
    om_move_end(&p->recent, e);
    if ((Py_ssize_t)p->recent.len > p->max_recent) {
        Entry *old = om_first(&p->recent);
        om_unlink(&p->recent, old);
        om_release(p, old);
    }
    return 0;
}

/* _socket_copy: the copy a socket hit belongs to (-1: none open). */
static int64_t socket_copy(Path *p, uint32_t flow, uint32_t seq, int point, const Resent *r)
{
    if (point == p->send)
        return peek(p, flow, seq, 0) != NULL ? 0 : -1;
    int64_t best = -1, fallback = -1;
    uint64_t best_ts = 0;
    for (int c = 0; c < r->copies; c++) {
        Group *g = peek(p, flow, seq, (uint32_t)c);
        if (g == NULL)
            continue;
        if (fallback < 0)
            fallback = c;
        int found = 0;
        uint64_t ts = 0;
        for (int i = 0; i < g->n; i++)
            if (g->hits[i].point == p->tcp_rx && (!found || g->hits[i].ts < ts)) {
                ts = g->hits[i].ts;
                found = 1;
            }
        if (!found)
            for (int i = 0; i < g->n; i++)
                if ((p->m_delivered & BIT(g->hits[i].point)) && (!found || g->hits[i].ts < ts)) {
                    ts = g->hits[i].ts;
                    found = 1;
                }
        if (found && (best < 0 || ts < best_ts)) {
            best = c;
            best_ts = ts;
        }
    }
    return best >= 0 ? best : fallback;
}

/* _add_copy: a hit of a resent byte; find (or start) the copy it belongs to. */
static int add_copy(Path *p, uint32_t flow, uint32_t seq, const Hit *hit, PyObject *out,
                    int64_t now, int resent)
{
    if (om_get(&p->capped, flow, seq, 0) != NULL)
        return 0;
    Entry *re = om_get(&p->resent, flow, seq, 0);
    if (re == NULL) {
        Entry *old = om_get(&p->recent, flow, seq, 0);
        Resent r = {1, 0, -1, 0};
        if (old != NULL && old->has_r)
            r = old->r;
        else
            r.read = old != NULL && old->read;
        if (old == NULL || !old->has_r)
            p->c.retrans++;
        if (old != NULL) {
            om_unlink(&p->recent, old);
            om_release(p, old);
        }
        re = om_add(p, &p->resent, flow, seq, 0);
        if (re == NULL)
            return -1;
        re->r = r;
    }
    /* re stays valid below until a group of this byte is emitted or forget_if_idle runs:
     * the Python code uses r only before those, too */
    int point = hit->point;
    if (p->m_socket & BIT(point)) {
        int64_t c = socket_copy(p, flow, seq, point, &re->r);
        if (c < 0) {
            p->c.late_socket++;
            return forget_if_idle(p, re, now);
        }
        Entry *e = group_entry(p, flow, seq, (uint32_t)c);
        if (e == NULL)
            return -1;
        om_move_end(&p->open, e);
        if (append(p, e, hit, now, out) < 0)
            return -1;
        if (point == p->send) {
            e = om_get(&p->open, flow, seq, (uint32_t)c);
            if (e != NULL && !e->g->exited)
                /* the original's sock_send after a resend: that copy died in this host */
                return close_open(p, e, 0, out, 0);
        }
        return 0;
    }
    int c = resent ? re->r.marked : re->r.plain;
    Entry *e = NULL;
    if (c >= 0) {
        e = group_entry(p, flow, seq, (uint32_t)c);
        if (e == NULL && PyErr_Occurred())
            return -1;
    }
    if (e == NULL || seen(e->g, point, hit->ifindex, hit->netns)) {
        c = re->r.copies++;            /* a new copy: the first marked one, or a repeat */
        if (resent)
            re->r.marked = c;
        else
            re->r.plain = c;
        e = NULL;
    }
    if (e == NULL) {
        int other = 0;
        for (int i = 0; i < re->r.copies && !other; i++)
            if (i != c && peek(p, flow, seq, (uint32_t)i) != NULL)
                other = 1;
        if (other) {
            p->c.samples++;            /* another copy of a byte admitted already */
        } else {
            int s = start(p, flow, seq, now);
            if (s < 0)
                return -1;
            if (s == 0)
                return forget_if_idle(p, re, now);
        }
        /* max_open >= 1: the eviction never takes the group just opened */
        if ((e = open_new(p, flow, seq, (uint32_t)c, now)) == NULL || evict(p, out) < 0)
            return -1;
    } else {
        om_move_end(&p->open, e);
    }
    return append(p, e, hit, now, out);
}

/* Grouper.add: one hit of sampled byte (flow, seq). */
int grp_add(Path *p, uint32_t flow, uint32_t seq, const Hit *hit, PyObject *out, int64_t now,
            int resent)
{
    if (resent || (p->resent.len && om_get(&p->resent, flow, seq, 0) != NULL))
        return add_copy(p, flow, seq, hit, out, now, resent);
    Flow *f = p->flows[flow];
    Entry *e = group_entry(p, flow, seq, 0);
    if (e == NULL && PyErr_Occurred())
        return -1;
    int point = hit->point;
    if (e != NULL) {
        if (seen(e->g, point, hit->ifindex, hit->netns)) {
            if (f->tcp)   /* an unmarked second copy (the sender runs no agent): a resend */
                return add_copy(p, flow, seq, hit, out, now, resent);
            if (close_open(p, e, 0, out, 0) < 0)   /* UDP: an equal datagram, its own sample */
                return -1;
            e = NULL;
        } else {
            om_move_end(&p->open, e);
        }
    }
    if (e == NULL) {
        if (f->tcp && (p->recent.len || p->owed.len)) {
            if (p->m_socket & BIT(point)) {
                if (om_get(&p->owed, flow, seq, 0) != NULL) {
                    p->c.late_socket++;            /* its record is out already */
                    return 0;
                }
            } else {
                Entry *old = om_get(&p->recent, flow, seq, 0);
                if (old != NULL && now - old->t <= p->recent_ns)
                    return add_copy(p, flow, seq, hit, out, now, resent);   /* a resend */
            }
        }
        int s = start(p, flow, seq, now);
        if (s <= 0)
            return s;
        if ((e = open_new(p, flow, seq, 0, now)) == NULL || evict(p, out) < 0)
            return -1;
    }
    if (group_append(e->g, hit) < 0)
        return -1;
    e->g->last_ns = now;
    if ((p->m_flush & BIT(point)) &&
        (!(p->m_exit & BIT(point)) || is_exit(p, hit->netns, hit->ifindex)))
        return flush_at(p, e, hit, out);
    return 0;
}

/* Grouper.mark_retrans: the sender's TCP retransmitted this byte. */
int grp_mark_retrans(Path *p, uint32_t flow, uint32_t seq, PyObject *out)
{
    if (om_get(&p->resent, flow, seq, 0) != NULL)
        return 0;
    Entry *e = group_entry(p, flow, seq, 0);
    if (e == NULL && PyErr_Occurred())
        return -1;
    Entry *old = om_get(&p->recent, flow, seq, 0);
    if (e == NULL) {
        if (old != NULL && !old->has_r) {     /* closed: remembered as resent */
            Resent r = {1, 0, -1, old->read};
            old->r = r;
            old->has_r = 1;
            p->c.retrans++;
        }
        return 0;
    }
    Entry *re = om_add(p, &p->resent, flow, seq, 0);
    if (re == NULL)
        return -1;
    Resent r = {1, 0, -1, 0};
    re->r = r;
    p->c.retrans++;
    if (e->g->exited)
        return close_open(p, e, 1, out, 1);
    return 0;
}

/* _gaps, counted: does the group lack a point its hits imply (0/1)? tcp: its flow's. */
static int gaps(Path *p, const Group *g, int tcp)
{
    uint32_t names = names_of(g), want = p->attached;
    int missing = 0;
    if (names & p->m_implies) {
        for (int i = 0; i < g->n; i++) {
            const Hit *h = &g->hits[i];
            int dup = 0;                  /* seen is a set: each tag once */
            for (int j = 0; j < i && !dup; j++)
                dup = g->hits[j].point == h->point && g->hits[j].ifindex == h->ifindex &&
                      g->hits[j].netns == h->netns;
            uint32_t need = p->implies[h->point] & want;
            if (dup || !need)
                continue;
            for (; need; need &= need - 1) {
                int n = __builtin_ctz(need);
                if (!seen(g, n, h->ifindex, h->netns)) {
                    p->gap_points[n]++;
                    missing = 1;
                }
            }
        }
    }
    for (int k = 0; k < p->nlocal; k++) {
        if (!(names & BIT(p->local_p[k])))
            continue;
        uint32_t need = p->local_need[k] & want & ~names & (tcp ? ~0u : ~p->m_tcp_layer);
        for (; need; need &= need - 1) {
            p->gap_points[__builtin_ctz(need)]++;
            missing = 1;
        }
    }
    return missing;
}

/* _emit: hand a copy's record on (or drop it, counted). The group is the caller's. */
static int emit(Path *p, uint32_t flow, uint32_t seq, uint32_t copy, Group *g, int complete,
                PyObject *out, int owed, int resend)
{
    int retrans = copy > 0 || resend;
    Flow *f = p->flows[flow];
    if (p->overrun)
        complete = 0;
    if (complete && p->check_gaps && gaps(p, g, p->flows[flow]->tcp)) {
        complete = 0;
        p->c.gaps++;
    }
    if (f->tcp) {
        uint32_t names = names_of(g);
        /* the byte's read is taken: this copy got it, or reached TCP here and gave up
         * waiting for it (owed) */
        int read = (g->n > 0 && g->hits[g->n - 1].point == p->recv) ||
                   (names & (owed ? p->m_takes_read : p->m_read)) != 0;
        Entry *re = om_get(&p->resent, flow, seq, 0);
        if (re != NULL) {
            retrans = retrans || !complete;
            re->r.read = re->r.read || read;
            if (forget_if_idle(p, re, g->last_ns) < 0)
                return -1;
        } else {
            Entry *e = om_set(p, &p->recent, flow, seq, 0);
            if (e == NULL)
                return -1;
            e->t = g->last_ns;
            e->has_r = 0;
            e->read = read;
            om_move_end(&p->recent, e);
            if ((Py_ssize_t)p->recent.len > p->max_recent) {
                Entry *old = om_first(&p->recent);
                om_unlink(&p->recent, old);
                om_release(p, old);
            }
        }
        if (owed && !(names & p->m_socket) && (names & (p->m_sent_here | p->m_delivered))) {
            Entry *e = om_set(p, &p->owed, flow, seq, 0);
            if (e == NULL)
                return -1;
            e->t = g->last_ns;
            if ((Py_ssize_t)p->owed.len > p->max_recent) {
                Entry *old = om_first(&p->owed);
                om_unlink(&p->owed, old);
                om_release(p, old);
            }
        }
    }
    if (retrans && p->filter_retrans) {
        p->c.retrans_dropped++;
        return 0;
    }
    p->c.records++;
    p->c.overrun += p->overrun != 0;
    return emit_record(p, flow, seq, g, retrans, complete, out);
}

/* _waits: idle for a linger, is the copy still inside the host, worth holding? */
static int waits(Path *p, Entry *e)
{
    Group *g = e->g;
    if (!p->flows[e->flow]->tcp) {
        uint32_t names = names_of(g);
        return reads_udp(p) && (names & p->m_delivered) && !(names & BIT(p->recv));
    }
    Entry *re = om_get(&p->resent, e->flow, e->seq, 0);
    if (re == NULL)
        return 1;
    uint32_t names = names_of(g);
    if ((names & p->m_delivered) && !(names & BIT(p->recv)))
        return !re->r.read && socket_copy(p, e->flow, e->seq, p->recv, &re->r) == e->copy;
    return e->copy == 0 || (g->n > 0 && g->hits[g->n - 1].point == p->queue);
}

/* Pop the oldest entries of a held/queued map idle since limit, emitted as owed. */
static int expire_waiting(Path *p, Omap *m, int64_t limit, PyObject *out)
{
    Entry *e;
    while ((e = om_first(m)) != NULL && e->g->last_ns <= limit) {
        if (close_entry(p, m, e, 0, out, 1, 0) < 0)
            return -1;
    }
    return 0;
}

static void expire_memo(Path *p, Omap *m, int64_t horizon_start)
{
    Entry *e;
    while ((e = om_first(m)) != NULL && e->t <= horizon_start) {
        om_unlink(m, e);
        om_release(p, e);
    }
}

/* Grouper.expire */
int grp_expire(Path *p, PyObject *out, int64_t now)
{
    int64_t limit = now - p->linger_ns;
    Entry *e;
    while ((e = om_first(&p->open)) != NULL && e->g->last_ns <= limit) {
        Group *g = e->g;
        int queued = 0, held;
        if (p->flows[e->flow]->tcp) {
            queued = 1;
            for (int i = 0; i < g->n && queued; i++)
                queued = g->hits[i].point == p->send;
        }
        held = !queued && waits(p, e);   /* still open while it looks */
        uint32_t flow = e->flow, seq = e->seq, copy = e->copy;
        if (queued || held) {
            Omap *to = queued ? &p->queued : &p->held;
            om_unlink(&p->open, e);
            e->g = NULL;
            om_release(p, e);
            Entry *w = om_set(p, to, flow, seq, copy);
            if (w == NULL) {
                group_release(p, g);
                return -1;
            }
            if (w->g != NULL)
                group_release(p, w->g);
            w->g = g;
        } else if (close_open(p, e, 0, out, 0) < 0) {
            return -1;
        }
    }
    if (expire_waiting(p, &p->held, now - p->hold_ns, out) < 0 ||
        expire_waiting(p, &p->queued, now - p->queued_ns, out) < 0)
        return -1;
    expire_memo(p, &p->capped, now - p->linger_ns);
    expire_memo(p, &p->owed, now - p->owed_ns);
    expire_memo(p, &p->recent, now - p->recent_ns);
    return 0;
}

/* Grouper.flush_all */
int grp_flush_all(Path *p, PyObject *out)
{
    Omap *maps[3] = {&p->queued, &p->held, &p->open};
    for (int i = 0; i < 3; i++) {
        Entry *e;
        while ((e = om_first(maps[i])) != NULL) {
            if (close_entry(p, maps[i], e, 0, out, 0, 0) < 0)
                return -1;
        }
    }
    return 0;
}

/* Grouper.restride: flush the TCP copies of bytes off a new, coarser stride */
int grp_restride(Path *p, PyObject *out, uint64_t size)
{
    Omap *maps[3] = {&p->queued, &p->held, &p->open};
    for (int i = 0; i < 3; i++) {
        Entry *e = om_first(maps[i]), *next;
        for (; e != NULL && e != &maps[i]->head; e = next) {
            next = e->next;     /* emit touches no map of groups */
            if (!p->flows[e->flow]->tcp || e->seq % size == 0)
                continue;
            p->c.restrided++;
            if (close_entry(p, maps[i], e, 0, out, 0, 0) < 0)
                return -1;
        }
    }
    return 0;
}
