/*
 * Freestanding harness of the multiboot build: reads n from the kernel
 * command line (if any), times bench_run(n) with rdtsc, prints the result
 * line to the debug console (port 0xE9), and returns the isa-debug-exit
 * value (0: success).
 */
#include "bench.h"
#include "x86.h"

#define MB_BOOT_MAGIC 0x2BADB002
#define MB_INFO_CMDLINE (1u << 2)

static void put_str(const char *s)
{
    while (*s)
        outb(0xE9, (unsigned char)*s++);
}

/* v /= 10, returning the remainder, with 32-bit DIVs (no libgcc). */
static unsigned divmod10(u64 *v)
{
    unsigned hi = (unsigned)(*v >> 32), lo = (unsigned)*v;
    unsigned qhi = hi / 10, r = hi % 10, qlo;
    __asm__("divl %4" : "=a"(qlo), "=d"(r) : "a"(lo), "d"(r), "rm"(10u));
    *v = ((u64)qhi << 32) | qlo;
    return r;
}

static void put_u64(u64 v)
{
    char buf[24];
    int i = sizeof buf - 1;
    buf[i] = 0;
    do
        buf[--i] = (char)('0' + divmod10(&v));
    while (v);
    put_str(buf + i);
}

/* The first decimal number on the command line, or dflt if there is none. */
static unsigned parse_n(const char *s, unsigned dflt)
{
    while (*s && (*s < '0' || *s > '9'))
        s++;
    if (!*s)
        return dflt;
    unsigned n = 0;
    while (*s >= '0' && *s <= '9')
        n = n * 10 + (unsigned)(*s++ - '0');
    return n;
}

int mb_main(unsigned magic, const unsigned *info);

int mb_main(unsigned magic, const unsigned *info)
{
    unsigned n = bench_default_n;
    if (magic == MB_BOOT_MAGIC && (info[0] & MB_INFO_CMDLINE) && info[4])
        n = parse_n((const char *)info[4], n);

    u64 t0 = rdtsc();
    unsigned r = bench_run(n);
    u64 t1 = rdtsc();

    put_str("bench=");
    put_str(bench_name);
    put_str(" n=");
    put_u64(n);
    put_str(" result=");
    put_u64(r);
    put_str(" cycles=");
    put_u64(t1 - t0);
    put_str("\n");
    return 0;
}
