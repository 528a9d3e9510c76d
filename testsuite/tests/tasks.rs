//! Task switches (Intel SDM Vol. 3A, 7.3): jmp and call to a TSS or a
//! task gate, exceptions through a task gate, iret back to a nested task,
//! the busy bits, NT, the back link, the T bit, 16-bit TSSes, and the
//! faults of a bad switch.

use bt86_testsuite::pm::*;
use bt86_testsuite::*;

const TSS2: u32 = 0x5000;
const TSS2_SEL: u32 = GDT_FREE;
const TASK_GATE: u32 = GDT_FREE + 8;
const TASK2: u32 = HANDLERS + 0x800;
const TASK2_STACK: u32 = 0x5_0000;

/// The GDT access byte of selector `sel`.
fn access(r: &Run, sel: u32) -> u8 {
    r.mem_u8(GDT + sel + 5)
}

/// Writes a 32-bit TSS at TSS2 for a ring-0 task at TASK2 (EAX = 0xA2)
/// and its available descriptor at TSS2_SEL.
fn task2(a: &mut CodeAssembler, code: u32) -> Result<(), IcedError> {
    set_descriptor(a, TSS2_SEL, segment(TSS2, 0x67, 0x89, 0))?;
    for (off, v) in [
        (0x20, TASK2),
        (0x24, 0x2),
        (0x28, 0xA2),
        (0x38, TASK2_STACK),
        (0x48, KDATA),
        (0x4C, code),
        (0x50, KDATA),
        (0x54, KDATA),
    ] {
        a.mov(dword_ptr(TSS2 + off), v)?;
    }
    Ok(())
}

fn run_tasks(gates: &[(u32, u32, u32)], body: Vec<u8>, blocks: Vec<(u32, Vec<u8>)>) -> Run {
    let mut all = vec![(LOAD, system(gates)), (BODY, body)];
    all.extend(blocks);
    run_blocks(Options::default(), &all)
}

#[test]
fn jmp_to_a_tss_saves_the_old_task_and_loads_the_new_one() {
    let body = assemble_at(BODY, |a| {
        task2(a, KCODE)?;
        a.mov(esi, 0x51u32)?;
        a.mov(eax, 0xA1u32)?;
        a.db(&[0xEA, 0, 0, 0, 0])?;
        a.dw(&[TSS2_SEL as u16])
    });
    let after_jmp = BODY + body.len() as u32;
    let task = assemble_at(TASK2, |a| {
        a.str(ax)?;
        a.mov(dword_ptr(SEEN), eax)?;
        a.pushfd()?;
        a.pop(dword_ptr(SEEN + 4))?;
        a.smsw(eax)?;
        a.mov(dword_ptr(SEEN + 8), eax)?;
        a.mov(eax, 0xA2u32)?;
        a.hlt()
    });
    let r = run_tasks(&[], body, vec![(TASK2, task)]);
    r.assert_halted();
    assert_eq!(r.reg(esp), TASK2_STACK);
    assert_eq!(r.reg(esi), 0, "ESI from the new TSS");
    assert_eq!(r.mem_u32(SEEN) & 0xFFFF, TSS2_SEL, "TR");
    assert_eq!(r.mem_u32(SEEN + 4) & fl::NT, 0, "a jmp does not nest");
    assert_ne!(r.mem_u32(SEEN + 8) & 8, 0, "CR0.TS set");
    assert_eq!(r.mem_u32(TSS + 0x20), after_jmp, "old EIP saved");
    assert_eq!(r.mem_u32(TSS + 0x28), 0xA1, "old EAX saved");
    assert_eq!(r.mem_u32(TSS + 0x40), 0x51, "old ESI saved");
    assert_eq!(r.mem_u32(TSS + 0x4C) & 0xFFFF, KCODE, "old CS saved");
    assert_eq!(access(&r, TSS_SEL), 0x89, "old TSS no longer busy");
    assert_eq!(access(&r, TSS2_SEL), 0x8B, "new TSS busy");
}

