//! Control flow: direct branches become chain slots, indirect ones probe
//! the jump cache inline, far transfers and interrupts go to the runtime.

use iced_x86::{Code, ConditionCode, Instruction, Mnemonic, OpKind, Register};

use super::{Flow, TuBuilder, ident, stack::adjust_esp};
use crate::abi::{exc_kind, off, vector};
use crate::emit::{EncodeError, asm, load};

pub fn lower(b: &mut TuBuilder, insn: &Instruction) -> Result<Flow, EncodeError> {
    use Mnemonic as M;
    let next = insn.next_ip32();
    match insn.mnemonic() {
        M::Jmp | M::Call if is_far(insn) => {
            // Far transfers load CS: the runtime does them and exits.
            b.call_emulate(insn);
            b.chain_to(next);
        }
        M::Jmp => match insn.op0_kind() {
            OpKind::NearBranch16 | OpKind::NearBranch32 => b.chain_to(insn.near_branch32()),
            _ => {
                load_target(b, insn)?;
                probe(b);
            }
        },
        M::Call => {
            let size = if matches!(insn.code(), Code::Call_rel16 | Code::Call_rm16) {
                2
            } else {
                4
            };
            match insn.op0_kind() {
                OpKind::NearBranch16 | OpKind::NearBranch32 => {
                    push_return(b, size, next);
                    b.call_chained(insn.near_branch32());
                    landing_pad(b, next);
                }
                _ => {
                    load_target(b, insn)?;
                    push_return(b, size, next);
                    b.flush_esp();
                    let target = b.e.label();
                    asm!(b.e; call =>target);
                    landing_pad(b, next);
                    b.e.bind(target);
                    probe(b);
                }
            }
        }
        M::Ret => {
            let size = if matches!(insn.code(), Code::Retnw | Code::Retnw_imm16) {
                2
            } else {
                4
            };
            let pop = if insn.op_count() > 0 {
                insn.immediate16() as i32
            } else {
                0
            };
            if size == 2 {
                let m = b.stack_mem(0, size as u32);
                b.e.put(
                    Instruction::with2(Code::Movzx_r32_rm16, Register::R11D, m).expect("movzx"),
                );
            } else {
                let m = b.stack_mem(0, size as u32);
                b.e.put(load(4, Register::R11D, m));
            }
            adjust_esp(b, size + pop);
            b.flush_esp();
            // The host return predictor takes us to the caller's landing pad.
            asm!(b.e; ret);
        }
        M::Retf | M::Iret | M::Iretd => {
            b.call_emulate(insn);
            b.chain_to(next);
        }
        M::Loop | M::Loope | M::Loopne | M::Jcxz | M::Jecxz => loop_family(b, insn),
        M::Int3 => b.raise(vector::BP, exc_kind::SOFTWARE_EXC, next),
        M::Int => b.raise(insn.immediate8() as u32, exc_kind::SOFTWARE_INT, next),
        M::Int1 => b.raise(vector::DB, exc_kind::HARDWARE, next),
        M::Into => {
            let skip = b.e.label();
            asm!(b.e; jno =>skip);
            b.raise(vector::OF, exc_kind::SOFTWARE_EXC, next);
            b.e.bind(skip);
            b.chain_to(next);
        }
        M::Ud0 | M::Ud1 | M::Ud2 => b.raise(vector::UD, exc_kind::HARDWARE, insn.ip32()),
        _ => {
            // Taken: a chain; not taken: the TU goes on (or, at its end,
            // chains to the next instruction).
            let cc = condition_number(insn.condition_code());
            b.chain_if(cc, insn.near_branch32());
            return Ok(Flow::Next);
        }
    }
    Ok(Flow::Ends)
}

fn is_far(insn: &Instruction) -> bool {
    matches!(insn.op0_kind(), OpKind::FarBranch16 | OpKind::FarBranch32)
        || matches!(
            insn.code(),
            Code::Jmp_m1616 | Code::Jmp_m1632 | Code::Call_m1616 | Code::Call_m1632
        )
}

/// Intel's 4-bit condition encoding.
fn condition_number(cc: ConditionCode) -> u8 {
    use ConditionCode as C;
    match cc {
        C::o => 0,
        C::no => 1,
        C::b => 2,
        C::ae => 3,
        C::e => 4,
        C::ne => 5,
        C::be => 6,
        C::a => 7,
        C::s => 8,
        C::ns => 9,
        C::p => 10,
        C::np => 11,
        C::l => 12,
        C::ge => 13,
        C::le => 14,
        C::g => 15,
        C::None => unreachable!("conditional branch without a condition"),
    }
}

