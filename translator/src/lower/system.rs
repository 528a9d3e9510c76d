//! Sensitive and system instructions: cli/sti at CPL 0 inline, a data
//! segment reload at CPL 0 from an unchanged descriptor inline, the rest
//! emulated by the runtime through the `Emulate` helper.

use dynasmrt::DynamicLabel;
use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

use super::{Flow, TuBuilder, ident};
use crate::abi::{ModeKey, flags, off};
use crate::emit::{EncodeError, asm, gmem};

pub fn lower(b: &mut TuBuilder, insn: &Instruction) -> Result<Flow, EncodeError> {
    let ring0 = b.mode.cpl() == 0 && b.mode.0 & ModeKey::VM86 == 0;
    match insn.mnemonic() {
        // The flags are parked on the host stack around the state update.
        Mnemonic::Cli if ring0 => {
            asm!(b.e; pushfq; and DWORD [cpu + off::SYS_FLAGS], !flags::IF as i32; popfq);
        }
        Mnemonic::Sti if ring0 => {
            // The interrupt shadow, only when sti turns IF on: nothing is
            // taken before the next instruction.
            let next = insn.next_ip32() as i32;
            let on = b.e.label();
            asm!(b.e
                ; pushfq
                ; test DWORD [cpu + off::SYS_FLAGS], flags::IF as i32
                ; jnz =>on
                ; or DWORD [cpu + off::SYS_FLAGS], flags::IF as i32
                ; mov DWORD [cpu + off::SHADOW_EIP], next
                ; mov DWORD [cpu + off::SHADOW], 1
                ; cmp DWORD [cpu + off::IRQ_WAITING], 0
                ; je =>on
                ; popfq
            );
            // An interrupt came while IF was clear: back to the run loop,
            // which takes it after the next instruction.
            b.exit_to_run_loop(insn.next_ip32());
            b.e.bind(on);
            asm!(b.e; popfq);
            // Otherwise on, chained: one that comes from now on makes the
            // next TU head leave (the poll).
            b.chain_to(insn.next_ip32());
            return Ok(Flow::Ends);
        }
        Mnemonic::Mov if ring0 && b.mode.0 & ModeKey::PE != 0 && same_segment_fast_path(insn) => {
            reload_segment(b, insn);
        }
        _ => b.call_emulate(insn),
    }
    Ok(Flow::Next)
}

/// `mov ds/es/fs/gs, reg`: what a kernel's entry code does on every
/// system call, mostly with the selector the register already holds.
fn same_segment_fast_path(insn: &Instruction) -> bool {
    matches!(
        insn.op0_register(),
        Register::DS | Register::ES | Register::FS | Register::GS
    ) && insn.op1_kind() == OpKind::Register
}

/// A segment load that changes nothing: the selector is the one the
/// segment was loaded with (`CpuState::desc_sel`) and its GDT descriptor
/// still holds the same 8 bytes, so the checks and the hidden part would
/// come out the same. Compared flag-free (rcx parked in r10, jrcxz); the
/// descriptor is read at CPL 0, as the CPU does, and may fault like any
/// access of the instruction. Anything else goes to the runtime.
fn reload_segment(b: &mut TuBuilder, insn: &Instruction) {
    let i = insn.op0_register().number() as i32 - Register::ES.number() as i32;
    let src = ident::host_reg(insn.op1_register());
    if src.size() == 2 {
        b.e.put(Instruction::with2(Code::Movzx_r32_rm16, Register::R11D, src).expect("movzx"));
    } else {
        b.e.put(Instruction::with2(Code::Mov_r32_rm32, Register::R11D, src).expect("mov"));
        b.e.put(
            Instruction::with2(Code::Movzx_r32_rm16, Register::R11D, Register::R11W)
                .expect("movzx"),
        );
    }
    let (slow, done) = (b.e.label(), b.e.label());
    to_unless_equal(b, off::DESC_SEL + 4 * i, false, slow);
    asm!(b.e; mov r9d, DWORD [cpu + off::DESC_LIN + 4 * i]);
    let raw = gmem(Register::R9D, 0);
    b.e.put(Instruction::with2(Code::Mov_r64_rm64, Register::R11, raw).expect("mov"));
    to_unless_equal(b, off::DESC_RAW + 8 * i, true, slow);
    asm!(b.e; jmp =>done; =>slow);
    b.call_emulate(insn);
    b.e.bind(done);
}

/// Goes to `to` unless r11 equals the CPU state field at `field` (a dword
/// zero-extended, or a qword if `wide`), keeping the flags: r11 - field
/// computed with not/lea into rcx (parked in r10) and tested with jrcxz.
fn to_unless_equal(b: &mut TuBuilder, field: i32, wide: bool, to: DynamicLabel) {
    asm!(b.e; mov r10, rcx);
    if wide {
        asm!(b.e; mov r9, QWORD [cpu + field]);
    } else {
        asm!(b.e; mov r9d, DWORD [cpu + field]);
    }
    asm!(b.e
        ; not r9
        ; lea rcx, [r11 + r9 + 1]
        ; jrcxz >equal
        ; mov rcx, r10
        ; jmp =>to
        ; equal:
        ; mov rcx, r10
    );
}
