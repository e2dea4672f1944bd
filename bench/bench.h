/*
 * bench.h - smtpbench internals shared by its files
 */
#ifndef SINK_BENCH_H
#define SINK_BENCH_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "sink/hist.h"
#include "sink/reply.h"
#include "sink/stamp.h"

#define BENCH_MAX_TARGETS 16
#define BENCH_MAX_SIZES   16
#define BENCH_MAX_BIND    64

enum err_class { E_CONNECT = 0, E_4XX, E_5XX, E_TIMEOUT, E_PROTOCOL, E_DROPPED, E_NCLASS };

struct body {
	uint32_t size; /* octets of content after the stamp line */
	uint32_t weight;
	char *wire; /* dot-stuffed body + ".\r\n" (DATA) */
	size_t wire_len;
	char *raw;     /* unstuffed body (BDAT) */
	uint64_t hash; /* stamp hash of raw */
};

struct bench_cfg {
	struct sockaddr_storage target[BENCH_MAX_TARGETS];
	socklen_t target_len[BENCH_MAX_TARGETS];
	int ntargets;
	struct sockaddr_in bind[BENCH_MAX_BIND];
	int nbind;
	uint32_t sessions;
	int threads;
	uint64_t messages; /* 0 with duration */
	uint64_t duration_ns;
	uint64_t warmup_ns;
	uint64_t msgs_per_session; /* 0 = reuse for the whole run */
	uint32_t rcpts;
	struct body bodies[BENCH_MAX_SIZES];
	int nbodies;
	uint32_t weight_total;
	const char *from_tpl;
	const char *to_tpl;
	const char *ehlo;
	bool helo;
	int pipelining; /* -1 auto, 0 off, 1 on */
	bool bdat;
	double rate;         /* messages/s, 0 = closed loop */
	double connect_rate; /* connections/s per run, 0 = unlimited */
	uint64_t timeout_ns;
	const char *json_path;
	bool quiet;
	int io;         /* 0 auto, 1 io_uring, 2 epoll */
	bool use_uring; /* what auto decided */
	uint64_t run_id;
	char argv_line[1024];
};

/* Per-thread results; merged at the end (no sharing while running). */
struct bench_stats {
	uint64_t delivered; /* final 250 received (all, warm-up included) */
	uint64_t measured;  /* delivered inside the measurement window */
	uint64_t measured_bytes;
	uint64_t failed; /* messages that did not get their final 250 */
	uint64_t bytes;  /* content octets of delivered messages */
	uint64_t sessions_opened;
	uint64_t sessions_done; /* ended with 221 */
	uint64_t commands;
	uint64_t errors[E_NCLASS];
	struct hist connect; /* connect() -> 220 */
	struct hist msg;     /* intended start -> final 250 (corrected) */
	struct hist msg_raw; /* actual MAIL write -> final 250 */
	struct hist cmd;     /* write -> first reply of that round trip */
};

struct bench_live { /* published each loop turn, read by main */
	uint64_t delivered, bytes, errors, sessions, p99_ns;
};

struct bench_thread {
	struct bench *b;
	int id;
	pthread_t th;
	uint32_t nsess;
	uint64_t quota; /* messages this thread may start (messages mode) */
	double rate;    /* this thread's share */
	struct bench_stats st;
	struct bench_live live;
	struct hist interval; /* for the live p99, reset each second */
	char first_errors[3][200];
	int nfirst;
	bool saturated_loop;
};

struct bench {
	struct bench_cfg cfg;
	struct bench_thread *th;
	uint64_t start_ns; /* after warm-up: measurement begins */
	uint64_t t0_ns;
	atomic_int stop; /* 1: start no new messages; 2: abort */
	atomic_int err_prints;
};

uint64_t bench_now(void);
int bench_run(struct bench_thread *t, bool uring);
int bench_probe_uring(char *why, size_t n);
void bench_report(struct bench *b, const struct bench_stats *tot, double secs, double cpu);
int bench_json(struct bench *b, const struct bench_stats *tot, double secs, double cpu,
               const char *path);
int bench_merge(int argc, char **argv);

#endif