/// Loads an indirect branch target (register or memory operand, 16 or 32
/// bits) zero-extended into r11d.
fn load_target(b: &mut TuBuilder, insn: &Instruction) -> Result<(), EncodeError> {
    let wide = !matches!(insn.code(), Code::Jmp_rm16 | Code::Call_rm16);
    let code = if wide {
        Code::Mov_r32_rm32
    } else {
        Code::Movzx_r32_rm16
    };
    if insn.op0_kind() == OpKind::Register {
        let src = ident::host_reg(insn.op0_register());
        b.e.put(Instruction::with2(code, Register::R11D, src).expect("mov"));
        return Ok(());
    }
    let mut m = *insn;
    m.set_code(code);
    m.set_op0_kind(OpKind::Register);
    m.set_op0_register(Register::R11D);
    m.set_op1_kind(OpKind::Memory);
    ident::rebase_memory(b, &mut m);
    b.e.insn(&m)
}

fn push_return(b: &mut TuBuilder, size: u32, ret: u32) {
    let m = b.stack_mem(-(size as i64), size);
    let push = if size == 2 {
        // The return IP wraps within the segment (a call at its end).
        Instruction::with2(Code::Mov_rm16_imm16, m, ret & 0xFFFF)
    } else {
        Instruction::with2(Code::Mov_rm32_imm32, m, ret)
    };
    b.e.put(push.expect("mov"));
    adjust_esp(b, -(size as i32));
}

/// Where a translated `ret` arrives in the caller's TU: go on to `ret_eip`
/// if the guest really returned there (r11d), else through the jump cache.
fn landing_pad(b: &mut TuBuilder, ret_eip: u32) {
    let probe = b.e.stubs.probe;
    asm!(b.e
        ; mov r10, rcx
        ; lea ecx, [r11 + (ret_eip.wrapping_neg() as i32)]
        ; jrcxz >ok
        ; mov rcx, r10
        ; jmp extern probe
        ; ok:
        ; mov rcx, r10
    );
    if b.instrument.stats {
        crate::emit::count(&mut b.e, off::RET_HITS);
    }
    b.chain_to(ret_eip);
}

fn probe(b: &mut TuBuilder) {
    crate::emit::jump_cache_probe(&mut b.e, b.instrument.stats);
}

/// loop/loope/loopne/jecxz with ecx run as the host's own instruction
/// (0x67 selects ecx in 64-bit mode); the cx forms borrow rcx.
fn loop_family(b: &mut TuBuilder, insn: &Instruction) {
    use Mnemonic as M;
    let target = insn.near_branch32();
    let next = insn.next_ip32();
    let opcode: u8 = match insn.mnemonic() {
        M::Loopne => 0xE0,
        M::Loope => 0xE1,
        M::Loop => 0xE2,
        _ => 0xE3,
    };
    let cx = matches!(
        insn.code(),
        Code::Loopne_rel8_16_CX
            | Code::Loopne_rel8_32_CX
            | Code::Loope_rel8_16_CX
            | Code::Loope_rel8_32_CX
            | Code::Loop_rel8_16_CX
            | Code::Loop_rel8_32_CX
            | Code::Jcxz_rel8_16
            | Code::Jcxz_rel8_32
    );
    if !cx {
        // Taken skips the fall-through jump and lands on the taken one.
        b.chain_unless(&[0x67, opcode], next);
        b.chain_to(target);
        return;
    }
    let taken = b.e.label();
    let fall = b.e.label();
    asm!(b.e; mov r10, rcx);
    if opcode != 0xE3 {
        asm!(b.e
            ; lea ecx, [rcx - 1]
            ; mov r10w, cx
        );
    }
    asm!(b.e
        ; movzx ecx, r10w
        ; jrcxz >zero
        ; mov rcx, r10
    );
    match opcode {
        0xE3 => asm!(b.e; jmp =>fall),
        0xE1 => asm!(b.e; jnz =>fall; jmp =>taken),
        0xE0 => asm!(b.e; jz =>fall; jmp =>taken),
        _ => asm!(b.e; jmp =>taken),
    }
    asm!(b.e; zero: ; mov rcx, r10);
    match opcode {
        0xE3 => asm!(b.e; jmp =>taken),
        _ => asm!(b.e; jmp =>fall),
    }
    b.e.bind(taken);
    b.chain_to(target);
    b.e.bind(fall);
    b.chain_to(next);
}
