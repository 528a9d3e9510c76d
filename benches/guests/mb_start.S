/*
 * Multiboot (v1) entry for the benchmark guests: the header, a stack, a
 * call to mb_main(magic, info), and an exit through isa-debug-exit (port
 * 0xF4) with mb_main's return value (bt86/QEMU exit status (v << 1) | 1).
 */
#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000003 /* page-align modules, memory info */

    .section .multiboot, "a"
    .balign 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

    .section .bss
    .balign 16
stack_bottom:
    .skip 65536
stack_top:

    .section .text
    .globl _start
    .type _start, @function
_start:
    cli
    cld
    /* The FPU and SSE as an OS sets them up: CR0.MP and NE, CR4.OSFXSR
     * and OSXMMEXCPT, a clean x87 (in ecx: eax holds the boot magic). */
    mov %cr0, %ecx
    or $0x22, %ecx
    mov %ecx, %cr0
    mov %cr4, %ecx
    or $0x600, %ecx
    mov %ecx, %cr4
    fninit
    mov $stack_top, %esp
    sub $8, %esp /* 16-byte aligned at the call, as the i386 ABI wants */
    xor %ebp, %ebp
    push %ebx /* multiboot information */
    push %eax /* boot magic */
    call mb_main
    mov $0xF4, %dx
    outb %al, %dx
    /* Without an isa-debug-exit device: hlt with interrupts off. */
1:  cli
    hlt
    jmp 1b
    .size _start, . - _start

    .section .note.GNU-stack, "", @progbits
