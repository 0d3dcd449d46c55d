/* LatScope clock sync: the probe wire format and the sample event.
 *
 * Shared by sync/bpf/responder.bpf.c, sync/bpf/manager.bpf.c and the Python decoder
 * (latscope.sync.wire parses the structs below out of this file, so the layouts cannot
 * drift). Only fixed-width __u8/__u16/__u32/__u64 fields and 8-byte natural alignment.
 *
 * A probe is the UDP payload of a datagram manager:any -> host:sync_port. The host's XDP
 * responder writes t2/t3 into it, flips kind to REPLY and bounces it back (XDP_TX).
 */
#ifndef LATSCOPE_SYNC_H
#define LATSCOPE_SYNC_H

#define SYNC_MAGIC 0x4c53594eU /* "LSYN", network byte order on the wire */
#define SYNC_VERSION 1
#define SYNC_KIND_REQUEST 1
#define SYNC_KIND_REPLY 2

/* All multi-byte fields are big-endian on the wire except t2/t3/probe_id/token, which
 * are opaque 8-byte values written and read by the same kind of machine (little-endian
 * hosts everywhere LatScope runs). */
struct sync_probe {
	__u32 magic;
	__u8 version;
	__u8 kind;
	__u16 reserved;
	__u64 token;
	__u64 probe_id;
	__u64 t2_ns;
	__u64 t3_ns;
};

/* One completed exchange, manager XDP -> ring buffer -> user space. */
struct sync_sample {
	__u64 probe_id;
	__u64 t1_ns;
	__u64 t2_ns;
	__u64 t3_ns;
	__u64 t4_ns;
	__u32 ifindex;
	__u32 flags;
};

/* Key of the responder's allow-list and of the manager's peer filter: IPv4 addresses
 * are stored IPv4-mapped (::ffff:a.b.c.d). */
struct sync_addr {
	__u8 addr[16];
};

/* Responder counters (per-CPU array index). Everything not answered is counted. */
enum sync_responder_counter {
	RESP_PROBES = 0,    /* datagrams to the sync port */
	RESP_ANSWERED,      /* bounced with t2/t3 */
	RESP_BAD_SOURCE,    /* source not allow-listed: dropped */
	RESP_BAD_TOKEN,     /* wrong session token: dropped */
	RESP_MALFORMED,     /* short payload, wrong magic/version/kind: dropped */
	RESP_NCOUNTERS,
};

/* Manager counters. */
enum sync_manager_counter {
	MGR_T1 = 0,         /* probes seen leaving (t1 stamped) */
	MGR_REPLIES,        /* replies seen at XDP */
	MGR_SAMPLES,        /* samples emitted to the ring buffer */
	MGR_NO_T1,          /* reply without a stamped departure (unknown or expired id) */
	MGR_BAD_TOKEN,      /* reply with the wrong token: dropped */
	MGR_RINGBUF_FULL,   /* sample lost because the ring buffer was full */
	MGR_NCOUNTERS,
};

#endif
