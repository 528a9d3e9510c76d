//! Segments with non-zero bases in protected mode: data, stack, FS/GS and
//! string operands add their segment's base; segment loads check the
//! descriptor (Intel SDM Vol. 3A, 3.4 and 5.4-5.6).

use bt86_testsuite::pm::segment;
use bt86_testsuite::*;

const GDT: u32 = 0x1000;
const GDTR: u32 = 0x1800;
const BODY: u32 = 0x10_4000;

const FLAT_DATA: u32 = 0x10;
const DATA_2M: u32 = 0x18; // base 0x200000, byte limit 0xFFFFF
const DATA_3M: u32 = 0x20; // base 0x300000, 4 GiB limit
const STACK_4M: u32 = 0x28; // base 0x400000
const EXEC_ONLY: u32 = 0x30; // execute-only code
const ABSENT: u32 = 0x38; // not present data
const CODE16: u32 = 0x40; // 16-bit code, base CODE16_BASE
const CODE16_BASE: u32 = 0x12_0000;
const STACK16: u32 = 0x48; // 16-bit stack (B clear), base STACK16_BASE
const STACK16_BASE: u32 = 0x5_0000;
const LDT_SEL: u32 = 0x50; // an LDT at LDT_ADDR with two descriptors
const LDT_ADDR: u32 = 0x6000;

