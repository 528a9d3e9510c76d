/*
 * An x87 loop: a damped recurrence of fmul and fadd on doubles held in
 * x87 registers (compiled with -mfpmath=387). QEMU's TCG emulates the
 * x87 in software; a same-ISA translator runs these as they are.
 *
 * The constants live on the stack (volatile initializers are stored as
 * immediates), not in .rodata, so that the code has no absolute address
 * and is byte-identical in the multiboot and Linux builds.
 */
#include "bench.h"

const char bench_name[] = "x87";
const unsigned bench_default_n = 100000000;

__attribute__((noinline)) unsigned bench_run(unsigned n)
{
    volatile double vk1 = 0.9999999, vk2 = 0.9999998, vk3 = 0.9999997;
    volatile double vinc = 0.000001, vscale = 1000.0, vb = 0.5, vc = 0.25, va = 1.0;
    double k1 = vk1, k2 = vk2, k3 = vk3, inc = vinc;
    double a = va, b = vb, c = vc;
    for (unsigned i = 0; i < n; i++) {
        a = a * k1 + b;
        b = b * k2 + c;
        c = c * k3 + inc;
    }
    return (unsigned)(long long)((a + b + c) * vscale);
}
