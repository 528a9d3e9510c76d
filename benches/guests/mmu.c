/*
 * MMU microbenchmarks: a multiboot guest that turns on 32-bit paging
 * itself (4 KiB pages, CR0.PG|WP, its own GDT and IDT with a #PF
 * handler) and times six loops with rdtsc:
 *
 *   random   one 4-byte read+write per iteration on a page of a 16 MiB
 *            area (4096 pages) picked by an LCG
 *   smc      patch the imm32 of a `mov eax, imm32; ret` and call it
 *   pf       touch a not-present page; the #PF handler sets P and irets;
 *            the loop clears P again and invlpg's
 *   invlpg   rewrite one PTE to alternate between two physical pages,
 *            invlpg, read through it and check which page it is
 *   cr3      mov cr3 (same value), then read 8 pages
 *   memsweep sum over a 32 MiB array, stride 4097 bytes (the classic
 *            memsweep walk), several sweeps
 *
 * The same source builds the static i386 Linux program that runs the
 * loops that need no privilege (random, smc, memsweep) natively: this file
 * is compiled ONCE with the freestanding guest flags into mmu.o (the
 * loops, shared by both builds, and the guest code), and once more with
 * -DMMU_LINUX into mmu_linux.o, which holds only the Linux main(); the
 * Linux program links both, so it times the very bytes the guest times.
 *
 * The guest is linked with mb_start.S (multiboot header, stack, exit
 * through isa-debug-exit with mb_main's return value) and link.ld.
 *
 * Command line (the multiboot one, or argv natively), key=value words:
 *   tsc_khz=N   the TSC rate; with it, ns per iteration are printed too
 *               (bt86's and QEMU TCG's guest TSC run at the host's rate)
 *   scale=N     multiply every iteration count by N/100 (default 100)
 *   sweeps=N    memsweep: sweeps over the array (default 4)
 *   paging=0    (guest) run random, smc and memsweep without paging, and
 *               skip the loops that need it
 *   only=NAME   run only this loop
 *   calibrate=1 (native) print tsc_khz=N measured against CLOCK_MONOTONIC
 *
 * Output, one line per loop:
 *   mmu=NAME iters=N check=HEX bad=N cycles=N [ns_per_iter=X.XX]
 * then `mmu_done paging=0|1 bad=N`. bad counts wrong values seen inside a
 * loop (a wrong return from the patched function, the wrong page behind
 * the rewritten PTE, a missing page fault); check is a sum of everything
 * read, the same under every system for the same command line.
 */

#include "x86.h"

typedef unsigned int u32;

/* --- the loops (shared by both builds) ---------------------------------- */

#define RANDOM_PAGES 4096u               /* 16 MiB */
#define RANDOM_BYTES (RANDOM_PAGES * 4096u)
#define SWEEP_BYTES (32u << 20)          /* 32 MiB */
#define SWEEP_STRIDE 4097u

#define N_RANDOM 2000000u
#define N_SMC 50000u
#define N_PF 500000u
#define N_INVLPG 1000000u
#define N_CR3 100000u
#define N_SWEEPS 4u

typedef u32 (*smc_fn)(void);

void fill(u32 *p, u32 words, u32 seed);
u32 loop_random(u32 *area, u32 iters);
u32 loop_smc(unsigned char *code, u32 iters, u32 *bad);
u32 loop_memsweep(const unsigned char *a, u32 iters);
void smc_init(unsigned char *code);

#ifndef MMU_LINUX

__attribute__((noinline)) void fill(u32 *p, u32 words, u32 seed)
{
    for (u32 i = 0; i < words; i++)
        p[i] = (i + seed) * 2654435761u;
}

/* One read and one write of a word of a page the LCG picks: the page from
 * the LCG's top 12 bits, the word within it from the next 10. */
__attribute__((noinline)) u32 loop_random(u32 *area, u32 iters)
{
    u32 x = 12345, sum = 0;
    for (u32 i = 0; i < iters; i++) {
        x = x * 1664525u + 1013904223u;
        u32 *p = area + (x >> 20) * 1024u + ((x >> 10) & 1023u);
        u32 v = *p;
        *p = v + 1;
        sum += v;
    }
    return sum;
}

