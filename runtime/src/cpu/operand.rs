//! Reading and writing the operands of a decoded guest instruction from
//! the runtime (registers in `CpuState::regs`, memory through guest RAM).

use iced_x86::{Instruction, OpKind, Register};
use translator::abi::{CpuState, vector};

use super::{Exception, System};

/// Value of a general register of any width (AH-BH included).
pub fn get_reg(cpu: &CpuState, r: Register) -> u32 {
    let full = r.full_register32();
    let n = full.number() - Register::EAX.number();
    let v = cpu.regs[n];
    match r.size() {
        1 if is_high8(r) => (v >> 8) & 0xFF,
        1 => v & 0xFF,
        2 => v & 0xFFFF,
        _ => v,
    }
}

pub fn set_reg(cpu: &mut CpuState, r: Register, value: u32) {
    let n = r.full_register32().number() - Register::EAX.number();
    let old = cpu.regs[n];
    cpu.regs[n] = match r.size() {
        1 if is_high8(r) => (old & !0xFF00) | ((value & 0xFF) << 8),
        1 => (old & !0xFF) | (value & 0xFF),
        2 => (old & !0xFFFF) | (value & 0xFFFF),
        _ => value,
    };
}

fn is_high8(r: Register) -> bool {
    matches!(r, Register::AH | Register::CH | Register::DH | Register::BH)
}

/// The linear address of the memory operand: segment base + offset.
pub fn effective_address(cpu: &CpuState, insn: &Instruction) -> u32 {
    let op = (0..insn.op_count())
        .find(|&i| insn.op_kind(i) == OpKind::Memory)
        .unwrap_or(0);
    let va = insn.virtual_address(op, 0, |reg, _, _| {
        if reg.is_segment_register() {
            Some(cpu.seg_base[reg.number()] as u64)
        } else if reg.is_gpr() {
            Some(get_reg(cpu, reg) as u64)
        } else {
            None
        }
    });
    va.unwrap_or(0) as u32
}

/// The linear address of `size` bytes at `offset` in segment `i`, after
/// the limit check: #GP(0), or #SS(0) through SS.
#[inline]
pub fn segment_linear(cpu: &CpuState, i: usize, offset: u32, size: u32) -> Result<u32, Exception> {
    if !cpu.segment_allows(i, offset, size) {
        let v = if i == super::SREG_SS {
            vector::SS
        } else {
            vector::GP
        };
        return Err(Exception::with_error(v, 0));
    }
    Ok(cpu.linear(i, offset))
}

/// The linear address of `size` bytes at the memory operand, after the
/// segment limit check.
pub fn checked_address(cpu: &CpuState, insn: &Instruction, size: u32) -> Result<u32, Exception> {
    let seg = insn.memory_segment();
    let linear = effective_address(cpu, insn);
    if !seg.is_segment_register() {
        return Ok(linear);
    }
    let i = seg.number();
    segment_linear(cpu, i, linear.wrapping_sub(cpu.seg_base[i]), size)
}

/// Reads operand `i` (register, immediate or memory) of `size` bytes.
pub fn read_op(
    cpu: &CpuState,
    sys: &System,
    insn: &Instruction,
    i: u32,
    size: u32,
) -> Result<u32, Exception> {
    match insn.op_kind(i) {
        OpKind::Register => Ok(get_reg(cpu, insn.op_register(i))),
        OpKind::Memory => Ok(sys
            .mem
            .read_sized(checked_address(cpu, insn, size)?, size)?),
        _ => Ok(insn.immediate(i) as u32),
    }
}

/// Writes operand `i` (register or memory) of `size` bytes.
pub fn write_op(
    cpu: &mut CpuState,
    sys: &System,
    insn: &Instruction,
    i: u32,
    size: u32,
    v: u32,
) -> Result<(), Exception> {
    match insn.op_kind(i) {
        OpKind::Register => {
            set_reg(cpu, insn.op_register(i), v);
            Ok(())
        }
        _ => Ok(sys
            .mem
            .write_sized(checked_address(cpu, insn, size)?, size, v)?),
    }
}
