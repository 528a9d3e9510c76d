//! push/pop/pusha/popa/pushf/popf/enter/leave.
//!
//! The guest stack is `gs: [r12d]`. Every form stores or loads first and
//! moves esp last with `lea`, which leaves the guest flags alone.

use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

use super::{Flow, TuBuilder, ident};
use crate::abi::{ModeKey, flags, off};
use crate::emit::{EncodeError, asm, load, store};

/// Moves guest esp by `delta` (lazily, see `TuBuilder::adjust_esp`).
pub fn adjust_esp(b: &mut TuBuilder, delta: i32) {
    b.adjust_esp(delta);
}

/// Whether r12 may lag behind guest esp while this instruction runs: it
/// addresses the stack only through `TuBuilder::sp`, or not at all.
pub fn defers_esp(insn: &Instruction) -> bool {
    let esp = |r: Register| r.full_register32() == Register::ESP;
    match insn.mnemonic() {
        Mnemonic::Push => match insn.op0_kind() {
            OpKind::Register => !esp(insn.op0_register()),
            OpKind::Memory => false,
            _ => true,
        },
        Mnemonic::Pop => {
            insn.op0_kind() == OpKind::Register
                && !esp(insn.op0_register())
                && !insn.op0_register().is_segment_register()
        }
        Mnemonic::Ret => true,
        Mnemonic::Call => matches!(insn.op0_kind(), OpKind::NearBranch16 | OpKind::NearBranch32),
        // Other instructions the host runs as they are, if they neither
        // name esp nor need r11 (16-bit addressing) or a register borrow:
        // a fault in them finds the lag in their site's fixup.
        _ => {
            matches!(
                ident::family(insn),
                ident::Family::Ident | ident::Family::Nop
            ) && !insn.memory_base().is_gpr16()
                && !(0..insn.op_count())
                    .any(|i| insn.op_kind(i) == OpKind::Register && esp(insn.op_register(i)))
                && insn.memory_base().full_register32() != Register::ESP
                && insn.memory_index().full_register32() != Register::ESP
        }
    }
}

/// Operand size of a stack instruction (2 or 4), from its esp increment.
fn op_size(insn: &Instruction) -> u32 {
    insn.stack_pointer_increment().unsigned_abs()
}

pub fn lower(b: &mut TuBuilder, insn: &Instruction) -> Result<Flow, EncodeError> {
    use Mnemonic as M;
    match insn.mnemonic() {
        M::Push => push(b, insn)?,
        M::Pop => return pop(b, insn),
        M::Pusha | M::Pushad => pusha(b, op_size(insn) / 8),
        M::Popa | M::Popad => popa(b, op_size(insn) / 8),
        // IOPL-sensitive in v8086 mode: the runtime decides.
        M::Pushf | M::Pushfd if b.mode.0 & ModeKey::VM86 != 0 => b.call_emulate(insn),
        M::Pushf | M::Pushfd => pushf(b, op_size(insn)),
        M::Popf | M::Popfd => return popf(b, insn),
        M::Enter => return enter(b, insn),
        M::Leave => leave(b, if insn.code() == Code::Leavew { 2 } else { 4 }),
        _ => unreachable!("not a stack instruction: {insn}"),
    }
    Ok(Flow::Next)
}

/// Puts the value to push in a register (r11 unless it already is one).
fn push(b: &mut TuBuilder, insn: &Instruction) -> Result<(), EncodeError> {
    let size = op_size(insn);
    let r11 = sized(size, Register::R11D);
    let src = match insn.op0_kind() {
        OpKind::Register if insn.op0_register().is_segment_register() => {
            // A 32-bit push of a segment register writes only the low word.
            let sreg = off::SREGS + 4 * insn.op0_register().number() as i32;
            asm!(b.e; movzx r11d, WORD [cpu + sreg]);
            let m = b.stack_mem(-(size as i64), size);
            b.e.put(store(2, m, Register::R11W));
            adjust_esp(b, -(size as i32));
            return Ok(());
        }
        OpKind::Register => ident::host_reg(insn.op0_register()),
        OpKind::Memory => {
            let mut l = *insn;
            l.set_code(if size == 2 {
                Code::Mov_r16_rm16
            } else {
                Code::Mov_r32_rm32
            });
            // Rebuild as `mov r11, [mem]`: keep the memory operand, replace
            // operand 0 by the register.
            let mut m = Instruction::with2(
                l.code(),
                r11,
                iced_x86::MemoryOperand::with_base(Register::EAX),
            )
            .expect("mov");
            copy_memory(&mut m, insn);
            ident::rebase_memory(b, &mut m);
            b.e.insn(&m)?;
            r11
        }
        _ => {
            let imm = insn.immediate(0) as u32;
            asm!(b.e; mov r11d, imm as i32);
            r11
        }
    };
    let m = b.stack_mem(-(size as i64), size);
    b.e.put(store(size, m, src));
    adjust_esp(b, -(size as i32));
    Ok(())
}