#[test]
fn call_through_a_task_gate_nests_and_iret_returns() {
    let body = assemble_at(BODY, |a| {
        task2(a, KCODE)?;
        set_descriptor(a, TASK_GATE, gate(TSS2_SEL, 0, 0x85, 0))?;
        a.mov(ebx, 0xB1u32)?;
        a.db(&[0x9A, 0, 0, 0, 0])?;
        a.dw(&[TASK_GATE as u16])?;
        a.mov(dword_ptr(SEEN + 0x10), ebx)?;
        a.pushfd()?;
        a.pop(dword_ptr(SEEN + 0x14))?;
        a.str(ax)?;
        a.mov(dword_ptr(SEEN + 0x18), eax)?;
        a.hlt()
    });
    let task = assemble_at(TASK2, |a| {
        a.pushfd()?;
        a.pop(dword_ptr(SEEN))?;
        a.movzx(eax, word_ptr(TSS2))?;
        a.mov(dword_ptr(SEEN + 4), eax)?;
        a.mov(eax, dword_ptr(GDT + TSS_SEL + 4))?;
        a.mov(dword_ptr(SEEN + 8), eax)?;
        a.mov(ebx, 0xB2u32)?;
        a.iretd()
    });
    let after_iret = TASK2 + task.len() as u32;
    let r = run_tasks(&[], body, vec![(TASK2, task)]);
    r.assert_halted();
    assert_ne!(r.mem_u32(SEEN) & fl::NT, 0, "the called task has NT");
    assert_eq!(r.mem_u32(SEEN + 4), TSS_SEL, "back link");
    assert_eq!(
        (r.mem_u32(SEEN + 8) >> 8) & 0xFF,
        0x8B,
        "the caller stays busy"
    );
    assert_eq!(r.mem_u32(SEEN + 0x10), 0xB1, "caller's EBX restored");
    assert_eq!(r.mem_u32(SEEN + 0x14) & fl::NT, 0);
    assert_eq!(r.mem_u32(SEEN + 0x18) & 0xFFFF, TSS_SEL);
    assert_eq!(access(&r, TSS2_SEL), 0x89, "the returned-from task is free");
    assert_eq!(r.mem_u32(TSS2 + 0x20), after_iret, "its EIP is after iret");
    assert_eq!(r.mem_u32(TSS2 + 0x24) & fl::NT, 0, "saved without NT");
}

#[test]
fn an_exception_through_a_task_gate_pushes_its_error_code_on_the_new_task_stack() {
    let prefix = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        task2(a, KCODE)?;
        a.mov(dword_ptr(IDT + 13 * 8), TSS2_SEL << 16)?;
        a.mov(dword_ptr(IDT + 13 * 8 + 4), 0x8500u32)?;
        a.mov(eax, 0x1233u32)
    };
    let fault_at = BODY + assemble_at(BODY, prefix).len() as u32;
    let body = assemble_at(BODY, |a| {
        prefix(a)?;
        a.mov(ds, ax) // beyond the GDT: #GP(0x1230)
    });
    let task = assemble_at(TASK2, |a| {
        a.pop(dword_ptr(SEEN))?;
        a.mov(dword_ptr(SEEN + 4), esp)?;
        a.hlt()
    });
    let r = run_tasks(&[], body, vec![(TASK2, task)]);
    r.assert_halted();
    assert_eq!(r.mem_u32(SEEN), 0x1230, "error code");
    assert_eq!(r.mem_u32(SEEN + 4), TASK2_STACK, "it was on the new stack");
    assert_eq!(r.mem_u32(TSS + 0x20), fault_at, "old EIP: the faulting mov");
    assert_eq!(r.mem_u32(TSS + 0x28), 0x1233, "old EAX");
}

#[test]
fn jmp_to_a_busy_tss_is_a_general_protection_fault() {
    let body = assemble_at(BODY, |a| {
        a.db(&[0xEA, 0, 0, 0, 0])?;
        a.dw(&[TSS_SEL as u16])
    });
    let r = run_tasks(&[(13, 3, 0x8E)], body, vec![recorder(3, 2)]);
    r.assert_halted();
    assert_eq!(r.mem_u32(SEEN), TSS_SEL, "#GP(TSS selector)");
    assert_eq!(r.mem_u32(SEEN + 4), BODY);
}

