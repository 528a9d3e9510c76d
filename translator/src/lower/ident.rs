//! IDENT: guest instructions the host executes as they are, with guest esp
//! renamed to r12 and every memory operand rebased as `gs: addr32 [..]`.
//! Also the classification of every instruction into its lowering family.

use iced_x86::{
    Code, CpuidFeature, Instruction, InstructionInfoFactory, Mnemonic, OpKind, Register,
};

use super::TuBuilder;
use crate::emit::EncodeError;
use crate::meta::Fixup;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Ident,
    /// x87, MMX, SSE: IDENT on the guest's FPU state.
    Fpu(super::fpu::Kind),
    /// Does nothing on a P6: emits no code.
    Nop,
    Stack,
    Branch,
    String,
    System,
    Invalid,
}

/// The CPUID features of the guest CPU's user-level instruction set (a P6
/// with the FPU, MMX, SSE and SSE2): anything else is #UD.
fn feature_allowed(f: CpuidFeature) -> bool {
    matches!(
        f,
        CpuidFeature::INTEL8086
            | CpuidFeature::INTEL186
            | CpuidFeature::INTEL286
            | CpuidFeature::INTEL386
            | CpuidFeature::INTEL486
            | CpuidFeature::CMOV
            | CpuidFeature::CX8
            | CpuidFeature::MULTIBYTENOP
            | CpuidFeature::PAUSE
            | CpuidFeature::TSC
            | CpuidFeature::MSR
            | CpuidFeature::CPUID
            | CpuidFeature::SEP
            | CpuidFeature::FPU
            | CpuidFeature::FPU287
            | CpuidFeature::FPU387
            | CpuidFeature::MMX
            | CpuidFeature::FXSR
            | CpuidFeature::SSE
            | CpuidFeature::SSE2
    )
}

pub fn family(insn: &Instruction) -> Family {
    use Mnemonic as M;
    if is_rep_bit_scan(insn) {
        return Family::Ident;
    }
    if is_hint_nop(insn) {
        return Family::Nop;
    }
    if insn.is_invalid() || !insn.cpuid_features().iter().all(|&f| feature_allowed(f)) {
        return Family::Invalid;
    }
    if let Some(kind) = super::fpu::kind(insn) {
        return Family::Fpu(kind);
    }
    if insn.is_string_instruction() {
        return match insn.mnemonic() {
            M::Insb | M::Insw | M::Insd | M::Outsb | M::Outsw | M::Outsd => Family::System,
            _ => Family::String,
        };
    }
    match insn.mnemonic() {
        M::Push
        | M::Pop
        | M::Pusha
        | M::Pushad
        | M::Popa
        | M::Popad
        | M::Pushf
        | M::Pushfd
        | M::Popf
        | M::Popfd
        | M::Enter
        | M::Leave => Family::Stack,
        M::Jmp
        | M::Call
        | M::Ret
        | M::Retf
        | M::Iret
        | M::Iretd
        | M::Loop
        | M::Loope
        | M::Loopne
        | M::Jcxz
        | M::Jecxz
        | M::Int
        | M::Int3
        | M::Into
        | M::Int1
        | M::Ud0
        | M::Ud1
        | M::Ud2
        | M::Jo
        | M::Jno
        | M::Jb
        | M::Jae
        | M::Je
        | M::Jne
        | M::Jbe
        | M::Ja
        | M::Js
        | M::Jns
        | M::Jp
        | M::Jnp
        | M::Jl
        | M::Jge
        | M::Jle
        | M::Jg => Family::Branch,
        M::In
        | M::Out
        | M::Cpuid
        | M::Rdtsc
        | M::Rdmsr
        | M::Wrmsr
        | M::Hlt
        | M::Cli
        | M::Sti
        | M::Clts
        | M::Invd
        | M::Wbinvd
        | M::Invlpg
        | M::Lgdt
        | M::Lidt
        | M::Lldt
        | M::Ltr
        | M::Sgdt
        | M::Sidt
        | M::Sldt
        | M::Str
        | M::Smsw
        | M::Lmsw
        | M::Lar
        | M::Lsl
        | M::Verr
        | M::Verw
        | M::Lds
        | M::Les
        | M::Lfs
        | M::Lgs
        | M::Lss
        | M::Arpl
        | M::Bound
        | M::Daa
        | M::Das
        | M::Aaa
        | M::Aas
        | M::Aam
        | M::Aad
        | M::Salc
        | M::Sysenter
        | M::Sysexit
        | M::Rsm
        | M::Rdpmc
        | M::Loadall => Family::System,
        M::Mov if uses_special_register(insn) => Family::System,
        _ => Family::Ident,
    }
}

