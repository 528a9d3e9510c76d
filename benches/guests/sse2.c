/*
 * An SSE2 loop: the same kind of recurrence as x87.c on doubles in XMM
 * registers (compiled with -msse2 -mfpmath=sse), plus a dot product with
 * a small array that is loaded through memory.
 *
 * Constants and the array live on the stack, so that the code has no
 * absolute address (see x87.c).
 */
#include "bench.h"

const char bench_name[] = "sse2";
const unsigned bench_default_n = 100000000;

__attribute__((noinline)) unsigned bench_run(unsigned n)
{
    volatile double vk1 = 0.9999999, vk2 = 0.9999998, vinc = 0.000001;
    volatile double vscale = 1e-9, vone = 1.0, vb = 0.5;
    double k1 = vk1, k2 = vk2, inc = vinc, one = vone;
    double v[64];
    for (unsigned i = 0; i < 64; i++)
        v[i] = one / (double)(i + 1);
    double a = one, b = vb, dot = 0.0;
    for (unsigned i = 0; i < n; i++) {
        a = a * k1 + b;
        b = b * k2 + inc;
        dot += v[i & 63] * a;
    }
    /* int conversions: cvttsd2si (a long long one would need libgcc). */
    return (unsigned)(int)(a + b) ^ (unsigned)(int)(dot * vscale);
}
