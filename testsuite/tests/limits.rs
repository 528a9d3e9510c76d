//! Segment limits (Intel SDM Vol. 3A, 5.3): expand-up data segments,
//! FS in otherwise flat code, expand-down stacks (B = 1) and data (B = 0),
//! the CS limit, string instructions and runtime-emulated accesses. Each
//! fault is #GP(0), or #SS(0) through SS, at the faulting instruction
//! with the registers as before it. (Real mode is checked against the
//! 286 vectors in sst286.rs.)

use bt86_testsuite::pm::*;
use bt86_testsuite::*;

const SEL: u32 = GDT_FREE;
const BASE: u32 = 0x20_0000;
/// Data segment access bytes, DPL 3: read/write, and expand-down.
const DATA3: u32 = 0xF2;
const DATA3_DOWN: u32 = 0xF6;

/// A ring-0 handler for ring-3 events that stores the vector `v` at
/// SEEN + 0x44 and its frame's first, second and fifth dwords (for a
/// fault with an error code: error, EIP, ESP) at SEEN, through SS (the
/// faulting DS may be the limited segment), keeping EAX at SEEN + 0x40.
fn recorder_for(v: u32) -> (u32, Vec<u8>) {
    (
        handler_addr(v),
        assemble_at(handler_addr(v), move |a| {
            a.mov(dword_ptr(SEEN + 0x40).ss(), eax)?;
            a.mov(dword_ptr(SEEN + 0x44).ss(), v)?;
            for (i, off) in [0u32, 4, 16].into_iter().enumerate() {
                a.mov(eax, dword_ptr(esp + off).ss())?;
                a.mov(dword_ptr(SEEN + 4 * i as u32).ss(), eax)?;
            }
            a.hlt()
        }),
    )
}

/// Runs `user` in ring 3 with descriptor `d` at SEL, with recorders for
/// #GP, #SS and int 0x80.
fn run_user(d: (u32, u32), user: Vec<u8>) -> Run {
    run(
        &[(13, 13, 0x8E), (12, 12, 0x8E), (0x80, 0x20, 0xEE)],
        to_user_with(0x202, KDATA, &[(SEL, d)]),
        user,
        vec![recorder_for(13), recorder_for(12), recorder_for(0x20)],
    )
}

/// Checks a recorded fault: its vector, error code 0, and the EIP of the
/// faulting instruction.
fn assert_fault(r: &Run, vector: u32, eip: u32) {
    r.assert_halted();
    assert_eq!(r.mem_u32(SEEN + 0x44), vector, "the vector");
    assert_eq!(r.mem_u32(SEEN), 0, "error code");
    assert_eq!(r.mem_u32(SEEN + 4), eip, "EIP of the faulting instruction");
}

/// The address after the instructions `prefix` assembles at USER.
fn after(prefix: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> u32 {
    USER + assemble_at(USER, prefix).len() as u32
}

fn load_ds(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(eax, SEL | 3)?;
    a.mov(ds, ax)
}

#[test]
fn an_access_past_a_data_segment_limit_is_a_general_protection_fault() {
    let prefix = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        load_ds(a)?;
        a.mov(ecx, 0x2222u32)?;
        a.mov(ebx, dword_ptr(0xFFC)) // the last dword: fine
    };
    let user = assemble_at(USER, |a| {
        prefix(a)?;
        a.mov(ecx, dword_ptr(0xFFE)) // two bytes past the limit
    });
    let r = run_user(segment(BASE, 0xFFF, DATA3, 0x4), user);
    assert_fault(&r, vec::GP, after(prefix));
    assert_eq!(r.reg(ecx), 0x2222, "the faulting load changed nothing");
}

#[test]
fn fs_with_a_small_limit_is_checked_in_otherwise_flat_code() {
    let prefix = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        a.mov(eax, SEL | 3)?;
        a.mov(fs, ax)?;
        a.mov(ebx, dword_ptr(0xFFC).fs())?;
        a.mov(dword_ptr(USER_STACK - 0x100), ebx) // flat DS: no limit
    };
    let user = assemble_at(USER, |a| {
        prefix(a)?;
        a.mov(dword_ptr(0x1000).fs(), ebx) // the limit + 1
    });
    let r = run_user(segment(BASE, 0xFFF, DATA3, 0x4), user);
    assert_fault(&r, vec::GP, after(prefix));
}