fn uses_special_register(insn: &Instruction) -> bool {
    (0..insn.op_count()).any(|i| {
        insn.op_kind(i) == OpKind::Register && {
            let r = insn.op_register(i);
            r.is_segment_register() || r.is_cr() || r.is_dr() || r.is_tr()
        }
    })
}

/// Host register for a guest general register: esp lives in r12.
pub fn host_reg(r: Register) -> Register {
    match r {
        Register::ESP => Register::R12D,
        Register::SP => Register::R12W,
        r => r,
    }
}

fn is_high8(r: Register) -> bool {
    matches!(r, Register::AH | Register::CH | Register::DH | Register::BH)
}

fn is_16bit_addressing(insn: &Instruction) -> bool {
    insn.memory_base().is_gpr16() || insn.memory_index().is_gpr16()
}

fn memory_operand(insn: &Instruction) -> Option<u32> {
    (0..insn.op_count()).find(|&i| insn.op_kind(i) == OpKind::Memory)
}

/// Computes a 16-bit effective address (`[bx+si+disp]` and friends) into
/// r11d, wrapped to 16 bits, without touching the flags.
pub fn compute_ea16(b: &mut TuBuilder, insn: &Instruction) {
    let full = |r: Register| {
        if r == Register::None {
            Register::None
        } else {
            r.full_register32()
        }
    };
    let disp = insn.memory_displacement32() as i64 & 0xFFFF;
    let mem = iced_x86::MemoryOperand::new(
        full(insn.memory_base()),
        full(insn.memory_index()),
        1,
        disp,
        if disp == 0 { 0 } else { 4 },
        false,
        Register::None,
    );
    b.e.put(Instruction::with2(Code::Lea_r32_m, Register::R11D, mem).expect("lea"));
    b.e.put(
        Instruction::with2(Code::Movzx_r32_rm16, Register::R11D, Register::R11W).expect("movzx"),
    );
}

/// Computes a 32-bit effective address into r11d, without the segment.
fn compute_ea32(b: &mut TuBuilder, insn: &Instruction) {
    let disp = insn.memory_displacement32() as i32 as i64;
    let mem = iced_x86::MemoryOperand::new(
        host_reg(insn.memory_base()),
        insn.memory_index(),
        insn.memory_index_scale(),
        disp,
        if disp == 0 && insn.memory_base() != Register::None {
            0
        } else {
            4
        },
        false,
        Register::None,
    );
    b.e.put(Instruction::with2(Code::Lea_r32_m, Register::R11D, mem).expect("lea"));
}

/// Rewrites a guest memory operand in place: gs: addr32, esp -> r12; a
/// 16-bit address, or one whose segment base must be added, is computed
/// into r11d first.
pub fn rebase_memory(b: &mut TuBuilder, insn: &mut Instruction) {
    let seg = insn.memory_segment();
    let add_base = b.needs_segment_base(seg);
    if is_16bit_addressing(insn) || add_base {
        if is_16bit_addressing(insn) {
            compute_ea16(b, insn);
        } else {
            compute_ea32(b, insn);
        }
        if add_base {
            let size = insn.memory_size().size() as u32;
            b.add_segment_base(Register::R11D, seg, size, is_16bit_addressing(insn));
        }
        insn.set_memory_base(Register::R11D);
        insn.set_memory_index(Register::None);
        insn.set_memory_index_scale(1);
        insn.set_memory_displacement64(0);
        insn.set_memory_displ_size(0);
    } else {
        insn.set_memory_base(host_reg(insn.memory_base()));
        // A bare [disp32] must not become RIP-relative: iced encodes a
        // base-less 32-bit address with a SIB byte and 0x67.
        if insn.memory_base() == Register::None && insn.memory_index() == Register::None {
            insn.set_memory_displ_size(4);
        }
    }
    insn.set_segment_prefix(Register::GS);
}

