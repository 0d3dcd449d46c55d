/* The injected clock of a simulated host (design §4). Every timestamp a LatScope BPF program
 * takes goes through ls_now(), so a host's probes and its sync responder share one clock:
 *   host_time = ktime + clock_offset_ns + floor((ktime - clock_epoch_ns) * clock_drift_ppb / 1e9)
 * which is exactly latscope.clock.ClockInjection.host_time (Python floors, so we floor too).
 * The globals are read-only data set by the loader before load (all zero = the true clock). */
#ifndef LATSCOPE_CLOCK_H
#define LATSCOPE_CLOCK_H

volatile const __s64 clock_offset_ns = 0;
volatile const __s64 clock_drift_ppb = 0;
volatile const __u64 clock_epoch_ns = 0;

/* Signed floor division by 1e9 without sdiv (BPF before cpu v4 has only unsigned division). */
static __always_inline __s64 ls_floor_div_1e9(__s64 a)
{
	if (a >= 0)
		return (__s64)((__u64)a / 1000000000ULL);
	return -(__s64)(((__u64)(-a) + 999999999ULL) / 1000000000ULL);
}

/* floor(since * ppb / 1e9) exactly, without overflowing 64 bits (a plain product would
 * overflow after ~3.5 days at 30 ppm): since = q * 1e9 + r with 0 <= r < 1e9. */
static __always_inline __s64 ls_drift_ns(__s64 since, __s64 ppb)
{
	__s64 q = ls_floor_div_1e9(since);
	__s64 r = since - q * 1000000000LL;
	return q * ppb + ls_floor_div_1e9(r * ppb);
}

static __always_inline __u64 ls_clock(__u64 ktime)
{
	return ktime + clock_offset_ns + ls_drift_ns((__s64)(ktime - clock_epoch_ns),
						     clock_drift_ppb);
}

static __always_inline __u64 ls_now(void)
{
	return ls_clock(bpf_ktime_get_ns());
}

#endif
