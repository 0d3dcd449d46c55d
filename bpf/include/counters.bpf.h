/* Per-CPU outcome counters shared by every LatScope BPF object (agent probes, sync
 * responder and manager): each drop, refusal and hit is counted here and user space sums
 * the CPUs. Define LS_NCOUNTERS (the size of the object's counter enum) before including. */
#ifndef LATSCOPE_COUNTERS_BPF_H
#define LATSCOPE_COUNTERS_BPF_H

#ifndef LS_NCOUNTERS
#error "define LS_NCOUNTERS before including counters.bpf.h"
#endif

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LS_NCOUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void ls_count(__u32 slot)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &slot);

	if (c)
		*c += 1;
}

#endif
