//! Guest accesses that reach MMIO devices.
//!
//! Generated code never maps a device's page, so its first access faults
//! and the run loop emulates it (`Machine`'s device step: the instruction
//! runs alone against a scratch page filled from the device, and what it
//! stored goes to the device). A `mov` that keeps doing that is
//! retranslated to call the `Emulate` helper, which lands here: the access
//! goes to the device (or to memory) without a host fault.

use iced_x86::{Instruction, Mnemonic, OpKind};
use translator::abi::CpuState;

use super::System;
use super::emulate::{Next, Result};
use super::operand::{checked_address, get_reg, set_reg};
use crate::paging::AccessKind;

/// Value of general register `r` (any width).
pub fn register(cpu: &CpuState, r: iced_x86::Register) -> u32 {
    get_reg(cpu, r)
}

/// Whether the `Emulate` helper can do `insn` as a device access: a data
/// mov, movzx or movsx with a memory operand.
pub fn is_data_mov(insn: &Instruction) -> bool {
    matches!(
        insn.mnemonic(),
        Mnemonic::Mov | Mnemonic::Movzx | Mnemonic::Movsx
    ) && (0..insn.op_count()).any(|i| insn.op_kind(i) == OpKind::Memory)
        && (0..insn.op_count())
            .all(|i| insn.op_kind(i) != OpKind::Register || insn.op_register(i).is_gpr())
}

/// Reads or writes `buf.len()` bytes at linear `lin`, page by page, from
/// memory where it is RAM or ROM and from the MMIO bus elsewhere. Nothing
/// is accessed unless every page translates.
pub(super) fn access(sys: &mut System, lin: u32, buf: &mut [u8], write: bool) -> Result<()> {
    let kind = if write {
        AccessKind::Write
    } else {
        AccessKind::Read
    };
    let (mem, mmio) = (&sys.mem, &mut sys.mmio);
    mem.linear(lin, buf.len(), kind, |phys, start, n| {
        let part = &mut buf[start..start + n];
        match (!mem.is_memory(phys), write) {
            (true, false) => mmio.read(phys, part),
            (true, true) => mmio.write(phys, part),
            (false, false) => mem.read_phys(phys, part)?,
            (false, true) => mem.write_phys(phys, part)?,
        }
        Ok(())
    })?;
    Ok(())
}

/// mov/movzx/movsx with a memory operand that may be a device's.
pub(super) fn data_mov(cpu: &mut CpuState, sys: &mut System, insn: &Instruction) -> Result<Next> {
    let size = insn.memory_size().size() as u32;
    let ea = checked_address(cpu, insn, size)?;
    let mut bytes = [0u8; 4];
    let buf = &mut bytes[..size as usize];
    if insn.op0_kind() == OpKind::Memory {
        let v = match insn.op1_kind() {
            OpKind::Register => get_reg(cpu, insn.op1_register()),
            _ => insn.immediate(1) as u32,
        };
        buf.copy_from_slice(&v.to_le_bytes()[..size as usize]);
        access(sys, ea, buf, true)?;
    } else {
        access(sys, ea, buf, false)?;
        let v = u32::from_le_bytes(bytes);
        let v = match (insn.mnemonic(), size) {
            (Mnemonic::Movsx, 1) => v as u8 as i8 as u32,
            (Mnemonic::Movsx, 2) => v as u16 as i16 as u32,
            _ => v,
        };
        set_reg(cpu, insn.op0_register(), v);
    }
    Ok(Next::Continue)
}
