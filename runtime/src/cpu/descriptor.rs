//! Segment descriptors from the GDT (Intel SDM Vol. 3A, 3.4.5).

use translator::abi::{CpuState, vector};

use super::{Exception, System};

#[derive(Clone, Copy, Debug)]
pub struct Descriptor {
    pub base: u32,
    pub limit: u32,
    /// Access byte: P, DPL, S, type.
    pub access: u8,
    /// G, D/B, L, AVL.
    pub flags: u8,
    /// The raw descriptor, for gates (whose fields are laid out otherwise).
    pub raw: u64,
}

impl Descriptor {
    pub fn present(&self) -> bool {
        self.access & 0x80 != 0
    }

    pub fn dpl(&self) -> u32 {
        ((self.access >> 5) & 3) as u32
    }

    pub fn code(&self) -> bool {
        self.access & 0x18 == 0x18
    }

    /// The D/B bit: 32-bit code, or a 32-bit stack.
    pub fn big(&self) -> bool {
        self.flags & 0x4 != 0
    }

    /// A writable data segment (what SS must be).
    pub fn writable_data(&self) -> bool {
        self.access & 0x1A == 0x12
    }

    /// A code segment whose DPL need not equal CPL.
    pub fn conforming(&self) -> bool {
        self.code() && self.access & 0x04 != 0
    }

    /// The system-descriptor type (S = 0), e.g. 9/11 for a 32-bit TSS.
    pub fn system_type(&self) -> Option<u8> {
        (self.access & 0x10 == 0).then_some(self.access & 0x0F)
    }

    /// A gate's target selector (the TSS of a task gate).
    pub fn gate_selector(&self) -> u16 {
        (self.raw >> 16) as u16
    }

    /// A gate's target offset (only the low 16 bits in a 16-bit gate).
    pub fn gate_offset(&self) -> u32 {
        let offset = (self.raw & 0xFFFF) as u32 | ((self.raw >> 32) as u32 & 0xFFFF_0000);
        if self.access & 0x08 != 0 {
            offset
        } else {
            offset & 0xFFFF
        }
    }

    /// A call gate's parameter count (dwords or words to copy).
    pub fn gate_params(&self) -> u32 {
        (self.raw >> 32) as u32 & 0x1F
    }

    /// An expand-down data segment (type bit 2 without the code bit).
    pub fn expand_down(&self) -> bool {
        self.access & 0x1C == 0x14
    }

    /// A 32-bit gate or TSS (type bit 3), rather than a 16-bit one.
    pub fn system32(&self) -> bool {
        self.access & 0x08 != 0
    }
}

/// Loads segment register `i` from descriptor `d` (checked by the
/// caller) with selector `sel`: base, limit, D/B and expand-down, and
/// sets the descriptor's accessed bit as the CPU does.
#[inline]
pub fn load_segment(
    cpu: &mut CpuState,
    sys: &System,
    i: usize,
    sel: u16,
    d: &Descriptor,
) -> Result<(), Exception> {
    if d.access & 1 == 0 {
        let at = descriptor_linear(sys, sel).wrapping_add(5);
        sys.mem.supervisor(|m| m.write_u8(at, d.access | 1))?;
    }
    cpu.set_segment_db(i, sel, d.base, d.limit, d.big());
    cpu.set_expand_down(i, d.expand_down());
    Ok(())
}

/// The linear address of selector `sel`'s descriptor, in the GDT or
/// (TI set) the LDT; no limit check.
pub fn descriptor_linear(sys: &System, sel: u16) -> u32 {
    let table = if sel & 4 != 0 {
        sys.ldt_base
    } else {
        sys.gdtr.base
    };
    table.wrapping_add((sel & !7) as u32)
}

/// Sets or clears the busy bit of the TSS descriptor `sel` (in the GDT).
pub fn set_tss_busy(sys: &System, sel: u16, busy: bool) -> Result<(), Exception> {
    let at = descriptor_linear(sys, sel & !4).wrapping_add(5);
    let access = sys.mem.supervisor(|m| m.read_u8(at))?;
    let access = if busy { access | 0x02 } else { access & !0x02 };
    sys.mem.supervisor(|m| m.write_u8(at, access))?;
    Ok(())
}

