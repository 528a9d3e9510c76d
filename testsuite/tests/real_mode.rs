//! Real mode: 16-bit code at CS*16 + IP, data through DS/ES/SS bases of
//! selector*16, the 16-bit stack, the interrupt vector table, far jumps
//! and calls, and the switch into protected mode and back.

use bt86_runtime::{Machine, MachineConfig, OutputSink};
use bt86_testsuite::*;

fn real(blocks: &[(u32, Vec<u8>)], code_seg: u16, start: u16, stack: u16) -> (Machine, Stop) {
    let config = MachineConfig {
        ram_size: 16 << 20,
        debugcon: OutputSink::None,
        serial: OutputSink::None,
        tu_budget: Some(1_000_000),
        stats: true,
        ..MachineConfig::default()
    };
    let mut m = Machine::new(config).unwrap();
    for (at, bytes) in blocks {
        m.memory().write(*at, bytes).unwrap();
    }
    m.reset_real(code_seg, start);
    m.cpu_mut().regs[4] = stack as u32;
    let stop = m.run().stop;
    (m, stop)
}

fn code16(ip: u16, body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(16).unwrap();
    body(&mut a).unwrap();
    a.assemble(ip as u64).unwrap()
}

#[test]
fn segments_stack_interrupts_and_far_jumps_in_real_mode() {
    // Code at 1000:0000 (linear 0x10000), the int 0x21 handler at
    // 1000:0100, a far jump target at 1100:0000, the stack at 3000:0200.
    let main = code16(0, |a| {
        let mut sub = a.create_label();
        let mut after = a.create_label();
        a.mov(ax, 0x2000u32)?;
        a.mov(ds, ax)?;
        a.mov(word_ptr(0x10), 0x1234u32)?; // linear 0x20010
        a.mov(ax, 0x3000u32)?;
        a.mov(ss, ax)?;
        a.mov(sp, 0x200u32)?;
        a.push(0x4444u32)?;
        a.pop(dx)?;
        a.int(0x21)?;
        a.call(sub)?;
        a.jmp(after)?;
        a.set_label(&mut sub)?;
        a.mov(si, word_ptr(0x10))?;
        a.ret()?;
        a.set_label(&mut after)?;
        a.db(&[0xEA, 0x00, 0x00, 0x00, 0x11]) // jmp far 1100:0000
    });
    let handler = code16(0x100, |a| {
        a.mov(bx, 0x55u32)?;
        a.iret()
    });
    let far = code16(0, |a| {
        a.mov(cx, cs)?;
        a.hlt()
    });
    let ivt = [0x00u8, 0x01, 0x00, 0x10]; // 1000:0100
    let (m, stop) = real(
        &[
            (0x10000, main),
            (0x10100, handler),
            (0x11000, far),
            (0x21 * 4, ivt.to_vec()),
        ],
        0x1000,
        0,
        0,
    );
    assert!(matches!(stop, Stop::Halted { .. }), "{stop:?}");
    let c = m.cpu();
    assert_eq!(m.memory().read_u16(0x20010).unwrap(), 0x1234);
    assert_eq!(c.regs[2] & 0xFFFF, 0x4444, "push/pop on the ss:sp stack");
    assert_eq!(
        m.memory().read_u16(0x301FE).unwrap(),
        0x1C,
        "the near call's return IP at 3000:01FE"
    );
    assert_eq!(c.regs[3] & 0xFFFF, 0x55, "int 0x21 went through the IVT");
    assert_eq!(c.regs[6] & 0xFFFF, 0x1234, "near call and ret");
    assert_eq!(c.regs[1] & 0xFFFF, 0x1100, "far jump loaded CS");
    assert_eq!(c.regs[4] & 0xFFFF, 0x200);
    assert!(
        m.report()
            .classes
            .iter()
            .any(|c| c.name == "real16" && c.translated.units > 0)
    );
}

#[test]
fn a_divide_error_in_real_mode_goes_through_the_ivt_with_the_faulting_ip() {
    let main = code16(0, |a| {
        a.mov(ax, 0x3000u32)?;
        a.mov(ss, ax)?;
        a.mov(sp, 0x100u32)?;
        a.xor(cx, cx)?;
        a.div(cx)?; // at 0x0A
        a.hlt()
    });
    let handler = code16(0x200, |a| {
        a.mov(bp, sp)?;
        a.mov(di, word_ptr(bp))?; // pushed IP
        a.hlt()
    });
    let ivt = [0x00u8, 0x02, 0x00, 0x10];
    let (m, stop) = real(
        &[(0x10000, main), (0x10200, handler), (0, ivt.to_vec())],
        0x1000,
        0,
        0,
    );
    assert!(matches!(stop, Stop::Halted { .. }), "{stop:?}");
    assert_eq!(m.cpu().regs[7] & 0xFFFF, 0x0A);
}

#[test]
fn real_mode_to_protected_mode_and_back() {
    switch_modes(0x1000, 0);
}

