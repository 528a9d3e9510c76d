/*
 * countPrimes: the number of primes below n, by trial division of each odd
 * candidate by the odd numbers up to its square root. Integer only (the
 * guest CPU has no FPU/SSE). The inner loop is dominated by 32-bit DIV.
 */
#include "bench.h"

const char bench_name[] = "countprimes";
const unsigned bench_default_n = 5000000;

__attribute__((noinline)) unsigned bench_run(unsigned n)
{
    unsigned count = n > 2; /* 2 */
    for (unsigned i = 3; i < n; i += 2) {
        unsigned prime = 1;
        for (unsigned d = 3; d * d <= i; d += 2) {
            if (i % d == 0) {
                prime = 0;
                break;
            }
        }
        count += prime;
    }
    return count;
}