/* The patched function: three nops (so the immediate is 4-byte aligned),
 * mov eax, imm32; ret. */
__attribute__((noinline)) void smc_init(unsigned char *code)
{
    static const unsigned char f[9] = {0x90, 0x90, 0x90, 0xB8, 0, 0, 0, 0, 0xC3};
    for (u32 i = 0; i < sizeof f; i++)
        code[i] = f[i];
}

__attribute__((noinline)) u32 loop_smc(unsigned char *code, u32 iters, u32 *bad)
{
    volatile u32 *imm = (volatile u32 *)(code + 4);
    u32 sum = 0, wrong = 0;
    for (u32 i = 0; i < iters; i++) {
        u32 want = (i + 1) * 2654435761u;
        *imm = want;
        u32 r = ((smc_fn)code)();
        wrong += r != want;
        sum += r;
    }
    *bad += wrong;
    return sum;
}

/* memsweep: byte reads at offsets 0, 4097, 8194, ... modulo the size (4097
 * is odd, so a sweep of SWEEP_BYTES iterations reads every byte once, each
 * read on another page than the last). */
__attribute__((noinline)) u32 loop_memsweep(const unsigned char *a, u32 iters)
{
    u32 idx = 0, sum = 0;
    for (u32 i = 0; i < iters; i++) {
        sum += a[idx];
        idx += SWEEP_STRIDE;
        if (idx >= SWEEP_BYTES)
            idx -= SWEEP_BYTES;
    }
    return sum;
}

/* --- guest-only code ------------------------------------------------------ */

/* Physical memory use (the guest has 128 MiB; the image sits at 1 MiB). */
#define RANDOM_BASE 0x01000000u   /* 16..32 MiB */
#define SWEEP_BASE 0x04000000u    /* 64..96 MiB */
#define SMC_PAGE 0x06000000u      /* the patched function, alone on its page */
#define ALIAS_VA 0x07E00000u      /* invlpg: this page is mapped to ... */
#define ALIAS_PA0 0x07E01000u     /* ... this page and ... */
#define ALIAS_PA1 0x07E02000u     /* ... this one, alternately */
#define PF_VA 0x07F00000u         /* pf: the page that loses its P bit */
#define MAPPED_BYTES (128u << 20) /* identity-mapped with 4 KiB pages */

#define PTE_P 0x001u
#define PTE_W 0x002u

#define MB_BOOT_MAGIC 0x2BADB002
#define MB_INFO_CMDLINE (1u << 2)

static u32 page_dir[1024] __attribute__((aligned(4096)));
/* A second address space (the same mappings) for the cr3switch loop. */
static u32 page_dir2[1024] __attribute__((aligned(4096)));
static u32 page_tables[MAPPED_BYTES >> 12] __attribute__((aligned(4096)));


static inline u32 read_cr0(void)
{
    u32 v;
    __asm__ volatile("mov %%cr0, %0" : "=r"(v));
    return v;
}

static inline void write_cr0(u32 v)
{
    __asm__ volatile("mov %0, %%cr0" : : "r"(v) : "memory");
}

static inline u32 read_cr3(void)
{
    u32 v;
    __asm__ volatile("mov %%cr3, %0" : "=r"(v));
    return v;
}

static inline void write_cr3(u32 v)
{
    __asm__ volatile("mov %0, %%cr3" : : "r"(v) : "memory");
}

static inline void invlpg(u32 va)
{
    __asm__ volatile("invlpg (%0)" : : "r"(va) : "memory");
}

static void put_str(const char *s)
{
    while (*s)
        outb(0xE9, (unsigned char)*s++);
}

