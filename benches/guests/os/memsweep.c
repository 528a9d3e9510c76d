/*
 * memsweep: n sweeps over a 32 MiB array, reading bytes at offsets 0,
 * 4097, 8194, ... modulo the size. 4097 is odd, so one sweep reads every
 * byte once and each read is on another page than the last: a test of
 * the TLB and of whatever stands behind it (shadow page tables).
 *
 * The array is written before the timed sweeps (all its pages are present
 * and private) and asks for 4 KiB pages, so the native run and a guest
 * kernel without large pages sweep the same kind of mapping.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "../bench.h"

#define SWEEP_BYTES (32u << 20)
#define SWEEP_STRIDE 4097u

const char bench_name[] = "memsweep";
const unsigned bench_default_n = 4;

static unsigned char *array;

void bench_setup(void)
{
    array = mmap(NULL, SWEEP_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (array == MAP_FAILED)
        abort();
    madvise(array, SWEEP_BYTES, MADV_NOHUGEPAGE);
    for (unsigned i = 0; i < SWEEP_BYTES; i++)
        array[i] = (unsigned char)(i * 2654435761u >> 24);
}

unsigned bench_run(unsigned n)
{
    unsigned idx = 0, sum = 0;
    for (unsigned s = 0; s < n; s++) {
        for (unsigned i = 0; i < SWEEP_BYTES; i++) {
            sum += array[idx];
            idx += SWEEP_STRIDE;
            if (idx >= SWEEP_BYTES)
                idx -= SWEEP_BYTES;
        }
    }
    return sum;
}
