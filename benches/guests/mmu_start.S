/*
 * Multiboot (v1) entry of the MMU benchmark guest (mmu.c): the header, a
 * stack, mb_main(magic, info), and an exit through isa-debug-exit (port
 * 0xF4) with mb_main's return value (exit status (v << 1) | 1 under bt86
 * and QEMU). Unlike mb_start.S it sets up no FPU/SSE state, and it passes
 * the boot magic (eax) and the information pointer (ebx) untouched.
 */
#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000003 /* page-align modules, memory info */

    .section .multiboot, "a"
    .balign 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

    .section .bss
    .balign 4096
stack_bottom:
    .skip 65536
stack_top:

    .section .text
    .globl _start
    .type _start, @function
_start:
    cli
    cld
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
