//! x87, MMX and SSE/SSE2 instructions: the host's own, on the guest's FPU
//! state (IDENT, memory operands rebased like any other).
//!
//! The guest's state is swapped into the host FPU lazily: the first FPU
//! instruction of a TU (and the first after a helper call, which swaps it
//! out) calls `CpuState::fpu_enter`, a stub that loads it the first time
//! and is a bare `ret` while it is in. CR0.TS/EM/MP and CR4.OSFXSR are in
//! the mode key: with them an instruction translates to #NM or #UD.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::{Flow, TuBuilder, ident};
use crate::abi::{ModeKey, exc_kind, off, vector};
use crate::emit::{EncodeError, asm};

/// Which part of the FPU an instruction uses (what CR0/CR4 check it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// x87, fxsave/fxrstor.
    X87,
    /// wait/fwait: #NM only with both TS and MP.
    Wait,
    Mmx,
    /// Anything on XMM registers or MXCSR.
    Sse,
}

/// The FPU kind of `insn`, or None for instructions that need no FPU state
/// (sfence, movnti, prefetch, pause...).
pub fn kind(insn: &Instruction) -> Option<Kind> {
    use Mnemonic as M;
    match insn.mnemonic() {
        M::Wait => return Some(Kind::Wait),
        M::Fxsave | M::Fxrstor => return Some(Kind::X87),
        M::Ldmxcsr | M::Stmxcsr => return Some(Kind::Sse),
        M::Emms => return Some(Kind::Mmx),
        _ => {}
    }
    let regs = (0..insn.op_count())
        .filter(|&i| insn.op_kind(i) == OpKind::Register)
        .map(|i| insn.op_register(i));
    let mut kind = None;
    for r in regs {
        if r.is_xmm() {
            return Some(Kind::Sse);
        }
        if r.is_mm() {
            kind = Some(Kind::Mmx);
        }
    }
    if kind.is_some() {
        return kind;
    }
    let x87 = insn.cpuid_features().iter().any(|f| {
        matches!(
            f,
            iced_x86::CpuidFeature::FPU
                | iced_x86::CpuidFeature::FPU287
                | iced_x86::CpuidFeature::FPU387
        )
    });
    x87.then_some(Kind::X87)
}

/// The exception an FPU instruction of `kind` raises in `mode` instead of
/// running (Intel SDM Vol. 3A, table 2-2 and 13-1).
pub fn blocked(kind: Kind, mode: ModeKey) -> Option<u32> {
    let bit = |b: u32| mode.0 & b != 0;
    let (ts, em) = (bit(ModeKey::FPU_TS), bit(ModeKey::FPU_EM));
    match kind {
        Kind::Wait => (ts && bit(ModeKey::FPU_MP)).then_some(vector::NM),
        Kind::X87 => (ts || em).then_some(vector::NM),
        Kind::Mmx if em => Some(vector::UD),
        Kind::Sse if em || !bit(ModeKey::OSFXSR) => Some(vector::UD),
        Kind::Mmx | Kind::Sse => ts.then_some(vector::NM),
    }
}

pub fn lower(b: &mut TuBuilder, insn: &Instruction, kind: Kind) -> Result<Flow, EncodeError> {
    if let Some(v) = blocked(kind, b.mode) {
        b.raise(v, exc_kind::HARDWARE, insn.ip32());
        return Ok(Flow::Ends);
    }
    if !b.fpu_in {
        // Flag-free: call and ret; r11 is free before the operand's address.
        asm!(b.e; call QWORD [cpu + off::FPU_ENTER]);
        b.fpu_in = true;
    }
    ident::lower(b, insn)?;
    if matches!(
        insn.mnemonic(),
        Mnemonic::Fnstenv
            | Mnemonic::Fstenv
            | Mnemonic::Fnsave
            | Mnemonic::Fsave
            | Mnemonic::Fxsave
    ) {
        // They stored the host's instruction and data pointers: the
        // runtime makes them the guest's (see runtime cpu/fpu.rs).
        b.call_emulate(insn);
        b.fpu_in = false;
    }
    Ok(Flow::Next)
}
