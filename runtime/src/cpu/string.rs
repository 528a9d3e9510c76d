//! String instructions the runtime runs (those with 16-bit addressing,
//! si/di/cx, which have no 64-bit host form, and those on the open bus):
//! movs stos lods cmps scas, with rep/repe/repne and DF. A repeated one
//! runs at most `CHUNK` iterations per call and is then resumed, as the
//! CPU does after an interrupt, so that a huge count cannot keep the
//! run loop (budget, interrupts, a stop request) waiting.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};
use translator::abi::{CpuState, flags};

use super::operand::{segment_linear, set_reg};
use super::{Exception, System};

const ECX: usize = 1;
const ESI: usize = 6;
const EDI: usize = 7;

/// Iterations of a repeated string instruction per call.
const CHUNK: u32 = 1 << 16;

/// Whether a string instruction finished, or stopped with iterations left
/// (it runs again from the same EIP).
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    Done,
    Interrupted,
}

pub fn execute(
    cpu: &mut CpuState,
    sys: &System,
    insn: &Instruction,
) -> Result<Progress, Exception> {
    use Mnemonic as M;
    let size: u32 = match insn.mnemonic() {
        M::Movsb | M::Stosb | M::Lodsb | M::Cmpsb | M::Scasb => 1,
        M::Movsw | M::Stosw | M::Lodsw | M::Cmpsw | M::Scasw => 2,
        _ => 4,
    };
    let a16 = (0..insn.op_count()).any(|i| {
        matches!(
            insn.op_kind(i),
            OpKind::MemorySegSI | OpKind::MemorySegDI | OpKind::MemoryESDI
        )
    });
    let mask: u32 = if a16 { 0xFFFF } else { 0xFFFF_FFFF };
    let step = if cpu.arith_flags & flags::DF != 0 {
        size.wrapping_neg()
    } else {
        size
    };
    let rep = insn.has_rep_prefix() || insn.has_repe_prefix() || insn.has_repne_prefix();
    let value_mask = super::super::devices::mask(size as u8);
    let acc = match size {
        1 => Register::AL,
        2 => Register::AX,
        _ => Register::EAX,
    };
    for done in 0.. {
        if rep && cpu.regs[ECX] & mask == 0 {
            break;
        }
        if done == CHUNK {
            return Ok(Progress::Interrupted);
        }
        let si = |cpu: &CpuState| {
            segment_linear(
                cpu,
                insn.memory_segment().number(),
                cpu.regs[ESI] & mask,
                size,
            )
        };
        let di = |cpu: &CpuState| segment_linear(cpu, super::SREG_ES, cpu.regs[EDI] & mask, size);
        let compare = match insn.mnemonic() {
            M::Movsb | M::Movsw | M::Movsd => {
                let (si, di) = (si(cpu)?, di(cpu)?);
                let v = sys.mem.read_sized(si, size)?;
                sys.mem.write_sized(di, size, v)?;
                advance(cpu, ESI, step, mask);
                advance(cpu, EDI, step, mask);
                false
            }
            M::Stosb | M::Stosw | M::Stosd => {
                sys.mem
                    .write_sized(di(cpu)?, size, cpu.regs[0] & value_mask)?;
                advance(cpu, EDI, step, mask);
                false
            }
            M::Lodsb | M::Lodsw | M::Lodsd => {
                let v = sys.mem.read_sized(si(cpu)?, size)?;
                set_reg(cpu, acc, v);
                advance(cpu, ESI, step, mask);
                false
            }
            M::Cmpsb | M::Cmpsw | M::Cmpsd => {
                let a = sys.mem.read_sized(si(cpu)?, size)?;
                let b = sys.mem.read_sized(di(cpu)?, size)?;
                set_sub_flags(cpu, a, b, size);
                advance(cpu, ESI, step, mask);
                advance(cpu, EDI, step, mask);
                true
            }
            _ => {
                let b = sys.mem.read_sized(di(cpu)?, size)?;
                set_sub_flags(cpu, cpu.regs[0] & value_mask, b, size);
                advance(cpu, EDI, step, mask);
                true
            }
        };
        if !rep {
            break;
        }
        advance(cpu, ECX, u32::MAX, mask);
        let zf = cpu.arith_flags & flags::ZF != 0;
        if compare && ((insn.has_repe_prefix() && !zf) || (insn.has_repne_prefix() && zf)) {
            break;
        }
    }
    Ok(Progress::Done)
}

/// Adds `delta` to a register within the address-size `mask`.
pub(super) fn advance(cpu: &mut CpuState, reg: usize, delta: u32, mask: u32) {
    let v = cpu.regs[reg];
    cpu.regs[reg] = (v & !mask) | (v.wrapping_add(delta) & mask);
}

/// The flags of `a - b` at `size` bytes, as cmp sets them.
pub fn set_sub_flags(cpu: &mut CpuState, a: u32, b: u32, size: u32) {
    let bits = size * 8;
    let m = if bits == 32 {
        u32::MAX
    } else {
        (1 << bits) - 1
    };
    let (a, b) = (a & m, b & m);
    let r = a.wrapping_sub(b) & m;
    let msb = 1 << (bits - 1);
    let mut f = cpu.arith_flags & !flags::STATUS;
    if a < b {
        f |= flags::CF;
    }
    if r == 0 {
        f |= flags::ZF;
    }
    if r & msb != 0 {
        f |= flags::SF;
    }
    if (a ^ b) & (a ^ r) & msb != 0 {
        f |= flags::OF;
    }
    if (a ^ b ^ r) & 0x10 != 0 {
        f |= flags::AF;
    }
    if (r as u8).count_ones().is_multiple_of(2) {
        f |= flags::PF;
    }
    cpu.arith_flags = f;
}
