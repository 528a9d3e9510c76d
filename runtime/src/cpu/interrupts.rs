//! Exception and interrupt delivery through the IDT, and the returns from
//! it (Intel SDM Vol. 3A, 6.12 and 6.15).
//!
//! Implemented: 32-bit interrupt and trap gates to flat code, at the same
//! privilege level or to an inner one on the TSS stack, error codes, the
//! software-interrupt DPL check, #DF when delivery itself faults, and the
//! triple fault. Task gates and 16-bit gates stop the run as unsupported.

use translator::abi::{CpuState, exc_kind, flags, vector};

use super::descriptor::{read_descriptor, tss_stack};
use super::{Exception, Fail, SREG_CS, SREG_SS, Stop, System, cpl};

fn unsupported(eip: u32, what: &str) -> Fail {
    Fail::Stop(Stop::Unsupported {
        eip,
        what: what.to_string(),
    })
}

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
    if cpu.cr0 & 1 == 0 {
        return deliver_real(cpu, sys, exc, eip);
    }
    if sys.idtr.limit == 0 {
        return Err(Stop::Unhandled {
            exc,
            eip,
            soft: kind == exc_kind::SOFTWARE_INT,
        });
    }
    let mut exc = exc;
    let mut kind = kind;
    let mut eip = eip;
    // Each failed delivery raises the next exception: serially, or as #DF
    // by the SDM's table (Vol. 3A, table 6-5); a fault while delivering
    // #DF is a triple fault. Serial chains end there or succeed; the bound
    // only guards against a loop the table cannot produce.
    let mut delivering_df = false;
    for _ in 0..16 {
        match try_deliver(cpu, sys, exc, eip, kind) {
            Ok(()) => return Ok(()),
            Err(Fail::Stop(s)) => return Err(s),
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
    let gate_error = v * 8 + 2 + ext;
    let off = v * 8;
    if off + 7 > sys.idtr.limit as u32 {
        return Err(Exception::with_error(vector::GP, gate_error).into());
    }
    let lo = sys.mem.read_u32(sys.idtr.base.wrapping_add(off))?;
    let hi = sys.mem.read_u32(sys.idtr.base.wrapping_add(off + 4))?;
    let gate_type = (hi >> 8) & 0x1F;
    let dpl = (hi >> 13) & 3;
    let interrupt_gate = match gate_type {
        0x0E => true,
        0x0F => false,
        0x05 => {
            return Err(unsupported(
                eip,
                "delivery through a task gate (task switches come with the system CPU)",
            ));
        }
        0x06 | 0x07 => return Err(unsupported(eip, "delivery through a 16-bit gate")),
        _ => return Err(Exception::with_error(vector::GP, gate_error).into()),
    };
    if !hardware && dpl < cpl(cpu) {
        return Err(Exception::with_error(vector::GP, v * 8 + 2).into());
    }
    if hi & 0x8000 == 0 {
        return Err(Exception::with_error(vector::NP, gate_error).into());
    }
    let sel = (lo >> 16) as u16;
    let target = (lo & 0xFFFF) | (hi & 0xFFFF_0000);
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
    if !d.code() || d.dpl() > cpl {
        return Err(Exception::with_error(vector::GP, cs_error).into());
    }
    let new_cpl = if d.conforming() { cpl } else { d.dpl() };
    // To an inner ring, the handler runs on that ring's stack from the TSS
    // and the old SS:ESP go on it first.
    let switch = if new_cpl < cpl {
        let (ss, esp) = tss_stack(sys, new_cpl)?;
        let ts = Exception::with_error(vector::TS, (ss & !3) as u32 + ext);
        if ss & !3 == 0 || (ss & 3) as u32 != new_cpl {
            return Err(ts.into());
        }
        // A stack segment that is not present is #SS, not #TS.
        let sd = read_descriptor(sys, ss).map_err(|e| match e.vector {
            vector::NP => Exception::with_error(vector::SS, (ss & !3) as u32 + ext),
            _ => ts,
        })?;
        if !sd.writable_data() || sd.dpl() != new_cpl {
            return Err(ts.into());
        }
        Some((ss, esp, sd))
    } else {
        None
    };
    // The stack the frame goes on, and whether it is 16-bit (SS.B clear:
    // offsets wrap at 64 KiB and only SP changes).
    let (ss_base, esp, big) = match &switch {
        Some((_, esp, sd)) => (sd.base, *esp, sd.big()),
        None => (cpu.seg_base[SREG_SS], cpu.regs[4], cpu.seg_db[SREG_SS]),
    };
    let wrap = |offset: u32| if big { offset } else { offset & 0xFFFF };
    // The frame, first pushed first: [SS, ESP,] EFLAGS, CS, EIP[, error].
    let mut words = [0u32; 6];
    let mut n = 0;
    let mut push = |w: u32| {
        words[n] = w;
        n += 1;
    };
    if switch.is_some() {
        push(cpu.sregs[SREG_SS] & 0xFFFF);
        push(cpu.regs[4]);
    }
    let rf = if kind == exc_kind::HARDWARE && is_fault(v) {
        flags::RF
    } else {
        0
    };
    push(cpu.eflags() | rf);
    push(cpu.sregs[SREG_CS] & 0xFFFF);
    push(eip);
    if kind == exc_kind::HARDWARE && has_error_code(v) {
        push(exc.error);
    }
    let frame = &words[..n];
    let pushed = esp.wrapping_sub(4 * frame.len() as u32);
    let new_esp = if big {
        pushed
    } else {
        (esp & 0xFFFF_0000) | (pushed & 0xFFFF)
    };
    let at = |offset: u32| ss_base.wrapping_add(wrap(offset));
    // Check the whole frame before writing any of it.
    sys.mem.read_u32(at(pushed))?;
    sys.mem.read_u32(at(esp.wrapping_sub(4)))?;
    for (i, w) in frame.iter().enumerate() {
        sys.mem
            .write_u32(at(esp.wrapping_sub(4 * (i as u32 + 1))), *w)?;
    }
    if let Some((ss, _, sd)) = switch {
        cpu.set_segment_db(SREG_SS, ss, sd.base, sd.limit, sd.big());
    }
    cpu.regs[4] = new_esp;
    cpu.set_segment_db(
        SREG_CS,
        (sel & !3) | new_cpl as u16,
        d.base,
        d.limit,
        d.code32(),
    );
    let mut ef = cpu.eflags() & !(flags::TF | flags::NT | flags::RF | flags::VM);
    if interrupt_gate {
        ef &= !flags::IF;
    }
    cpu.set_eflags(ef);
    cpu.eip = target;
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
