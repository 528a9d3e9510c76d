//! Sensitive and system instructions: cli/sti at CPL 0 inline, the rest
//! emulated by the runtime through the `Emulate` helper.

use iced_x86::{Instruction, Mnemonic};

use super::{Flow, TuBuilder};
use crate::abi::{ModeKey, flags, off};
use crate::emit::{EncodeError, asm};

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
        _ => b.call_emulate(insn),
    }
    Ok(Flow::Next)
}
