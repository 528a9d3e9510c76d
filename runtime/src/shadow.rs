//! Shadow address spaces for guest paging (DESIGN.md section 6).
//!
//! A space is a host reservation laid out like the identity shadow (a
//! guard, 4 GiB of guest linear space, page 0's alias, a guard, the
//! segment-limit probe areas), so generated code runs unchanged with its
//! start as the GS base. Each guest address space (CR3 value) has a set
//! of two: one for supervisor accesses and one for user accesses (a page
//! the guest made supervisor-only is never mapped in the user space, and
//! CR0.WP=0 lets supervisor writes through read-only pages); a few sets
//! are kept, so switching back to an address space faults nothing in
//! again. Pages are mapped one at a time from the RAM (or ROM) memfd
//! when generated code faults on them (a hidden fault), read-only until
//! the guest's dirty bit is set, read-only while they hold translated
//! code, and read-only while they hold page tables not written since the
//! last CR3 write (the tracing that tells whether kept mappings still
//! agree with the guest's tables). Every mapped page is remembered with
//! its guest frame (a reverse map finds the mappings of a frame when its
//! protection changes).
//!
//! The kernel counts each mapping of the process (vm.max_map_count is
//! 65530 by default) and scattered pages do not merge, so the sets keep
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

/// Address spaces kept at once (each is two reservations).
const MAX_SETS: usize = 4;

/// The shadow of one guest address space (one CR3 value): the supervisor
/// and the user space and what they map.
struct SpaceSet {
    cr3: u32,
    spaces: [Reservation; 2],
    maps: [HashMap<u32, Mapping>; 2],
    globals: usize,
    /// Mappings from large guest pages, per 4 MiB linear region.
    large: HashMap<u32, u32>,
    /// A page table was written since this set was last current: its
    /// non-global mappings may disagree with the guest's tables.
    stale: bool,
    /// When it was last made current (for eviction).
    used: u64,
}

impl SpaceSet {
    fn new(cr3: u32) -> Result<Self, MemoryError> {
        Ok(SpaceSet {
            cr3,
            spaces: [reserve()?, reserve()?],
            maps: [HashMap::new(), HashMap::new()],
            globals: 0,
            large: HashMap::new(),
            stale: false,
            used: 0,
        })
    }

    fn space(&self, view: View) -> *mut u8 {
        self.spaces[view as usize].space()
    }

    fn mapped(&self) -> usize {
        self.maps[0].len() + self.maps[1].len()
    }
}

/// A mapping: the set, the view and the linear page.
type Slot = (usize, View, u32);

pub struct Spaces {
    /// One set per guest address space, reserved when the guest first
    /// turns paging on and as it switches CR3 (at most `MAX_SETS`).
    sets: Vec<SpaceSet>,
    /// The set generated code runs on.
    current: usize,
    clock: u64,
    /// Guest frames mapped read-only, and why (`readonly` bits).
    readonly: HashMap<u32, u8>,
    /// Guest frames the page walk read entries from: page tables. While
    /// none is written, every mapping agrees with the guest's tables, so
    /// a CR3 write changes nothing but which set is current.
    traced: std::collections::HashSet<u32>,
    /// A traced frame was written since the last CR3 write (by the guest
    /// through a mapping, which faulted once and was made writable, or by
    /// the runtime).
    tables_written: std::cell::Cell<bool>,
    /// The traced frames made writable since the last CR3 write.
    unprotected_tables: Vec<u32>,
    /// Guest frame -> every mapping of it.
    rmap: HashMap<u32, Vec<Slot>>,
    budget: usize,
    pub flushes: u64,
}

impl Spaces {
    pub fn new(budget: usize) -> Self {
        Spaces {
            sets: Vec::new(),
            current: 0,
            clock: 0,
            readonly: HashMap::new(),
            traced: Default::default(),
            tables_written: Default::default(),
            unprotected_tables: Vec::new(),
            rmap: HashMap::new(),
            budget: budget.max(16),
            flushes: 0,
        }
    }

