//! Segment descriptors from the GDT (Intel SDM Vol. 3A, 3.4.5).

use translator::abi::vector;

use super::{Exception, System};

#[derive(Clone, Copy, Debug)]
pub struct Descriptor {
    pub base: u32,
    pub limit: u32,
    /// Access byte: P, DPL, S, type.
    pub access: u8,
    /// G, D/B, L, AVL.
    pub flags: u8,
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

    pub fn code32(&self) -> bool {
        self.code() && self.big()
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
}

/// Sets or clears the busy bit of the TSS descriptor `sel`.
pub fn set_tss_busy(sys: &System, sel: u16, busy: bool) -> Result<(), Exception> {
    let at = sys.gdtr.base.wrapping_add((sel & !7) as u32 + 5);
    let access = sys.mem.read_u8(at)?;
    let access = if busy { access | 0x02 } else { access & !0x02 };
    sys.mem.write_u8(at, access)?;
    Ok(())
}

/// The ring-`n` stack (SS, ESP) of the current 32-bit TSS.
pub fn tss_stack(sys: &System, ring: u32) -> Result<(u16, u32), Exception> {
    let off = 4 + 8 * ring;
    if sys.tr & !3 == 0 || off + 5 > sys.tss_limit {
        return Err(Exception::with_error(vector::TS, (sys.tr & !3) as u32));
    }
    let esp = sys.mem.read_u32(sys.tss_base.wrapping_add(off))?;
    let ss = sys.mem.read_u16(sys.tss_base.wrapping_add(off + 4))?;
    Ok((ss, esp))
}

/// Reads the GDT or LDT descriptor `sel` names; #GP(sel) beyond the
/// table's limit (or with no LDT loaded), #NP(sel) if not present.
pub fn read_descriptor(sys: &System, sel: u16) -> Result<Descriptor, Exception> {
    let gp = Exception::with_error(vector::GP, (sel & !3) as u32);
    // TI selects the LDT (Intel SDM Vol. 3A, 3.4.2).
    let (table, limit) = if sel & 4 != 0 {
        if sys.ldtr & !3 == 0 {
            return Err(gp);
        }
        (sys.ldt_base, sys.ldt_limit)
    } else {
        (sys.gdtr.base, sys.gdtr.limit as u32)
    };
    let off = (sel & !7) as u32;
    if off + 7 > limit {
        return Err(gp);
    }
    let lo = sys.mem.read_u32(table.wrapping_add(off))?;
    let hi = sys.mem.read_u32(table.wrapping_add(off + 4))?;
    let base = (lo >> 16) | ((hi & 0xFF) << 16) | (hi & 0xFF00_0000);
    let raw_limit = (lo & 0xFFFF) | (hi & 0x000F_0000);
    let flags = ((hi >> 20) & 0xF) as u8;
    let limit = if flags & 0x8 != 0 {
        (raw_limit << 12) | 0xFFF
    } else {
        raw_limit
    };
    let d = Descriptor {
        base,
        limit,
        access: (hi >> 8) as u8,
        flags,
    };
    if !d.present() {
        return Err(Exception::with_error(vector::NP, (sel & !3) as u32));
    }
    Ok(d)
}
