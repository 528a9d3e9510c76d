//! Exception and interrupt delivery through the IDT, and the returns from
//! it (Intel SDM Vol. 3A, 6.12 and 6.15).
//!
//! Interrupt and trap gates (16- and 32-bit) to the same privilege level
//! or to an inner one on the TSS stack, from protected or v8086 mode;
//! task gates; error codes and the EXT bit; the software-interrupt DPL
//! check; #DF when delivery itself faults, and the triple fault. In real
//! mode, the interrupt vector table.

use translator::abi::{CpuState, exc_kind, flags, vector};

use super::descriptor::{inner_stack, load_segment, read_descriptor};
use super::task::{self, TaskSource};
use super::transfer::{self, Stack};
use super::{
    Exception, Fail, SREG_CS, SREG_DS, SREG_ES, SREG_FS, SREG_GS, SREG_SS, Stop, System, cpl, v86,
};

fn has_error_code(vector: u32) -> bool {
    matches!(
        vector,
        vector::DF | vector::TS | vector::NP | vector::SS | vector::GP | vector::PF | vector::AC
    )
}

/// Fault-class exceptions (the #DB this CPU raises is the single-step
/// trap): their frames push RF = 1 so the faulting instruction restarts
/// past any instruction breakpoint (Intel SDM Vol. 3B, 17.3.1.1).
fn is_fault(vector: u32) -> bool {
    matches!(
        vector,
        vector::DE
            | vector::BR
            | vector::UD
            | vector::NM
            | vector::TS
            | vector::NP
            | vector::SS
            | vector::GP
            | vector::PF
            | vector::MF
            | vector::AC
            | vector::XM
    )
}

fn contributory(vector: u32) -> bool {
    matches!(
        vector,
        vector::DE | vector::TS | vector::NP | vector::SS | vector::GP
    )
}

/// Delivers `exc` raised by the instruction at `insn_eip`, returning to
/// `eip` (the same for faults, the next instruction for traps and
/// software interrupts). An exception during delivery is a fault of that
/// instruction. On success the CPU is at the handler; otherwise the run
/// ends with the returned stop.
pub fn deliver(
    cpu: &mut CpuState,
    sys: &mut System,
    exc: Exception,
    eip: u32,
    insn_eip: u32,
    kind: u32,
) -> Result<(), Stop> {
    // The IDT, the TSS and the handler's stack are supervisor accesses
    // (the run loop sets the privilege again before code runs).
    sys.mem.set_user(false);
    if cpu.cr0 & super::cr::CR0_PE == 0 {
        return deliver_real(cpu, sys, exc, eip);
    }
    if sys.idtr.limit == 0 {
        return Err(Stop::Unhandled {
            exc,
            eip,
            soft: kind == exc_kind::SOFTWARE_INT,
        });
    }
    let (mut exc, mut kind, mut eip, mut insn_eip) = (exc, kind, eip, insn_eip);
    // int n in v8086 mode with IOPL < 3 is a #GP(0) for the monitor.
    if kind == exc_kind::SOFTWARE_INT && v86(cpu) && cpu.sys_flags & flags::IOPL != flags::IOPL {
        (exc, kind, eip) = (
            Exception::with_error(vector::GP, 0),
            exc_kind::HARDWARE,
            insn_eip,
        );
    }
    // Each failed delivery raises the next exception: serially, or as #DF
    // by the SDM's table (Vol. 3A, table 6-5); a fault while delivering
    // #DF is a triple fault. Serial chains end there or succeed; the bound
    // only guards against a loop the table cannot produce.
    let mut delivering_df = false;
    for _ in 0..16 {
        match try_deliver(cpu, sys, exc, eip, kind) {
            Ok(()) => return Ok(()),
            Err(Fail::Task(second)) => {
                // A task gate switched tasks, and the new task faulted
                // before its first instruction: a new event of that task.
                (exc, kind, eip, insn_eip) = (second, exc_kind::HARDWARE, cpu.eip, cpu.eip);
                delivering_df = false;
            }
            Err(Fail::Exc(second)) => {
                if delivering_df {
                    return Err(Stop::TripleFault { eip });
                }
                let first = exc.vector;
                // Software and external interrupts are benign events.
                let double = kind == exc_kind::HARDWARE
                    && ((contributory(first) && contributory(second.vector))
                        || (first == vector::PF
                            && (second.vector == vector::PF || contributory(second.vector))));
                exc = if double {
                    Exception::with_error(vector::DF, 0)
                } else {
                    second
                };
                delivering_df = double;
                kind = exc_kind::HARDWARE;
                eip = insn_eip;
            }
        }
    }
    Err(Stop::TripleFault { eip })
}