/* *v /= d, returning the remainder, with 32-bit DIVs (no libgcc). */
static u32 divmod(u64 *v, u32 d)
{
    u32 hi = (u32)(*v >> 32), lo = (u32)*v;
    u32 qhi = hi / d, r = hi % d, qlo;
    __asm__("divl %4" : "=a"(qlo), "=d"(r) : "a"(lo), "d"(r), "rm"(d));
    *v = ((u64)qhi << 32) | qlo;
    return r;
}

static void put_u64(u64 v)
{
    char buf[24];
    int i = sizeof buf - 1;
    buf[i] = 0;
    do
        buf[--i] = (char)('0' + divmod(&v, 10));
    while (v);
    put_str(buf + i);
}

static void put_hex(u32 v)
{
    char buf[9];
    for (int i = 7; i >= 0; i--, v >>= 4)
        buf[i] = "0123456789abcdef"[v & 15];
    buf[8] = 0;
    put_str("0x");
    put_str(buf);
}

/* Never returns: the run ends through isa-debug-exit with status 2. */
static void __attribute__((noreturn)) die(void)
{
    outb(0xF4, 2);
    for (;;)
        __asm__ volatile("cli; hlt");
}

/* --- GDT, IDT, exception stubs -------------------------------------------- */

static const u64 gdt[3] = {
    0,
    0x00CF9A000000FFFFull, /* 0x08: code, flat 4 GiB, 32-bit */
    0x00CF92000000FFFFull, /* 0x10: data, flat 4 GiB */
};
static u64 idt[32];

struct __attribute__((packed)) table_ptr {
    unsigned short limit;
    u32 base;
};

/* The #PF stub calls pf_handler(cr2, error code, eip); the other vectors'
 * stubs call exc_handler(vector, error code, eip) (a dummy 0 pushed for
 * vectors without an error code). */
volatile u32 pf_faults;
void pf_handler(u32 cr2, u32 err, u32 eip);
void exc_handler(u32 vec, u32 err, u32 eip);
extern const u32 exc_stubs[32];

__asm__(
    "    .text\n"
    "    .balign 16\n"
    "pf_stub:\n"
    "    pushl %eax\n"
    "    pushl %ecx\n"
    "    pushl %edx\n"
    "    pushl 16(%esp)\n"  /* eip */
    "    pushl 16(%esp)\n"  /* error code (was at 12 before the push) */
    "    movl %cr2, %eax\n"
    "    pushl %eax\n"
    "    cld\n"
    "    call pf_handler\n"
    "    addl $12, %esp\n"
    "    popl %edx\n"
    "    popl %ecx\n"
    "    popl %eax\n"
    "    addl $4, %esp\n"
    "    iret\n"
    "exc_common:\n"         /* [esp] = vector, error code, eip */
    "    cld\n"
    "    call exc_handler\n" /* does not return */
    "1:  cli\n"
    "    hlt\n"
    "    jmp 1b\n"
#define STUB(n) "exc_stub_" #n ":\n    pushl $0\n    pushl $" #n "\n    jmp exc_common\n"
#define STUB_ERR(n) "exc_stub_" #n ":\n    pushl $" #n "\n    jmp exc_common\n"
    STUB(0) STUB(1) STUB(2) STUB(3) STUB(4) STUB(5) STUB(6) STUB(7)
    STUB_ERR(8) STUB(9) STUB_ERR(10) STUB_ERR(11) STUB_ERR(12) STUB_ERR(13)
    STUB(15) STUB(16) STUB_ERR(17) STUB(18) STUB(19) STUB(20) STUB_ERR(21)
    STUB(22) STUB(23) STUB(24) STUB(25) STUB(26) STUB(27) STUB(28)
    STUB_ERR(29) STUB_ERR(30) STUB(31)
    "    .section .rodata\n"
    "    .balign 4\n"
    "exc_stubs:\n"
    "    .long exc_stub_0, exc_stub_1, exc_stub_2, exc_stub_3\n"
    "    .long exc_stub_4, exc_stub_5, exc_stub_6, exc_stub_7\n"
    "    .long exc_stub_8, exc_stub_9, exc_stub_10, exc_stub_11\n"
    "    .long exc_stub_12, exc_stub_13, pf_stub, exc_stub_15\n"
    "    .long exc_stub_16, exc_stub_17, exc_stub_18, exc_stub_19\n"
    "    .long exc_stub_20, exc_stub_21, exc_stub_22, exc_stub_23\n"
    "    .long exc_stub_24, exc_stub_25, exc_stub_26, exc_stub_27\n"
    "    .long exc_stub_28, exc_stub_29, exc_stub_30, exc_stub_31\n"
    "    .text\n");