#[test]
fn cpl_is_0_after_setting_pe_whatever_the_real_mode_cs() {
    // CS = 0x0FFF has RPL-looking low bits 3; the CPU is still at CPL 0
    // until the far jump, which must be allowed into the ring-0 segment.
    switch_modes(0x0FFF, 0x10);
}

fn switch_modes(code_seg: u16, start: u16) {
    // GDT at 0x1000: null, 32-bit flat code (0x08), flat data (0x10),
    // 16-bit code with base 0x10000 (0x18), 16-bit data base 0 (0x20).
    let gdt: Vec<u8> = [
        (0u32, 0u32),
        (0x0000_FFFF, 0x00CF_9A00),
        (0x0000_FFFF, 0x00CF_9200),
        (0x0000_FFFF, 0x0000_9A01),
        (0x0000_FFFF, 0x0000_9200),
    ]
    .iter()
    .flat_map(|(lo, hi)| [lo.to_le_bytes(), hi.to_le_bytes()].concat())
    .collect();
    let gdtr: Vec<u8> = [&0x27u16.to_le_bytes()[..], &0x1000u32.to_le_bytes()[..]].concat();
    let main = code16(0, |a| {
        a.lgdt(ptr(0x0800).ds())?; // ds = 0 at reset: the GDTR image at 0x800
        a.mov(eax, cr0)?;
        a.or(eax, 1)?;
        a.mov(cr0, eax)?;
        a.db(&[0x66, 0xEA])?; // jmp far dword 0x08:0x12000
        a.dd(&[0x12000])?;
        a.dw(&[0x08])
    });
    let pm32 = assemble_at(0x12000, |a| {
        a.mov(ax, 0x10u32)?;
        a.mov(ds, ax)?;
        a.mov(dword_ptr(0x50000), 0x3232_3232u32)?;
        a.db(&[0xEA])?; // jmp far 0x18:0x2100 (16-bit code, linear 0x12100)
        a.dd(&[0x2100])?;
        a.dw(&[0x18])
    });
    let pm16 = code16(0x2100, |a| {
        a.mov(ax, 0x20u32)?;
        a.mov(ds, ax)?;
        a.mov(eax, cr0)?;
        a.and(eax, 0xFFFF_FFFEu32)?;
        a.mov(cr0, eax)?;
        a.db(&[0xEA, 0x00, 0x22, 0x00, 0x10]) // jmp far 1000:2200 (real mode)
    });
    let back = code16(0x2200, |a| {
        a.xor(ax, ax)?;
        a.mov(ds, ax)?;
        a.mov(word_ptr(0x60), 0x1616u32)?;
        a.mov(bx, cs)?;
        a.hlt()
    });
    let (m, stop) = real(
        &[
            (0x1000, gdt),
            (0x800, gdtr),
            (0x10000, main),
            (0x12000, pm32),
            (0x12100, pm16),
            (0x12200, back),
        ],
        code_seg,
        start,
        0x7000,
    );
    assert!(matches!(stop, Stop::Halted { .. }), "{stop:?}");
    assert_eq!(
        m.memory().read_u32(0x50000).unwrap(),
        0x3232_3232,
        "32-bit protected mode ran"
    );
    assert_eq!(
        m.memory().read_u16(0x60).unwrap(),
        0x1616,
        "back in real mode"
    );
    assert_eq!(m.cpu().regs[3] & 0xFFFF, 0x1000);
    assert_eq!(m.cpu().cr0 & 1, 0);
    let classes: Vec<_> = m
        .report()
        .classes
        .iter()
        .filter(|c| c.translated.units > 0)
        .map(|c| c.name)
        .collect();
    assert!(
        classes.contains(&"real16") && classes.contains(&"kernel32") && classes.contains(&"pm16"),
        "{classes:?}"
    );
}

#[test]
fn ip_wraps_at_64_kib_in_real_mode() {
    // inc ax at 1000:FFFF falls through to 1000:0000, where inc bx; hlt.
    let (m, stop) = real(
        &[(0x1FFFF, vec![0x40]), (0x10000, vec![0x43, 0xF4])],
        0x1000,
        0xFFFF,
        0,
    );
    assert!(matches!(stop, Stop::Halted { eip: 2 }), "{stop:?}");
    assert_eq!(m.cpu().regs[0] & 0xFFFF, 1);
    assert_eq!(m.cpu().regs[3] & 0xFFFF, 1);
}

#[test]
fn a_call_at_the_end_of_the_segment_pushes_the_wrapped_ip() {
    // call 0x0010 at 1000:FFFD returns to 1000:0000; the target pops that
    // return IP into ax and halts.
    let call = code16(0xFFFD, |a| a.call(0x0010u64));
    assert_eq!(call.len(), 3);
    let target = code16(0x0010, |a| {
        a.pop(ax)?;
        a.hlt()
    });
    let (m, stop) = real(
        // The stack slot starts as 0xAAAA, so a missing push shows.
        &[(0x1FFFD, call), (0x10010, target), (0x7FFC, vec![0xAA; 4])],
        0x1000,
        0xFFFD,
        0x8000,
    );
    assert!(matches!(stop, Stop::Halted { eip: 0x12 }), "{stop:?}");
    assert_eq!(m.cpu().regs[0] & 0xFFFF, 0);
    assert_eq!(m.cpu().regs[4] & 0xFFFF, 0x8000);
}