fn try_deliver(
    cpu: &mut CpuState,
    sys: &mut System,
    exc: Exception,
    eip: u32,
    kind: u32,
) -> Result<(), Fail> {
    let v = exc.vector;
    // Exceptions and external interrupts skip the gate DPL check and set
    // EXT in error codes; only exceptions push an error code of their own.
    let hardware = matches!(kind, exc_kind::HARDWARE | exc_kind::EXTERNAL);
    let ext = hardware as u32;
    let error = (kind == exc_kind::HARDWARE && has_error_code(v)).then_some(exc.error);
    let gate_error = v * 8 + 2 + ext;
    let off = v * 8;
    if off + 7 > sys.idtr.limit as u32 {
        return Err(Exception::with_error(vector::GP, gate_error).into());
    }
    let lo = sys.mem.read_u32(sys.idtr.base.wrapping_add(off))?;
    let hi = sys.mem.read_u32(sys.idtr.base.wrapping_add(off + 4))?;
    let gate_type = (hi >> 8) & 0x1F;
    let dpl = (hi >> 13) & 3;
    // Interrupt and trap gates, 16- and 32-bit, and task gates.
    if !matches!(gate_type, 0x05 | 0x06 | 0x07 | 0x0E | 0x0F) {
        return Err(Exception::with_error(vector::GP, gate_error).into());
    }
    if !hardware && dpl < cpl(cpu) {
        return Err(Exception::with_error(vector::GP, v * 8 + 2).into());
    }
    if hi & 0x8000 == 0 {
        return Err(Exception::with_error(vector::NP, gate_error).into());
    }
    let sel = (lo >> 16) as u16;
    if gate_type == 0x05 {
        return task_gate(cpu, sys, sel, eip, ext, error);
    }
    let interrupt_gate = gate_type & 1 == 0;
    let width = if gate_type & 0x08 != 0 { 4 } else { 2 };
    let target = if width == 4 {
        (lo & 0xFFFF) | (hi & 0xFFFF_0000)
    } else {
        lo & 0xFFFF
    };
    if sel & !3 == 0 {
        return Err(Exception::with_error(vector::GP, ext).into());
    }
    let cs_error = (sel & !3) as u32 + ext;
    // A selector beyond its table (#GP) or a segment not present (#NP):
    // the error code carries EXT too.
    let d = read_descriptor(sys, sel).map_err(|e| match e.vector {
        vector::GP | vector::NP => Exception::with_error(e.vector, cs_error),
        _ => e,
    })?;
    let cpl = cpl(cpu);
    let from_v86 = v86(cpu);
    // From v8086 mode only to a ring-0, nonconforming handler.
    if !d.code() || d.dpl() > cpl || (from_v86 && (d.dpl() != 0 || d.conforming())) {
        return Err(Exception::with_error(vector::GP, cs_error).into());
    }
    let new_cpl = if d.conforming() { cpl } else { d.dpl() };
    // To an inner ring, the handler runs on that ring's stack from the TSS
    // and the old SS:ESP go on it first (from v8086 mode, after the data
    // segment registers).
    let inner = if new_cpl < cpl {
        Some(inner_stack(sys, new_cpl, ext)?)
    } else {
        None
    };
    // At most GS FS DS ES SS ESP EFLAGS CS EIP error, first pushed first.
    let mut frame = [0u32; 10];
    let mut n = 0;
    let mut push = |words: &[u32]| {
        frame[n..n + words.len()].copy_from_slice(words);
        n += words.len();
    };
    if from_v86 {
        push(&[SREG_GS, SREG_FS, SREG_DS, SREG_ES].map(|i| cpu.sregs[i]));
    }
    if inner.is_some() {
        push(&[cpu.sregs[SREG_SS], cpu.regs[4]]);
    }
    let rf = if kind == exc_kind::HARDWARE && is_fault(v) {
        flags::RF
    } else {
        0
    };
    push(&[cpu.eflags() | rf, cpu.sregs[SREG_CS], eip]);
    if let Some(e) = error {
        push(&[e]);
    }
    let stack = match &inner {
        Some((_, esp, sd)) => Stack::of(sd, *esp),
        None => Stack::current(cpu),
    };
    let new_esp = stack.push(sys, &frame[..n], width)?;
    let mut ef = cpu.eflags() & !(flags::TF | flags::NT | flags::RF | flags::VM);
    if interrupt_gate {
        ef &= !flags::IF;
    }
    // EFLAGS first: without VM, loading CS sets the CPL.
    cpu.set_eflags(ef);
    if let Some((ss, _, sd)) = inner {
        load_segment(cpu, sys, SREG_SS, ss, &sd)?;
    }
    if from_v86 {
        for i in [SREG_GS, SREG_FS, SREG_DS, SREG_ES] {
            cpu.set_segment(i, 0, 0, u32::MAX);
        }
    }
    cpu.regs[4] = new_esp;
    load_segment(cpu, sys, SREG_CS, (sel & !3) | new_cpl as u16, &d)?;
    cpu.eip = target;
    Ok(())
}