void exc_handler(u32 vec, u32 err, u32 eip)
{
    put_str("\nmmu: FAIL: unexpected exception ");
    put_u64(vec);
    put_str(" error code ");
    put_hex(err);
    put_str(" at eip ");
    put_hex(eip);
    put_str("\n");
    die();
}

/* Maps PF_VA back in; any other fault ends the run. */
void pf_handler(u32 cr2, u32 err, u32 eip)
{
    if ((cr2 & ~0xFFFu) == PF_VA && !(err & PTE_P)) {
        page_tables[PF_VA >> 12] |= PTE_P;
        pf_faults++;
        return;
    }
    put_str("\nmmu: FAIL: page fault at ");
    put_hex(cr2);
    put_str(" error code ");
    put_hex(err);
    put_str(" eip ");
    put_hex(eip);
    put_str("\n");
    die();
}

static void setup_descriptors(void)
{
    struct table_ptr g = {sizeof gdt - 1, (u32)gdt};
    __asm__ volatile("lgdt %0\n"
                     "ljmp $0x08, $1f\n"
                     "1: movw $0x10, %%ax\n"
                     "movw %%ax, %%ds\n"
                     "movw %%ax, %%es\n"
                     "movw %%ax, %%fs\n"
                     "movw %%ax, %%gs\n"
                     "movw %%ax, %%ss\n"
                     : : "m"(g) : "eax", "memory");
    for (u32 v = 0; v < 32; v++) {
        u32 h = exc_stubs[v];
        /* 32-bit interrupt gate, DPL 0, present, selector 0x08 */
        idt[v] = ((u64)(h & 0xFFFF0000u) << 32) | ((u64)0x8E00 << 32) | (0x08u << 16) | (h & 0xFFFFu);
    }
    struct table_ptr i = {sizeof idt - 1, (u32)idt};
    __asm__ volatile("lidt %0" : : "m"(i) : "memory");
}

static void setup_paging(void)
{
    for (u32 i = 0; i < (MAPPED_BYTES >> 12); i++)
        page_tables[i] = (i << 12) | PTE_P | PTE_W;
    for (u32 i = 0; i < 1024; i++)
        page_dir2[i] = page_dir[i] =
            i < (MAPPED_BYTES >> 22) ? ((u32)&page_tables[i * 1024] | PTE_P | PTE_W) : 0;
    write_cr3((u32)page_dir);
    write_cr0(read_cr0() | 0x80010000u); /* PG | WP */
}

/* --- the guest-only loops ------------------------------------------------- */

__attribute__((noinline)) static u32 loop_pf(u32 iters, u32 *bad)
{
    volatile u32 *pte = &page_tables[PF_VA >> 12];
    volatile u32 *p = (volatile u32 *)PF_VA;
    u32 sum = 0, before = pf_faults;
    *pte &= ~PTE_P;
    invlpg(PF_VA);
    for (u32 i = 0; i < iters; i++) {
        sum += *p; /* faults: the handler sets P and the read is retried */
        *pte &= ~PTE_P;
        invlpg(PF_VA);
    }
    *pte |= PTE_P;
    invlpg(PF_VA);
    *bad += (pf_faults - before) != iters;
    return sum + pf_faults - before;
}

