/* Socket-wait causes (issue #15): why a sampled byte waited in a socket, as time per cause
 * (latscope.h enum ls_wait), read from the kernel's own socket state at the events that
 * pass on the socket while the byte waits. Docs: docs/flow-context.md "Socket-wait causes".
 *
 * One byte at a time per socket and direction is tracked (the sock_wait storage): the
 * sender's from the entry of the send call that writes it (sock.bpf.h send_start_mark,
 * the start of its sock_send segment) to its first transmission (the tcp_tx hit carries
 * the causes, LS_F_WAIT); the receiver's from its sampled tcp_rx hit to the read that
 * hands it to the app (sock_recv carries them). A sampled byte that comes while its
 * socket tracks another carries none.
 *
 * Events: every sock_ops header-option callback of a covered socket (each segment TCP
 * builds, and tcp_current_mss() at the start of every sendmsg and push, before anything
 * is queued or sent), every received segment (tcp_probe, which fires before TCP processes
 * it) and the sampled read. At each, the time since the previous event goes to the cause the
 * socket's state shows now: at tcp_probe and at the sizing call nothing has changed it
 * since the previous event, so that is the state that held. A transmission a timer
 * releases (pacing) sees its release already: pacing is decided from tcp_wstamp_ns, the
 * earliest departure the kernel set after the previous send, so [last, wstamp) is pacing
 * whatever the state says at the transmission.
 *
 * Typed hooks only (tp_btf, sock_ops; fentry where it loads): raw_tp may not use socket
 * storage, so the raw_tp fallbacks carry no causes. Nothing runs for a socket without the
 * storage but its lookup; the storage is made by the first sampled hit that tracks a byte. */
#ifndef LATSCOPE_WAIT_BPF_H
#define LATSCOPE_WAIT_BPF_H

#define LS_TSQF_THROTTLED 1          /* 1 << TSQ_THROTTLED */
#define LS_TCP_NAGLE_CORK 2
#define LS_SK_PACING_NEEDED 1        /* TCP paces itself (no fq): tcp_wstamp_ns and a timer */

#define LS_WAIT_SLOTS 4              /* bytes tracked at once per socket and direction */

struct ls_wait_slot {
	__u64 ns[LS_W_MAX];          /* sender: NAGLE..OTHER; receiver: UNREAD, OOO */
	__u32 seq;                   /* the tracked byte */
	__u32 live;
};

struct ls_wait_st {
	__u64 s_last;                /* sender: the last event while a slot is live; 0: none */
	__u64 r_last;                /* receiver: the same */
	struct ls_wait_slot s[LS_WAIT_SLOTS];
	struct ls_wait_slot r[LS_WAIT_SLOTS];
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ls_wait_st);
} sock_wait SEC(".maps");

/* Why the head of the unsent queue is not sent now: the first of tcp_write_xmit's own tests
 * (after pacing, which ls_wait_send_step decides by time) that fails, in its order:
 *   cwnd    packets in flight (tcp_packets_in_flight) >= snd_cwnd   (tcp_cwnd_test)
 *   rwnd    the head segment ends beyond snd_una + snd_wnd          (tcp_snd_wnd_test)
 *   nagle   the unsent data is less than an MSS and Nagle holds it: TCP_CORK, or Nagle
 *           on with a small segment unacknowledged (Minshall: snd_sml in (snd_una, snd_nxt])
 *           (tcp_nagle_check); or autocork: TSQ_THROTTLED set with a partial tail (tcp_push
 *           held it until the host's queue frees: tcp_should_autocork)
 *   sndbuf  TSQ_THROTTLED with a full segment waiting (tcp_small_queue_check)
 *   other   none of them: a moment between a release and the transmission, TSO deferral,
 *           a retransmission first, the socket owned by the app */
