//! The exit-request poll page.
//!
//! A TU head loads one word from this page: one flag-free host
//! instruction (`mov r11d, [rip + disp32]`, [`POLL_LEN`] bytes), no
//! branch. The page is the one the code arena reserves right below its
//! executable view, so the load always reaches it. Asking generated code to return to the run
//! loop (from any thread) makes the page inaccessible, so the next TU head
//! faults and the fault handler turns that into `ExitReason::Request` at
//! the TU's first instruction; the run loop makes the page readable again.
//! A byte test at every head (DESIGN.md section 4) would need a compare
//! and a branch, and since the guest's flags live in the host flags, a
//! flag-preserving compare costs four instructions where flags are live.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct PollPage {
    page: *mut libc::c_void,
    /// What was requested (bits of the runtime's choosing), read by the run
    /// loop once the request exit happened.
    requested: AtomicU32,
}

// SAFETY: the page is only ever read by generated code and re-protected
// with mprotect, which is thread-safe; `requested` is atomic.
unsafe impl Send for PollPage {}
// SAFETY: as above.
unsafe impl Sync for PollPage {}

const PAGE: usize = 4096;

/// Bytes of the poll at a TU head. A chain from a branch to a higher
/// guest address enters its target this far in, past the poll: a loop
/// needs a branch back, so every cycle of chained TUs still polls.
pub const POLL_LEN: usize = 7;

impl PollPage {
    /// Maps the page at `at`, a page reserved for it (see
    /// `CodeArena::page_below`), and takes it over.
    pub fn new(at: usize) -> io::Result<Self> {
        // SAFETY: a read-only anonymous page replacing a reservation the
        // caller handed over.
        let page = unsafe {
            libc::mmap(
                at as *mut libc::c_void,
                PAGE,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if page == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(PollPage {
            page,
            requested: AtomicU32::new(0),
        })
    }

    pub fn addr(&self) -> usize {
        self.page as usize
    }

    pub fn contains(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.addr()) < PAGE
    }

    /// Asks generated code to exit at its next TU head, recording `bits`.
    pub fn request(&self, bits: u32) {
        self.requested.fetch_or(bits, Ordering::SeqCst);
        // SAFETY: re-protecting our own page.
        unsafe { libc::mprotect(self.page, PAGE, libc::PROT_NONE) };
    }

    /// Makes the page readable again and returns what was requested.
    pub fn take(&self) -> u32 {
        // SAFETY: re-protecting our own page.
        unsafe { libc::mprotect(self.page, PAGE, libc::PROT_READ) };
        self.requested.swap(0, Ordering::SeqCst)
    }
}

impl Drop for PollPage {
    fn drop(&mut self) {
        // SAFETY: the page was mapped in `new`; the last owner is gone, so
        // no generated code polls it any more.
        unsafe { libc::munmap(self.page, PAGE) };
    }
}
