//! Guest RAM and the shadow address space (DESIGN.md section 6).
//!
//! RAM is one memfd, mapped flat once for the runtime (loaders, devices,
//! helpers) and again into a reserved 4 GiB shadow region whose start is
//! the GS base of generated code. Without paging the shadow is an identity
//! map of RAM; everything above RAM stays PROT_NONE, so a guest access
//! there faults instead of reaching host memory. Guest page 0 is mapped a
//! second time right after the 4 GiB, for accesses that straddle
//! 0xFFFFFFFF; past that is an unmapped guard larger than any access.
//!
//! The runtime never forms a Rust reference into guest memory (generated
//! code may change it at any time): all accesses are raw copies.

use std::io;

use std::cell::Cell;

use translator::abi::vector;

use crate::paging::{Access, AccessKind, PageTables, PagingRegs, Translation, walk};
use crate::shadow::{self, Backing, PageInfo, Spaces, View};

pub const PAGE_SIZE: usize = 4096;
/// Span of guest linear addresses: the 32-bit space.
pub const SPACE: usize = 1 << 32;
/// Guards around the space. A single guest access cannot leave the space
/// (its address is 32-bit), and string instructions, which run on host
/// pointers, advance a page at a time and fault at the guard's first
/// page; the guards also hold the 64 KiB limit probes (`abi::limit`).
/// Above the space, the first page of the guard is page 0's alias.
pub const GUARD: usize = 1 << 30;
/// Most RAM a guest can have: leaves the top of the space for ROM and MMIO.
pub const MAX_RAM: usize = 3 << 30;
/// The largest firmware ROM (a PC's BIOS flash), and the granule of its size.
pub const MAX_ROM: usize = 16 << 20;
pub const ROM_GRANULE: usize = 64 << 10;
/// How much of the ROM's end also appears below 1 MiB (0xE0000-0xFFFFF).
pub const LOW_ROM_WINDOW: usize = 128 << 10;
const ONE_MIB: usize = 1 << 20;

/// A guest physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GuestPhys(pub u32);

/// A guest access that paging refused, or that hit no memory: raised as
/// #PF with this linear address and error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemFault {
    pub addr: u32,
    pub error: u32,
}

impl MemFault {
    pub const VECTOR: u32 = vector::PF;

    /// An access to a physical address without memory.
    pub fn no_memory(addr: u32, write: bool) -> Self {
        MemFault {
            addr,
            error: (write as u32) << 1,
        }
    }
}

/// What a hidden fault (generated code touching a page its shadow space
/// does not map) came to, when the guest's page tables allow the access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filled {
    /// The page is mapped now: run the instruction again.
    Mapped,
    /// A write to a frame that holds translated code (mapped read-only).
    CodeWrite { phys: u32 },
    /// A write to ROM (mapped read-only).
    RomWrite { phys: u32 },
    /// The frame is not RAM or ROM (a device's, or the open bus).
    NoMemory { phys: u32 },
    /// The frame is above the 4 GiB a 32-bit machine's bus reaches
    /// (PAE tables can say so).
    AboveFourGiB,
}

#[derive(Debug)]
pub enum MemoryError {
    Size(usize),
    RomSize(usize),
    Os(&'static str, io::Error),
}

impl std::fmt::Display for MemoryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemoryError::Size(s) => write!(
                f,
                "guest RAM of {} MiB is not supported: it must be between 1 MiB and {} MiB",
                s >> 20,
                MAX_RAM >> 20
            ),
            MemoryError::RomSize(s) => write!(
                f,
                "a firmware image of {s} bytes is not supported: its size must be a nonzero multiple of {} KiB, at most {} MiB",
                ROM_GRANULE >> 10,
                MAX_ROM >> 20
            ),
            MemoryError::Os(what, e) => write!(f, "guest memory: {what}: {e}"),
        }
    }
}

impl std::error::Error for MemoryError {}

/// What linear-address caches outside the memory (the jump caches) must
/// drop after guest TLB flushes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinearFlush {
    /// Everything (a paging-mode change, an A20 change, or many INVLPGs).
    pub all: bool,
    /// What was reached through pages not mapped global (a CR3 write).
    pub non_global: bool,
    /// What lies in the 4 MiB around each of these addresses (INVLPG; the
    /// page may have been part of a large one).
    pub regions: Vec<u32>,
}

/// The runtime's TLB: recent successful walks of its own accesses (a
/// descriptor read, an emulated instruction's operand, the code lookup of
/// the run loop), by linear page, kind of access and privilege. As a
/// CPU's TLB it keeps them until the guest flushes (`tlb_epoch` moves:
/// CR3 writes that change something, INVLPG, paging-mode changes). A walk
/// sets the A bit, and D for a write, so a hit needs no write to the
/// tables; failed walks are not kept.
#[derive(Debug)]
struct WalkCache {
    /// What the entries were walked with.
    epoch: Cell<u64>,
    regs: Cell<PagingRegs>,
    entries: std::cell::RefCell<Box<[WalkEntry; WALK_CACHE_ENTRIES]>>,
}

#[derive(Clone, Copy, Debug, Default)]
struct WalkEntry {
    /// Linear page | kind << 2 | user << 1; 1 (no page has it) when empty.
    tag: u32,
    frame: u32,
    global: bool,
}

const WALK_CACHE_ENTRIES: usize = 256;

impl Default for WalkCache {
    fn default() -> Self {
        let empty = WalkEntry {
            tag: 1,
            ..WalkEntry::default()
        };
        WalkCache {
            epoch: Cell::new(0),
            regs: Cell::new(PagingRegs::default()),
            entries: std::cell::RefCell::new(Box::new([empty; WALK_CACHE_ENTRIES])),
        }
    }
}

impl WalkCache {
    fn slot(lin: u32, kind: AccessKind, user: bool) -> (usize, u32) {
        let k = kind as u32;
        let tag = (lin & !0xFFF) | k << 2 | (user as u32) << 1;
        let index = ((lin >> 12) ^ (k << 6)) as usize % WALK_CACHE_ENTRIES;
        (index, tag)
    }

    /// Drops every entry at the next look (whatever the epoch then).
    fn drop_all(&self) {
        self.epoch.set(u64::MAX);
    }

