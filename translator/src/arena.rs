//! The code arena: one fixed region of host memory that never moves
//! (DESIGN.md section 4).
//!
//! It is a memfd mapped twice: a writable view the translator copies code
//! into and patches chains through, and an executable view that runs. No
//! page is ever writable and executable at once, and a published byte only
//! changes through [`CodeArena::patch_rel32`]. A full arena is flushed
//! whole by the translator, never grown or moved, so chained jumps and
//! return addresses into it never dangle while it lives.

use std::io;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// Arenas of the process, for the signal handler to tell generated code
/// from everything else without locks: pairs of (start, end), 0 = free.
const MAX_ARENAS: usize = 256;
static ARENAS: [(AtomicUsize, AtomicUsize); MAX_ARENAS] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; MAX_ARENAS];

/// True if `addr` lies in the executable view of a live arena.
/// Async-signal-safe.
pub fn is_generated_code(addr: usize) -> bool {
    ARENAS.iter().any(|(s, e)| {
        let start = s.load(Ordering::Acquire);
        start != 0 && addr >= start && addr < e.load(Ordering::Acquire)
    })
}

const PAGE: usize = 4096;
/// Arena offsets fit in 31 bits (see `abi::CHAIN_PAST_POLL`), and rel32
/// jumps reach across the arena.
const MAX_SIZE: usize = 1 << 30;

pub struct CodeArena {
    rw: *mut u8,
    rx: *mut u8,
    size: usize,
    used: usize,
    slot: usize,
}

// SAFETY: the arena is plain memory owned by one translator; moving it to
// another thread moves that ownership.
unsafe impl Send for CodeArena {}

#[derive(Debug)]
pub enum ArenaError {
    Os(&'static str, io::Error),
    TooManyArenas,
}

impl std::fmt::Display for ArenaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArenaError::Os(what, e) => write!(f, "code arena: {what}: {e}"),
            ArenaError::TooManyArenas => write!(
                f,
                "code arena: more than {MAX_ARENAS} arenas in one process"
            ),
        }
    }
}

impl std::error::Error for ArenaError {}