fn run(body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Run {
    run_with(body, vec![])
}

fn run_with(
    body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
    extra: Vec<(u32, Vec<u8>)>,
) -> Run {
    run_opts(Options::default(), body, extra)
}

/// [`run`] with paging on and beyond RAM not mapped ([`Options::paged_ram`]).
fn run_paged(body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Run {
    run_opts(Options::paged(), body, vec![])
}

fn run_opts(
    opts: Options,
    body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
    extra: Vec<(u32, Vec<u8>)>,
) -> Run {
    let setup = assemble_at(LOAD, |a| {
        if opts.paged_ram {
            paged_ram_prologue(a, opts.ram)?;
        }
        a.mov(esp, STACK)?;
        let gdt = [
            segment(0, 0xF_FFFF, 0x9A, 0xC),
            segment(0, 0xF_FFFF, 0x92, 0xC),
            segment(0x20_0000, 0xF_FFFF, 0x92, 0x4),
            segment(0x30_0000, 0xF_FFFF, 0x92, 0xC),
            segment(0x40_0000, 0xF_FFFF, 0x92, 0x4),
            segment(0, 0xF_FFFF, 0x98, 0xC),
            segment(0, 0xF_FFFF, 0x12, 0xC),
            segment(CODE16_BASE, 0xFFFF, 0x9A, 0x0),
            segment(STACK16_BASE, 0xFFFF, 0x92, 0x0),
            segment(LDT_ADDR, 0xF, 0x82, 0x0),
        ];
        for (i, (lo, hi)) in gdt.iter().enumerate() {
            a.mov(dword_ptr(GDT + 8 * (i as u32 + 1)), *lo)?;
            a.mov(dword_ptr(GDT + 8 * (i as u32 + 1) + 4), *hi)?;
        }
        a.mov(word_ptr(GDTR), 0x57u32)?;
        a.mov(dword_ptr(GDTR + 2), GDT)?;
        a.lgdt(ptr(GDTR))?;
        a.mov(eax, FLAT_DATA)?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.mov(ss, ax)?;
        a.db(&[0xEA])?;
        a.dd(&[BODY])?;
        a.dw(&[0x08])
    });
    let code = assemble_at(BODY, |a| {
        body(a)?;
        a.hlt()
    });
    let mut blocks = vec![(LOAD, setup), (BODY, code)];
    blocks.extend(extra);
    run_blocks(
        Options {
            stats: true,
            ..opts
        },
        &blocks,
    )
}

fn load(a: &mut CodeAssembler, seg: AsmRegisterSegment, sel: u32) -> Result<(), IcedError> {
    a.mov(eax, sel)?;
    a.mov(seg, ax)
}

#[test]
fn data_accesses_add_the_ds_base() {
    let r = run(|a| {
        load(a, ds, DATA_2M)?;
        a.mov(dword_ptr(0x100), 0xCAFEu32)?;
        a.mov(ebx, 0x100u32)?;
        a.mov(ecx, dword_ptr(ebx))?;
        a.add(dword_ptr(ebx + 4), 7)?;
        load(a, ds, FLAT_DATA)?;
        a.mov(edx, dword_ptr(0x20_0100))
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(0x20_0100), 0xCAFE);
    assert_eq!(r.mem_u32(0x20_0104), 7);
    assert_eq!(r.reg(ecx), 0xCAFE);
    assert_eq!(
        r.reg(edx),
        0xCAFE,
        "back in flat mode, the same byte at its linear address"
    );
    assert_eq!(r.sreg(ds), FLAT_DATA);
}

#[test]
fn fs_and_gs_add_their_base_even_in_flat_mode() {
    let r = run(|a| {
        load(a, fs, DATA_3M)?;
        load(a, gs, DATA_2M)?;
        a.mov(eax, 0x1111u32)?;
        a.mov(dword_ptr(4).fs(), eax)?;
        a.mov(dword_ptr(8).gs(), 0x2222u32)?;
        a.mov(ebx, dword_ptr(4).fs())?;
        a.mov(esi, 4u32)?;
        a.xlatb()
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(0x30_0004), 0x1111);
    assert_eq!(r.mem_u32(0x20_0008), 0x2222);
    assert_eq!(r.reg(ebx), 0x1111);
}

#[test]
fn the_stack_uses_the_ss_base() {
    let r = run(|a| {
        let mut f = a.create_label();
        let mut done = a.create_label();
        load(a, ss, STACK_4M)?;
        a.mov(esp, 0x1000u32)?;
        a.push(0x1234u32)?;
        a.pop(ebx)?;
        a.push(0x77u32)?;
        a.call(f)?;
        a.jmp(done)?;
        a.set_label(&mut f)?;
        a.mov(ecx, dword_ptr(esp + 4))?; // ss-relative: the 0x77
        a.push(ebp)?;
        a.mov(ebp, esp)?;
        a.mov(edx, dword_ptr(ebp + 8))?; // ebp-based addressing defaults to ss
        a.leave()?;
        a.ret()?;
        a.set_label(&mut done)?;
        a.nop()
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), 0x1234);
    assert_eq!(r.mem_u32(0x40_0FFC), 0x77);
    assert_eq!(r.reg(ecx), 0x77);
    assert_eq!(r.reg(edx), 0x77);
    assert_eq!(r.reg(esp), 0xFFC);
}

#[test]
fn string_instructions_add_ds_and_es_bases() {
    let r = run(|a| {
        load(a, ds, DATA_2M)?;
        a.mov(dword_ptr(0x10), 0x6463_6261u32)?; // "abcd" at 0x200010
        load(a, es, DATA_3M)?;
        a.mov(esi, 0x10u32)?;
        a.mov(edi, 0x20u32)?;
        a.mov(ecx, 4u32)?;
        a.cld()?;
        a.rep().movsb()?;
        a.mov(al, b'z' as u32)?;
        a.stosb()?;
        a.mov(esi, 0x10u32)?;
        a.lodsd()
    });
    r.assert_halted();
    assert_eq!(r.mem_bytes(0x30_0020, 5), b"abcdz");
    assert_eq!(r.reg(eax), 0x6463_6261);
    assert_eq!((r.reg(esi), r.reg(edi), r.reg(ecx)), (0x14, 0x25, 0));
}

#[test]
fn a_fault_through_a_segment_reports_the_linear_address() {
    let r = run_paged(|a| {
        load(a, ds, DATA_3M)?;
        a.mov(ebx, 0x0FF0_0000u32)?;
        a.mov(eax, dword_ptr(ebx)) // linear 0x10200000, beyond 16 MiB of RAM: not mapped
    });
    match r.stop {
        Stop::Unhandled { exc, .. } => assert_eq!((exc.vector, exc.addr), (14, 0x1020_0000)),
        s => panic!("expected #PF, got {s:?}"),
    }
}

#[test]
fn segment_loads_check_the_segment() {
    for (seg, sel, vector, error) in [
        (ss, 0x08u32, 13u32, 0x08u32),  // code into SS
        (ds, EXEC_ONLY, 13, EXEC_ONLY), // execute-only code into DS
        (ds, ABSENT, 11, ABSENT),       // not present: #NP
        (ss, ABSENT, 12, ABSENT),       // not present into SS: #SS
        (es, 0x60, 13, 0x60),           // beyond the GDT limit
    ] {
        let r = run(move |a| load(a, seg, sel));
        match r.stop {
            Stop::Unhandled { exc, .. } => assert_eq!(
                (exc.vector, exc.error),
                (vector, error),
                "{seg:?} <- {sel:#x}"
            ),
            s => panic!("{seg:?} <- {sel:#x}: expected an exception, got {s:?}"),
        }
    }
}

#[test]
fn a_16_bit_code_segment_with_a_base_runs_16_bit_code_at_base_plus_ip() {
    const BACK: u32 = BODY + 0x100;
    // 16-bit code at CODE16_BASE: a near call and return inside the
    // segment (IP-relative), then a 32-bit far jump back to flat code.
    let mut a = CodeAssembler::new(16).unwrap();
    let mut sub = a.create_label();
    let mut done = a.create_label();
    a.mov(ax, 0x1234u32).unwrap();
    a.call(sub).unwrap();
    a.jmp(done).unwrap();
    a.set_label(&mut sub).unwrap();
    a.mov(bx, ax).unwrap();
    a.ret().unwrap();
    a.set_label(&mut done).unwrap();
    a.db(&[0x66, 0xEA]).unwrap(); // jmp far dword 0x08:BACK
    a.dd(&[BACK]).unwrap();
    a.dw(&[0x08]).unwrap();
    let code16 = a.assemble(0).unwrap();
    let back = assemble_at(BACK, |a| {
        a.mov(ecx, 0x99u32)?;
        a.hlt()
    });
    let r = run_with(
        |a| {
            a.xor(ebx, ebx)?;
            a.db(&[0xEA])?; // jmp far 0x40:0
            a.dd(&[0])?;
            a.dw(&[CODE16 as u16])
        },
        vec![(CODE16_BASE, code16), (BACK, back)],
    );
    r.assert_halted();
    assert_eq!(r.reg(ebx) & 0xFFFF, 0x1234);
    assert_eq!(r.reg(ecx), 0x99);
    assert!(
        r.machine
            .report()
            .classes
            .iter()
            .any(|c| c.name == "pm16" && c.translated.units > 0),
        "16-bit protected-mode code class"
    );
}

#[test]
fn pop_ds_changes_the_mode_for_the_rest_of_the_block() {
    let r = run(|a| {
        a.push(DATA_2M)?;
        a.pop(ds)?;
        a.mov(dword_ptr(0x40), 0xABCDu32)?; // same block as the pop: DS base applies
        a.push(FLAT_DATA)?;
        a.pop(ds)
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(0x20_0040), 0xABCD);
}

#[test]
fn a_segment_load_that_changes_the_mode_on_a_later_run_is_not_chained_past() {
    // set_ds runs twice: first it keeps flat mode (the chain after it may
    // be patched), then it loads a based DS, and the store after the call
    // must see that base.
    let r = run(|a| {
        let mut set_ds = a.create_label();
        let mut done = a.create_label();
        a.mov(ebx, FLAT_DATA)?;
        a.call(set_ds)?;
        a.mov(dword_ptr(0x80), 1u32)?;
        a.mov(ebx, DATA_2M)?;
        a.call(set_ds)?;
        a.mov(dword_ptr(0x80), 2u32)?;
        a.jmp(done)?;
        a.set_label(&mut set_ds)?;
        a.mov(ds, bx)?;
        a.ret()?;
        a.set_label(&mut done)?;
        load(a, ds, FLAT_DATA)
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(0x80), 1);
    assert_eq!(r.mem_u32(0x20_0080), 2);
}

#[test]
fn an_interrupt_on_a_16_bit_stack_wraps_sp_at_64_kib() {
    const IDT: u32 = 0x2000;
    const IDTR: u32 = 0x1810;
    const HANDLER: u32 = BODY + 0x200;
    let handler = assemble_at(HANDLER, |a| {
        a.mov(esi, esp)?;
        a.hlt()
    });
    let r = run_with(
        |a| {
            a.mov(dword_ptr(IDT + 0x40 * 8), (0x08 << 16) | (HANDLER & 0xFFFF))?;
            a.mov(
                dword_ptr(IDT + 0x40 * 8 + 4),
                (HANDLER & 0xFFFF_0000) | 0x8E00,
            )?;
            a.mov(word_ptr(IDTR), 0x7FFu32)?;
            a.mov(dword_ptr(IDTR + 2), IDT)?;
            a.lidt(ptr(IDTR))?;
            load(a, ss, STACK16)?;
            a.mov(esp, 0x1234_0004u32)?; // SP = 4: the 12-byte frame wraps
            a.int(0x40)
        },
        vec![(HANDLER, handler)],
    );
    r.assert_halted();
    assert_eq!(r.reg(esi), 0x1234_FFF8, "only SP moved, modulo 64 KiB");
    // The frame sits at the top of the segment: EIP, CS, EFLAGS.
    let (eip, pushed_cs, eflags) = (
        r.mem_u32(STACK16_BASE + 0xFFF8),
        r.mem_u32(STACK16_BASE + 0xFFFC),
        r.mem_u32(STACK16_BASE),
    );
    assert!(eip > BODY && eip < BODY + 0x80, "pushed EIP {eip:#x}");
    assert_eq!(pushed_cs, 0x08);
    assert_eq!(eflags & 2, 2, "EFLAGS wrapped around to offset 0");
}

#[test]
fn segments_can_come_from_the_ldt() {
    let (lo, hi) = segment(0x24_0000, 0xF_FFFF, 0x92, 0xC);
    let r = run(|a| {
        a.mov(dword_ptr(LDT_ADDR + 8), lo)?; // LDT entry 1: data, base 0x240000
        a.mov(dword_ptr(LDT_ADDR + 12), hi)?;
        a.mov(eax, LDT_SEL)?;
        a.lldt(ax)?;
        a.sldt(ecx)?;
        load(a, es, 0x08 | 4)?; // index 1, TI = LDT
        a.mov(dword_ptr(0x44).es(), 0x1D71u32)?;
        a.mov(edx, es)
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(0x24_0044), 0x1D71);
    assert_eq!(r.reg(ecx), LDT_SEL);
    assert_eq!(r.reg(edx), 0x0C);
}

#[test]
fn an_ldt_selector_without_an_ldt_or_beyond_its_limit_is_a_general_protection_fault() {
    for (with_ldt, sel) in [(false, 0x0Cu32), (true, 0x14)] {
        let r = run(move |a| {
            if with_ldt {
                a.mov(eax, LDT_SEL)?;
                a.lldt(ax)?;
            }
            load(a, ds, sel)
        });
        match r.stop {
            Stop::Unhandled { exc, .. } => assert_eq!(
                (exc.vector, exc.error),
                (13, sel & !3),
                "ldt loaded: {with_ldt}"
            ),
            s => panic!("expected #GP, got {s:?}"),
        }
    }
}

/// A kernel's entry code loads ds/es/fs with the selectors they already
/// hold on every system call: generated code does such a reload itself
/// when the GDT descriptor is unchanged.
#[test]
fn reloading_a_segment_from_an_unchanged_descriptor_stays_in_generated_code() {
    let r = run(|a| {
        let mut top = a.create_label();
        a.mov(ecx, 1000u32)?;
        a.mov(ebx, DATA_2M)?;
        a.set_label(&mut top)?;
        a.mov(ds, bx)?;
        a.mov(fs, ebx)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.mov(dword_ptr(0x100), 0xD00Du32)?;
        a.mov(dword_ptr(0x104).fs(), 5u32)
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(0x20_0100), 0xD00D, "ds has DATA_2M's base");
    assert_eq!(r.mem_u32(0x20_0104), 5, "fs too");
    let helped = r.counter("helper_calls.system");
    assert!(
        helped < 20,
        "{helped} System helper calls for 2,000 reloads"
    );
}

#[test]
fn reloading_a_segment_whose_descriptor_changed_takes_the_new_one() {
    let r = run(|a| {
        load(a, ds, DATA_2M)?;
        a.mov(dword_ptr(0x100), 1u32)?;
        // DATA_2M's base becomes 0x300000 (byte 4 of the descriptor).
        a.mov(byte_ptr(GDT + DATA_2M + 4).es(), 0x30u32)?;
        load(a, ds, DATA_2M)?;
        a.mov(dword_ptr(0x100), 2u32)?;
        // The accessed bit cleared: the reload sets it again.
        a.and(byte_ptr(GDT + DATA_2M + 5).es(), 0xFE)?;
        load(a, ds, DATA_2M)?;
        a.mov(al, byte_ptr(GDT + DATA_2M + 5).es())?;
        a.mov(esi, eax)?;
        load(a, ds, FLAT_DATA)
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(0x20_0100), 1);
    assert_eq!(r.mem_u32(0x30_0100), 2, "the new base");
    assert_eq!(r.reg(esi) & 0xFF, 0x93, "accessed again");
}

#[test]
fn after_lgdt_the_same_selector_comes_from_the_new_table() {
    const GDT2: u32 = 0x2000;
    let r = run(|a| {
        // A copy of the GDT in which DATA_2M has base 0x300000.
        a.mov(esi, GDT)?;
        a.mov(edi, GDT2)?;
        a.mov(ecx, 0x58u32)?;
        a.rep().movsb()?;
        a.mov(byte_ptr(GDT2 + DATA_2M + 4).es(), 0x30u32)?;
        load(a, ds, DATA_2M)?;
        a.mov(dword_ptr(GDTR + 2).es(), GDT2)?;
        a.lgdt(ptr(GDTR).es())?;
        load(a, ds, DATA_2M)?;
        a.mov(dword_ptr(0x100), 3u32)?;
        load(a, ds, FLAT_DATA)
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(0x30_0100), 3);
    assert_eq!(r.mem_u32(0x20_0100), 0);
}