__attribute__((noinline)) static u32 loop_invlpg(u32 iters, u32 *bad)
{
    volatile u32 *pte = &page_tables[ALIAS_VA >> 12];
    volatile u32 *p = (volatile u32 *)ALIAS_VA;
    u32 sum = 0, wrong = 0;
    for (u32 i = 0; i < iters; i++) {
        u32 pa = (i & 1) ? ALIAS_PA1 : ALIAS_PA0;
        *pte = pa | PTE_P | PTE_W;
        invlpg(ALIAS_VA);
        u32 v = *p; /* each page holds its own physical address */
        wrong += v != pa;
        sum += v;
    }
    *pte = ALIAS_VA | PTE_P | PTE_W;
    invlpg(ALIAS_VA);
    *bad += wrong;
    return sum;
}

/* A process switch: CR3 alternates between two page directories. */
__attribute__((noinline)) static u32 loop_cr3switch(u32 iters)
{
    u32 sum = 0;
    for (u32 i = 0; i < iters; i++) {
        write_cr3((u32)(i & 1 ? page_dir2 : page_dir));
        for (u32 k = 0; k < 8; k++)
            sum += *(volatile u32 *)(RANDOM_BASE + k * 0x201000u + (i & 7) * 4);
    }
    write_cr3((u32)page_dir);
    return sum;
}

__attribute__((noinline)) static u32 loop_cr3(u32 iters)
{
    u32 cr3 = read_cr3(), sum = 0;
    for (u32 i = 0; i < iters; i++) {
        write_cr3(cr3);
        for (u32 k = 0; k < 8; k++)
            sum += *(volatile u32 *)(RANDOM_BASE + k * 0x201000u + (i & 7) * 4);
    }
    return sum;
}

/* --- command line, timing, main ------------------------------------------- */

/* Where the value of the word "key=..." of the command line starts, or 0. */
static const char *value(const char *s, const char *key)
{
    while (*s) {
        while (*s == ' ')
            s++;
        const char *k = key, *w = s;
        while (*k && *w == *k)
            k++, w++;
        if (!*k && *w == '=')
            return w + 1;
        while (*s && *s != ' ')
            s++;
    }
    return 0;
}

/* The number in "key=N", or dflt. */
static u32 arg(const char *cmdline, const char *key, u32 dflt)
{
    const char *p = value(cmdline, key);
    if (!p || *p < '0' || *p > '9')
        return dflt;
    u32 n = 0;
    while (*p >= '0' && *p <= '9')
        n = n * 10 + (u32)(*p++ - '0');
    return n;
}

/* Is "only=" absent, or equal to name? */
static int selected(const char *cmdline, const char *name)
{
    const char *p = value(cmdline, "only");
    if (!p)
        return 1;
    while (*name && *p == *name)
        name++, p++;
    return !*name && (*p == ' ' || *p == '\0');
}

static u32 tsc_khz;

static void report(const char *name, u32 iters, u32 check, u32 bad, u64 cycles)
{
    put_str("mmu=");
    put_str(name);
    put_str(" iters=");
    put_u64(iters);
    put_str(" check=");
    put_hex(check);
    put_str(" bad=");
    put_u64(bad);
    put_str(" cycles=");
    put_u64(cycles);
    if (tsc_khz && iters) {
        /* ns * 100 per iteration = cycles * 1e8 / iters / tsc_khz */
        u64 v = cycles * 100000u;
        divmod(&v, iters);
        v *= 1000;
        divmod(&v, tsc_khz);
        u32 frac = divmod(&v, 100);
        put_str(" ns_per_iter=");
        put_u64(v);
        put_str(".");
        put_u64(frac / 10);
        put_u64(frac % 10);
    }
    put_str("\n");
}

static u32 scaled(u32 n, u32 scale)
{
    u64 v = (u64)n * scale;
    divmod(&v, 100);
    return v ? (u32)v : 1;
}

/* Every loop as the guest times it: n iterations, wrong values counted
 * in *bad. */
typedef u32 (*loop_fn)(u32 n, u32 *bad);

static u32 g_random(u32 n, u32 *bad)
{
    (void)bad;
    return loop_random((u32 *)RANDOM_BASE, n);
}

