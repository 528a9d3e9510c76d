/*
 * The few x86 instructions the benchmark guests and harnesses use, as
 * inline functions: rdtsc, and outb for the multiboot builds' debug
 * console and isa-debug-exit.
 */
#ifndef BT86_BENCH_X86_H
#define BT86_BENCH_X86_H

typedef unsigned long long u64;

static inline u64 rdtsc(void)
{
    unsigned lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi) : : "memory");
    return ((u64)hi << 32) | lo;
}

static inline void outb(unsigned short port, unsigned char v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

#endif