static __always_inline int ls_wait_cause(const struct tcp_sock *tp)
{
	const struct sock *sk = &tp->inet_conn.icsk_inet.sk;
	__u32 nxt = tp->snd_nxt, unsent = tp->write_seq - nxt, mss = tp->mss_cache;
	__u32 in_flight = tp->packets_out - (tp->sacked_out + tp->lost_out) + tp->retrans_out;
	__u32 head = unsent < mss ? unsent : mss;
	__u32 sml = tp->snd_sml;
	__u8 nonagle = BPF_CORE_READ_BITFIELD(tp, nonagle);

	if (!unsent)
		return LS_W_SNDBUF;          /* all queued is sent: the byte is still in the app's
					      * call, which waits for send-buffer space (the
					      * kernel's TCP_CHRONO_SNDBUF_LIMITED) */
	if (in_flight >= tp->snd_cwnd)
		return LS_W_CWND;
	if ((__s32)(tp->snd_una + tp->snd_wnd - nxt) < (__s32)head)
		return LS_W_RWND;
	if (unsent < mss) {
		if ((nonagle & LS_TCP_NAGLE_CORK) ||
		    (!nonagle && tp->packets_out && (__s32)(sml - tp->snd_una) > 0 &&
		     (__s32)(sml - nxt) <= 0))
			return LS_W_NAGLE;
		if (sk->sk_tsq_flags & LS_TSQF_THROTTLED)
			return LS_W_NAGLE;           /* autocork */
	}
	if (sk->sk_tsq_flags & LS_TSQF_THROTTLED)
		return LS_W_SNDBUF;
	return LS_W_OTHER;
}

/* An event on a socket whose sender tracks bytes: the time since its last event to the
 * cause the state shows (the same for every byte waiting: the queue's head holds them);
 * a byte TCP sent without our tcp_tx hit is let go. */
static __always_inline void ls_wait_send_step(struct ls_wait_st *w, const struct tcp_sock *tp,
					      __u64 now)
{
	const struct sock *sk = &tp->inet_conn.icsk_inet.sk;
	__u64 from = w->s_last, paced = 0;
	__u32 nxt = tp->snd_nxt;
	int cause, live = 0;

	if (now <= from)
		return;
	if (sk->sk_pacing_status == LS_SK_PACING_NEEDED) {
		__u64 ws = tp->tcp_wstamp_ns;

		if (ws > from) {
			__u64 until = ws < now ? ws : now;

			paced = until - from;
			from = until;
		}
	}
	cause = ls_wait_cause(tp) & (LS_W_MAX - 1);
	for (int i = 0; i < LS_WAIT_SLOTS; i++) {
		struct ls_wait_slot *sl = &w->s[i];

		if (!sl->live)
			continue;
		if ((__s32)(nxt - sl->seq) > 0) {
			sl->live = 0;
			continue;
		}
		sl->ns[LS_W_PACING] += paced;
		sl->ns[cause] += now - from;
		live = 1;
	}
	w->s_last = live ? now : 0;
}

/* The receiver's: each byte in order (rcv_nxt past it) and not read yet, or behind a
 * hole. */
static __always_inline void ls_wait_recv_step(struct ls_wait_st *w, const struct tcp_sock *tp,
					      __u64 now)
{
	__u64 dt = now > w->r_last ? now - w->r_last : 0;
	__u32 nxt = tp->rcv_nxt;

	for (int i = 0; i < LS_WAIT_SLOTS; i++) {
		struct ls_wait_slot *sl = &w->r[i];

		if (sl->live)
			sl->ns[(__s32)(nxt - sl->seq) > 0 ? LS_W_UNREAD : LS_W_OOO] += dt;
	}
	w->r_last = now;
}

/* Both directions' steps at an event on sk (a struct sock, or sock_ops' bpf_sock); the
 * storage (NULL: none). The unsampled path's whole cost where nothing is tracked: the
 * lookup. */
