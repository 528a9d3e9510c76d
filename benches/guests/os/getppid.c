/*
 * getppid: n getppid() system calls, the cheapest round trip into the
 * kernel and back. Made with syscall() so that libc cannot cache the
 * answer.
 */
#include <sys/syscall.h>
#include <unistd.h>

#include "../bench.h"

const char bench_name[] = "getppid";
const unsigned bench_default_n = 2000000;

unsigned bench_run(unsigned n)
{
    unsigned sum = 0;
    for (unsigned i = 0; i < n; i++)
        sum += (unsigned)syscall(SYS_getppid) != 0;
    return sum;
}
