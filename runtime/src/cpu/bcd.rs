//! The BCD adjusts (daa das aaa aas aam aad) and salc, which do not exist
//! in 64-bit mode. Semantics from the Intel SDM Vol. 2 pseudocode; the
//! flags the SDM leaves undefined are computed as a P6 does (SF/ZF/PF from
//! the result, OF cleared).

use translator::abi::{CpuState, flags};

use super::Exception;
use super::operand::{get_reg, set_reg};
use iced_x86::Register;

fn parity(v: u8) -> bool {
    v.count_ones().is_multiple_of(2)
}

fn set_flag(cpu: &mut CpuState, f: u32, on: bool) {
    if on {
        cpu.arith_flags |= f;
    } else {
        cpu.arith_flags &= !f;
    }
}

fn flag(cpu: &CpuState, f: u32) -> bool {
    cpu.arith_flags & f != 0
}

fn set_szp(cpu: &mut CpuState, v: u8) {
    set_flag(cpu, flags::SF, v & 0x80 != 0);
    set_flag(cpu, flags::ZF, v == 0);
    set_flag(cpu, flags::PF, parity(v));
}

pub fn daa(cpu: &mut CpuState) {
    let old_al = get_reg(cpu, Register::AL) as u8;
    let old_cf = flag(cpu, flags::CF);
    let mut al = old_al;
    // The carry of the low-nibble step is overwritten by the high one.
    let af = al & 0xF > 9 || flag(cpu, flags::AF);
    if af {
        al = al.wrapping_add(6);
    }
    set_flag(cpu, flags::AF, af);
    let cf = old_al > 0x99 || old_cf;
    if cf {
        al = al.wrapping_add(0x60);
    }
    set_flag(cpu, flags::CF, cf);
    set_flag(cpu, flags::OF, false);
    set_reg(cpu, Register::AL, al as u32);
    set_szp(cpu, al);
}

pub fn das(cpu: &mut CpuState) {
    let old_al = get_reg(cpu, Register::AL) as u8;
    let old_cf = flag(cpu, flags::CF);
    let mut al = old_al;
    let mut cf = false;
    if al & 0xF > 9 || flag(cpu, flags::AF) {
        let (v, borrow) = al.overflowing_sub(6);
        al = v;
        cf = old_cf || borrow;
        set_flag(cpu, flags::AF, true);
    } else {
        set_flag(cpu, flags::AF, false);
    }
    if old_al > 0x99 || old_cf {
        al = al.wrapping_sub(0x60);
        cf = true;
    }
    set_flag(cpu, flags::CF, cf);
    set_flag(cpu, flags::OF, false);
    set_reg(cpu, Register::AL, al as u32);
    set_szp(cpu, al);
}

pub fn aaa(cpu: &mut CpuState) {
    let ax = get_reg(cpu, Register::AX) as u16;
    let adjust = ax & 0xF > 9 || flag(cpu, flags::AF);
    let ax = if adjust { ax.wrapping_add(0x106) } else { ax };
    set_reg(cpu, Register::AX, (ax & 0xFF0F) as u32);
    set_flag(cpu, flags::AF, adjust);
    set_flag(cpu, flags::CF, adjust);
    set_flag(cpu, flags::OF, false);
    set_szp(cpu, (ax & 0x0F) as u8);
}

pub fn aas(cpu: &mut CpuState) {
    let ax = get_reg(cpu, Register::AX) as u16;
    let adjust = ax & 0xF > 9 || flag(cpu, flags::AF);
    let ax = if adjust {
        ax.wrapping_sub(6).wrapping_sub(0x100)
    } else {
        ax
    };
    set_reg(cpu, Register::AX, (ax & 0xFF0F) as u32);
    set_flag(cpu, flags::AF, adjust);
    set_flag(cpu, flags::CF, adjust);
    set_flag(cpu, flags::OF, false);
    set_szp(cpu, (ax & 0x0F) as u8);
}

pub fn aam(cpu: &mut CpuState, base: u8) -> Result<(), Exception> {
    if base == 0 {
        return Err(Exception::new(translator::abi::vector::DE));
    }
    let al = get_reg(cpu, Register::AL) as u8;
    let (ah, al) = (al / base, al % base);
    set_reg(cpu, Register::AX, ((ah as u32) << 8) | al as u32);
    set_szp(cpu, al);
    set_flag(cpu, flags::OF, false);
    set_flag(cpu, flags::AF, false);
    set_flag(cpu, flags::CF, false);
    Ok(())
}

pub fn aad(cpu: &mut CpuState, base: u8) {
    let al = get_reg(cpu, Register::AL) as u8;
    let ah = get_reg(cpu, Register::AH) as u8;
    let prod = ah.wrapping_mul(base);
    let (res, carry) = al.overflowing_add(prod);
    set_reg(cpu, Register::AX, res as u32);
    set_szp(cpu, res);
    // A P6 computes the flags of the final 8-bit add.
    set_flag(cpu, flags::CF, carry);
    set_flag(cpu, flags::AF, (al & 0xF) + (prod & 0xF) > 0xF);
    set_flag(cpu, flags::OF, ((al ^ res) & (prod ^ res) & 0x80) != 0);
}

pub fn salc(cpu: &mut CpuState) {
    let v = if flag(cpu, flags::CF) { 0xFF } else { 0 };
    set_reg(cpu, Register::AL, v);
}