/// Delivery through a task gate: a switch to the gate's task (nested, so
/// its iret comes back), which gets the error code on its stack.
fn task_gate(
    cpu: &mut CpuState,
    sys: &mut System,
    tss_sel: u16,
    eip: u32,
    ext: u32,
    error: Option<u32>,
) -> Result<(), Fail> {
    let d = task::tss_descriptor(sys, tss_sel, TaskSource::Interrupt, ext)?;
    task::switch(cpu, sys, tss_sel, d, TaskSource::Interrupt, eip, ext)?;
    if let Some(error) = error {
        let width = if sys.tss32 { 4 } else { 2 };
        cpu.regs[4] = Stack::current(cpu)
            .push(sys, &[error], width)
            .map_err(Fail::Task)?;
    }
    transfer::task_entry(cpu, ext)?;
    Ok(())
}

/// Real-mode delivery through the interrupt vector table: FLAGS, CS and IP
/// go on the stack, IF, TF and AC clear, CS:IP from the vector's entry
/// (Intel SDM Vol. 3A, 20.1.4). A vector beyond the IVT limit, or a stack
/// that cannot take the frame, shuts the CPU down (reported as a triple
/// fault, as a 386+ does).
fn deliver_real(
    cpu: &mut CpuState,
    sys: &mut System,
    exc: Exception,
    eip: u32,
) -> Result<(), Stop> {
    // A vector beyond the IVT limit is a #GP, then a #DF, then shutdown.
    let mut v = exc.vector;
    while v * 4 + 3 > sys.idtr.limit as u32 {
        v = match v {
            vector::DF => return Err(Stop::TripleFault { eip }),
            vector::GP => vector::DF,
            _ => vector::GP,
        };
    }
    let entry = sys
        .mem
        .read_u32(sys.idtr.base.wrapping_add(v * 4))
        .map_err(|_| Stop::TripleFault { eip })?;
    let sp = cpu.regs[4];
    let ss_base = cpu.seg_base[SREG_SS];
    let frame = [
        cpu.eflags() & 0xFFFF,
        cpu.sregs[SREG_CS] & 0xFFFF,
        eip & 0xFFFF,
    ];
    for (i, w) in frame.iter().enumerate() {
        let at = ss_base.wrapping_add(sp.wrapping_sub(2 * (i as u32 + 1)) & 0xFFFF);
        sys.mem
            .write_u16(at, *w as u16)
            .map_err(|_| Stop::TripleFault { eip })?;
    }
    cpu.regs[4] = (sp & 0xFFFF_0000) | (sp.wrapping_sub(6) & 0xFFFF);
    cpu.set_eflags(cpu.eflags() & !(flags::IF | flags::TF | flags::AC));
    let limit = cpu.seg_limit[SREG_CS];
    cpu.set_segment_db(
        SREG_CS,
        (entry >> 16) as u16,
        (entry >> 16) << 4,
        limit,
        false,
    );
    cpu.eip = entry & 0xFFFF;
    Ok(())
}
