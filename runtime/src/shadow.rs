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
//! last CR3 write. That tracing keeps the mappings in step with the
//! guest's tables: every mapping remembers the table entries its walk
//! used, every traced table frame a copy of its entries, and at a CR3
//! write the frames written since the last one are compared with their
//! copies; only the mappings that depend on an entry that changed are
//! dropped (an entry whose accessed or dirty bit was merely set has not
//! changed; one whose bit the guest cleared has, so that the next access
//! sets it again). Every mapped page is remembered with its guest frame
//! (a reverse map finds the mappings of a frame when its protection
//! changes).
//!
//! The kernel counts each mapping of the process (vm.max_map_count is
//! 65530 by default) and scattered pages do not merge, so the sets keep
//! below a budget of mapped pages: past it, everything is dropped and
//! refilled by hidden faults (a shadow flush).

use std::collections::HashMap;

use crate::memory::{GUARD, MemoryError, PAGE_SIZE, SPACE, os};
use crate::paging::entry;
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
pub(crate) fn unmap_range(space: *mut u8, at: usize, len: usize) {
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    /// The guest physical addresses of the table entries its walk used
    /// (the first `levels`).
    entries: [u64; 3],
    levels: u8,
}

impl Mapping {
    fn entries(&self) -> &[u64] {
        &self.entries[..self.levels as usize]
    }
}

/// The translation a mapping is made from: what the guest's tables say
/// about the page, and which of their entries said it.
#[derive(Clone, Copy, Debug)]
pub struct PageInfo<'a> {
    pub writable: bool,
    pub global: bool,
    pub large: bool,
    pub entries: &'a [u64],
}

/// A copy of a traced page-table frame, as the mappings made from it saw
/// it.
type Snapshot = Box<[u8; PAGE_SIZE]>;