static u32 g_smc(u32 n, u32 *bad)
{
    return loop_smc((unsigned char *)SMC_PAGE, n, bad);
}

static u32 g_pf(u32 n, u32 *bad)
{
    return loop_pf(n, bad);
}

static u32 g_invlpg(u32 n, u32 *bad)
{
    return loop_invlpg(n, bad);
}

static u32 g_cr3(u32 n, u32 *bad)
{
    (void)bad;
    return loop_cr3(n);
}

static u32 g_cr3switch(u32 n, u32 *bad)
{
    (void)bad;
    return loop_cr3switch(n);
}

static u32 g_memsweep(u32 n, u32 *bad)
{
    (void)bad;
    return loop_memsweep((const unsigned char *)SWEEP_BASE, n);
}

/* Warms `run` up, times n iterations, reports; returns the wrong values. */
static u32 time_loop(const char *name, loop_fn run, u32 warmup, u32 n)
{
    u32 bad = 0;
    run(warmup, &bad);
    u64 t0 = rdtsc();
    u32 r = run(n, &bad);
    u64 t1 = rdtsc();
    report(name, n, r, bad, t1 - t0);
    return bad;
}

int mb_main(u32 magic, const u32 *info);

int mb_main(u32 magic, const u32 *info)
{
    const char *cmdline = "";
    if (magic == MB_BOOT_MAGIC && (info[0] & MB_INFO_CMDLINE) && info[4])
        cmdline = (const char *)info[4];
    tsc_khz = arg(cmdline, "tsc_khz", 0);
    u32 scale = arg(cmdline, "scale", 100);
    u32 paging = arg(cmdline, "paging", 1);
    u32 sweeps = arg(cmdline, "sweeps", N_SWEEPS);

    setup_descriptors();
    if (paging)
        setup_paging();

    /* The data: the random area and the memsweep array get a pattern; each
     * alias page holds its own physical address; the pf page a constant. */
    fill((u32 *)RANDOM_BASE, RANDOM_BYTES / 4, 0);
    fill((u32 *)SWEEP_BASE, SWEEP_BYTES / 4, 1);
    *(volatile u32 *)ALIAS_PA0 = ALIAS_PA0;
    *(volatile u32 *)ALIAS_PA1 = ALIAS_PA1;
    *(volatile u32 *)PF_VA = 0x5EED;
    smc_init((unsigned char *)SMC_PAGE);

    /* Each loop runs a short untimed warm-up first (translation, caches). */
    const struct {
        const char *name;
        loop_fn run;
        u32 needs_paging, warmup, n;
    } loops[] = {
        {"random", g_random, 0, 1000, scaled(N_RANDOM, scale)},
        {"smc", g_smc, 0, 100, scaled(N_SMC, scale)},
        {"pf", g_pf, 1, 100, scaled(N_PF, scale)},
        {"invlpg", g_invlpg, 1, 100, scaled(N_INVLPG, scale)},
        {"cr3", g_cr3, 1, 100, scaled(N_CR3, scale)},
        {"cr3switch", g_cr3switch, 1, 100, scaled(N_CR3, scale) / 10},
        {"memsweep", g_memsweep, 0, SWEEP_BYTES / SWEEP_STRIDE, sweeps * SWEEP_BYTES},
    };
    u32 total_bad = 0;
    for (u32 i = 0; i < sizeof loops / sizeof loops[0]; i++) {
        if ((paging || !loops[i].needs_paging) && selected(cmdline, loops[i].name))
            total_bad += time_loop(loops[i].name, loops[i].run, loops[i].warmup, loops[i].n);
    }
    put_str("mmu_done paging=");
    put_u64(paging);
    put_str(" bad=");
    put_u64(total_bad);
    put_str("\n");
    return total_bad ? 2 : 0;
}

#else /* MMU_LINUX: the native program (random, smc, memsweep) */

#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static u64 now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (u64)ts.tv_sec * 1000000000ull + (u64)ts.tv_nsec;
}