    fn get(
        &self,
        lin: u32,
        kind: AccessKind,
        user: bool,
        epoch: u64,
        regs: PagingRegs,
    ) -> Option<(u32, bool)> {
        if self.epoch.get() != epoch || self.regs.get() != regs {
            let mut entries = self.entries.borrow_mut();
            for e in entries.iter_mut() {
                e.tag = 1;
            }
            self.epoch.set(epoch);
            self.regs.set(regs);
            return None;
        }
        let (i, tag) = Self::slot(lin, kind, user);
        let e = self.entries.borrow()[i];
        (e.tag == tag).then_some((e.frame, e.global))
    }

    fn put(&self, lin: u32, kind: AccessKind, user: bool, frame: u32, global: bool) {
        let (i, tag) = Self::slot(lin, kind, user);
        self.entries.borrow_mut()[i] = WalkEntry { tag, frame, global };
    }
}

/// INVLPGs between two looks of the run loop before they count as a
/// flush of everything.
const MAX_FLUSH_REGIONS: usize = 64;

pub struct GuestMemory {
    size: usize,
    flat: *mut u8,
    /// The identity shadow, used while paging is off.
    shadow: shadow::Reservation,
    /// The RAM and ROM memfds (shadow spaces map their pages).
    ram_fd: i32,
    rom_fd: Option<i32>,
    /// The shadow spaces of paging.
    spaces: Spaces,
    /// How the runtime's accesses by linear address are translated: the
    /// paging registers, and whether they are user accesses.
    paging: Cell<PagingRegs>,
    user: Cell<bool>,
    /// Page tables the runtime's walks read, to trace (see `shadow`).
    pending_tables: std::cell::RefCell<Vec<u32>>,
    /// Bumped whenever guest TLB entries are dropped (CR3, INVLPG, a
    /// paging-mode change): linear-address caches outside (the jump
    /// caches) must drop what `linear_flush` says too.
    tlb_epoch: u64,
    linear_flush: LinearFlush,
    /// The runtime's own recent walks (its TLB).
    walks: WalkCache,
    /// The firmware ROM, mapped read-only at the top of the space and
    /// (its last 128 KiB) below 1 MiB, over RAM.
    rom: Option<Box<[u8]>>,
    /// Where that low copy starts (1 MiB without a ROM).
    low_rom: usize,
    /// RAM pages holding translated code, write-protected in the shadow
    /// (one bit per page) and how many there are.
    code_pages: Vec<u64>,
    code_page_count: usize,
    /// The runtime wrote to a code page (see [`GuestMemory::write`]).
    written_code: std::cell::RefCell<Vec<u32>>,
    /// Pages written too often to be protected (their TUs check their
    /// own code instead: `Translator::set_self_checking`).
    hot_pages: Vec<u64>,
    /// Hot pages whose code stopped changing (see `mark_code_calm`).
    calm_code: std::cell::RefCell<Vec<u32>>,
    /// The A20 gate: with it closed, address bit 20 of every physical
    /// access reads as 0 (the 8086's wrap at 1 MiB).
    a20: bool,
}

/// Physical address bit 20, which the A20 gate masks.
const A20_BIT: u32 = 1 << 20;

// SAFETY: the mappings are owned by this value; moving it to another
// thread moves that ownership (the runtime runs one vCPU per machine).
unsafe impl Send for GuestMemory {}

pub(crate) fn os(what: &'static str) -> MemoryError {
    MemoryError::Os(what, io::Error::last_os_error())
}

