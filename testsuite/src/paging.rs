//! Page tables for the paging tests (Intel SDM Vol. 3A, chapter 4), built
//! in Rust and loaded as data blocks at their physical addresses: 2-level
//! 32-bit paging (4 KiB pages, and 4 MiB pages with CR4.PSE) and PAE
//! (4 KiB and 2 MiB pages, NX), and the instructions that turn paging on.

use std::collections::BTreeMap;

use iced_x86::code_asm::*;

/// Paging-structure entry bits (the same positions in every format).
pub mod pte {
    pub const P: u64 = 1 << 0;
    pub const RW: u64 = 1 << 1;
    pub const US: u64 = 1 << 2;
    pub const PWT: u64 = 1 << 3;
    pub const PCD: u64 = 1 << 4;
    pub const A: u64 = 1 << 5;
    pub const D: u64 = 1 << 6;
    /// In a PDE: maps a large page (4 MiB, or 2 MiB with PAE).
    pub const PS: u64 = 1 << 7;
    /// Global (with CR4.PGE), in an entry that maps a page.
    pub const G: u64 = 1 << 8;
    /// Execute-disable (PAE entries, with IA32_EFER.NXE).
    pub const NX: u64 = 1 << 63;
}

pub const CR0_PG: u32 = 1 << 31;
pub const CR0_WP: u32 = 1 << 16;
pub const CR4_PSE: u32 = 1 << 4;
pub const CR4_PAE: u32 = 1 << 5;
pub const CR4_PGE: u32 = 1 << 7;
pub const MSR_EFER: u32 = 0xC000_0080;
pub const EFER_NXE: u32 = 1 << 11;
pub const PAGE: u32 = 0x1000;

/// The page-table format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// 32-bit paging: a page directory of 1024 4-byte PDEs.
    TwoLevel,
    /// PAE: a 4-entry PDPT, directories and tables of 512 8-byte entries.
    Pae,
}

/// The control-register and EFER settings that turn paging on.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    pub cr3: u32,
    /// Bits ORed into CR4 (PSE, PAE, PGE).
    pub cr4: u32,
    /// Bits ORed into CR0 besides PG (WP).
    pub cr0: u32,
    /// Set IA32_EFER.NXE first.
    pub nxe: bool,
}

/// Paging structures: pages of physical memory allocated upwards from
/// the root, written entry by entry.
pub struct Tables {
    format: Format,
    root: u32,
    next: u32,
    pages: BTreeMap<u32, Vec<u8>>,
}

/// Directory entries made by [`Tables`] for the tables they reference:
/// all permissions, so the PTE decides (accessed clear).
const DIR: u64 = pte::P | pte::RW | pte::US;

impl Tables {
    /// 32-bit paging with the page directory at `root` (page-aligned);
    /// page tables are allocated in the pages after it.
    pub fn two_level(root: u32) -> Self {
        Self::new(Format::TwoLevel, root)
    }

    /// PAE with the PDPT at `root` (page-aligned, the page to itself);
    /// directories and tables are allocated in the pages after it.
    pub fn pae(root: u32) -> Self {
        Self::new(Format::Pae, root)
    }

