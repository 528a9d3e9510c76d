/*
 * The interface between a benchmark and its two harnesses.
 *
 * A benchmark source (countprimes.c, fib.c) is compiled ONCE, with the
 * freestanding guest flags, and that same object is linked into both the
 * multiboot guest (mb_start.S + mb_harness.c) and the static i386 Linux
 * program (linux_harness.c), so both time byte-identical code
 * (run.sh checks this with objdump).
 */
#ifndef BENCH_H
#define BENCH_H

/* The benchmark's name, as printed in its result line. */
extern const char bench_name[];
/* The problem size used when none is given (argv[1] / the multiboot command line). */
extern const unsigned bench_default_n;
/* The timed work. Both harnesses read the TSC right before and after this call. */
unsigned bench_run(unsigned n);

/*
 * Both harnesses print one line in this format (the Linux one appends ns=):
 *   bench=NAME n=N result=R cycles=C
 */

#endif