impl CodeArena {
    /// Reserves an arena of `size` bytes (rounded up to pages).
    pub fn new(size: usize) -> Result<Self, ArenaError> {
        if size > MAX_SIZE {
            return Err(ArenaError::Os(
                "size",
                io::Error::new(io::ErrorKind::InvalidInput, "larger than 1 GiB"),
            ));
        }
        let size = size.next_multiple_of(PAGE).max(PAGE);
        let os = |what| ArenaError::Os(what, io::Error::last_os_error());
        // SAFETY: memfd_create with a valid NUL-terminated name.
        let fd = unsafe { libc::memfd_create(c"bt86-code".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(os("memfd_create"));
        }
        let close = |e| {
            // SAFETY: fd is ours and open.
            unsafe { libc::close(fd) };
            e
        };
        // SAFETY: fd is a fresh memfd.
        if unsafe { libc::ftruncate(fd, size as libc::off_t) } != 0 {
            return Err(close(os("ftruncate")));
        }
        // SAFETY: mapping a memfd we own; the kernel picks the addresses.
        let rw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if rw == libc::MAP_FAILED {
            return Err(close(os("mmap (writable view)")));
        }
        // The executable view goes right above a reserved page (see
        // `page_below`): reserve both, then map the view over the rest.
        // SAFETY: an anonymous inaccessible mapping the kernel places.
        let below = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size + PAGE,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        let rx = if below == libc::MAP_FAILED {
            libc::MAP_FAILED
        } else {
            // SAFETY: replaces the reservation made above, past its first
            // page, with the memfd.
            unsafe {
                libc::mmap(
                    below.cast::<u8>().add(PAGE).cast(),
                    size,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    fd,
                    0,
                )
            }
        };
        let rx_err = (rx == libc::MAP_FAILED).then(|| os("mmap (executable view)"));
        if rx_err.is_some() && below != libc::MAP_FAILED {
            // SAFETY: the reservation made above.
            unsafe { libc::munmap(below, size + PAGE) };
        }
        // SAFETY: the mappings keep the memory alive without the descriptor.
        unsafe { libc::close(fd) };
        if let Some(e) = rx_err {
            // SAFETY: rw was mapped above with this size.
            unsafe { libc::munmap(rw, size) };
            return Err(e);
        }
        let slot = ARENAS.iter().position(|(s, _)| {
            s.compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        });
        let Some(slot) = slot else {
            // SAFETY: both views (and the page below) were mapped above.
            unsafe {
                libc::munmap(rw, size);
                libc::munmap(below, size + PAGE);
            }
            return Err(ArenaError::TooManyArenas);
        };
        ARENAS[slot].1.store(rx as usize + size, Ordering::Release);
        ARENAS[slot].0.store(rx as usize, Ordering::Release);
        Ok(CodeArena {
            rw: rw.cast(),
            rx: rx.cast(),
            size,
            used: 0,
            slot,
        })
    }

    /// The page right below the executable view, reserved (inaccessible)
    /// for the caller to map over (`MAP_FIXED`) and own: the exit-request
    /// poll page, which TU heads then reach with one RIP-relative load.
    /// The arena never unmaps it.
    pub fn page_below(&self) -> usize {
        self.base() - PAGE
    }

    /// Host address of offset 0 in the executable view.
    pub fn base(&self) -> usize {
        self.rx as usize
    }

    pub fn used(&self) -> usize {
        self.used
    }

    pub fn free(&self) -> usize {
        self.size - self.used
    }

    /// The address the next `put` will place code at.
    pub fn next_addr(&self) -> usize {
        self.base() + self.used
    }

    /// Copies `code` (assembled for address `next_addr()`) into the arena
    /// and returns its offset, or None when it does not fit.
    pub fn put(&mut self, code: &[u8]) -> Option<u32> {
        if code.len() > self.free() {
            return None;
        }
        let off = self.used;
        // SAFETY: off..off+len lies inside the writable view (checked
        // above); nothing executes these bytes yet.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), self.rw.add(off), code.len()) };
        self.used += code.len().next_multiple_of(16);
        self.used = self.used.min(self.size);
        Some(off as u32)
    }

    /// Points the rel32 at arena offset `at` (4-byte aligned, the last four
    /// bytes of a jmp/jcc) to host address `target`, with one aligned store
    /// so code executing it sees either the old or the new jump.
    pub fn patch_rel32(&mut self, at: u32, target: usize) {
        let at = at as usize;
        assert!(
            at.is_multiple_of(4) && at + 4 <= self.used,
            "chain patch outside the arena"
        );
        let next = self.base() + at + 4;
        let rel = (target as i64 - next as i64) as i32;
        // SAFETY: `at` is 4-aligned and inside the used part of the
        // writable view; an AtomicU32 store is a single aligned mov.
        let cell = unsafe { &*(self.rw.add(at) as *const AtomicU32) };
        cell.store(rel as u32, Ordering::Release);
    }

    /// Where the rel32 at arena offset `at` (as for `patch_rel32`) jumps.
    pub fn rel32_target(&self, at: u32) -> usize {
        let at = at as usize;
        assert!(
            at.is_multiple_of(4) && at + 4 <= self.used,
            "chain slot outside the arena"
        );
        // SAFETY: as in `patch_rel32`, an aligned 4-byte read.
        let cell = unsafe { &*(self.rw.add(at) as *const AtomicU32) };
        let rel = cell.load(Ordering::Acquire) as i32;
        (self.base() + at + 4).wrapping_add_signed(rel as isize)
    }

    /// Forgets all code after the first `keep` bytes. The caller
    /// guarantees nothing executes there and nothing points there.
    pub fn truncate(&mut self, keep: usize) {
        self.used = self.used.min(keep);
    }
}

impl Drop for CodeArena {
    fn drop(&mut self) {
        ARENAS[self.slot].0.store(0, Ordering::Release);
        ARENAS[self.slot].1.store(0, Ordering::Release);
        // SAFETY: both views were mapped in `new` with this size and nothing
        // runs in them once the translator that owns the arena is dropped.
        unsafe {
            libc::munmap(self.rw.cast(), self.size);
            libc::munmap(self.rx.cast(), self.size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Arenas created by concurrent tests may reuse a dropped arena's
    /// address; these tests take turns so the registry checks hold.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn code_put_in_the_arena_is_seen_in_the_executable_view() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let mut a = CodeArena::new(1 << 16).unwrap();
        let off = a.put(&[0xC3, 0x90]).unwrap();
        // SAFETY: reading bytes just written, through the mapped rx view.
        let b = unsafe { *(a.base() as *const u8).add(off as usize) };
        assert_eq!(b, 0xC3);
        assert!(is_generated_code(a.base()));
        let base = a.base();
        drop(a);
        assert!(!is_generated_code(base));
    }

    #[test]
    fn patch_rel32_points_a_jump_at_its_target() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let mut a = CodeArena::new(1 << 16).unwrap();
        a.put(&[0u8; 64]).unwrap();
        a.patch_rel32(8, a.base() + 40);
        // SAFETY: reading four patched bytes through the rx view.
        let rel = unsafe { *((a.base() + 8) as *const i32) };
        assert_eq!(rel, 40 - 12);
    }
}
