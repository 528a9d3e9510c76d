//! movs/stos/lods/cmps/scas, with and without rep, run as the host's own
//! string instructions on host pointers: rsi/rdi are biased by the GS base
//! around the instruction (ES:EDI cannot be overridden in 64-bit mode), so
//! the host's DF (the guest's) picks the direction and rep/repe/repne
//! behave exactly. A fault in the middle leaves the registers of the
//! completed iterations; the handler removes the bias (`Fixup::StringBias`)
//! and the guest restarts the instruction, as hardware would.

use iced_x86::{Code, Instruction, MemoryOperand, Mnemonic, Register};

use super::{Flow, TuBuilder};
use crate::abi::off;
use crate::emit::{EncodeError, asm};
use crate::meta::Fixup;

pub fn lower(b: &mut TuBuilder, insn: &Instruction) -> Result<Flow, EncodeError> {
    use Mnemonic as M;
    if address_size_16(insn) {
        // cx/si/di forms: the runtime emulates them (rare outside 16-bit code).
        b.call_emulate(insn);
        return Ok(Flow::Next);
    }
    let (opcode, si, di): (u8, bool, bool) = match insn.mnemonic() {
        M::Movsb | M::Movsw | M::Movsd => (0xA4, true, true),
        M::Cmpsb | M::Cmpsw | M::Cmpsd => (0xA6, true, true),
        M::Stosb | M::Stosw | M::Stosd => (0xAA, false, true),
        M::Lodsb | M::Lodsw | M::Lodsd => (0xAC, true, false),
        M::Scasb | M::Scasw | M::Scasd => (0xAE, false, true),
        _ => unreachable!("not a string instruction: {insn}"),
    };
    let size = string_size(insn);
    // rsi's segment is DS or the override; rdi's is always ES.
    let si_seg = si.then(|| insn.memory_segment());
    let checked = |seg: Register| b.mode.limit_class(seg.number()) != crate::abi::limit::NONE;
    if si_seg.is_some_and(checked) || (di && checked(Register::ES)) {
        // Segment limits to check at every element: the runtime does it.
        b.call_emulate(insn);
        return Ok(Flow::Next);
    }
    let di_base = di && b.needs_segment_base(Register::ES);
    let si_base = si_seg.is_some_and(|s| b.needs_segment_base(s));
    // Segment bases first, as 32-bit sums (the guest's linear address
    // wraps at 4 GiB), then the GS base.
    if let (true, Some(seg)) = (si_base, si_seg) {
        bias32(b, Register::ESI, off::SEG_BASE, seg);
    }
    if di_base {
        bias32(b, Register::EDI, off::SEG_BASE, Register::ES);
    }
    asm!(b.e; mov r11, QWORD [cpu + off::GS_BASE]);
    if si {
        asm!(b.e; lea rsi, [rsi + r11]);
    }
    if di {
        asm!(b.e; lea rdi, [rdi + r11]);
    }
    b.fixup_from_here(Fixup::StringBias {
        si: si_seg.map(|s| s.number() as u8),
        di,
    });
    let mut bytes = Vec::with_capacity(3);
    if insn.has_rep_prefix() || insn.has_repe_prefix() {
        bytes.push(0xF3);
    } else if insn.has_repne_prefix() {
        bytes.push(0xF2);
    }
    if size == 2 {
        bytes.push(0x66);
    }
    bytes.push(if size == 1 { opcode } else { opcode + 1 });
    b.e.ops.extend(bytes);
    b.site(insn.ip32(), Fixup::None);
    asm!(b.e; mov r11, QWORD [cpu + off::NEG_GS_BASE]);
    if si {
        asm!(b.e; lea rsi, [rsi + r11]);
    }
    if di {
        asm!(b.e; lea rdi, [rdi + r11]);
    }
    if let (true, Some(seg)) = (si_base, si_seg) {
        bias32(b, Register::ESI, off::SEG_NEG, seg);
    }
    if di_base {
        bias32(b, Register::EDI, off::SEG_NEG, Register::ES);
    }
    if si {
        asm!(b.e; mov esi, esi);
    }
    if di {
        asm!(b.e; mov edi, edi);
    }
    Ok(Flow::Next)
}

fn string_size(insn: &Instruction) -> u32 {
    use Mnemonic as M;
    match insn.mnemonic() {
        M::Movsb | M::Cmpsb | M::Stosb | M::Lodsb | M::Scasb => 1,
        M::Movsw | M::Cmpsw | M::Stosw | M::Lodsw | M::Scasw => 2,
        _ => 4,
    }
}

/// True if the string instruction addresses with si/di/cx (0x67 in 32-bit code).
pub fn address_size_16(insn: &Instruction) -> bool {
    use iced_x86::OpKind;
    (0..insn.op_count()).any(|i| {
        matches!(
            insn.op_kind(i),
            OpKind::MemorySegSI | OpKind::MemorySegDI | OpKind::MemoryESDI
        )
    })
}

/// `reg32 = reg32 + the 32-bit value at cpu.table[seg]` (a segment base or
/// its negation) modulo 2^32, flag-free, through r10.
fn bias32(b: &mut TuBuilder, reg: Register, table: i32, seg: Register) {
    let at =
        MemoryOperand::with_base_displ(Register::R14, (table + 4 * seg.number() as i32) as i64);
    b.e.put(Instruction::with2(Code::Mov_r32_rm32, Register::R10D, at).expect("mov"));
    let sum = MemoryOperand::with_base_index(reg.full_register(), Register::R10);
    b.e.put(Instruction::with2(Code::Lea_r32_m, reg, sum).expect("lea"));
}