#[test]
fn a_push_below_an_expand_down_stack_limit_is_a_stack_fault() {
    // Valid offsets are 0x8000..=0xFFFFFFFF (B = 1): the second push
    // would write 0x7FFC..0x7FFF.
    let prefix = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        a.mov(eax, SEL | 3)?;
        a.mov(ss, ax)?;
        a.mov(esp, 0x8004u32)?;
        a.push(eax)
    };
    let user = assemble_at(USER, |a| {
        prefix(a)?;
        a.push(eax)
    });
    let r = run_user(segment(0, 0x7FFF, DATA3_DOWN, 0x4), user);
    assert_fault(&r, vec::SS, after(prefix));
    assert_eq!(r.mem_u32(SEEN + 8), 0x8000, "ESP as before the push");
}

#[test]
fn an_expand_down_16_bit_data_segment_allows_only_limit_to_64k() {
    // Valid offsets 0x1000..=0xFFFF: below the limit, and a word at
    // 0xFFFF (past 64 KiB), fault.
    for (offset, ok) in [
        (0x1000u32, true),
        (0xFFFE, true),
        (0x0FFE, false),
        (0xFFFF, false),
    ] {
        let user = assemble_at(USER, move |a| {
            load_ds(a)?;
            a.mov(bx, word_ptr(offset))?;
            a.int(0x80)
        });
        let r = run_user(segment(BASE, 0x0FFF, DATA3_DOWN, 0), user);
        if ok {
            r.assert_halted();
            assert_eq!(r.mem_u32(SEEN + 0x44), 0x20, "{offset:#x}: int 0x80");
        } else {
            assert_fault(&r, vec::GP, after(load_ds));
        }
    }
}

#[test]
fn fetching_past_the_cs_limit_is_a_general_protection_fault() {
    // A ring-3 code segment at USER with limit 9: two 5-byte movs fit,
    // the third starts at EIP 10.
    let body = assemble_at(BODY, |a| {
        set_descriptor(a, SEL, segment(USER, 9, 0xFA, 0x4))?;
        a.push(UDATA)?;
        a.push(USER_STACK)?;
        a.push(0x202u32)?;
        a.push(SEL | 3)?;
        a.push(0u32)?;
        a.iretd()
    });
    let user = assemble_at(USER, |a| {
        a.mov(esi, 1u32)?;
        a.mov(edi, 2u32)?;
        a.mov(ebp, 3u32)
    });
    let r = run(&[(13, 13, 0x8E)], body, user, vec![recorder_for(13)]);
    assert_fault(&r, vec::GP, 10);
    assert_eq!((r.reg(esi), r.reg(edi), r.reg(ebp)), (1, 2, 0));
}

#[test]
fn rep_stos_stops_at_the_limit_with_the_completed_iterations() {
    let prefix = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        a.mov(eax, SEL | 3)?;
        a.mov(es, ax)?;
        a.mov(edi, 0xF0u32)?;
        a.mov(ecx, 0x20u32)?;
        a.mov(al, 0x5Au32)?;
        a.cld()
    };
    let user = assemble_at(USER, |a| {
        prefix(a)?;
        a.rep().stosb()
    });
    let r = run_user(segment(BASE, 0xFF, DATA3, 0x4), user);
    assert_fault(&r, vec::GP, after(prefix));
    assert_eq!((r.reg(edi), r.reg(ecx)), (0x100, 0x10));
    assert_eq!(r.mem_u8(BASE + 0xFF), 0x5A);
    assert_eq!(r.mem_u8(BASE + 0x100), 0);
}

#[test]
fn runtime_emulated_accesses_check_the_limit_too() {
    // lds reads 6 bytes: at 0xFFC they cross the limit 0xFFF.
    let user = assemble_at(USER, |a| {
        load_ds(a)?;
        a.lds(esi, ptr(0xFFC))
    });
    let r = run_user(segment(BASE, 0xFFF, DATA3, 0x4), user);
    assert_fault(&r, vec::GP, after(load_ds));
}
