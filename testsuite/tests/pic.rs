//! The 8259A pair as a guest sees it: programmed through its ports, it
//! passes COM1's interrupt (IRQ 4) to the CPU with the vector the guest
//! chose, and holds further requests until the end-of-interrupt.

use bt86_testsuite::pm::{self, handler_addr};
use bt86_testsuite::*;

const COUNT: u32 = pm::SEEN + 0x80;
const IIR_SEEN: u32 = pm::SEEN + 0x84;
const ISR_SEEN: u32 = pm::SEEN + 0x88;

/// Initializes the pair with vectors 0x20 and 0x28 and masks `imr`.
fn program_pic(a: &mut CodeAssembler, imr: u32) -> Result<(), IcedError> {
    for (port, v) in [
        (0x20, 0x11),
        (0x21, 0x20),
        (0x21, 0x04),
        (0x21, 0x01),
        (0x21, imr),
        (0xA0, 0x11),
        (0xA1, 0x28),
        (0xA1, 0x02),
        (0xA1, 0x01),
        (0xA1, 0xFF),
    ] {
        a.mov(al, v)?;
        a.out(port, al)?;
    }
    Ok(())
}

/// Turns on COM1's "transmitter empty" interrupt (IER bit 1) and OUT2,
/// which gates the UART's interrupt line on a PC.
fn enable_uart_interrupt(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(dx, 0x3FCu32)?;
    a.mov(al, 0x08)?;
    a.out(dx, al)?;
    a.mov(dx, 0x3F9u32)?;
    a.mov(al, 0x02)?;
    a.out(dx, al)
}

/// IRQ 4's handler: counts, records the UART's IIR and the PIC's ISR,
/// turns the UART's interrupt off, EOI, iret.
fn irq4_handler() -> (u32, Vec<u8>) {
    let at = handler_addr(1);
    let code = assemble_at(at, |a| {
        a.push(eax)?;
        a.push(edx)?;
        a.inc(dword_ptr(COUNT))?;
        a.mov(dx, 0x3FAu32)?;
        a.in_(al, dx)?;
        a.mov(byte_ptr(IIR_SEEN), al)?;
        a.mov(al, 0x0B)?; // OCW3: read ISR
        a.out(0x20, al)?;
        a.in_(al, 0x20)?;
        a.mov(byte_ptr(ISR_SEEN), al)?;
        a.mov(dx, 0x3F9u32)?;
        a.xor(al, al)?;
        a.out(dx, al)?;
        a.mov(al, 0x20)?;
        a.out(0x20, al)?;
        a.pop(edx)?;
        a.pop(eax)?;
        a.iretd()
    });
    (at, code)
}

#[test]
fn com1_interrupts_the_cpu_through_the_pic_with_the_programmed_vector() {
    let body = assemble_at(pm::BODY, |a| {
        let mut wait = a.create_label();
        program_pic(a, 0xEF)?;
        enable_uart_interrupt(a)?;
        a.sti()?;
        a.set_label(&mut wait)?;
        a.cmp(dword_ptr(COUNT), 0)?;
        a.je(wait)?;
        a.cli()?;
        a.hlt()
    });
    let r = pm::run(&[(0x24, 1, 0x8E)], body, vec![], vec![irq4_handler()]);
    r.assert_halted();
    assert_eq!(r.mem_u32(COUNT), 1, "one interrupt");
    assert_eq!(
        r.mem_u8(IIR_SEEN) & 0x0F,
        0x02,
        "the UART's THR-empty interrupt"
    );
    assert_eq!(
        r.mem_u8(ISR_SEEN),
        1 << 4,
        "IRQ 4 in service in its handler"
    );
    assert!(r.counter("interrupts") >= 1);
}

