//! Shadow address spaces for guest paging (DESIGN.md section 6).
//!
//! A space is a host reservation laid out like the identity shadow (a
//! guard, 4 GiB of guest linear space, page 0's alias, a guard, the
//! segment-limit probe areas), so generated code runs unchanged with its
//! start as the GS base. There are two: one for supervisor accesses and
//! one for user accesses (a page the guest made supervisor-only is never
//! mapped in the user space, and CR0.WP=0 lets supervisor writes through
//! read-only pages). Pages are mapped one at a time from the RAM (or ROM)
//! memfd when generated code faults on them (a hidden fault), read-only
//! until the guest's dirty bit is set, and read-only while they hold
//! translated code. Every mapped page is remembered with its guest frame
//! (a reverse map finds the mappings of a frame when it starts or stops
//! holding code).
//!
//! The kernel counts each mapping of the process (vm.max_map_count is
//! 65530 by default) and scattered pages do not merge, so the spaces keep
//! below a budget of mapped pages: past it, everything is dropped and
//! refilled by hidden faults (a shadow flush).

use std::collections::HashMap;

use crate::memory::{GUARD, MemoryError, PAGE_SIZE, SPACE, os};
use translator::abi::limit;

/// The whole reservation of one space: the guard below guest space, the
/// space, the guard above it and the segment-limit probe areas.
pub const RESERVE: usize = GUARD + limit::AREA_END as usize;
const _: () = assert!(limit::AREA_START as usize == SPACE + GUARD);

/// Default budget of pages mapped in the paging spaces together. A page
/// between unmapped ones costs two kernel mappings (itself and the hole
/// after it): with the identity shadow's code-page protections (at most
/// 8,192, two each as well) and the process's own mappings this stays
/// below 65,530.
pub const DEFAULT_BUDGET: usize = 20_480;

/// A reserved space, unmapped when dropped.
pub struct Reservation(*mut u8);

impl Reservation {
    /// Host address of guest linear 0.
    pub fn space(&self) -> *mut u8 {
        self.0
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // SAFETY: `reserve` mapped RESERVE bytes from GUARD before the
        // space; no generated code runs on it any more.
        unsafe { libc::munmap(self.0.sub(GUARD).cast(), RESERVE) };
    }
}

