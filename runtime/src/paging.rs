//! The guest's page walk (Intel SDM Vol. 3A, chapter 4): 32-bit paging
//! with 4 KiB and (CR4.PSE) 4 MiB pages, and PAE paging with 4 KiB and
//! 2 MiB pages and the execute-disable bit. The walk checks the access
//! against every level, sets accessed and dirty bits the way the
//! hardware does (accessed on every entry used, dirty on the leaf of a
//! write, and only for an access that is allowed), and otherwise returns
//! the #PF error code.
//!
//! The walk reads and writes the page tables in guest physical memory
//! through [`PageTables`], so it is unit-tested against a plain array.

use crate::cpu::cr::{CR0_PG, CR0_WP, CR4_PAE, CR4_PGE, CR4_PSE};

/// #PF error code bits.
pub mod pf {
    /// The page was present (a protection or reserved-bit fault).
    pub const P: u32 = 1 << 0;
    pub const WRITE: u32 = 1 << 1;
    pub const USER: u32 = 1 << 2;
    pub const RSVD: u32 = 1 << 3;
    /// An instruction fetch (reported with PAE and EFER.NXE only).
    pub const FETCH: u32 = 1 << 4;
}

/// Paging-structure entry bits (the same positions in both formats).
pub(crate) mod entry {
    pub const P: u64 = 1 << 0;
    pub const RW: u64 = 1 << 1;
    pub const US: u64 = 1 << 2;
    pub const A: u64 = 1 << 5;
    pub const D: u64 = 1 << 6;
    pub const PS: u64 = 1 << 7;
    pub const G: u64 = 1 << 8;
    pub const XD: u64 = 1 << 63;
}

/// Physical address width (a P6 with PAE has 36 bits): entry bits above
/// it are reserved.
pub const MAX_PHYS_BITS: u32 = 36;

/// The registers paging depends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PagingRegs {
    pub cr0: u32,
    pub cr3: u32,
    pub cr4: u32,
    /// IA32_EFER.NXE: the execute-disable bit is honoured (PAE only).
    pub nxe: bool,
}

impl PagingRegs {
    pub fn enabled(&self) -> bool {
        self.cr0 & CR0_PG != 0
    }

    pub fn pae(&self) -> bool {
        self.cr4 & CR4_PAE != 0
    }

    fn nx(&self) -> bool {
        self.pae() && self.nxe
    }

    pub fn global_pages(&self) -> bool {
        self.cr4 & CR4_PGE != 0
    }

    /// What the translation of an address depends on besides CR3: a
    /// change to any of it drops every translation, global ones too.
    pub fn layout(&self) -> (u32, u32, bool) {
        (
            self.cr0 & (CR0_PG | CR0_WP),
            self.cr4 & (CR4_PSE | CR4_PAE | CR4_PGE),
            self.nxe,
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    Read,
    Write,
    Fetch,
}

/// An access: its kind, and whether it is a user access (CPL 3, other
/// than the implicit supervisor accesses to descriptor tables and TSSes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub kind: AccessKind,
    pub user: bool,
}

/// Where a linear address's 4 KiB page is, and what the walk found on
/// the way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// Physical address of the 4 KiB frame (within a large page, the
    /// frame of this address).
    pub frame: u64,
    /// R/W at every level.
    pub writable: bool,
    /// U/S at every level.
    pub user: bool,
    /// The leaf's dirty bit (after this access).
    pub dirty: bool,
    /// The leaf is global (and CR4.PGE is on).
    pub global: bool,
    /// A 4 MiB or 2 MiB page (INVLPG of any address in it drops it all).
    pub large: bool,
    /// The guest frames of the entries the walk used (the first
    /// `levels`): the page tables this translation depends on.
    tables: [u32; 3],
    /// The guest physical addresses of those entries.
    entries: [u64; 3],
    levels: u8,
}

impl Translation {
    pub fn table_frames(&self) -> &[u32] {
        &self.tables[..self.levels as usize]
    }