/// Copies the memory operand of `from` into `to` (whose operand 1 is memory).
fn copy_memory(to: &mut Instruction, from: &Instruction) {
    to.set_memory_base(from.memory_base());
    to.set_memory_index(from.memory_index());
    to.set_memory_index_scale(from.memory_index_scale());
    to.set_memory_displacement64(from.memory_displacement64());
    to.set_memory_displ_size(from.memory_displ_size());
    to.set_segment_prefix(from.segment_prefix());
}

fn pop(b: &mut TuBuilder, insn: &Instruction) -> Result<Flow, EncodeError> {
    let size = op_size(insn);
    match insn.op0_kind() {
        OpKind::Register if insn.op0_register().is_segment_register() => {
            // A segment load: the runtime checks and loads the descriptor.
            b.call_emulate(insn);
            return Ok(Flow::Next);
        }
        OpKind::Register => {
            let dst = ident::host_reg(insn.op0_register());
            if dst.full_register() == Register::R12 {
                // pop esp / pop sp: esp is incremented, then overwritten.
                let m = b.stack_mem(0, size);
                b.e.put(load(size, sized(size, Register::R11D), m));
                adjust_esp(b, size as i32);
                b.flush_esp();
                b.e.put(mov_reg(size, dst, Register::R11D));
            } else {
                let m = b.stack_mem(0, size);
                b.e.put(load(size, dst, m));
                adjust_esp(b, size as i32);
            }
        }
        _ => {
            // pop [mem]: an esp-based address uses the incremented esp. The
            // value waits in r8: the destination address may need r11/r10.
            let value = if size == 2 {
                Register::R8W
            } else {
                Register::R8D
            };
            let m = b.stack_mem(0, size);
            b.e.put(load(size, value, m));
            let code = if size == 2 {
                Code::Mov_rm16_r16
            } else {
                Code::Mov_rm32_r32
            };
            let mut m = Instruction::with2(
                code,
                iced_x86::MemoryOperand::with_base(Register::EAX),
                value,
            )
            .expect("mov");
            copy_memory(&mut m, insn);
            if m.memory_base() == Register::ESP {
                m.set_memory_displacement64((m.memory_displacement32().wrapping_add(size)) as u64);
                m.set_memory_displ_size(4);
            }
            ident::rebase_memory(b, &mut m);
            b.e.insn(&m)?;
            adjust_esp(b, size as i32);
        }
    }
    Ok(Flow::Next)
}

const GPRS32: [Register; 8] = [
    Register::EAX,
    Register::ECX,
    Register::EDX,
    Register::EBX,
    Register::R12D,
    Register::EBP,
    Register::ESI,
    Register::EDI,
];

/// `mov dst, src` at operand size `size` (both given as 32-bit registers).
fn mov_reg(size: u32, dst: Register, src: Register) -> Instruction {
    let code = if size == 2 {
        Code::Mov_r16_rm16
    } else {
        Code::Mov_r32_rm32
    };
    Instruction::with2(code, sized(size, dst), sized(size, src)).expect("mov")
}

/// The `size`-byte form of a 32-bit register.
fn sized(size: u32, r: Register) -> Register {
    if size == 4 {
        return r;
    }
    match r {
        Register::EAX => Register::AX,
        Register::ECX => Register::CX,
        Register::EDX => Register::DX,
        Register::EBX => Register::BX,
        Register::R12D => Register::R12W,
        Register::EBP => Register::BP,
        Register::ESI => Register::SI,
        Register::EDI => Register::DI,
        Register::R11D => Register::R11W,
        r => r,
    }
}

/// pusha/pushad: eax ecx edx ebx (original) esp ebp esi edi, downwards.
fn pusha(b: &mut TuBuilder, size: u32) {
    for (i, r) in GPRS32.iter().enumerate() {
        let m = b.stack_mem(-((i as i64 + 1) * size as i64), size);
        b.e.put(store(size, m, sized(size, *r)));
    }
    adjust_esp(b, -8 * size as i32);
}

/// popa/popad: the highest and lowest slots are read first, into scratch
/// and into edi, so any fault comes before a guest register changes (the
/// 8 slots span at most two pages); the saved esp is skipped.
fn popa(b: &mut TuBuilder, size: u32) {
    let s = size as i64;
    let m = b.stack_mem(7 * s, size);
    b.e.put(load(size, sized(size, Register::R11D), m));
    for (i, r) in GPRS32.iter().enumerate().rev() {
        if i == 4 || i == 0 {
            continue;
        }
        let m = b.stack_mem((7 - i as i64) * s, size);
        b.e.put(load(size, sized(size, *r), m));
    }
    b.e.put(mov_reg(size, Register::EAX, Register::R11D));
    adjust_esp(b, 8 * size as i32);
}

