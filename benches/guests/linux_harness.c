/*
 * Harness of the static i386 Linux build: n from argv[1] (if any), runs
 * bench_setup() if the benchmark has one, times bench_run(n) with rdtsc (and CLOCK_MONOTONIC for wall time, from which
 * run.sh derives the TSC rate), and prints the same result line as the
 * multiboot harness plus ns=.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "bench.h"
#include "x86.h"

/* Untimed preparation, for the benchmarks that need it (memsweep). */
extern void bench_setup(void) __attribute__((weak));

static u64 now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (u64)ts.tv_sec * 1000000000ull + (u64)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    unsigned n = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 0) : bench_default_n;

    if (bench_setup)
        bench_setup();
    u64 w0 = now_ns();
    u64 t0 = rdtsc();
    unsigned r = bench_run(n);
    u64 t1 = rdtsc();
    u64 w1 = now_ns();

    printf("bench=%s n=%u result=%u cycles=%llu ns=%llu\n", bench_name, n, r, t1 - t0, w1 - w0);
    return 0;
}