    /// The guest physical addresses of the entries the walk used, top
    /// level first.
    pub fn entries(&self) -> &[u64] {
        &self.entries[..self.levels as usize]
    }

    /// Whether a write with privilege `user` is allowed (CR0.WP decides
    /// for supervisor writes to read-only pages).
    pub fn write_allowed(&self, user: bool, regs: &PagingRegs) -> bool {
        self.writable || (!user && regs.cr0 & CR0_WP == 0)
    }
}

/// The page tables in guest physical memory. Reads of addresses without
/// memory give None (the walk treats the entry as not present).
pub trait PageTables {
    fn read_u32(&self, addr: u64) -> Option<u32>;
    fn read_u64(&self, addr: u64) -> Option<u64>;
    fn write_u32(&self, addr: u64, v: u32);
    fn write_u64(&self, addr: u64, v: u64);
}

/// One entry used by a walk: where it is and its width.
#[derive(Clone, Copy)]
struct Used {
    addr: u64,
    value: u64,
    wide: bool,
}

/// Walks the page tables for `lin`. On success the entries' accessed
/// bits (and the leaf's dirty bit for a write) are set.
pub fn walk(
    pt: &dyn PageTables,
    regs: &PagingRegs,
    lin: u32,
    access: Access,
) -> Result<Translation, u32> {
    let mut err = 0;
    if access.kind == AccessKind::Write {
        err |= pf::WRITE;
    }
    if access.user {
        err |= pf::USER;
    }
    if access.kind == AccessKind::Fetch && regs.nx() {
        err |= pf::FETCH;
    }
    let above_phys = !0u64 << MAX_PHYS_BITS;
    let mut used = [Used {
        addr: 0,
        value: 0,
        wide: false,
    }; 3];
    let mut n = 0;
    // Reads one entry; `reserved` are the bits that must be clear.
    let mut read = |addr: u64, wide: bool, reserved: u64| -> Result<u64, u32> {
        let value = if wide {
            pt.read_u64(addr)
        } else {
            pt.read_u32(addr).map(u64::from)
        };
        let Some(value) = value.filter(|v| v & entry::P != 0) else {
            return Err(err);
        };
        if value & reserved != 0 {
            return Err(err | pf::P | pf::RSVD);
        }
        used[n] = Used { addr, value, wide };
        n += 1;
        Ok(value)
    };
    let (leaf, frame) = if regs.pae() {
        // Bit 63 is reserved unless EFER.NXE.
        let high = (above_phys & !entry::XD) | if regs.nx() { 0 } else { entry::XD };
        let pdpte_addr = (regs.cr3 & !0x1F) as u64 + 8 * (lin >> 30) as u64;
        let pdpte = read(pdpte_addr, true, above_phys | 0x1E6)?;
        let pde_addr = (pdpte & !0xFFF & !above_phys) + 8 * ((lin >> 21) & 0x1FF) as u64;
        let pde = read(pde_addr, true, high)?;
        if pde & entry::PS != 0 {
            if pde & 0x1F_E000 != 0 {
                return Err(err | pf::P | pf::RSVD);
            }
            let base = pde & !0x1F_FFFF & !high & !entry::XD;
            (pde, base + (lin & 0x1F_F000) as u64)
        } else {
            let pte_addr = (pde & !0xFFF & !high & !entry::XD) + 8 * ((lin >> 12) & 0x1FF) as u64;
            let pte = read(pte_addr, true, high)?;
            (pte, pte & !0xFFF & !high & !entry::XD)
        }
    } else {
        let pde_addr = (regs.cr3 & !0xFFF) as u64 + 4 * (lin >> 22) as u64;
        let pde = read(pde_addr, false, 0)?;
        if pde & entry::PS != 0 && regs.cr4 & CR4_PSE != 0 {
            // Bits 21:13 would hold physical address bits 39:32 (PSE-36),
            // which a 32-bit physical address space does not have.
            if pde & 0x3F_E000 != 0 {
                return Err(err | pf::P | pf::RSVD);
            }
            (pde, (pde & 0xFFC0_0000) + (lin & 0x3F_F000) as u64)
        } else {
            let pte_addr = (pde & 0xFFFF_F000) + 4 * ((lin >> 12) & 0x3FF) as u64;
            let pte = read(pte_addr, false, 0)?;
            (pte, pte & 0xFFFF_F000)
        }
    };
    // PDPTEs have no R/W, U/S or accessed bits.
    let levels = &used[usize::from(regs.pae())..n];
    let writable = levels.iter().all(|u| u.value & entry::RW != 0);
    let user = levels.iter().all(|u| u.value & entry::US != 0);
    let nx = regs.nx() && levels.iter().any(|u| u.value & entry::XD != 0);
    let t = Translation {
        frame,
        writable,
        user,
        dirty: leaf & entry::D != 0,
        global: leaf & entry::G != 0 && regs.global_pages(),
        large: n == 1 || (regs.pae() && n == 2),
        tables: used.map(|u| (u.addr >> 12) as u32),
        entries: used.map(|u| u.addr),
        levels: n as u8,
    };
    let allowed = match access.kind {
        AccessKind::Read => !access.user || user,
        AccessKind::Write => (!access.user || user) && t.write_allowed(access.user, regs),
        AccessKind::Fetch => (!access.user || user) && !nx,
    };
    if !allowed {
        return Err(err | pf::P);
    }
    for (i, u) in levels.iter().enumerate() {
        let mut v = u.value | entry::A;
        if access.kind == AccessKind::Write && i == levels.len() - 1 {
            v |= entry::D;
        }
        if v != u.value {
            if u.wide {
                pt.write_u64(u.addr, v);
            } else {
                pt.write_u32(u.addr, v as u32);
            }
        }
    }
    Ok(Translation {
        dirty: t.dirty || access.kind == AccessKind::Write,
        ..t
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// 16 MiB of physical memory as page tables.
    struct Ram(RefCell<Vec<u8>>);

    impl PageTables for Ram {
        fn read_u32(&self, a: u64) -> Option<u32> {
            let m = self.0.borrow();
            let b = m.get(a as usize..a as usize + 4)?;
            Some(u32::from_le_bytes(b.try_into().unwrap()))
        }
        fn read_u64(&self, a: u64) -> Option<u64> {
            let m = self.0.borrow();
            let b = m.get(a as usize..a as usize + 8)?;
            Some(u64::from_le_bytes(b.try_into().unwrap()))
        }
        fn write_u32(&self, a: u64, v: u32) {
            self.0.borrow_mut()[a as usize..a as usize + 4].copy_from_slice(&v.to_le_bytes());
        }
        fn write_u64(&self, a: u64, v: u64) {
            self.0.borrow_mut()[a as usize..a as usize + 8].copy_from_slice(&v.to_le_bytes());
        }
    }

    fn ram() -> Ram {
        Ram(RefCell::new(vec![0; 16 << 20]))
    }

    const R: Access = Access {
        kind: AccessKind::Read,
        user: false,
    };
    const W: Access = Access {
        kind: AccessKind::Write,
        user: false,
    };
    const UR: Access = Access {
        kind: AccessKind::Read,
        user: true,
    };
    const UW: Access = Access {
        kind: AccessKind::Write,
        user: true,
    };
    const UX: Access = Access {
        kind: AccessKind::Fetch,
        user: true,
    };

    fn regs32(cr4: u32) -> PagingRegs {
        PagingRegs {
            cr0: CR0_PG | 1,
            cr3: 0x1000,
            cr4,
            nxe: false,
        }
    }

    #[test]
    fn two_level_walk_sets_accessed_then_dirty() {
        let m = ram();
        m.write_u32(0x1000 + 4 * 0x100, 0x2000 | 7); // PDE for 0x4000_0000
        m.write_u32(0x2000 + 4 * 5, 0x30_0000 | 7); // PTE for 0x4000_5000
        let r = regs32(0);
        let t = walk(&m, &r, 0x4000_5123, R).unwrap();
        assert_eq!(t.frame, 0x30_0000);
        assert!(!t.dirty && t.writable && t.user);
        assert_eq!(m.read_u32(0x2014).unwrap() & 0x60, 0x20);
        assert_eq!(m.read_u32(0x1400).unwrap() & 0x60, 0x20);
        assert!(walk(&m, &r, 0x4000_5000, W).unwrap().dirty);
        assert_eq!(m.read_u32(0x2014).unwrap() & 0x60, 0x60);
        // The PDE of a 4 KiB page has no dirty bit to set.
        assert_eq!(m.read_u32(0x1400).unwrap() & 0x40, 0);
    }

    #[test]
    fn error_codes_of_not_present_protection_and_reserved_faults() {
        let m = ram();
        m.write_u32(0x1000, 0x2000 | 7);
        m.write_u32(0x2000 + 4, 0x5000 | 5); // user, read-only
        m.write_u32(0x2000 + 8, 0x6000 | 3); // supervisor, writable
        let mut r = regs32(0);
        assert_eq!(walk(&m, &r, 0x3000, R), Err(0));
        assert_eq!(walk(&m, &r, 0x3000, UW), Err(6));
        assert_eq!(walk(&m, &r, 0x1000, UW), Err(7));
        assert_eq!(walk(&m, &r, 0x2000, UR), Err(5));
        // A supervisor write to a read-only page: allowed unless CR0.WP.
        assert!(walk(&m, &r, 0x1000, W).is_ok());
        r.cr0 |= CR0_WP;
        assert_eq!(walk(&m, &r, 0x1000, W), Err(3));
        // A failed access sets no accessed bit.
        assert_eq!(m.read_u32(0x2008).unwrap() & 0x20, 0);
        // A 4 MiB page with a PSE-36 address bit on a 32-bit machine.
        m.write_u32(0x1000 + 4, 0x40_0000 | 0x2000 | 0x87);
        r.cr4 = CR4_PSE;
        assert_eq!(walk(&m, &r, 0x40_0000, R), Err(9));
    }

    #[test]
    fn large_pages_need_cr4_pse() {
        let m = ram();
        m.write_u32(0x1000 + 4, 0x80_0000 | 0x87);
        m.write_u32(0x80_0000 + 4 * 3, 0x9000 | 7);
        // Without PSE the PS bit is ignored: 0x80_0000 is a page table.
        assert_eq!(walk(&m, &regs32(0), 0x40_3000, R).unwrap().frame, 0x9000);
        let t = walk(&m, &regs32(CR4_PSE), 0x40_3000, W).unwrap();
        assert_eq!(t.frame, 0x80_3000);
        assert_eq!(m.read_u32(0x1004).unwrap() & 0x60, 0x60);
    }

    #[test]
    fn pae_two_mib_pages_global_and_execute_disable() {
        let m = ram();
        let mut r = PagingRegs {
            cr0: CR0_PG | 1,
            cr3: 0x1000,
            cr4: CR4_PAE | CR4_PGE,
            nxe: true,
        };
        m.write_u64(0x1000 + 8, 0x2000 | 1); // PDPTE 1: 0x4000_0000
        m.write_u64(0x2000, 0x20_0000 | 0x187); // 2 MiB, global
        m.write_u64(0x2000 + 8, 0x3000 | 7 | (1 << 63));
        m.write_u64(0x3000, 0x7000 | 7);
        let t = walk(&m, &r, 0x4000_1000, R).unwrap();
        assert_eq!(t.frame, 0x20_1000);
        assert!(t.global);
        assert!(walk(&m, &r, 0x4020_0000, UR).is_ok());
        assert_eq!(walk(&m, &r, 0x4020_0000, UX), Err(0x15));
        assert_eq!(walk(&m, &r, 0x0000_0000, UX), Err(0x14));
        // Without NXE bit 63 is reserved.
        r.nxe = false;
        assert_eq!(walk(&m, &r, 0x4020_0000, UR), Err(0xD));
        // A reserved PDPTE bit.
        m.write_u64(0x1000 + 8, 0x2000 | 1 | (1 << 5));
        assert_eq!(walk(&m, &r, 0x4000_0000, R), Err(9));
    }
}