/// pushf: host RFLAGS holds the status flags and DF, with exactly 0x202 in
/// the other bits while guest code runs (IF=1 and bit 1; popfq never lets
/// anything else in), so the guest image is host - 0x202 + sys_flags,
/// computed with lea to keep the flags. VM and RF read as 0 in the image.
fn pushf(b: &mut TuBuilder, size: u32) {
    asm!(b.e
        ; pushfq
        ; pop r11
        ; mov r10d, DWORD [cpu + off::SYS_FLAGS]
        ; lea r11d, [r11 + r10 - 0x202]
    );
    let m = b.stack_mem(-(size as i64), size);
    b.e.put(store(size, m, sized(size, Register::R11D)));
    adjust_esp(b, -(size as i32));
}

/// popf at CPL 0: every writable flag but VM/RF/VIF/VIP changes, and a
/// 32-bit popf clears RF. At other privilege levels the runtime applies
/// the IOPL rules.
fn popf(b: &mut TuBuilder, insn: &Instruction) -> Result<Flow, EncodeError> {
    if b.mode.cpl() != 0 || b.mode.0 & ModeKey::VM86 != 0 {
        b.call_emulate(insn);
        return Ok(Flow::Next);
    }
    let size = op_size(insn);
    if size == 2 {
        // The upper half keeps the system flags; no flag-changing glue
        // before the load, which may fault.
        asm!(b.e; mov r11d, DWORD [cpu + off::SYS_FLAGS]);
        let m = b.stack_mem(0, size);
        b.e.put(load(2, Register::R11W, m));
    } else {
        let m = b.stack_mem(0, size);
        b.e.put(load(4, Register::R11D, m));
    }
    adjust_esp(b, size as i32);
    const SYS: u32 =
        flags::WRITABLE & !flags::HOST_LIVE & !(flags::VM | flags::RF | flags::VIF | flags::VIP);
    // A 32-bit popf clears RF; a 16-bit one leaves the upper half alone.
    let keep = if size == 2 {
        flags::VM | flags::RF | flags::VIF | flags::VIP
    } else {
        flags::VM | flags::VIF | flags::VIP
    };
    // Both ways out below need esp in r12.
    b.flush_esp();
    // The host flags are free until the popfq that loads the guest's.
    let stay = b.e.label();
    asm!(b.e
        ; mov r10d, r11d
        ; and r10d, SYS as i32
        ; mov r9d, DWORD [cpu + off::SYS_FLAGS]
        ; and r9d, keep as i32
        ; or r10d, r9d
        ; or r10d, flags::FIXED1 as i32
        ; mov r9d, DWORD [cpu + off::SYS_FLAGS]
        ; mov DWORD [cpu + off::SYS_FLAGS], r10d
        ; and r11d, flags::HOST_LIVE as i32
        ; or r11d, 0x202
        ; push r11
        // Leave if TF is set (single-stepping is a mode of its own) or IF
        // was set while an interrupt waits for it (see `sti`).
        ; test r10d, flags::TF as i32
        ; jnz >leave
        ; not r9d
        ; and r9d, r10d
        ; test r9d, flags::IF as i32
        ; jz =>stay
        ; cmp DWORD [cpu + off::IRQ_WAITING], 0
        ; je =>stay
        ; leave:
        ; popfq
    );
    b.exit_to_run_loop(insn.next_ip32());
    b.e.bind(stay);
    asm!(b.e; popfq);
    b.chain_to(insn.next_ip32());
    Ok(Flow::Ends)
}

/// enter imm16, 0 inline; nesting levels above 0 go to the runtime.
fn enter(b: &mut TuBuilder, insn: &Instruction) -> Result<Flow, EncodeError> {
    let size = op_size_enter(insn);
    let frame = insn.immediate16() as i32;
    let level = insn.immediate8_2nd() & 31;
    if level != 0 {
        b.call_emulate(insn);
        return Ok(Flow::Next);
    }
    let m = b.stack_mem(-(size as i64), size);
    b.e.put(store(size, m, sized(size, Register::EBP)));
    adjust_esp(b, -(size as i32));
    b.flush_esp();
    // The frame pointer is SP with a 16-bit stack.
    if size == 2 {
        asm!(b.e; mov bp, r12w);
    } else if b.stack32() {
        asm!(b.e; mov ebp, r12d);
    } else {
        asm!(b.e; movzx ebp, r12w);
    }
    adjust_esp(b, -frame);
    Ok(Flow::Next)
}

fn op_size_enter(insn: &Instruction) -> u32 {
    if insn.code() == Code::Enterw_imm16_imm8 {
        2
    } else {
        4
    }
}

/// leave: esp = ebp, then pop ebp.
fn leave(b: &mut TuBuilder, size: u32) {
    if b.stack32() {
        let m = b.seg_mem(Register::EBP, 0, Register::SS, size);
        b.e.put(load(size, sized(size, Register::R11D), m));
        asm!(b.e; lea r12d, [rbp + size as i32]);
    } else {
        // A 16-bit stack: SP = BP, then pop from ss:sp.
        let m = b.seg_mem16(Register::EBP, 0, Register::SS, size);
        b.e.put(load(size, sized(size, Register::R11D), m));
        asm!(b.e; lea r12w, [rbp + size as i32]);
    }
    b.e.put(mov_reg(size, Register::EBP, Register::R11D));
}