impl GuestMemory {
    pub fn new(size: usize) -> Result<Self, MemoryError> {
        if !(1 << 20..=MAX_RAM).contains(&size) || !size.is_multiple_of(PAGE_SIZE) {
            return Err(MemoryError::Size(size));
        }
        // SAFETY: memfd_create with a valid NUL-terminated name.
        let fd = unsafe { libc::memfd_create(c"bt86-ram".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(os("memfd_create"));
        }
        let fail = |e: MemoryError, flat: Option<*mut libc::c_void>| {
            // SAFETY: fd is ours, flat (if any) was mapped with `size` bytes,
            // and nothing else uses either.
            unsafe {
                if let Some(flat) = flat {
                    libc::munmap(flat, size);
                }
                libc::close(fd);
            }
            Err(e)
        };
        // SAFETY: fd is a fresh memfd.
        if unsafe { libc::ftruncate(fd, size as libc::off_t) } != 0 {
            return fail(os("ftruncate"), None);
        }
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: a new shared mapping of our memfd at a kernel-chosen address.
        let flat = unsafe { libc::mmap(std::ptr::null_mut(), size, rw, libc::MAP_SHARED, fd, 0) };
        if flat == libc::MAP_FAILED {
            return fail(os("mmap (flat view)"), None);
        }
        let shadow_space = match shadow::reserve() {
            Ok(s) => s,
            Err(e) => return fail(e, Some(flat)),
        };
        let spaces = Spaces::new(shadow::DEFAULT_BUDGET);
        let mem = GuestMemory {
            size,
            flat: flat.cast(),
            shadow: shadow_space,
            ram_fd: fd,
            rom_fd: None,
            spaces,
            paging: Cell::new(PagingRegs::default()),
            user: Cell::new(false),
            pending_tables: Default::default(),
            tlb_epoch: 0,
            linear_flush: LinearFlush::default(),
            walks: WalkCache::default(),
            rom: None,
            low_rom: ONE_MIB,
            code_pages: vec![0; (size / PAGE_SIZE).div_ceil(64)],
            code_page_count: 0,
            written_code: Default::default(),
            hot_pages: vec![0; (size / PAGE_SIZE).div_ceil(64)],
            calm_code: Default::default(),
            a20: true,
        };
        mem.map_shadow(fd, 0, 0, size)?;
        mem.map_shadow(fd, SPACE, 0, PAGE_SIZE)?;
        Ok(mem)
    }

    /// Maps RAM bytes `ram_off..ram_off+len` at shadow offset `at`.
    fn map_shadow(
        &self,
        fd: i32,
        at: usize,
        ram_off: usize,
        len: usize,
    ) -> Result<(), MemoryError> {
        debug_assert!(at + len <= SPACE + PAGE_SIZE && ram_off + len <= self.size);
        self.map_fixed(fd, at, ram_off, len, libc::PROT_READ | libc::PROT_WRITE)
    }

    /// Maps `len` bytes of `fd` from `file_off` at shadow offset `at`.
    fn map_fixed(
        &self,
        fd: i32,
        at: usize,
        file_off: usize,
        len: usize,
        prot: i32,
    ) -> Result<(), MemoryError> {
        // SAFETY: the target lies inside our own reservation, so MAP_FIXED
        // replaces only pages this value owns.
        let p = unsafe {
            libc::mmap(
                self.shadow.space().add(at).cast(),
                len,
                prot,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd,
                file_off as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(os("mmap (shadow page)"));
        }
        Ok(())
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Installs a firmware ROM: at the top of the 4 GiB space, and its
    /// last 128 KiB (all of it if smaller) again below 1 MiB, in front of
    /// the RAM there. Both are read-only: generated code that writes to
    /// them faults, and the runtime's writes are dropped.
    pub fn map_rom(&mut self, image: &[u8]) -> Result<(), MemoryError> {
        let len = image.len();
        if len == 0 || !len.is_multiple_of(ROM_GRANULE) || len > MAX_ROM {
            return Err(MemoryError::RomSize(len));
        }
        // SAFETY: memfd_create with a valid NUL-terminated name.
        let fd = unsafe { libc::memfd_create(c"bt86-rom".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(os("memfd_create (ROM)"));
        }
        let result = (|| {
            // SAFETY: fd is a fresh memfd; image is a valid buffer of len bytes.
            let written = unsafe { libc::pwrite(fd, image.as_ptr().cast(), len, 0) };
            if written != len as isize {
                return Err(os("write (ROM)"));
            }
            let low = len.min(LOW_ROM_WINDOW);
            self.map_fixed(fd, SPACE - len, 0, len, libc::PROT_READ)?;
            self.map_fixed(fd, ONE_MIB - low, len - low, low, libc::PROT_READ)
        })();
        if let Err(e) = result {
            // SAFETY: fd is ours and not kept.
            unsafe { libc::close(fd) };
            return Err(e);
        }
        // Kept open: shadow spaces map ROM pages from it.
        if let Some(old) = self.rom_fd.replace(fd) {
            // SAFETY: the previous ROM's fd, which nothing uses any more.
            unsafe { libc::close(old) };
        }
        self.rom = Some(image.into());
        self.low_rom = ONE_MIB - len.min(LOW_ROM_WINDOW);
        Ok(())
    }

    /// The ROM byte at guest physical `addr`, if the ROM is there.
    fn rom_index(&self, addr: u32) -> Option<usize> {
        let rom = self.rom.as_ref()?;
        let (addr, len) = (addr as usize, rom.len());
        let low = len.min(LOW_ROM_WINDOW);
        if addr >= SPACE - len {
            Some(addr - (SPACE - len))
        } else if (ONE_MIB - low..ONE_MIB).contains(&addr) {
            Some(len - low + (addr - (ONE_MIB - low)))
        } else {
            None
        }
    }

    /// Whether guest physical `addr` is in a RAM page that holds
    /// translated code.
    #[inline]
    pub fn is_code_page(&self, addr: u32) -> bool {
        self.is_code_frame(addr as usize / PAGE_SIZE)
    }

    /// Whether RAM page `page` holds translated code (any number: an
    /// access near the top of the space may name a page past 4 GiB).
    #[inline]
    fn is_code_frame(&self, page: usize) -> bool {
        self.code_pages
            .get(page / 64)
            .is_some_and(|w| w & (1 << (page % 64)) != 0)
    }

    /// Records a runtime write that touches a code page.
    #[inline]
    fn note_write(&self, addr: u32, len: usize) {
        if self.code_page_count == 0 || len == 0 {
            return;
        }
        // The last byte may wrap around the 4 GiB space to its start.
        let last = addr.wrapping_add(len as u32 - 1);
        if !self.is_code_page(addr) && !self.is_code_page(last) && len <= PAGE_SIZE {
            return;
        }
        let first = addr as usize / PAGE_SIZE;
        let count = (addr as usize % PAGE_SIZE + len - 1) / PAGE_SIZE + 1;
        let pages = (first..first + count).map(|p| p % (SPACE / PAGE_SIZE));
        let mut written = self.written_code.borrow_mut();
        for page in pages.filter(|&p| self.is_code_frame(p)) {
            written.push(page as u32);
        }
    }

    /// Notes that the code of self-checking `page` stopped changing.
    pub fn mark_code_calm(&self, page: u32) {
        self.calm_code.borrow_mut().push(page);
    }

    /// The self-checking pages whose code stopped changing since the last
    /// call.
    pub fn take_calm_code(&self) -> Vec<u32> {
        std::mem::take(&mut self.calm_code.borrow_mut())
    }

    /// Write-protects RAM page `page` again when it holds code (it was
    /// hot, see [`GuestMemory::set_hot`]).
    pub fn clear_hot(&mut self, page: usize) {
        if let Some(w) = self.hot_pages.get_mut(page / 64) {
            *w &= !(1 << (page % 64));
        }
    }

    /// Marks a write to translated code in `page` that a self-checking TU
    /// found.
    pub fn mark_code_written(&self, page: u32) {
        self.written_code.borrow_mut().push(page);
    }

    /// Stops protecting RAM page `page` for good: it is written too often
    /// (see [`GuestMemory::protect_code`]).
    pub fn set_hot(&mut self, page: usize) {
        if page * PAGE_SIZE >= self.size {
            return;
        }
        self.hot_pages[page / 64] |= 1 << (page % 64);
        if self.code_pages[page / 64] & (1 << (page % 64)) != 0 {
            self.code_pages[page / 64] &= !(1 << (page % 64));
            self.code_page_count -= 1;
            self.set_shadow_prot(page, false);
        }
    }

    /// The code pages the runtime wrote to since the last call (their
    /// translations are stale).
    pub fn take_written_code(&self) -> Vec<u32> {
        if !self.code_written() {
            return Vec::new();
        }
        std::mem::take(&mut self.written_code.borrow_mut())
    }

    /// Whether the runtime wrote to a code page (without forgetting it).
    pub fn code_written(&self) -> bool {
        !self.written_code.borrow().is_empty()
    }

    pub fn code_page_count(&self) -> usize {
        self.code_page_count
    }

    /// Write-protects the RAM pages of `len` bytes of code at guest
    /// physical `addr` in the shadow, so that a guest write to them
    /// faults (self-modifying code). ROM is read-only anyway.
    pub fn protect_code(&mut self, addr: u32, len: u32) {
        let first = addr as usize / PAGE_SIZE;
        let last = (addr as usize + len.max(1) as usize - 1) / PAGE_SIZE;
        for page in first..=last {
            let at = (page * PAGE_SIZE) as u32;
            let hot = self
                .hot_pages
                .get(page / 64)
                .is_some_and(|w| w & (1 << (page % 64)) != 0);
            if page * PAGE_SIZE >= self.size || hot || self.is_code_page(at) || self.is_rom(at) {
                continue;
            }
            self.code_pages[page / 64] |= 1 << (page % 64);
            self.code_page_count += 1;
            self.set_shadow_prot(page, true);
        }
    }

    /// Drops every code-page protection (after the translations are gone).
    pub fn release_code(&mut self) {
        let mut pages = std::mem::take(&mut self.code_pages);
        for (w, bits) in pages.iter_mut().enumerate() {
            while *bits != 0 {
                let page = w * 64 + bits.trailing_zeros() as usize;
                self.set_shadow_prot(page, false);
                *bits &= *bits - 1;
            }
        }
        self.code_pages = pages;
        self.code_page_count = 0;
        self.written_code.borrow_mut().clear();
    }

    /// Stops write-protecting RAM page `page` (its translations are gone).
    pub fn release_page(&mut self, page: u32) {
        let page = page as usize;
        if self.is_code_frame(page) {
            self.code_pages[page / 64] &= !(1 << (page % 64));
            self.code_page_count -= 1;
            self.set_shadow_prot(page, false);
        }
    }

    /// Write-protects RAM page `page` (it holds code) or lifts that, in
    /// the identity shadow (and its alias above 4 GiB for page 0) and
    /// wherever the paging spaces map it.
    fn set_shadow_prot(&mut self, page: usize, code: bool) {
        self.spaces.protect_code(page as u32, code);
        let prot = if code {
            libc::PROT_READ
        } else {
            libc::PROT_READ | libc::PROT_WRITE
        };
        let alias = (page == 0).then_some(SPACE);
        // With A20 closed the page is also seen a megabyte higher.
        let a20_alias = (!self.a20).then_some(page * PAGE_SIZE + ONE_MIB);
        for off in std::iter::once(page * PAGE_SIZE)
            .chain(alias)
            .chain(a20_alias)
        {
            // SAFETY: a page of the shadow's RAM mapping, which this value
            // owns; generated code sees the new protection at once.
            let r = unsafe { libc::mprotect(self.shadow.space().add(off).cast(), PAGE_SIZE, prot) };
            debug_assert_eq!(r, 0, "mprotect of a shadow RAM page");
        }
    }

    /// Whether guest physical `addr` is ROM.
    pub fn is_rom(&self, addr: u32) -> bool {
        self.rom_index(addr).is_some()
    }

    /// Whether guest physical `addr` is RAM or ROM. Elsewhere the MMIO
    /// bus answers: a device, or the open bus (all ones, writes lost).
    pub fn is_memory(&self, addr: u32) -> bool {
        self.contains(addr, 1) || self.is_rom(addr)
    }

    /// Whether `len` bytes at `addr` are RAM that no ROM hides: the case
    /// the flat view serves directly.
    #[inline]
    fn plain_ram(&self, addr: u32, len: usize) -> bool {
        self.contains(addr, len)
            && (addr as usize + len <= self.low_rom || addr as usize >= ONE_MIB)
    }

    /// Byte by byte through RAM, ROM and the open bus, for accesses that
    /// are not plain RAM: `f(i, place)` for each byte `i` of the access.
    fn each_byte(&self, addr: u32, len: usize, mut f: impl FnMut(usize, Place)) {
        for i in 0..len {
            let a = addr.wrapping_add(i as u32);
            let place = match self.rom_index(a) {
                Some(r) => Place::Rom(r),
                None if (a as usize) < self.size => Place::Ram(a as usize),
                None => Place::OpenBus,
            };
            f(i, place);
        }
    }

    /// Host address of guest linear 0: the GS base for generated code.
    pub fn shadow_base(&self) -> u64 {
        self.shadow.space() as u64
    }

    /// Sets how the runtime's accesses by linear address are translated:
    /// the paging registers and the privilege of its accesses (a user
    /// access at CPL 3).
    pub fn set_context(&self, regs: PagingRegs, user: bool) {
        self.paging.set(regs);
        self.user.set(user);
    }

    /// Whether paging is on for the runtime's accesses.
    #[inline]
    pub fn paged(&self) -> bool {
        self.paging.get().enabled()
    }

    pub fn paging(&self) -> PagingRegs {
        self.paging.get()
    }

    /// Runs `f` with the runtime's accesses made with privilege `user`
    /// (the implicit supervisor accesses to descriptor tables and TSSes,
    /// pushes onto an inner ring's stack).
    pub fn with_privilege<T>(&self, user: bool, f: impl FnOnce(&Self) -> T) -> T {
        let saved = self.user.replace(user);
        let r = f(self);
        self.user.set(saved);
        r
    }

    /// Sets the privilege of the runtime's accesses.
    pub fn set_user(&self, user: bool) {
        self.user.set(user);
    }

    /// [`GuestMemory::with_privilege`] for supervisor accesses.
    pub fn supervisor<T>(&self, f: impl FnOnce(&Self) -> T) -> T {
        self.with_privilege(false, f)
    }

    /// The budget of pages mapped in the paging spaces (see `shadow`).
    pub fn set_mapping_budget(&mut self, pages: usize) {
        self.spaces.set_budget(pages);
    }

    /// The GS base generated code runs with: the identity shadow without
    /// paging, else the supervisor or the user space.
    pub fn space_base(&self, user: bool) -> u64 {
        if !self.paged() {
            self.shadow.space() as u64
        } else if user {
            self.spaces.base(View::User)
        } else {
            self.spaces.base(View::Supervisor)
        }
    }

    /// Maps a scratch page, readable and writable, at linear page `page`
    /// of the space generated code uses with privilege `user`, for one
    /// instruction run against a device or ROM (guest physical page
    /// `frame`): a private copy of a ROM page (its writes are dropped
    /// with it), or a zero page for MMIO that the caller fills.
    pub fn map_scratch(&self, user: bool, page: u32, frame: u32) -> Result<(), MemoryError> {
        let rom = self.rom_index(frame << 12);
        let (fd, off, flags) = match (rom, self.rom_fd) {
            (Some(r), Some(fd)) => (fd, r, libc::MAP_PRIVATE),
            _ => (-1, 0, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS),
        };
        // SAFETY: a page inside one of our spaces (`space_base`); the page
        // is put back by `unmap_scratch` before other code runs there.
        let p = unsafe {
            libc::mmap(
                (self.space_base(user) as *mut u8)
                    .add(page as usize * PAGE_SIZE)
                    .cast(),
                PAGE_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                flags | libc::MAP_FIXED,
                fd,
                off as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(os("mmap (device scratch page)"));
        }
        Ok(())
    }

    /// Puts back what [`GuestMemory::map_scratch`] replaced: the ROM page
    /// read-only, or nothing for MMIO.
    pub fn unmap_scratch(&self, user: bool, page: u32, frame: u32) {
        let at = (self.space_base(user) as *mut u8).wrapping_add(page as usize * PAGE_SIZE);
        let (fd, off, flags, prot) = match (self.rom_index(frame << 12), self.rom_fd) {
            (Some(r), Some(fd)) => (fd, r, libc::MAP_SHARED, libc::PROT_READ),
            _ => (
                -1,
                0,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                libc::PROT_NONE,
            ),
        };
        // SAFETY: as in `map_scratch`.
        let p = unsafe {
            libc::mmap(
                at.cast(),
                PAGE_SIZE,
                prot,
                flags | libc::MAP_FIXED,
                fd,
                off as libc::off_t,
            )
        };
        debug_assert_ne!(p, libc::MAP_FAILED, "putting back a scratch page");
    }

    /// Copies bytes at linear `lin` of the space of privilege `user` as
    /// generated code sees them (a scratch page's).
    pub fn read_space(&self, user: bool, lin: u32, buf: &mut [u8]) {
        let at = (self.space_base(user) as *const u8).wrapping_add(lin as usize);
        // SAFETY: the caller mapped these bytes (`map_scratch`); a raw copy.
        unsafe { std::ptr::copy_nonoverlapping(at, buf.as_mut_ptr(), buf.len()) };
    }

    /// Copies `data` to linear `lin` of the space of privilege `user`.
    pub fn write_space(&self, user: bool, lin: u32, data: &[u8]) {
        let at = (self.space_base(user) as *mut u8).wrapping_add(lin as usize);
        // SAFETY: as in `read_space`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), at, data.len()) };
    }

    /// The guest physical address of linear `lin` for an access of
    /// `kind` with the current context (the page walk, which sets
    /// accessed and dirty bits), or the #PF it raises.
    #[inline]
    pub fn translate(&self, lin: u32, kind: AccessKind) -> Result<u32, MemFault> {
        if !self.paged() {
            return Ok(self.a20_mask(lin));
        }
        self.translate_paged(lin, kind)
    }

    /// `addr` as the A20 gate lets it through.
    #[inline]
    fn a20_mask(&self, addr: u32) -> u32 {
        if self.a20 { addr } else { addr & !A20_BIT }
    }

    /// Whether linear addresses are physical ones as they are: no paging,
    /// A20 open (the runtime's fast path).
    #[inline]
    pub(crate) fn direct(&self) -> bool {
        self.a20 && !self.paged()
    }

    pub fn a20(&self) -> bool {
        self.a20
    }

    /// Opens or closes the A20 gate. Every translation depends on it:
    /// the pages holding translated code are reported as written (the
    /// run loop drops their TUs), guest TLB entries are dropped, and the
    /// identity shadow maps each odd megabyte of RAM onto the even one
    /// below it while the gate is closed.
    pub fn set_a20(&mut self, on: bool) -> Result<(), MemoryError> {
        if on == self.a20 {
            return Ok(());
        }
        let mut code = Vec::new();
        for (w, &bits) in self.code_pages.iter().enumerate() {
            let mut b = bits;
            while b != 0 {
                code.push((w * 64 + b.trailing_zeros() as usize) as u32);
                b &= b - 1;
            }
        }
        self.release_code();
        self.written_code.borrow_mut().extend(code);
        self.spaces.drop_all();
        self.flush_linear(|f| f.all = true);
        self.a20 = on;
        // Each odd megabyte whose own or aliased RAM exists.
        let mib = |m: usize| m * ONE_MIB;
        for m in (1..SPACE / ONE_MIB).step_by(2) {
            if mib(m - 1) >= self.size {
                break;
            }
            let src = if on { mib(m) } else { mib(m - 1) };
            shadow::unmap_range(self.shadow.space(), mib(m), ONE_MIB);
            if src < self.size {
                self.map_shadow(self.ram_fd, mib(m), src, ONE_MIB.min(self.size - src))?;
            }
            // The low ROM window is in the first megabyte.
            if src == 0
                && let (Some(rom), Some(fd)) = (&self.rom, self.rom_fd)
            {
                let low = rom.len().min(LOW_ROM_WINDOW);
                self.map_fixed(
                    fd,
                    mib(m) + ONE_MIB - low,
                    rom.len() - low,
                    low,
                    libc::PROT_READ,
                )?;
            }
        }
        Ok(())
    }

    /// Like [`GuestMemory::translate`] for an instruction fetch, and
    /// whether the page is mapped global (CR4.PGE on) or paging is off:
    /// whether a CR3 write keeps the translation.
    pub fn translate_code(&self, lin: u32) -> Result<(u32, bool), MemFault> {
        if !self.paged() {
            return Ok((self.a20_mask(lin), true));
        }
        self.walk_paged(lin, AccessKind::Fetch)
    }

    #[inline(never)]
    fn translate_paged(&self, lin: u32, kind: AccessKind) -> Result<u32, MemFault> {
        self.walk_paged(lin, kind).map(|(phys, _)| phys)
    }

    fn walk_paged(&self, lin: u32, kind: AccessKind) -> Result<(u32, bool), MemFault> {
        let (regs, user) = (self.paging.get(), self.user.get());
        if let Some((frame, global)) = self.walks.get(lin, kind, user, self.tlb_epoch, regs) {
            return Ok((frame | (lin & 0xFFF), global));
        }
        let access = Access { kind, user };
        let t = walk(self, &regs, lin, access).map_err(|error| MemFault { addr: lin, error })?;
        self.pending_tables
            .borrow_mut()
            .extend_from_slice(t.table_frames());
        let phys = u32::try_from(t.frame | (lin & 0xFFF) as u64)
            .map(|phys| self.a20_mask(phys))
            .map_err(|_| MemFault::no_memory(lin, kind == AccessKind::Write))?;
        self.walks.put(lin, kind, user, phys & !0xFFF, t.global);
        Ok((phys, t.global))
    }

    /// Write-protects the page tables the runtime's own walks read since
    /// the last call (translations, jump caches and chains depend on them
    /// too): before generated code runs again.
    pub fn trace_pending_tables(&mut self) {
        let pending = std::mem::take(self.pending_tables.get_mut());
        if !pending.is_empty() {
            self.trace_tables(&pending);
        }
    }

    /// Traces the page-table frames a walk read (see `shadow`): those not
    /// traced yet are copied and write-protected.
    fn trace_tables(&mut self, frames: &[u32]) {
        let new: Vec<u32> = frames
            .iter()
            .copied()
            .filter(|&f| !self.spaces.is_traced(f))
            .collect();
        if !new.is_empty() {
            let copies = self.frame_copies(new);
            self.spaces.trace_tables(copies);
        }
    }

    /// The contents of guest frames (zeros where there is no memory).
    fn frame_copies(&self, frames: Vec<u32>) -> Vec<(u32, Box<[u8; PAGE_SIZE]>)> {
        frames
            .into_iter()
            .map(|f| {
                let mut copy = Box::new([0u8; PAGE_SIZE]);
                let _ = self.read_phys(f << 12, &mut copy[..]);
                (f, copy)
            })
            .collect()
    }

    /// Runs `op(phys, start, len)` for the pieces of `len` bytes at linear
    /// `addr` (one per page), all translated before the first runs.
    pub(crate) fn linear(
        &self,
        addr: u32,
        len: usize,
        kind: AccessKind,
        mut op: impl FnMut(u32, usize, usize) -> Result<(), MemFault>,
    ) -> Result<(), MemFault> {
        if self.direct() {
            return op(addr, 0, len);
        }
        // A fault on physical memory is reported at its linear address.
        let relink = |f: MemFault, phys: u32, lin: u32| MemFault {
            addr: lin.wrapping_add(f.addr.wrapping_sub(phys)),
            ..f
        };
        let first = PAGE_SIZE - (addr as usize & (PAGE_SIZE - 1));
        if len <= first {
            let phys = self.translate(addr, kind)?;
            return op(phys, 0, len).map_err(|f| relink(f, phys, addr));
        }
        let mut pieces = Vec::with_capacity(len / PAGE_SIZE + 2);
        let mut done = 0;
        while done < len {
            let lin = addr.wrapping_add(done as u32);
            let n = (PAGE_SIZE - (lin as usize & (PAGE_SIZE - 1))).min(len - done);
            pieces.push((self.translate(lin, kind)?, lin, done, n));
            done += n;
        }
        for (phys, lin, start, n) in pieces {
            op(phys, start, n).map_err(|f| relink(f, phys, lin))?;
        }
        Ok(())
    }

    /// Reads at a linear address (translated when paging is on).
    #[inline]
    pub fn read(&self, addr: u32, buf: &mut [u8]) -> Result<(), MemFault> {
        if self.direct() {
            // Inline and constant-size for the sized accessors.
            return self.read_phys(addr, buf);
        }
        self.read_paged(addr, buf)
    }

    #[inline(never)]
    fn read_paged(&self, addr: u32, buf: &mut [u8]) -> Result<(), MemFault> {
        let len = buf.len();
        self.linear(addr, len, AccessKind::Read, |phys, start, n| {
            self.read_phys(phys, &mut buf[start..start + n])
        })
    }

    /// Writes at a linear address; nothing is written unless every page
    /// of it may be.
    #[inline]
    pub fn write(&self, addr: u32, data: &[u8]) -> Result<(), MemFault> {
        if self.direct() {
            return self.write_phys(addr, data);
        }
        self.write_paged(addr, data)
    }

    #[inline(never)]
    fn write_paged(&self, addr: u32, data: &[u8]) -> Result<(), MemFault> {
        self.linear(addr, data.len(), AccessKind::Write, |phys, start, n| {
            self.write_phys(phys, &data[start..start + n])
        })
    }

    /// Checks that `len` bytes at linear `addr` could be written (paging
    /// allows it), without writing.
    pub fn check_write(&self, addr: u32, len: usize) -> Result<(), MemFault> {
        self.linear(addr, len, AccessKind::Write, |_, _, _| Ok(()))
    }

    /// Generated code touched linear `lin` (a write if `write`) with
    /// privilege `user` where its shadow maps nothing, or maps read-only.
    /// Under paging that is a hidden fault: walks the guest's page tables
    /// and maps the page, or returns the guest's #PF. In the identity
    /// shadow the address is physical and only says what is there.
    pub fn fill_shadow(&mut self, lin: u32, write: bool, user: bool) -> Result<Filled, MemFault> {
        if !self.paged() {
            let phys = self.a20_mask(lin);
            return Ok(match () {
                _ if write && self.is_code_page(phys) => Filled::CodeWrite { phys },
                _ if write && self.is_rom(phys) => Filled::RomWrite { phys },
                _ => Filled::NoMemory { phys },
            });
        }
        let regs = self.paging.get();
        let kind = if write {
            AccessKind::Write
        } else {
            AccessKind::Read
        };
        let t = walk(self, &regs, lin, Access { kind, user })
            .map_err(|error| MemFault { addr: lin, error })?;
        self.trace_tables(t.table_frames());
        self.install(lin, &t, write, user)
    }

    /// Maps linear `lin`'s page in the space of privilege `user` as
    /// translation `t` says (for an access that writes if `write`).
    fn install(
        &mut self,
        lin: u32,
        t: &Translation,
        write: bool,
        user: bool,
    ) -> Result<Filled, MemFault> {
        let regs = self.paging.get();
        let Ok(phys) = u32::try_from(t.frame).map(|p| self.a20_mask(p)) else {
            return Ok(Filled::AboveFourGiB);
        };
        let back = if let Some(r) = self.rom_index(phys) {
            Backing {
                fd: self.rom_fd.expect("a ROM has its memfd"),
                offset: r,
                read_only: true,
            }
        } else if self.contains(phys, PAGE_SIZE) {
            Backing {
                fd: self.ram_fd,
                offset: phys as usize,
                read_only: false,
            }
        } else {
            return Ok(Filled::NoMemory { phys });
        };
        let protected = self.is_code_page(phys);
        let writable = t.dirty && t.write_allowed(user, &regs);
        if write {
            // A write to a page table makes it writable until the next CR3
            // write, which compares it with its copy.
            self.spaces.table_written(phys >> 12);
        }
        let view = if user { View::User } else { View::Supervisor };
        let info = PageInfo {
            writable,
            global: t.global,
            large: t.large,
            entries: t.entries(),
        };
        self.spaces
            .map(view, lin >> 12, phys >> 12, back, info)
            .map_err(|_| MemFault::no_memory(lin, write))?;
        Ok(match () {
            _ if write && back.read_only => Filled::RomWrite { phys },
            _ if write && protected => Filled::CodeWrite { phys },
            _ => Filled::Mapped,
        })
    }

    /// A paging-mode change (CR0.PG/WP, CR4.PSE/PAE/PGE, EFER.NXE): every
    /// shadow mapping goes, global ones too. Fails if the shadow spaces
    /// cannot be reserved.
    pub fn paging_changed(&mut self) -> Result<(), MemoryError> {
        self.spaces.drop_all();
        self.spaces.untrace_tables(self.paging.get().pae());
        self.pending_tables.borrow_mut().clear();
        self.flush_linear(|f| f.all = true);
        if self.paged() {
            self.spaces.select(self.paging.get().cr3)?;
        }
        Ok(())
    }

    /// A CR3 write (`same`: of the value it had): see
    /// `shadow::Spaces::cr3_write`. Fails if the shadow spaces of a new
    /// address space cannot be reserved.
    pub fn cr3_written(&mut self, same: bool) -> Result<(), MemoryError> {
        // Any CR3 write flushes the guest TLB's non-global entries, and so
        // the walks (which keep no global ones): a walk a helper made may
        // read a table that was not write-protected yet, and the guest may
        // have rewritten it since.
        self.walks.drop_all();
        let written = self.frame_copies(self.spaces.written_tables());
        if self
            .spaces
            .cr3_write(self.paging.get().cr3, same, written)?
        {
            self.flush_linear(|f| f.non_global = true);
        }
        Ok(())
    }

    /// INVLPG: drops linear page of `lin` from the shadow spaces, and maps
    /// it again at once where it was mapped if the guest's tables allow a
    /// read (setting the accessed bit, as a speculative walk may): the
    /// access that usually follows then takes no hidden fault.
    pub fn invalidate_page(&mut self, lin: u32) {
        let regs = self.paging.get();
        let refill: Vec<(View, Translation)> = self
            .spaces
            .views_mapping(lin >> 12)
            .into_iter()
            .filter_map(|view| {
                let user = view == View::User;
                let access = Access {
                    kind: AccessKind::Read,
                    user,
                };
                walk(self, &regs, lin, access).ok().map(|t| (view, t))
            })
            .collect();
        let views: Vec<View> = refill.iter().map(|(v, _)| *v).collect();
        self.spaces.invalidate_page(lin >> 12, &views);
        self.flush_linear(|f| f.regions.push(lin));
        for (view, t) in refill {
            self.trace_tables(t.table_frames());
            if !matches!(
                self.install(lin, &t, false, view == View::User),
                Ok(Filled::Mapped)
            ) {
                // Not mapped again after all (no RAM there): drop it.
                self.spaces.invalidate_page(lin >> 12, &[]);
            }
        }
    }

    /// Counts guest TLB flushes (see the field).
    pub fn tlb_epoch(&self) -> u64 {
        self.tlb_epoch
    }

    fn flush_linear(&mut self, add: impl FnOnce(&mut LinearFlush)) {
        let f = &mut self.linear_flush;
        add(f);
        if f.regions.len() > MAX_FLUSH_REGIONS {
            f.all = true;
        }
        if f.all {
            f.regions.clear();
        }
        self.tlb_epoch += 1;
    }

    /// What the linear-address caches outside must drop for the guest TLB
    /// flushes since the last call.
    pub fn take_linear_flush(&mut self) -> LinearFlush {
        std::mem::take(&mut self.linear_flush)
    }

    /// Shadow flushes so far (over the mapping budget or a TLB flush
    /// that dropped everything), and pages mapped now.
    pub fn shadow_counts(&self) -> (u64, usize) {
        (self.spaces.flushes, self.spaces.mapped())
    }

    /// Whether `len` bytes at `addr` are all RAM.
    #[inline]
    pub fn contains(&self, addr: u32, len: usize) -> bool {
        (addr as usize)
            .checked_add(len)
            .is_some_and(|end| end <= self.size)
    }

    /// Reads guest physical memory (RAM and ROM).
    #[inline]
    pub fn read_phys(&self, addr: u32, buf: &mut [u8]) -> Result<(), MemFault> {
        if !self.plain_ram(addr, buf.len()) {
            return self.read_slow(addr, buf);
        }
        // SAFETY: the range is inside the flat view (checked); a raw copy
        // tolerates concurrent changes by guest code.
        unsafe {
            std::ptr::copy_nonoverlapping(self.flat.add(addr as usize), buf.as_mut_ptr(), buf.len())
        };
        Ok(())
    }

    /// `read` of anything but plain RAM: through the ROM; the open bus
    /// reads all ones.
    #[cold]
    #[inline(never)]
    fn read_slow(&self, addr: u32, buf: &mut [u8]) -> Result<(), MemFault> {
        let rom = self.rom.as_deref().unwrap_or_default();
        self.each_byte(addr, buf.len(), |i, p| {
            buf[i] = match p {
                // SAFETY: a RAM offset inside the flat view.
                Place::Ram(o) => unsafe { self.flat.add(o).read() },
                Place::Rom(r) => rom[r],
                Place::OpenBus => 0xFF,
            }
        });
        Ok(())
    }

    /// Writes guest physical memory; bytes that fall on ROM are dropped.
    #[inline]
    pub fn write_phys(&self, addr: u32, data: &[u8]) -> Result<(), MemFault> {
        self.note_write(addr, data.len());
        if let Some(last) = data.len().checked_sub(1) {
            self.spaces.note_write(addr >> 12);
            self.spaces.note_write(addr.wrapping_add(last as u32) >> 12);
        }
        if !self.plain_ram(addr, data.len()) {
            return self.write_slow(addr, data);
        }
        // SAFETY: as in `read`.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.flat.add(addr as usize), data.len())
        };
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn write_slow(&self, addr: u32, data: &[u8]) -> Result<(), MemFault> {
        self.each_byte(addr, data.len(), |i, p| {
            if let Place::Ram(o) = p {
                // SAFETY: a RAM offset inside the flat view.
                unsafe { self.flat.add(o).write(data[i]) }
            }
        });
        Ok(())
    }

    /// Fills `len` bytes with `byte`; bytes that fall on ROM are kept.
    pub fn fill(&self, addr: u32, len: usize, byte: u8) -> Result<(), MemFault> {
        self.note_write(addr, len);
        let (start, end) = (addr as usize, addr as usize + len);
        if self.contains(addr, len) && start < self.low_rom && end > ONE_MIB {
            // RAM around the low ROM window (a reset clearing all of RAM):
            // the parts below and above it.
            self.fill(addr, self.low_rom - start, byte)?;
            return self.fill(ONE_MIB as u32, end - ONE_MIB, byte);
        }
        if !self.plain_ram(addr, len) {
            self.each_byte(addr, len, |_, p| {
                if let Place::Ram(o) = p {
                    // SAFETY: a RAM offset inside the flat view.
                    unsafe { self.flat.add(o).write(byte) }
                }
            });
            return Ok(());
        }
        // SAFETY: as in `read`.
        unsafe { std::ptr::write_bytes(self.flat.add(addr as usize), byte, len) };
        Ok(())
    }

    pub fn read_u8(&self, addr: u32) -> Result<u8, MemFault> {
        let mut b = [0; 1];
        self.read(addr, &mut b)?;
        Ok(b[0])
    }

    pub fn read_u16(&self, addr: u32) -> Result<u16, MemFault> {
        let mut b = [0; 2];
        self.read(addr, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    pub fn read_u32(&self, addr: u32) -> Result<u32, MemFault> {
        let mut b = [0; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Reads a value of `size` bytes (1, 2 or 4), zero-extended.
    pub fn read_sized(&self, addr: u32, size: u32) -> Result<u32, MemFault> {
        // One constant-size access per width: each becomes a plain load.
        Ok(match size {
            1 => self.read_u8(addr)? as u32,
            2 => self.read_u16(addr)? as u32,
            _ => self.read_u32(addr)?,
        })
    }

    pub fn read_u64(&self, addr: u32) -> Result<u64, MemFault> {
        let mut b = [0; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    pub fn write_u8(&self, addr: u32, v: u8) -> Result<(), MemFault> {
        self.write(addr, &[v])
    }

    pub fn write_u16(&self, addr: u32, v: u16) -> Result<(), MemFault> {
        self.write(addr, &v.to_le_bytes())
    }

    pub fn write_u32(&self, addr: u32, v: u32) -> Result<(), MemFault> {
        self.write(addr, &v.to_le_bytes())
    }

    pub fn write_sized(&self, addr: u32, size: u32, v: u32) -> Result<(), MemFault> {
        match size {
            1 => self.write_u8(addr, v as u8),
            2 => self.write_u16(addr, v as u16),
            _ => self.write_u32(addr, v),
        }
    }
}

impl GuestMemory {
    /// Writes a paging-structure entry in RAM (ROM and no memory ignore it).
    fn write_entry(&self, addr: u64, bytes: &[u8]) {
        if let Ok(a) = u32::try_from(addr)
            && self.contains(a, bytes.len())
        {
            // SAFETY: inside the flat view (checked); a raw copy.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    self.flat.add(a as usize),
                    bytes.len(),
                )
            };
        }
    }
}

/// The walk reads and writes page tables in RAM (and reads ROM).
impl PageTables for GuestMemory {
    fn read_u32(&self, addr: u64) -> Option<u32> {
        let mut b = [0; 4];
        self.read_phys(u32::try_from(addr).ok()?, &mut b).ok()?;
        Some(u32::from_le_bytes(b))
    }

    fn read_u64(&self, addr: u64) -> Option<u64> {
        let mut b = [0; 8];
        self.read_phys(u32::try_from(addr).ok()?, &mut b).ok()?;
        Some(u64::from_le_bytes(b))
    }

    // Accessed and dirty bits: only ever set, which no mapping depends on;
    // the copies of traced tables take them (see `shadow`).
    fn write_u32(&self, addr: u64, v: u32) {
        self.write_entry(addr, &v.to_le_bytes());
        self.spaces.note_entry_set(addr, v as u64);
    }

    fn write_u64(&self, addr: u64, v: u64) {
        self.write_entry(addr, &v.to_le_bytes());
        self.spaces.note_entry_set(addr, v);
    }
}

/// Where one byte of guest physical memory lives.
#[derive(Clone, Copy)]
enum Place {
    /// Offset in RAM.
    Ram(usize),
    /// Offset in the ROM image.
    Rom(usize),
    /// Neither: all ones to read, writes lost.
    OpenBus,
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // SAFETY: both regions were mapped in `new` with these sizes and no
        // generated code runs once the machine owning them is dropped.
        unsafe {
            libc::munmap(self.flat.cast(), self.size);
            libc::close(self.ram_fd);
            if let Some(fd) = self.rom_fd {
                libc::close(fd);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_and_shadow_views_share_ram() {
        let m = GuestMemory::new(2 << 20).unwrap();
        m.write_u32(0x1234, 0xdeadbeef).unwrap();
        // SAFETY: 0x1234 is inside the mapped RAM part of the shadow.
        let v = unsafe { std::ptr::read_unaligned((m.shadow_base() + 0x1234) as *const u32) };
        assert_eq!(v, 0xdeadbeef);
    }

    #[test]
    fn page_zero_is_aliased_after_4gib() {
        let m = GuestMemory::new(2 << 20).unwrap();
        m.write_u8(7, 0x5a).unwrap();
        // SAFETY: the alias page is mapped at SPACE.
        let v = unsafe { std::ptr::read((m.shadow_base() + SPACE as u64 + 7) as *const u8) };
        assert_eq!(v, 0x5a);
    }

    #[test]
    fn beyond_ram_is_the_open_bus() {
        let m = GuestMemory::new(1 << 20).unwrap();
        m.write_u16((1 << 20) - 2, 0x1234).unwrap();
        assert_eq!(m.read_u32((1 << 20) - 2), Ok(0xFFFF_1234));
        assert_eq!(m.write_u8(0xFFFF_FFFF, 1), Ok(()));
        assert_eq!(m.read_u8(0xFFFF_FFFF), Ok(0xFF));
    }

    #[test]
    fn sizes_outside_the_supported_range_are_rejected() {
        assert!(matches!(GuestMemory::new(4096), Err(MemoryError::Size(_))));
        assert!(matches!(
            GuestMemory::new(4 << 30),
            Err(MemoryError::Size(_))
        ));
    }
}