    pub fn new(format: Format, root: u32) -> Self {
        assert_eq!(root % PAGE, 0);
        let mut t = Tables {
            format,
            root,
            next: root,
            pages: BTreeMap::new(),
        };
        t.alloc();
        t
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// CR3: the page directory, or the PDPT.
    pub fn cr3(&self) -> u32 {
        self.root
    }

    /// CR3 and the CR4 bit of the format (PAE); no CR0 bits, no NXE.
    pub fn setup(&self) -> Setup {
        Setup {
            cr3: self.root,
            cr4: if self.format == Format::Pae {
                CR4_PAE
            } else {
                0
            },
            cr0: 0,
            nxe: false,
        }
    }

    /// Bytes per entry: 4, or 8 with PAE.
    pub fn entry_size(&self) -> u32 {
        match self.format {
            Format::TwoLevel => 4,
            Format::Pae => 8,
        }
    }

    /// A new zeroed page for a table; its physical address.
    pub fn alloc(&mut self) -> u32 {
        let at = self.next;
        self.next += PAGE;
        self.pages.insert(at, vec![0; PAGE as usize]);
        at
    }

    /// The entry at physical address `addr` (in an allocated page).
    pub fn read(&self, addr: u32) -> u64 {
        let page = &self.pages[&(addr & !(PAGE - 1))];
        let off = (addr % PAGE) as usize;
        let mut b = [0u8; 8];
        let n = self.entry_size() as usize;
        b[..n].copy_from_slice(&page[off..off + n]);
        u64::from_le_bytes(b)
    }

    /// Writes the entry at physical address `addr` (in an allocated page).
    pub fn write(&mut self, addr: u32, v: u64) {
        let n = self.entry_size() as usize;
        assert!(
            n == 8 || v >> 32 == 0,
            "a 32-bit entry with high bits {v:#x}"
        );
        let page = self
            .pages
            .get_mut(&(addr & !(PAGE - 1)))
            .expect("an entry outside the tables");
        let off = (addr % PAGE) as usize;
        page[off..off + n].copy_from_slice(&v.to_le_bytes()[..n]);
    }

    /// The physical address in an entry.
    fn target(&self, e: u64) -> u32 {
        (e & 0x000F_FFFF_FFFF_F000) as u32
    }

    /// The physical address of the PDE for `lin` (with PAE, the PDPTE
    /// gets a directory if it has none).
    pub fn pde_addr(&mut self, lin: u32) -> u32 {
        match self.format {
            Format::TwoLevel => self.root + (lin >> 22) * 4,
            Format::Pae => {
                let pdpte = self.root + (lin >> 30) * 8;
                let mut e = self.read(pdpte);
                if e & pte::P == 0 {
                    // PDPTE bits 2:1 are reserved: P alone.
                    e = self.alloc() as u64 | pte::P;
                    self.write(pdpte, e);
                }
                self.target(e) + ((lin >> 21) & 0x1FF) * 8
            }
        }
    }

    /// The physical address of the PTE for `lin`; the PDE gets a page
    /// table (all permissions) if it is not present.
    pub fn pte_addr(&mut self, lin: u32) -> u32 {
        let pde = self.pde_addr(lin);
        let mut e = self.read(pde);
        if e & pte::P == 0 {
            e = self.alloc() as u64 | DIR;
            self.write(pde, e);
        }
        assert_eq!(e & pte::PS, 0, "{lin:#x} is in a large page");
        match self.format {
            Format::TwoLevel => self.target(e) + ((lin >> 12) & 0x3FF) * 4,
            Format::Pae => self.target(e) + ((lin >> 12) & 0x1FF) * 8,
        }
    }

    /// Maps the 4 KiB page at `lin` to `phys` with exactly `flags` (give
    /// P for a present page).
    pub fn map(&mut self, lin: u32, phys: u32, flags: u64) {
        assert_eq!((lin | phys) % PAGE, 0);
        let at = self.pte_addr(lin);
        self.write(at, phys as u64 | flags);
    }

    /// The size of a large page: 4 MiB, or 2 MiB with PAE.
    pub fn large(&self) -> u32 {
        match self.format {
            Format::TwoLevel => 4 << 20,
            Format::Pae => 2 << 20,
        }
    }

    /// Maps the large page at `lin` to `phys` with `flags` and PS.
    pub fn map_large(&mut self, lin: u32, phys: u32, flags: u64) {
        assert_eq!((lin | phys) % self.large(), 0);
        let at = self.pde_addr(lin);
        self.write(at, phys as u64 | flags | pte::PS);
    }

    /// Identity-maps [0, size) with 4 KiB pages, P | RW | US.
    pub fn identity(&mut self, size: u32) {
        for page in (0..size).step_by(PAGE as usize) {
            self.map(page, page, pte::P | pte::RW | pte::US);
        }
    }

    /// The tables as blocks at their physical addresses.
    pub fn blocks(&self) -> Vec<(u32, Vec<u8>)> {
        self.pages.iter().map(|(a, b)| (*a, b.clone())).collect()
    }
}

/// Sets IA32_EFER.NXE if asked, loads CR3, ORs the CR4 bits in (PAE
/// before paging is on), then sets CR0.PG with the CR0 bits, and jumps
/// to the next instruction. Clobbers eax, ecx, edx.
pub fn enable(a: &mut CodeAssembler, s: &Setup) -> Result<(), IcedError> {
    if s.nxe {
        enable_nxe(a)?;
    }
    a.mov(eax, s.cr3)?;
    a.mov(cr3, eax)?;
    if s.cr4 != 0 {
        a.mov(eax, cr4)?;
        a.or(eax, s.cr4)?;
        a.mov(cr4, eax)?;
    }
    a.mov(eax, cr0)?;
    a.or(eax, CR0_PG | s.cr0)?;
    a.mov(cr0, eax)?;
    // jmp $+2, without a label (the caller may put one on the next
    // instruction).
    a.db(&[0xEB, 0x00])
}

/// IA32_EFER.NXE = 1 (rdmsr, or, wrmsr). Clobbers eax, ecx, edx.
pub fn enable_nxe(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(ecx, MSR_EFER)?;
    a.rdmsr()?;
    a.or(eax, EFER_NXE)?;
    a.wrmsr()
}
