//! The exit-request poll page.
//!
//! Every TU head loads one word from this page: two flag-free host
//! instructions, no branch. Asking generated code to return to the run
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

impl PollPage {
    pub fn new() -> io::Result<Self> {
        // SAFETY: an anonymous private read-only mapping.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
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