    /// Makes the set of address space `cr3` current: a kept one, a new
    /// one (reserved now; the machines that never use paging do not pay
    /// for any), or the least recently used one, emptied for it.
    pub fn select(&mut self, cr3: u32) -> Result<(), MemoryError> {
        self.clock += 1;
        let i = match self.sets.iter().position(|s| s.cr3 == cr3) {
            Some(i) => i,
            None if self.sets.len() < MAX_SETS => {
                self.sets.push(SpaceSet::new(cr3)?);
                self.sets.len() - 1
            }
            None => {
                let i = (0..self.sets.len())
                    .min_by_key(|&i| self.sets[i].used)
                    .expect("sets");
                self.drop_set(i, false);
                self.sets[i].cr3 = cr3;
                self.sets[i].stale = false;
                i
            }
        };
        self.current = i;
        self.sets[i].used = self.clock;
        if std::mem::take(&mut self.sets[i].stale) {
            self.drop_set(i, true);
        }
        Ok(())
    }

    fn set(&self) -> &SpaceSet {
        self.sets
            .get(self.current)
            .expect("paging reserved its spaces")
    }

    pub fn set_budget(&mut self, pages: usize) {
        self.budget = pages.max(16);
    }

    /// Host address of guest linear 0 in `view` of the current set: the
    /// GS base.
    pub fn base(&self, view: View) -> u64 {
        self.set().space(view) as u64
    }

    /// Pages mapped in all sets.
    pub fn mapped(&self) -> usize {
        self.sets.iter().map(SpaceSet::mapped).sum()
    }

    /// Maps linear page `page` of `view` (current set) to guest `frame`,
    /// read-only unless `writable` and the frame holds neither code nor
    /// page tables.
    #[allow(clippy::too_many_arguments)]
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
        let set = self.current;
        // The new page replaces the old one (MAP_FIXED).
        self.forget((set, view, page));
        let writable = writable && !back.read_only;
        let prot = prot(writable && !self.readonly.contains_key(&frame));
        let at = page as usize * PAGE_SIZE;
        let alias = (page == 0).then_some(SPACE);
        let base = self.sets[set].space(view);
        let mapped = |off: usize| {
            // SAFETY: a page inside this set's reservation; the memfd
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
        let s = &mut self.sets[set];
        s.maps[view as usize].insert(
            page,
            Mapping {
                frame,
                writable,
                global,
                large,
            },
        );
        s.globals += global as usize;
        if large {
            *s.large.entry(page / REGION_PAGES).or_default() += 1;
        }
        self.rmap.entry(frame).or_default().push((set, view, page));
        Ok(())
    }

    fn unmap_page(&mut self, slot: Slot) {
        if self.forget(slot) {
            let (set, view, page) = slot;
            let base = self.sets[set].space(view);
            unmap_range(base, page as usize * PAGE_SIZE, PAGE_SIZE);
            if page == 0 {
                unmap_range(base, SPACE, PAGE_SIZE);
            }
        }
    }

    /// Forgets a mapping (the host page stays until replaced or
    /// unmapped); returns whether there was one.
    fn forget(&mut self, slot: Slot) -> bool {
        let (set, view, page) = slot;
        let s = &mut self.sets[set];
        let Some(m) = s.maps[view as usize].remove(&page) else {
            return false;
        };
        s.globals -= m.global as usize;
        if m.large {
            let region = page / REGION_PAGES;
            let n = s.large.get_mut(&region).expect("counted");
            *n -= 1;
            if *n == 0 {
                s.large.remove(&region);
            }
        }
        if let Some(list) = self.rmap.get_mut(&m.frame) {
            list.retain(|&e| e != slot);
            if list.is_empty() {
                self.rmap.remove(&m.frame);
            }
        }
        true
    }

    /// The views of the current set that map linear page `page`.
    pub fn views_mapping(&self, page: u32) -> Vec<View> {
        let Some(s) = self.sets.get(self.current) else {
            return Vec::new();
        };
        [View::Supervisor, View::User]
            .into_iter()
            .filter(|&v| s.maps[v as usize].contains_key(&page))
            .collect()
    }