/// Reserves a space (inaccessible) with its probe areas.
pub fn reserve() -> Result<Reservation, MemoryError> {
    // SAFETY: an inaccessible reservation at a kernel-chosen address.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            RESERVE,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(os("mmap (shadow reservation)"));
    }
    // SAFETY: the guest space starts GUARD bytes into the reservation.
    let r = Reservation(unsafe { base.cast::<u8>().add(GUARD) });
    for (probe, len) in [
        (limit::PROBE_GP, SPACE),
        (limit::PROBE_SS, SPACE),
        (limit::PROBE64_GP, 1 << 16),
        (limit::PROBE64_SS, 1 << 16),
    ] {
        // SAFETY: inside our reservation; private anonymous zero pages.
        let p = unsafe {
            libc::mmap(
                r.0.offset(probe as isize).cast(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(os("mmap (segment limit probe)"));
        }
    }
    Ok(r)
}

/// Makes `len` bytes at `at` in a space inaccessible again.
fn unmap_range(space: *mut u8, at: usize, len: usize) {
    // SAFETY: inside a reservation this module owns; replacing the pages
    // with a fresh inaccessible mapping drops the old ones.
    let p = unsafe {
        libc::mmap(
            space.add(at).cast(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    debug_assert_ne!(p, libc::MAP_FAILED, "unmapping shadow pages");
}

/// Supervisor or user space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Supervisor = 0,
    User = 1,
}

/// A page mapped in a space.
#[derive(Clone, Copy, Debug)]
struct Mapping {
    /// Guest physical page number.
    frame: u32,
    /// The guest lets this privilege write it and its dirty bit is set.
    writable: bool,
    global: bool,
    /// Part of a large guest page.
    large: bool,
}

/// Linear pages per 4 MiB region (a large page is at most that).
const REGION_PAGES: u32 = 1024;

/// Where a guest frame's bytes come from.
#[derive(Clone, Copy, Debug)]
pub struct Backing {
    pub fd: i32,
    pub offset: usize,
    /// Never writable (ROM).
    pub read_only: bool,
}

/// Why a guest frame is mapped read-only whatever the guest allows.
mod readonly {
    /// It holds translated code (self-modifying code faults).
    pub const CODE: u8 = 1 << 0;
    /// It holds page tables, unwritten since the last CR3 write.
    pub const TABLE: u8 = 1 << 1;
}

pub struct Spaces {
    /// Reserved when the guest first turns paging on (`reserve`).
    spaces: Option<[Reservation; 2]>,
    /// Guest frames mapped read-only, and why (`readonly` bits).
    readonly: HashMap<u32, u8>,
    /// Guest frames the page walk read entries from: page tables. While
    /// none is written, every mapping agrees with the guest's tables, and
    /// a CR3 write with the same value changes nothing.
    traced: std::collections::HashSet<u32>,
    /// A traced frame was written since the last CR3 write (by the guest
    /// through a mapping, which faulted once and was made writable, or by
    /// the runtime).
    tables_written: std::cell::Cell<bool>,
    /// The traced frames made writable since the last CR3 write.
    unprotected_tables: Vec<u32>,
    maps: [HashMap<u32, Mapping>; 2],
    /// Guest frame -> (view, linear page) of every mapping of it.
    rmap: HashMap<u32, Vec<(View, u32)>>,
    globals: usize,
    /// Mappings from large guest pages, per 4 MiB linear region.
    large: HashMap<u32, u32>,
    budget: usize,
    pub flushes: u64,
}

impl Spaces {
    pub fn new(budget: usize) -> Self {
        Spaces {
            spaces: None,
            readonly: HashMap::new(),
            traced: Default::default(),
            tables_written: Default::default(),
            unprotected_tables: Vec::new(),
            maps: [HashMap::new(), HashMap::new()],
            rmap: HashMap::new(),
            globals: 0,
            large: HashMap::new(),
            budget: budget.max(16),
            flushes: 0,
        }
    }

    /// Reserves the two spaces, the first time paging is turned on
    /// (machines that never use paging do not pay for them).
    pub fn reserve(&mut self) -> Result<(), MemoryError> {
        if self.spaces.is_none() {
            self.spaces = Some([reserve()?, reserve()?]);
        }
        Ok(())
    }

    /// Host address of guest linear 0 in `view`.
    fn space(&self, view: View) -> *mut u8 {
        self.spaces.as_ref().expect("paging reserved its spaces")[view as usize].space()
    }

    pub fn set_budget(&mut self, pages: usize) {
        self.budget = pages.max(16);
    }

    /// Host address of guest linear 0 in `view`: the GS base.
    pub fn base(&self, view: View) -> u64 {
        self.space(view) as u64
    }

    pub fn mapped(&self) -> usize {
        self.maps[0].len() + self.maps[1].len()
    }

    /// Maps linear page `page` of `view` to guest `frame`, read-only
    /// unless `writable` and the frame holds neither code nor page tables.
    pub fn map(
        &mut self,
        view: View,
        page: u32,
        frame: u32,
        back: Backing,
        writable: bool,
        global: bool,
        large: bool,
    ) -> Result<(), MemoryError> {
        if self.mapped() >= self.budget {
            self.drop_all();
        }
        // The new page replaces the old one (MAP_FIXED).
        self.forget(view, page);
        let writable = writable && !back.read_only;
        let prot = prot(writable && !self.readonly.contains_key(&frame));
        let at = page as usize * PAGE_SIZE;
        let alias = (page == 0).then_some(SPACE);
        let base = self.space(view);
        let mapped = |off: usize| {
            // SAFETY: a page inside this space's reservation; the memfd
            // range is the guest frame's backing, checked by the caller.
            let p = unsafe {
                libc::mmap(
                    base.add(off).cast(),
                    PAGE_SIZE,
                    prot,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    back.fd,
                    back.offset as libc::off_t,
                )
            };
            p != libc::MAP_FAILED
        };
        if !std::iter::once(at).chain(alias).all(mapped) {
            // Out of kernel mappings after all (other machines in the
            // process use them too): start over with none.
            let e = os("mmap (shadow page)");
            self.drop_all();
            if !std::iter::once(at).chain(alias).all(mapped) {
                return Err(e);
            }
        }
        self.maps[view as usize].insert(
            page,
            Mapping {
                frame,
                writable,
                global,
                large,
            },
        );
        self.rmap.entry(frame).or_default().push((view, page));
        self.globals += global as usize;
        if large {
            *self.large.entry(page / REGION_PAGES).or_default() += 1;
        }
        Ok(())
    }

    fn unmap_page(&mut self, view: View, page: u32) {
        if self.forget(view, page) {
            let base = self.space(view);
            unmap_range(base, page as usize * PAGE_SIZE, PAGE_SIZE);
            if page == 0 {
                unmap_range(base, SPACE, PAGE_SIZE);
            }
        }
    }

    /// Forgets the mapping of `page` in `view` (the host page stays until
    /// replaced or unmapped); returns whether there was one.
    fn forget(&mut self, view: View, page: u32) -> bool {
        let Some(m) = self.maps[view as usize].remove(&page) else {
            return false;
        };
        self.globals -= m.global as usize;
        if m.large {
            let region = page / REGION_PAGES;
            let n = self.large.get_mut(&region).expect("counted");
            *n -= 1;
            if *n == 0 {
                self.large.remove(&region);
            }
        }
        if let Some(list) = self.rmap.get_mut(&m.frame) {
            list.retain(|&e| e != (view, page));
            if list.is_empty() {
                self.rmap.remove(&m.frame);
            }
        }
        true
    }

    /// The spaces that map linear page `page`.
    pub fn views_mapping(&self, page: u32) -> Vec<View> {
        [View::Supervisor, View::User]
            .into_iter()
            .filter(|&v| self.maps[v as usize].contains_key(&page))
            .collect()
    }

    /// INVLPG: drops linear page `page` from both spaces, and every
    /// mapping from a large page around it (the large page it is in may
    /// be any of them).
    /// The views in `refill` keep `page` itself: the caller maps it again
    /// at once (replacing it costs one system call, dropping it two).
    pub fn invalidate_page(&mut self, page: u32, refill: &[View]) {
        let region = page / REGION_PAGES;
        for view in [View::Supervisor, View::User] {
            if !refill.contains(&view) {
                self.unmap_page(view, page);
            }
            if self.large.contains_key(&region) {
                for p in region * REGION_PAGES..(region + 1) * REGION_PAGES {
                    if self.maps[view as usize].get(&p).is_some_and(|m| m.large) {
                        self.unmap_page(view, p);
                    }
                }
            }
        }
    }

    /// Page-table frames a successful walk read: write-protected from now
    /// on (see `traced`).
    pub fn trace_tables(&mut self, frames: &[u32]) {
        for &f in frames {
            if self.traced.insert(f) {
                self.set_readonly(f, readonly::TABLE, true);
            }
        }
    }

    /// Whether a guest write to `frame` faulted only because it holds page
    /// tables: then it is made writable until the next CR3 write, which
    /// will drop the mappings.
    pub fn table_written(&mut self, frame: u32) -> bool {
        if self
            .readonly
            .get(&frame)
            .is_none_or(|r| r & readonly::TABLE == 0)
        {
            return false;
        }
        self.set_readonly(frame, readonly::TABLE, false);
        self.unprotected_tables.push(frame);
        self.tables_written.set(true);
        true
    }

    /// Notes a runtime write to guest `frame` (it may be a page table).
    #[inline]
    pub fn note_write(&self, frame: u32) {
        if !self.traced.is_empty() && self.traced.contains(&frame) {
            self.tables_written.set(true);
        }
    }

    /// A CR3 write: `same` if it loaded the value it had. With the same
    /// value and no page table written since the last one, every mapping
    /// still agrees with the guest's tables and nothing is dropped;
    /// otherwise the non-global mappings are. Returns whether they were.
    pub fn cr3_write(&mut self, same: bool) -> bool {
        if same && !self.tables_written.get() {
            return false;
        }
        self.drop_non_global();
        self.tables_written.set(false);
        for f in std::mem::take(&mut self.unprotected_tables) {
            self.set_readonly(f, readonly::TABLE, true);
        }
        true
    }

    /// Forgets the traced page tables (paging was turned off or its
    /// format changed: everything is walked again).
    pub fn untrace_tables(&mut self) {
        for f in std::mem::take(&mut self.traced) {
            self.set_readonly(f, readonly::TABLE, false);
        }
        self.unprotected_tables.clear();
        self.tables_written.set(false);
    }

    /// Drops every mapping (a paging-mode change, or over budget).
    pub fn drop_all(&mut self) {
        if self.mapped() == 0 {
            return;
        }
        for s in self.spaces.iter().flatten() {
            unmap_range(s.space(), 0, SPACE + PAGE_SIZE);
        }
        self.maps.iter_mut().for_each(HashMap::clear);
        self.rmap.clear();
        self.globals = 0;
        self.large.clear();
        self.flushes += 1;
    }

    /// A CR3 write: drops every mapping but the global ones.
    pub fn drop_non_global(&mut self) {
        if self.globals == 0 {
            self.drop_all();
            return;
        }
        for view in [View::Supervisor, View::User] {
            let mut pages: Vec<u32> = self.maps[view as usize]
                .iter()
                .filter(|(_, m)| !m.global)
                .map(|(&p, _)| p)
                .collect();
            pages.sort_unstable();
            for p in pages {
                self.unmap_page(view, p);
            }
        }
        self.flushes += 1;
    }

    /// Makes guest `frame` read-only everywhere while it holds translated
    /// code (`code`), or lifts that.
    pub fn protect_code(&mut self, frame: u32, code: bool) {
        self.set_readonly(frame, readonly::CODE, code);
    }

    /// Adds or removes reason `bit` for keeping `frame` read-only, and
    /// sets the protection of its mappings accordingly.
    fn set_readonly(&mut self, frame: u32, bit: u8, on: bool) {
        let old = self.readonly.get(&frame).copied().unwrap_or(0);
        let new = if on { old | bit } else { old & !bit };
        if new == 0 {
            self.readonly.remove(&frame);
        } else {
            self.readonly.insert(frame, new);
        }
        if (old == 0) == (new == 0) {
            return;
        }
        let Some(list) = self.rmap.get(&frame) else {
            return;
        };
        for &(view, page) in list {
            let m = self.maps[view as usize][&page];
            let prot = prot(m.writable && new == 0);
            let base = self.space(view);
            let alias = (page == 0).then_some(SPACE);
            for off in std::iter::once(page as usize * PAGE_SIZE).chain(alias) {
                // SAFETY: a page of this space that is mapped (it is in
                // the map).
                let r = unsafe { libc::mprotect(base.add(off).cast(), PAGE_SIZE, prot) };
                debug_assert_eq!(r, 0, "mprotect of a shadow page");
            }
        }
    }
}

fn prot(writable: bool) -> i32 {
    if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    }
}