#[test]
fn enter_on_a_16_bit_stack_moves_only_sp_and_takes_sp_as_the_frame_pointer() {
    // Both enters start at SP 4 with ESP's upper half 1, so SP wraps below
    // 0 and the upper half must stay. Nested (emulated), 16-bit operands:
    // push BP, push [BP-2] from the enclosing frame, push the frame pointer.
    let nested = code16(0x100, |a| {
        a.mov(esp, 0x0001_0004u32)?;
        a.mov(ebp, 0x9000u32)?;
        a.mov(word_ptr(0x8FFEu32), 0x1111u32)?;
        a.enter(6u32, 2u32)?;
        a.hlt()
    });
    let (m, stop) = real(&[(0x100, nested)], 0, 0x100, 0);
    assert!(matches!(stop, Stop::Halted { .. }), "{stop:?}");
    assert_eq!(m.cpu().regs[4], 0x0001_FFF8, "esp");
    assert_eq!(m.cpu().regs[5], 0x0002, "ebp");
    let mem = m.memory();
    assert_eq!(mem.read_u16(0x0002).unwrap(), 0x9000, "old bp");
    assert_eq!(mem.read_u16(0x0000).unwrap(), 0x1111, "display entry");
    assert_eq!(mem.read_u16(0xFFFE).unwrap(), 0x0002, "frame pointer");

    // Level 0 (translated), 32-bit operands: EBP becomes SP zero-extended.
    let flat = code16(0x100, |a| {
        a.mov(esp, 0x0001_0004u32)?;
        a.mov(ebp, 0x1234_5678u32)?;
        a.db(&[0x66, 0xC8, 0x04, 0x00, 0x00])?; // o32 enter 4, 0
        a.hlt()
    });
    let (m, stop) = real(&[(0x100, flat)], 0, 0x100, 0);
    assert!(matches!(stop, Stop::Halted { .. }), "{stop:?}");
    assert_eq!(m.cpu().regs[4], 0x0001_FFFC, "esp");
    assert_eq!(m.cpu().regs[5], 0, "ebp");
    assert_eq!(m.memory().read_u32(0).unwrap(), 0x1234_5678, "old ebp");
}

/// Measurement, not a check: ns per iteration of a real-mode loop that
/// reads, writes and pushes (run with --ignored --nocapture).
#[test]
#[ignore = "measurement"]
fn measure_real_mode_memory_loop() {
    const N: u32 = 500_000;
    let main = code16(0, |a| {
        let mut top = a.create_label();
        a.mov(ax, 0x2000u32)?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.db(&[0x66])?;
        a.rdtsc()?;
        a.db(&[0x66])?;
        a.mov(ebp, eax)?;
        a.mov(ecx, N)?;
        a.xor(si, si)?;
        a.set_label(&mut top)?;
        a.mov(ax, word_ptr(si))?;
        a.add(word_ptr(si + 2), ax)?;
        a.push(ax)?;
        a.pop(bx)?;
        a.add(si, 4)?;
        a.and(si, 0xFFFu32)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.rdtsc()?;
        a.sub(eax, ebp)?;
        a.hlt()
    });
    let (m, stop) = real(&[(0x10000, main)], 0x1000, 0, 0x8000);
    assert!(matches!(stop, Stop::Halted { .. }), "{stop:?}");
    let cycles = m.cpu().regs[0] as f64;
    let tsc_ghz = tsc_ghz();
    eprintln!(
        "real-mode memory loop: {:.2} ns/iteration",
        cycles / tsc_ghz / N as f64
    );
}

#[test]
fn real_mode_code_is_its_own_class_in_the_statistics() {
    let code = code16(0, |a| {
        let mut top = a.create_label();
        a.mov(cx, 1000u32)?;
        a.set_label(&mut top)?;
        a.add(ax, 1)?;
        a.add(bx, 2)?;
        a.dec(cx)?;
        a.jnz(top)?;
        a.hlt()
    });
    let (m, stop) = real(&[(0x10000, code)], 0x1000, 0, 0x1000);
    assert!(matches!(stop, Stop::Halted { .. }), "{stop:?}");
    // mov cx, then 1000 times add, add, dec, jnz, then hlt.
    let report = m.report();
    assert_eq!(executed(&report, "real16"), (4002, 3001));
    assert_eq!(executed(&report, "kernel32"), (0, 0));
    let real16 = report.classes.iter().find(|c| c.name == "real16").unwrap();
    // From mov cx and from the loop head, each on past jnz to hlt.
    assert_eq!(real16.translated.units, 2, "{}", report.text());
    assert_eq!(real16.translated, report.total);
}