/// 0F 19-0F 1F are NOPs with a ModRM operand on a P6 and later, whatever
/// newer CPUs made of some encodings (endbr32, rdsspd, cldemote...);
/// compilers emit endbr32 and multi-byte NOPs freely. Their memory operand
/// is never accessed.
fn is_hint_nop(insn: &Instruction) -> bool {
    let op = insn.op_code();
    let byte = if op.op_code() > 0xFF {
        op.op_code() >> 8
    } else {
        op.op_code()
    };
    !insn.is_invalid()
        && op.table() == iced_x86::OpCodeTableKind::T0F
        && (0x19..=0x1F).contains(&byte)
}

/// `rep bsf`/`rep bsr` (F3 0F BC/BD): tzcnt/lzcnt on CPUs with BMI1/LZCNT,
/// but plain bsf/bsr on a P6, which ignores the prefix. Compilers emit
/// `rep bsf` on purpose for that reason.
fn is_rep_bit_scan(insn: &Instruction) -> bool {
    matches!(
        insn.code(),
        Code::Tzcnt_r16_rm16 | Code::Tzcnt_r32_rm32 | Code::Lzcnt_r16_rm16 | Code::Lzcnt_r32_rm32
    )
}

/// The host form of a guest instruction whose code differs in 64-bit mode.
fn host_code(code: Code) -> Code {
    match code {
        Code::Inc_r32 => Code::Inc_rm32,
        Code::Dec_r32 => Code::Dec_rm32,
        Code::Inc_r16 => Code::Inc_rm16,
        Code::Dec_r16 => Code::Dec_rm16,
        // The host has BMI1/LZCNT: it must not see the prefix (see is_rep_bit_scan).
        Code::Tzcnt_r16_rm16 => Code::Bsf_r16_rm16,
        Code::Tzcnt_r32_rm32 => Code::Bsf_r32_rm32,
        Code::Lzcnt_r16_rm16 => Code::Bsr_r16_rm16,
        Code::Lzcnt_r32_rm32 => Code::Bsr_r32_rm32,
        // moffs forms take no base register: use ModRM forms, whose memory
        // operand may become [r11] (computed address).
        Code::Mov_AL_moffs8 => Code::Mov_r8_rm8,
        Code::Mov_AX_moffs16 => Code::Mov_r16_rm16,
        Code::Mov_EAX_moffs32 => Code::Mov_r32_rm32,
        Code::Mov_moffs8_AL => Code::Mov_rm8_r8,
        Code::Mov_moffs16_AX => Code::Mov_rm16_r16,
        Code::Mov_moffs32_EAX => Code::Mov_rm32_r32,
        // 0x82 is an alias of 0x80 that 64-bit mode dropped.
        Code::Add_rm8_imm8_82 => Code::Add_rm8_imm8,
        Code::Or_rm8_imm8_82 => Code::Or_rm8_imm8,
        Code::Adc_rm8_imm8_82 => Code::Adc_rm8_imm8,
        Code::Sbb_rm8_imm8_82 => Code::Sbb_rm8_imm8,
        Code::And_rm8_imm8_82 => Code::And_rm8_imm8,
        Code::Sub_rm8_imm8_82 => Code::Sub_rm8_imm8,
        Code::Xor_rm8_imm8_82 => Code::Xor_rm8_imm8,
        Code::Cmp_rm8_imm8_82 => Code::Cmp_rm8_imm8,
        c => c,
    }
}

/// A mov of an immediate in a self-checking TU loads it from guest memory
/// (see [`lower_live_imm`]).
pub fn loads_live_imm(b: &TuBuilder, guest: &Instruction) -> bool {
    b.self_checking_flat()
        && matches!(
            guest.code(),
            Code::Mov_r32_imm32 | Code::Mov_r16_imm16 | Code::Mov_r8_imm8
        )
        && !is_high8(guest.op0_register())
}

