/* A TCP ping-pong between two network namespaces in one thread, for the probes' cost per
 * packet without bpf_stats (benchmarks/agent_overhead.py, phase rtt). One thread on one CPU
 * writes a byte on the client socket, reads it on the server socket, writes it back and reads
 * it on the client: over a veth the receive path runs in the sender's softirq on the same
 * CPU, so each round trip is two packets through every layer of both namespaces, timed from
 * outside the kernel. Prints the mean nanoseconds per round trip after a warm-up.
 *
 *     pingpong CLIENT_NS SERVER_NS SERVER_ADDR PORT ROUND_TRIPS [WARM_UP]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Sockets keep the namespace they were made in, so one process can hold both ends. */
static int enter(const char *ns)
{
	char path[256];
	int fd, ok;

	snprintf(path, sizeof(path), "/run/netns/%s", ns);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	ok = setns(fd, CLONE_NEWNET);
	close(fd);
	return ok;
}

static double now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	long n, warm, i;
	int one = 1, l, c, s;
	double t0 = 0;
	char b = 'x';

	if (argc < 6) {
		fprintf(stderr, "usage: pingpong CLIENT_NS SERVER_NS SERVER_ADDR PORT ROUND_TRIPS "
			"[WARM_UP]\n");
		return 2;
	}
	n = atol(argv[5]);
	warm = argc > 6 ? atol(argv[6]) : 20000;
	sa.sin_port = htons(atoi(argv[4]));
	if (n <= 0 || inet_pton(AF_INET, argv[3], &sa.sin_addr) != 1) {
		fprintf(stderr, "pingpong: ROUND_TRIPS must be > 0 and SERVER_ADDR an IPv4 address\n");
		return 2;
	}
	if (enter(argv[2])) {
		perror(argv[2]);
		return 1;
	}
	l = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(l, (struct sockaddr *)&sa, sizeof(sa)) || listen(l, 1)) {
		perror("pingpong: listen");
		return 1;
	}
	if (enter(argv[1])) {
		perror(argv[1]);
		return 1;
	}
	c = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(c, (struct sockaddr *)&sa, sizeof(sa))) {
		perror("pingpong: connect");
		return 1;
	}
	s = accept(l, NULL, NULL);
	setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	for (i = 0; i < warm + n; i++) {
		if (i == warm)
			t0 = now_ns();
		if (write(c, &b, 1) != 1 || read(s, &b, 1) != 1 || write(s, &b, 1) != 1 ||
		    read(c, &b, 1) != 1) {
			perror("pingpong: round trip");
			return 1;
		}
	}
	printf("%.1f\n", (now_ns() - t0) / n);
	return 0;
}