static __always_inline struct ls_wait_st *ls_wait_event(void *sk)
{
	struct ls_wait_st *w = bpf_sk_storage_get(&sock_wait, sk, 0, 0);
	struct tcp_sock *tp;
	__u64 now;

	if (!w || !(w->s_last | w->r_last))
		return w;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return w;
	now = bpf_ktime_get_ns();
	if (w->s_last)
		ls_wait_send_step(w, tp, now);
	if (w->r_last)
		ls_wait_recv_step(w, tp, now);
	return w;
}

/* Does [seq, seq+len) hold the byte at? */
static __always_inline int ls_holds(__u32 seq, __u32 len, __u32 at)
{
	return at - seq < len;
}

/* The first sampled byte of [seq, seq+len) (ls_sampled said there is one). */
static __always_inline __u32 ls_first_sampled(__u32 seq)
{
	const struct ls_sampling *s = ls_sampling();
	__u32 size = s ? s->size : 0;

	return size ? seq + ls_to_sampled(seq, size) : seq;
}

/* A socket point's hit of [seq, seq+len) that holds the tracked byte b, which alone carries
 * the causes: reported as up to three ranges ([seq, b) and [b+1, end) where they hold a
 * sampled byte), one time stamp. */
static __always_inline void ls_emit_tracked(const struct ls_hit *h, __u8 point, __u32 netns,
					    __u32 b, const __u32 *wait)
{
	struct ls_hit part = *h;
	__u64 ts = ls_now();
	__u32 end = h->seq + h->len;

	if (b != h->seq && ls_sampled(h->seq, b - h->seq)) {
		part.len = b - h->seq;
		ls_emit_at(&part, point, ts, netns, 0, 0);
	}
	part.seq = b;
	part.len = 1;
	ls_emit_at_w(&part, point, ts, netns, 0, 0, wait);
	if (b + 1 != end && ls_sampled(b + 1, end - (b + 1))) {
		part.seq = b + 1;
		part.len = end - (b + 1);
		ls_emit_at(&part, point, ts, netns, 0, 0);
	}
}

/* Start tracking byte b in one of slots (sl: w->s or w->r), its direction's last event
 * moved to now (the caller stepped the others up to now). 0: no free slot, or b is
 * tracked already. */
static __always_inline int ls_wait_start(struct ls_wait_slot *slots, __u64 *last, __u32 b,
					 __u64 now)
{
	int free = -1;

	for (int i = 0; i < LS_WAIT_SLOTS; i++) {
		if (slots[i].live && slots[i].seq == b)
			return 0;
		if (!slots[i].live && free < 0)
			free = i;
	}
	if (free < 0)
		return 0;
	for (int i = 0; i < LS_WAIT_SLOTS; i++) {
		if (i != free)
			continue;
		for (int k = 0; k < LS_W_MAX; k++)
			slots[i].ns[k] = 0;
		slots[i].seq = b;
		slots[i].live = 1;
	}
	*last = now;
	return 1;
}

/* The live slot tracking a byte in [seq, seq+len) at or past `from` (-1: none). */
static __always_inline int ls_wait_find(const struct ls_wait_slot *slots, __u32 seq, __u32 len,
					__u32 from)
{
	for (int i = 0; i < LS_WAIT_SLOTS; i++)
		if (slots[i].live && ls_holds(seq, len, slots[i].seq) &&
		    (__s32)(slots[i].seq - from) >= 0)
			return i;
	return -1;
}

/* µs per cause of slot i's finished byte into out (ls_event's wait_*), its seq into *b, the
 * slot freed; *last cleared when no slot is live any more. */
static __always_inline void ls_wait_take(struct ls_wait_slot *slots, __u64 *last, int i,
					 __u32 *out, __u32 *b)
{
	int live = 0;

	for (int j = 0; j < LS_WAIT_SLOTS; j++) {
		if (j == i) {
			for (int k = 0; k < LS_W_MAX; k++)
				out[k] = (__u32)(slots[j].ns[k] / 1000);
			*b = slots[j].seq;
			slots[j].live = 0;
		} else if (slots[j].live) {
			live = 1;
		}
	}
	if (!live)
		*last = 0;
}

#endif
