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
#define SYNC_VERSION 2            /* 2: MAC under a rotating key (was: a clear token) */
#define SYNC_KIND_REQUEST 1
#define SYNC_KIND_REPLY 2
#define SYNC_MAC_WORDS 5          /* the MAC covers the probe's first 5 words (all but mac) */
#define SYNC_KEY_EPOCHS 3         /* keys installed at once: the previous, current, next */
#define SYNC_SAMPLE_SUSPICIOUS 1  /* sync_sample.flags: t3 < t2 or a negative delay */

/* All multi-byte fields are big-endian on the wire except epoch/probe_id/t2/t3/mac, which
 * are opaque 8-byte values written and read by the same kind of machine (little-endian
 * hosts everywhere LatScope runs).
 *
 * mac = SipHash-2-4 under the key of `epoch` (sync/SECURITY.md) over the first
 * SYNC_MAC_WORDS words: magic..t3_ns. A request carries t2 = t3 = 0 and its own MAC; the
 * responder verifies it, stamps t2/t3, sets kind = REPLY and replaces mac with the MAC of
 * the reply (kind differs, so neither MAC is valid for the other). probe_id is random per
 * probe, so it cannot be guessed. */
struct sync_probe {
	__u32 magic;
	__u8 version;
	__u8 kind;
	__u16 reserved;
	__u64 epoch;
	__u64 probe_id;
	__u64 t2_ns;
	__u64 t3_ns;
	__u64 mac;
};

/* A per-epoch SipHash key (map `keys`: epoch -> key, written by user space). */
struct sync_key {
	__u64 k0;
	__u64 k1;
};

/* One completed exchange, manager XDP -> ring buffer -> user space. */
struct sync_sample {
	__u64 probe_id;
	__u64 t1_ns;
	__u64 t2_ns;
	__u64 t3_ns;
	__u64 t4_ns;
	__u32 ifindex;
	__u32 flags;   /* SYNC_SAMPLE_SUSPICIOUS: counted, never fed to the estimator */
};

/* An address as the responder's allow-list and local maps and the manager's source check
 * key it. family (4 or 6) is part of the key, so an IPv4-mapped IPv6 address
 * (::ffff:a.b.c.d) never equals the IPv4 address a.b.c.d. IPv4 uses addr[0..4). */
struct sync_addr {
	__u32 family;
	__u32 reserved;
	__u8 addr[16];
};

/* Responder counters (per-CPU array index). Everything not answered is counted. */
enum sync_responder_counter {
	RESP_PROBES = 0,    /* datagrams to the sync port */
	RESP_ANSWERED,      /* bounced with t2/t3 */
	RESP_BAD_SOURCE,    /* source not allow-listed (IPv4-mapped IPv6 included): dropped */
	RESP_STALE_KEY,     /* epoch without an installed key (old, or too far ahead): dropped */
	RESP_BAD_MAC,       /* MAC does not verify: dropped */
	RESP_REPLAY,        /* probe id already answered within the key window: dropped */
	RESP_MALFORMED,     /* short payload, wrong magic/version/kind: dropped */
	RESP_NCOUNTERS,
};

/* Manager counters. */
enum sync_manager_counter {
	MGR_T1 = 0,         /* probes seen leaving (t1 stamped) */
	MGR_REPLIES,        /* replies seen at XDP */
	MGR_SAMPLES,        /* samples emitted to the ring buffer (suspicious ones included) */
	MGR_MALFORMED,      /* reply of another protocol version: dropped */
	MGR_STALE_KEY,      /* epoch without an installed key: dropped */
	MGR_BAD_MAC,        /* MAC does not verify: dropped */
	MGR_NO_T1,          /* no pending probe with this id (replayed, expired, never sent) */
	MGR_BAD_SOURCE,     /* not from the address the probe went to: dropped */
	MGR_SUSPICIOUS,     /* t3 < t2 or t4 - t1 < t3 - t2: flagged, never estimated */
	MGR_RINGBUF_FULL,   /* sample lost because the ring buffer was full */
	MGR_NCOUNTERS,
};

#endif