/// The ring-`n` stack (SS, ESP) of the current TSS: 32-bit, or a 16-bit
/// TSS's SS:SP.
pub fn tss_stack(sys: &System, ring: u32) -> Result<(u16, u32), Exception> {
    let (off, width) = if sys.tss32 {
        (4 + 8 * ring, 4)
    } else {
        (2 + 4 * ring, 2)
    };
    if sys.tr & !3 == 0 || off + width + 1 > sys.tss_limit {
        return Err(Exception::with_error(vector::TS, (sys.tr & !3) as u32));
    }
    let esp = sys
        .mem
        .supervisor(|m| m.read_sized(sys.tss_base.wrapping_add(off), width))?;
    let ss = sys
        .mem
        .supervisor(|m| m.read_u16(sys.tss_base.wrapping_add(off + width)))?;
    Ok((ss, esp))
}

/// Reads the GDT or LDT descriptor `sel` names; #GP(sel) beyond the
/// table's limit (or with no LDT loaded), #NP(sel) if not present.
pub fn read_descriptor(sys: &System, sel: u16) -> Result<Descriptor, Exception> {
    let d = fetch_descriptor(sys, sel)?;
    if !d.present() {
        return Err(Exception::with_error(vector::NP, (sel & !3) as u32));
    }
    Ok(d)
}

/// Like [`read_descriptor`], without the presence check: for callers that
/// must check type and privilege first (far jmp/call, task switches).
pub fn fetch_descriptor(sys: &System, sel: u16) -> Result<Descriptor, Exception> {
    let gp = Exception::with_error(vector::GP, (sel & !3) as u32);
    // TI selects the LDT (Intel SDM Vol. 3A, 3.4.2).
    let limit = if sel & 4 != 0 {
        if sys.ldtr & !3 == 0 {
            return Err(gp);
        }
        sys.ldt_limit
    } else {
        sys.gdtr.limit as u32
    };
    if (sel & !7) as u32 + 7 > limit {
        return Err(gp);
    }
    let raw = sys
        .mem
        .supervisor(|m| m.read_u64(descriptor_linear(sys, sel)))?;
    let (lo, hi) = (raw as u32, (raw >> 32) as u32);
    let base = (lo >> 16) | ((hi & 0xFF) << 16) | (hi & 0xFF00_0000);
    let raw_limit = (lo & 0xFFFF) | (hi & 0x000F_0000);
    let flags = ((hi >> 20) & 0xF) as u8;
    let limit = if flags & 0x8 != 0 {
        (raw_limit << 12) | 0xFFF
    } else {
        raw_limit
    };
    Ok(Descriptor {
        base,
        limit,
        access: (hi >> 8) as u8,
        flags,
        raw,
    })
}

/// The stack of inner ring `ring` from the TSS, checked for a transfer to
/// that ring: SS (selector, descriptor) and ESP. A bad selector or
/// descriptor is #TS(SS), a stack segment not present #SS(SS); `ext` is
/// the EXT bit of the error codes.
pub fn inner_stack(sys: &System, ring: u32, ext: u32) -> Result<(u16, u32, Descriptor), Exception> {
    let (ss, esp) = tss_stack(sys, ring)?;
    let ts = Exception::with_error(vector::TS, (ss & !3) as u32 | ext);
    if ss & !3 == 0 || (ss & 3) as u32 != ring {
        return Err(ts);
    }
    let d = fetch_descriptor(sys, ss).map_err(|e| if e.vector == vector::GP { ts } else { e })?;
    if !d.writable_data() || d.dpl() != ring {
        return Err(ts);
    }
    if !d.present() {
        return Err(Exception::with_error(vector::SS, (ss & !3) as u32 | ext));
    }
    Ok((ss, esp, d))
}