    /// INVLPG: drops linear page `page` from every set (a global page
    /// must go everywhere), and every mapping from a large page around it
    /// (the large page it is in may be any of them). The views of the
    /// current set in `refill` keep `page` itself: the caller maps it
    /// again at once (replacing it costs one system call, dropping it two).
    pub fn invalidate_page(&mut self, page: u32, refill: &[View]) {
        let region = page / REGION_PAGES;
        for set in 0..self.sets.len() {
            for view in [View::Supervisor, View::User] {
                if set != self.current || !refill.contains(&view) {
                    self.unmap_page((set, view, page));
                }
                if self.sets[set].large.contains_key(&region) {
                    for p in region * REGION_PAGES..(region + 1) * REGION_PAGES {
                        let large = self.sets[set].maps[view as usize]
                            .get(&p)
                            .is_some_and(|m| m.large);
                        if large {
                            self.unmap_page((set, view, p));
                        }
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

    /// A CR3 write (of `cr3`; `same` if CR3 had that value). If no page
    /// table was written since the last one, every set still agrees with
    /// the guest's tables: the same value changes nothing, another makes
    /// its set current (kept from the last time it was, or new). If a
    /// table was written, every set's non-global mappings are dropped
    /// (the current one's now, the others' when they are next current).
    /// Returns whether the translations of linear addresses changed.
    pub fn cr3_write(&mut self, cr3: u32, same: bool) -> Result<bool, MemoryError> {
        let written = self.tables_written.replace(false);
        if same && !written {
            return Ok(false);
        }
        if written {
            for s in &mut self.sets {
                s.stale = true;
            }
            for f in std::mem::take(&mut self.unprotected_tables) {
                self.set_readonly(f, readonly::TABLE, true);
            }
            self.flushes += 1;
        }
        self.select(cr3)?;
        Ok(true)
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

    /// Drops every mapping of every set (a paging-mode change, or over
    /// budget).
    pub fn drop_all(&mut self) {
        if self.mapped() == 0 {
            return;
        }
        for i in 0..self.sets.len() {
            self.drop_set(i, false);
        }
        self.flushes += 1;
    }

    /// Drops the mappings of set `i`: the non-global ones, or all.
    fn drop_set(&mut self, i: usize, keep_global: bool) {
        let s = &self.sets[i];
        if s.mapped() == 0 {
            return;
        }
        if keep_global && s.globals != 0 {
            for view in [View::Supervisor, View::User] {
                let mut pages: Vec<u32> = self.sets[i].maps[view as usize]
                    .iter()
                    .filter(|(_, m)| !m.global)
                    .map(|(&p, _)| p)
                    .collect();
                pages.sort_unstable();
                for p in pages {
                    self.unmap_page((i, view, p));
                }
            }
            return;
        }
        for view in [View::Supervisor, View::User] {
            unmap_range(self.sets[i].space(view), 0, SPACE + PAGE_SIZE);
        }
        let s = &mut self.sets[i];
        let frames: Vec<u32> = s
            .maps
            .iter()
            .flat_map(|m| m.values().map(|m| m.frame))
            .collect();
        s.maps.iter_mut().for_each(HashMap::clear);
        s.globals = 0;
        s.large.clear();
        for f in frames {
            if let Some(list) = self.rmap.get_mut(&f) {
                list.retain(|&(set, _, _)| set != i);
                if list.is_empty() {
                    self.rmap.remove(&f);
                }
            }
        }
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
        for &(set, view, page) in list {
            let s = &self.sets[set];
            let prot = prot(s.maps[view as usize][&page].writable && new == 0);
            let base = s.space(view);
            let alias = (page == 0).then_some(SPACE);
            for off in std::iter::once(page as usize * PAGE_SIZE).chain(alias) {
                // SAFETY: a page of this set that is mapped (it is in the
                // map).
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