/* Anonymous memory with 4 KiB pages (no transparent huge pages), touched. */
static void *area(size_t bytes, int prot)
{
    void *p = mmap(NULL, bytes, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
#ifdef MADV_NOHUGEPAGE
    madvise(p, bytes, MADV_NOHUGEPAGE);
#endif
    memset(p, 0, bytes);
    return p;
}

static u32 arg(int argc, char **argv, const char *key, u32 dflt)
{
    size_t k = strlen(key);
    for (int i = 1; i < argc; i++)
        if (!strncmp(argv[i], key, k) && argv[i][k] == '=')
            return (u32)strtoul(argv[i] + k + 1, NULL, 0);
    return dflt;
}

static int selected(int argc, char **argv, const char *name)
{
    for (int i = 1; i < argc; i++)
        if (!strncmp(argv[i], "only=", 5))
            return !strcmp(argv[i] + 5, name);
    return 1;
}

static u32 tsc_khz;

static void report(const char *name, u32 iters, u32 check, u32 bad, u64 cycles, u64 ns)
{
    printf("mmu=%s iters=%u check=0x%08x bad=%u cycles=%llu ns=%llu", name, iters, check, bad, cycles, ns);
    if (tsc_khz)
        printf(" ns_per_iter=%.2f", (double)cycles * 1e6 / tsc_khz / iters);
    printf("\n");
}

static u32 scaled(u32 n, u32 scale)
{
    u64 v = (u64)n * scale / 100;
    return v ? (u32)v : 1;
}

int main(int argc, char **argv)
{
    if (arg(argc, argv, "calibrate", 0)) {
        u64 w0 = now_ns(), t0 = rdtsc();
        struct timespec d = {0, 300000000};
        nanosleep(&d, NULL);
        u64 w1 = now_ns(), t1 = rdtsc();
        printf("tsc_khz=%llu\n", (t1 - t0) * 1000000ull / (w1 - w0));
        return 0;
    }
    tsc_khz = arg(argc, argv, "tsc_khz", 0);
    u32 scale = arg(argc, argv, "scale", 100);
    u32 sweeps = arg(argc, argv, "sweeps", N_SWEEPS);

    u32 *random_area = area(RANDOM_BYTES, PROT_READ | PROT_WRITE);
    unsigned char *sweep_area = area(SWEEP_BYTES, PROT_READ | PROT_WRITE);
    unsigned char *code = area(4096, PROT_READ | PROT_WRITE | PROT_EXEC);
    fill(random_area, RANDOM_BYTES / 4, 0);
    fill((u32 *)sweep_area, SWEEP_BYTES / 4, 1);
    smc_init(code);

    u32 total_bad = 0, bad, n, r;
    u64 t0, t1, w0, w1;
    if (selected(argc, argv, "random")) {
        n = scaled(N_RANDOM, scale);
        loop_random(random_area, 1000);
        w0 = now_ns();
        t0 = rdtsc();
        r = loop_random(random_area, n);
        t1 = rdtsc();
        w1 = now_ns();
        report("random", n, r, 0, t1 - t0, w1 - w0);
    }
    if (selected(argc, argv, "smc")) {
        n = scaled(N_SMC, scale);
        bad = 0;
        loop_smc(code, 100, &bad);
        w0 = now_ns();
        t0 = rdtsc();
        r = loop_smc(code, n, &bad);
        t1 = rdtsc();
        w1 = now_ns();
        report("smc", n, r, bad, t1 - t0, w1 - w0);
        total_bad += bad;
    }
    if (selected(argc, argv, "memsweep")) {
        n = sweeps * SWEEP_BYTES;
        loop_memsweep(sweep_area, SWEEP_BYTES / SWEEP_STRIDE);
        w0 = now_ns();
        t0 = rdtsc();
        r = loop_memsweep(sweep_area, n);
        t1 = rdtsc();
        w1 = now_ns();
        report("memsweep", n, r, 0, t1 - t0, w1 - w0);
    }
    printf("mmu_done paging=native bad=%u\n", total_bad);
    return total_bad ? 2 : 0;
}

#endif