#[test]
fn iret_with_nt_to_a_task_that_is_not_busy_is_an_invalid_tss_fault() {
    let prefix = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        task2(a, KCODE)?;
        a.mov(word_ptr(TSS), TSS2_SEL)?;
        a.pushfd()?;
        a.or(dword_ptr(esp), fl::NT)?;
        a.popfd()
    };
    let iret_at = BODY + assemble_at(BODY, prefix).len() as u32;
    let body = assemble_at(BODY, |a| {
        prefix(a)?;
        a.iretd()
    });
    let r = run_tasks(&[(10, 3, 0x8E)], body, vec![recorder(3, 2)]);
    r.assert_halted();
    assert_eq!(r.mem_u32(SEEN), TSS2_SEL, "#TS(back link)");
    assert_eq!(r.mem_u32(SEEN + 4), iret_at);
}

#[test]
fn the_t_bit_raises_a_debug_trap_before_the_new_task_runs() {
    let body = assemble_at(BODY, |a| {
        task2(a, KCODE)?;
        a.mov(word_ptr(TSS2 + 0x64), 1u32)?;
        a.db(&[0xEA, 0, 0, 0, 0])?;
        a.dw(&[TSS2_SEL as u16])
    });
    let task = assemble_at(TASK2, |a| a.hlt());
    let db = assemble_at(handler_addr(4), |a| {
        a.mov(eax, dword_ptr(esp))?;
        a.mov(dword_ptr(SEEN), eax)?;
        a.mov(eax, dr6)?;
        a.mov(dword_ptr(SEEN + 4), eax)?;
        a.hlt()
    });
    let r = run_tasks(
        &[(1, 4, 0x8E)],
        body,
        vec![(TASK2, task), (handler_addr(4), db)],
    );
    r.assert_halted();
    assert_eq!(
        r.mem_u32(SEEN),
        TASK2,
        "at the new task's first instruction"
    );
    assert_ne!(r.mem_u32(SEEN + 4) & (1 << 15), 0, "DR6.BT");
}

#[test]
fn a_bad_code_segment_in_the_new_task_faults_in_the_new_task() {
    let body = assemble_at(BODY, |a| {
        task2(a, KDATA)?; // CS = a data segment
        a.db(&[0xEA, 0, 0, 0, 0])?;
        a.dw(&[TSS2_SEL as u16])
    });
    let r = run_tasks(&[(10, 3, 0x8E)], body, vec![recorder(3, 2)]);
    r.assert_halted();
    assert_eq!(r.mem_u32(SEEN), KDATA, "#TS(CS selector)");
    assert_eq!(r.mem_u32(SEEN + 4), TASK2, "at the new task's EIP");
    assert_eq!(access(&r, TSS2_SEL), 0x8B, "the switch itself completed");
}

#[test]
fn jmp_to_a_16_bit_tss_loads_the_16_bit_state() {
    // A 286 TSS: IP, FLAGS, AX..DI, ES, CS, SS, DS, LDT; the task runs
    // 16-bit code at offset 0x100 of a code segment at HANDLERS.
    const TSS16: u32 = 0x6000;
    const CS16: u32 = GDT_FREE + 0x10;
    let body = assemble_at(BODY, |a| {
        set_descriptor(a, TSS2_SEL, segment(TSS16, 0x2B, 0x81, 0))?;
        set_descriptor(a, CS16, segment(HANDLERS, 0xFFFF, 0x9A, 0))?;
        for (off, v) in [
            (0x0E, 0x100u32), // IP
            (0x10, 0x2),      // FLAGS
            (0x12, 0x1616),   // AX
            (0x1A, 0x7000),   // SP
            (0x22, KDATA),    // ES
            (0x24, CS16),     // CS
            (0x26, KDATA),    // SS
            (0x28, KDATA),    // DS
        ] {
            a.mov(word_ptr(TSS16 + off), v)?;
        }
        a.mov(eax, 0xDEAD_0000u32)?;
        a.db(&[0xEA, 0, 0, 0, 0])?;
        a.dw(&[TSS2_SEL as u16])
    });
    let r = run_tasks(&[], body, vec![(HANDLERS + 0x100, vec![0x90, 0xF4])]);
    r.assert_halted();
    assert_eq!(r.sreg(cs), CS16);
    assert_eq!(r.stop, Stop::Halted { eip: 0x102 });
    assert_eq!(r.reg(eax), 0xDEAD_1616, "the upper half stays");
    assert_eq!(r.reg(esp) & 0xFFFF, 0x7000);
    assert_eq!(access(&r, TSS2_SEL), 0x83, "a busy 286 TSS");
}