pub fn lower(b: &mut TuBuilder, guest: &Instruction) -> Result<(), EncodeError> {
    if guest.mnemonic() == Mnemonic::Lea {
        return lower_lea(b, guest);
    }
    if loads_live_imm(b, guest) {
        return lower_live_imm(b, guest);
    }
    if guest.mnemonic() == Mnemonic::Xlatb
        && (is_16bit_addressing(guest) || b.needs_segment_base(guest.memory_segment()))
    {
        // xlat has no [r11] form: do its load by hand at segment base +
        // ebx + al (or (bx + al) & 0xFFFF).
        let a16 = is_16bit_addressing(guest);
        let (code, bx) = if a16 {
            (Code::Movzx_r32_rm16, Register::BX)
        } else {
            (Code::Mov_r32_rm32, Register::EBX)
        };
        b.e.put(Instruction::with2(code, Register::R11D, bx).expect("mov"));
        b.e.put(
            Instruction::with2(Code::Movzx_r32_rm8, Register::R10D, Register::AL).expect("movzx"),
        );
        let sum = iced_x86::MemoryOperand::with_base_index(Register::R11, Register::R10);
        b.e.put(Instruction::with2(Code::Lea_r32_m, Register::R11D, sum).expect("lea"));
        if a16 {
            b.e.put(
                Instruction::with2(Code::Movzx_r32_rm16, Register::R11D, Register::R11W)
                    .expect("movzx"),
            );
        }
        if b.needs_segment_base(guest.memory_segment()) {
            b.add_segment_base(Register::R11D, guest.memory_segment(), 1, a16);
        }
        b.e.put(
            Instruction::with2(
                Code::Mov_r8_rm8,
                Register::AL,
                crate::emit::gmem(Register::R11D, 0),
            )
            .expect("mov"),
        );
        return Ok(());
    }
    let mut insn = *guest;
    if is_rep_bit_scan(&insn) {
        insn.set_has_repe_prefix(false);
    }
    insn.set_code(host_code(insn.code()));
    for i in 0..insn.op_count() {
        if insn.op_kind(i) == OpKind::Register {
            insn.set_op_register(i, host_reg(insn.op_register(i)));
        }
    }
    if memory_operand(&insn).is_some() {
        rebase_memory(b, &mut insn);
    }
    emit_host(b, &insn)
}

/// `mov reg, imm` in a self-checking TU (a page whose code is written
/// often): the immediate is loaded from the guest code when it runs, and
/// the TU's code check skips it, so code that patches immediates (a
/// patch-and-call loop) does not make the TU stale. Flat code only: the
/// immediate's linear address is its EIP.
fn lower_live_imm(b: &mut TuBuilder, guest: &Instruction) -> Result<(), EncodeError> {
    let size = guest.op0_register().size() as u32;
    // The immediate is the instruction's last bytes.
    let at = guest.next_ip32().wrapping_sub(size);
    let code = match size {
        1 => Code::Mov_r8_rm8,
        2 => Code::Mov_r16_rm16,
        _ => Code::Mov_r32_rm32,
    };
    b.e.put(Instruction::with2(Code::Mov_r32_imm32, Register::R11D, at).expect("mov"));
    b.e.put(
        Instruction::with2(
            code,
            host_reg(guest.op0_register()),
            crate::emit::gmem(Register::R11D, 0),
        )
        .expect("mov"),
    );
    b.live
        .push((at.wrapping_sub(b.tu_eip()) as u16, size as u8));
    Ok(())
}

/// `lea` computes an address without touching memory: no GS, and a 16-bit
/// address goes through r11.
fn lower_lea(b: &mut TuBuilder, guest: &Instruction) -> Result<(), EncodeError> {
    let dst = host_reg(guest.op0_register());
    if is_16bit_addressing(guest) {
        compute_ea16(b, guest);
        let src = if dst.size() == 2 {
            Register::R11W
        } else {
            Register::R11D
        };
        let code = if dst.size() == 2 {
            Code::Mov_r16_rm16
        } else {
            Code::Mov_r32_rm32
        };
        b.e.put(Instruction::with2(code, dst, src).expect("mov"));
        return Ok(());
    }
    let mut insn = *guest;
    insn.set_op0_register(dst);
    insn.set_memory_base(host_reg(insn.memory_base()));
    insn.set_segment_prefix(Register::None);
    if insn.memory_base() == Register::None && insn.memory_index() == Register::None {
        insn.set_memory_displ_size(4);
    }
    emit_host(b, &insn)
}

