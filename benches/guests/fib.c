/*
 * Recursive Fibonacci: fib(0) = 0, fib(1) = 1. Call/return heavy, which
 * stresses a binary translator's indirect-branch (return) handling.
 */
#include "bench.h"

const char bench_name[] = "fib";
const unsigned bench_default_n = 40;

__attribute__((noinline)) static unsigned fib(unsigned n)
{
    if (n < 2)
        return n;
    return fib(n - 1) + fib(n - 2);
}

__attribute__((noinline)) unsigned bench_run(unsigned n)
{
    return fib(n);
}