/// Whether mappings made from table entry `old` disagree with the entry
/// now being `new`: anything but the accessed and dirty bits changed, or
/// the guest cleared one of those (the next access must set it again).
fn entry_changed(old: u64, new: u64) -> bool {
    let ad = entry::A | entry::D;
    (old ^ new) & !ad != 0 || old & !new & ad != 0
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
    /// Guest frames the page walk read entries from (page tables), with
    /// a copy of each as of when it was traced or last compared.
    traced: HashMap<u32, Snapshot>,
    /// The traced frames written since the last CR3 write (made writable,
    /// or written by the runtime).
    written_frames: std::cell::RefCell<std::collections::HashSet<u32>>,
    /// Entries of written frames that mappings were made from since the
    /// last CR3 write: the value they saw may have been an intermediate
    /// one, which comparing with the copy cannot tell.
    volatile: std::collections::HashSet<u64>,
    /// Accessed and dirty bits the page walk set in traced frames since
    /// the last CR3 write (entry address, new value): the copies take
    /// them before they are compared, so that a guest clearing one again
    /// is seen.
    ad_sets: std::cell::RefCell<Vec<(u64, u64)>>,
    /// Guest frame -> every mapping of it.
    rmap: HashMap<u32, Vec<Slot>>,
    /// Guest physical address of a table entry -> every mapping whose
    /// walk used it.
    deps: HashMap<u64, std::collections::HashSet<Slot>>,
    /// Table entries are 8 bytes (PAE) rather than 4.
    wide_entries: bool,
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
            traced: HashMap::new(),
            written_frames: Default::default(),
            volatile: Default::default(),
            ad_sets: Default::default(),
            rmap: HashMap::new(),
            deps: HashMap::new(),
            wide_entries: false,
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
                self.drop_set(i);
                self.sets[i].cr3 = cr3;
                i
            }
        };
        self.current = i;
        self.sets[i].used = self.clock;
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

    /// Maps linear page `page` of `view` (current set) to guest `frame`
    /// as `info` says, read-only unless writable there and the frame
    /// holds neither code nor page tables.
    pub fn map(
        &mut self,
        view: View,
        page: u32,
        frame: u32,
        back: Backing,
        info: PageInfo,
    ) -> Result<(), MemoryError> {
        let PageInfo {
            writable,
            global,
            large,
            entries,
        } = info;
        if self.mapped() >= self.budget {
            self.drop_all();
        }
        let set = self.current;
        // The new page replaces the old one (MAP_FIXED).
        let slot = (set, view, page);
        self.forget(slot);
        let writable = writable && !back.read_only;
        let prot = prot(writable && !self.readonly.contains_key(&frame));
        let at = page as usize * PAGE_SIZE;
        // Page 0 is seen again above the 4 GiB space (wrapping accesses).
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
        let mut m = Mapping {
            frame,
            writable,
            global,
            large,
            entries: [0; 3],
            levels: entries.len() as u8,
        };
        m.entries[..entries.len()].copy_from_slice(entries);
        let s = &mut self.sets[set];
        s.maps[view as usize].insert(page, m);
        s.globals += global as usize;
        if large {
            *s.large.entry(page / REGION_PAGES).or_default() += 1;
        }
        self.rmap.entry(frame).or_default().push(slot);
        let written = self.written_frames.borrow();
        for &e in entries {
            self.deps.entry(e).or_default().insert(slot);
            if written.contains(&((e >> 12) as u32)) {
                self.volatile.insert(e);
            }
        }
        Ok(())
    }

    /// Sets the protection of a mapped page (and of page 0's alias).
    fn protect_slot(&self, (set, view, page): Slot, writable: bool) {
        let base = self.sets[set].space(view);
        let alias = (page == 0).then_some(SPACE);
        for off in std::iter::once(page as usize * PAGE_SIZE).chain(alias) {
            // SAFETY: a page of this set that is mapped (it is in the map).
            let r = unsafe { libc::mprotect(base.add(off).cast(), PAGE_SIZE, prot(writable)) };
            debug_assert_eq!(r, 0, "mprotect of a shadow page");
        }
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
        self.unlink(slot, &m);
        true
    }

    /// Removes a dropped mapping from the reverse map and the entries'
    /// dependents.
    fn unlink(&mut self, slot: Slot, m: &Mapping) {
        if let Some(list) = self.rmap.get_mut(&m.frame) {
            list.retain(|&e| e != slot);
            if list.is_empty() {
                self.rmap.remove(&m.frame);
            }
        }
        for e in m.entries() {
            if let Some(slots) = self.deps.get_mut(e) {
                slots.remove(&slot);
                if slots.is_empty() {
                    self.deps.remove(e);
                }
            }
        }
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

    /// Whether guest `frame` is a traced page table.
    pub fn is_traced(&self, frame: u32) -> bool {
        self.traced.contains_key(&frame)
    }

    /// Page-table frames a successful walk read, with their contents
    /// now: write-protected from now on (see `traced`).
    pub fn trace_tables(&mut self, frames: Vec<(u32, Snapshot)>) {
        for (f, copy) in frames {
            if let std::collections::hash_map::Entry::Vacant(e) = self.traced.entry(f) {
                e.insert(copy);
                self.set_readonly(f, readonly::TABLE, true);
            }
        }
    }

    /// Whether a guest write to `frame` faulted only because it holds page
    /// tables: then it is made writable until the next CR3 write, which
    /// compares it with its copy.
    pub fn table_written(&mut self, frame: u32) -> bool {
        if self
            .readonly
            .get(&frame)
            .is_none_or(|r| r & readonly::TABLE == 0)
        {
            return false;
        }
        self.set_readonly(frame, readonly::TABLE, false);
        self.written_frames.borrow_mut().insert(frame);
        true
    }

    /// Notes a runtime write to guest `frame` (it may be a page table).
    #[inline]
    pub fn note_write(&self, frame: u32) {
        if !self.traced.is_empty() && self.traced.contains_key(&frame) {
            self.written_frames.borrow_mut().insert(frame);
        }
    }

    /// The page walk set accessed or dirty bits: table entry `addr` is
    /// `value` now.
    pub fn note_entry_set(&self, addr: u64, value: u64) {
        if self.traced.contains_key(&((addr >> 12) as u32)) {
            self.ad_sets.borrow_mut().push((addr, value));
        }
    }

    /// The traced frames written since the last CR3 write, to be read
    /// and passed to [`Spaces::cr3_write`].
    pub fn written_tables(&self) -> Vec<u32> {
        let mut frames: Vec<u32> = self.written_frames.borrow().iter().copied().collect();
        frames.sort_unstable();
        frames
    }

    /// A CR3 write (of `cr3`; `same` if CR3 had that value), with the
    /// contents now of the frames [`Spaces::written_tables`] named.
    /// Their entries are compared with the copies: the mappings that
    /// depend on one that changed are dropped, in every set; the frames
    /// are write-protected again. Then the set of `cr3` becomes current
    /// (kept from the last time it was, or new). Returns whether the
    /// translations of linear addresses may have changed (a table was
    /// written, or the address space changed).
    pub fn cr3_write(
        &mut self,
        cr3: u32,
        same: bool,
        written: Vec<(u32, Snapshot)>,
    ) -> Result<bool, MemoryError> {
        self.written_frames.borrow_mut().clear();
        let width = if self.wide_entries { 8 } else { 4 };
        // A/D bits the walk set are taken into the copies, but only into
        // an entry that is otherwise what the copy has: if the entry was
        // rewritten, the copy must keep the old value to see that.
        for (addr, value) in std::mem::take(self.ad_sets.get_mut()) {
            if let Some(copy) = self.traced.get_mut(&((addr >> 12) as u32)) {
                let at = (addr & 0xFFF) as usize;
                let mut old = [0u8; 8];
                old[..width].copy_from_slice(&copy[at..at + width]);
                if (u64::from_le_bytes(old) ^ value) & !(entry::A | entry::D) == 0 {
                    copy[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
                }
            }
        }
        let volatile = std::mem::take(&mut self.volatile);
        // Translations the runtime made without a mapping (code fetches,
        // which the jump caches remember) may depend on any entry of a
        // written table, even one that is back to its old value.
        let tables_changed = !written.is_empty();
        let frames: Vec<u32> = written.iter().map(|&(f, _)| f).collect();
        let mut dropped = false;
        for (f, now) in written {
            let Some(old) = self.traced.get(&f) else {
                continue;
            };
            let entry = |b: &[u8; PAGE_SIZE], at: usize| {
                let mut v = [0u8; 8];
                v[..width].copy_from_slice(&b[at..at + width]);
                u64::from_le_bytes(v)
            };
            let addr = |at: usize| ((f as u64) << 12) + at as u64;
            // Most of a written table is as it was: compare 64 bytes at a
            // time, and the entries only where those differ.
            const CHUNK: usize = 64;
            let changed: Vec<u64> = old
                .chunks_exact(CHUNK)
                .zip(now.chunks_exact(CHUNK))
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .flat_map(|(c, _)| (c * CHUNK..(c + 1) * CHUNK).step_by(width))
                .filter(|&at| entry_changed(entry(old, at), entry(&now, at)))
                .map(addr)
                .collect();
            self.traced.insert(f, now);
            dropped |= self.drop_dependents(changed);
        }
        // Volatile entries are in written frames: drop what was made from
        // them whatever they hold now.
        dropped |= self.drop_dependents(volatile);
        // Those the guest wrote were made writable: protect them again
        // (those only the runtime wrote still are).
        for f in frames {
            self.set_readonly(f, readonly::TABLE, true);
        }
        if dropped {
            self.flushes += 1;
        }
        let switched = !same || self.set().cr3 != cr3;
        self.select(cr3)?;
        Ok(tables_changed || switched)
    }

    /// Drops the mappings made from table entries `entries`; returns
    /// whether there were any.
    fn drop_dependents(&mut self, entries: impl IntoIterator<Item = u64>) -> bool {
        let mut dropped = false;
        for e in entries {
            let slots: Vec<Slot> = self.deps.get(&e).into_iter().flatten().copied().collect();
            for slot in slots {
                self.unmap_page(slot);
                dropped = true;
            }
        }
        dropped
    }

    /// Forgets the traced page tables (paging was turned off or its
    /// format changed: everything is walked again); `wide` says whether
    /// table entries are 8 bytes from now on.
    pub fn untrace_tables(&mut self, wide: bool) {
        let frames: Vec<u32> = self.traced.drain().map(|(f, _)| f).collect();
        for f in frames {
            self.set_readonly(f, readonly::TABLE, false);
        }
        self.written_frames.borrow_mut().clear();
        self.volatile.clear();
        self.ad_sets.borrow_mut().clear();
        self.wide_entries = wide;
    }

    /// Drops every mapping of every set (a paging-mode change, or over
    /// budget).
    pub fn drop_all(&mut self) {
        if self.mapped() == 0 {
            return;
        }
        for i in 0..self.sets.len() {
            self.drop_set(i);
        }
        self.flushes += 1;
    }

    /// Drops every mapping of set `i`.
    fn drop_set(&mut self, i: usize) {
        if self.sets[i].mapped() == 0 {
            return;
        }
        for view in [View::Supervisor, View::User] {
            unmap_range(self.sets[i].space(view), 0, SPACE + PAGE_SIZE);
        }
        let s = &mut self.sets[i];
        let mut dropped = Vec::with_capacity(s.mapped());
        for view in [View::Supervisor, View::User] {
            dropped.extend(
                s.maps[view as usize]
                    .drain()
                    .map(|(p, m)| ((i, view, p), m)),
            );
        }
        s.globals = 0;
        s.large.clear();
        for (slot, m) in dropped {
            self.unlink(slot, &m);
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
            let writable = self.sets[set].maps[view as usize][&page].writable;
            self.protect_slot((set, view, page), writable && new == 0);
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