/// Emits a host instruction built from a guest one, borrowing a legacy
/// register when it needs a REX prefix (r11/r12) but names AH-BH.
pub fn emit_host(b: &mut TuBuilder, insn: &Instruction) -> Result<(), EncodeError> {
    let regs = || {
        (0..insn.op_count())
            .filter(|&i| insn.op_kind(i) == OpKind::Register)
            .map(|i| insn.op_register(i))
            .chain([insn.memory_base(), insn.memory_index()])
    };
    let rex_reg = regs().find(|r| matches!(r.full_register(), Register::R12 | Register::R11));
    match rex_reg {
        Some(rex) if regs().any(is_high8) => emit_borrowed(b, insn, rex.full_register()),
        _ => b.e.insn(insn),
    }
}

/// Runs `insn` with a legacy register X standing in for `rex` (r11 or r12):
/// X is parked in r10, loaded with the value, and restored after; the fault
/// handler restores it from r10 too (`Fixup::Borrowed`).
fn emit_borrowed(b: &mut TuBuilder, insn: &Instruction, rex: Register) -> Result<(), EncodeError> {
    // The site's fixup becomes `Borrowed`: esp must not lag behind any more.
    b.flush_esp();
    let mut factory = InstructionInfoFactory::new();
    let used: Vec<Register> = factory
        .info(insn)
        .used_registers()
        .iter()
        .map(|u| u.register().full_register())
        .collect();
    let candidates = [
        Register::RBX,
        Register::RSI,
        Register::RDI,
        Register::RBP,
        Register::RDX,
        Register::RCX,
        Register::RAX,
    ];
    let Some(x) = candidates.iter().copied().find(|c| !used.contains(c)) else {
        return Err(EncodeError(format!("no register to borrow for {insn}")));
    };
    let x32 = x.full_register32();
    let x16 = reg16(x32);
    let subst = |r: Register| -> Register {
        if r == Register::None || r.full_register() != rex {
            r
        } else if r.size() == 2 {
            x16
        } else {
            x32
        }
    };
    let mut host = *insn;
    let mut writes_rex = false;
    for i in 0..host.op_count() {
        if host.op_kind(i) == OpKind::Register && host.op_register(i).full_register() == rex {
            // Only the destination (operand 0) of these forms can be written.
            writes_rex |= i == 0;
            host.set_op_register(i, subst(host.op_register(i)));
        }
    }
    host.set_memory_base(subst(host.memory_base()));
    host.set_memory_index(subst(host.memory_index()));
    let mov64 =
        |d: Register, s: Register| Instruction::with2(Code::Mov_r64_rm64, d, s).expect("mov");
    let mov32 =
        |d: Register, s: Register| Instruction::with2(Code::Mov_r32_rm32, d, s).expect("mov");
    b.e.put(mov64(Register::R10, x));
    b.e.put(mov32(x32, rex.full_register32()));
    b.fixup_from_here(Fixup::Borrowed(x.number() as u8));
    b.e.insn(&host)?;
    if writes_rex && rex == Register::R12 {
        b.e.put(mov32(Register::R12D, x32));
    }
    b.e.put(mov64(x, Register::R10));
    let eip = insn.ip32();
    b.site(eip, Fixup::None);
    Ok(())
}

fn reg16(r32: Register) -> Register {
    match r32 {
        Register::EAX => Register::AX,
        Register::ECX => Register::CX,
        Register::EDX => Register::DX,
        Register::EBX => Register::BX,
        Register::EBP => Register::BP,
        Register::ESI => Register::SI,
        Register::EDI => Register::DI,
        _ => Register::SP,
    }
}