#[test]
fn a_masked_irq_waits_and_hlt_with_nothing_to_wake_it_ends_the_run() {
    let body = assemble_at(pm::BODY, |a| {
        program_pic(a, 0xFF)?;
        enable_uart_interrupt(a)?;
        a.sti()?;
        // IRQ 4 is requested but masked: hlt cannot be woken.
        a.hlt()?;
        a.hlt()
    });
    let r = pm::run(&[(0x24, 1, 0x8E)], body, vec![], vec![irq4_handler()]);
    r.assert_halted();
    assert_eq!(r.mem_u32(COUNT), 0);
}

#[test]
fn hlt_wakes_for_a_request_that_is_already_up() {
    let body = assemble_at(pm::BODY, |a| {
        program_pic(a, 0xEF)?;
        enable_uart_interrupt(a)?;
        a.sti()?;
        a.hlt()?;
        a.cli()?;
        a.hlt()
    });
    let r = pm::run(&[(0x24, 1, 0x8E)], body, vec![], vec![irq4_handler()]);
    r.assert_halted();
    assert_eq!(r.mem_u32(COUNT), 1);
}

/// With CR0.NE clear an unmasked x87 exception is reported on FERR#, IRQ
/// 13 through the slave: the handler clears it (port 0xF0, fnclex), and
/// the x87 instruction that was waiting runs after it.
#[test]
fn an_x87_exception_with_ne_clear_raises_irq_13() {
    const CW: u32 = pm::SEEN + 0x90;
    const FERR_COUNT: u32 = pm::SEEN + 0x94;
    let handler = assemble_at(handler_addr(2), |a| {
        a.push(eax)?;
        a.inc(dword_ptr(FERR_COUNT))?;
        a.out(0xF0, al)?;
        a.fnclex()?;
        a.mov(al, 0x20)?;
        a.out(0xA0, al)?;
        a.out(0x20, al)?;
        a.pop(eax)?;
        a.iretd()
    });
    let body = assemble_at(pm::BODY, |a| {
        a.mov(eax, cr0)?;
        a.and(eax, !0x20u32)?; // NE off
        a.mov(cr0, eax)?;
        program_pic(a, 0xFB)?;
        a.mov(al, !(1u8 << 5) as u32)?; // IRQ 13 = slave IR5
        a.out(0xA1, al)?;
        a.sti()?;
        a.fninit()?;
        a.mov(word_ptr(CW), 0x037Bu32)?; // zero-divide unmasked
        a.fldcw(word_ptr(CW))?;
        a.fld1()?;
        a.fldz()?;
        a.fdivp(st1, st0)?;
        a.wait()?;
        a.fld1()?;
        a.fnstsw(ax)?;
        a.cli()?;
        a.hlt()
    });
    let r = pm::run(
        &[(0x2D, 2, 0x8E)],
        body,
        vec![],
        vec![(handler_addr(2), handler)],
    );
    r.assert_halted();
    assert_eq!(r.mem_u32(FERR_COUNT), 1, "one IRQ 13");
    assert_eq!(r.reg(eax) & 0x80, 0, "ES clear after the handler");
}

/// The same with IRQ 13 masked: the CPU could only wait forever, and the
/// run ends with a message saying so.
#[test]
fn an_x87_exception_with_ne_clear_and_irq_13_masked_ends_the_run() {
    const CW: u32 = pm::SEEN + 0x90;
    let body = assemble_at(pm::BODY, |a| {
        a.mov(eax, cr0)?;
        a.and(eax, !0x20u32)?;
        a.mov(cr0, eax)?;
        program_pic(a, 0xFF)?;
        a.sti()?;
        a.fninit()?;
        a.mov(word_ptr(CW), 0x037Bu32)?;
        a.fldcw(word_ptr(CW))?;
        a.fld1()?;
        a.fldz()?;
        a.fdivp(st1, st0)?;
        a.wait()?;
        a.hlt()
    });
    let r = pm::run(&[], body, vec![], vec![]);
    assert!(
        matches!(&r.stop, Stop::Unsupported { what, .. } if what.contains("FERR#")),
        "{:?}",
        r.stop
    );
}
