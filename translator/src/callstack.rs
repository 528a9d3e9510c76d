//! The return stack: the host stack generated code runs on.
//!
//! A translated `call` pushes the guest return address on the guest stack
//! and makes a host `call`, so the host pushes the address of a landing
//! pad in the caller's TU; a translated `ret` pops the guest address into
//! r11 and executes a host `ret`, which the host's return predictor gets
//! right. The landing pad checks r11 against the return address it was
//! made for and falls back to the jump cache when they differ, so the
//! stack is only ever a hint: unmatched calls and returns (longjmp, call
//! used to get EIP, stack switches) cost a probe, never correctness.
//!
//! The top slot holds the sentinel stub's address: a `ret` on an empty
//! stack lands there, re-pushes it and probes. A guard page below catches
//! overflow (calls without returns); the fault handler then resets rsp to
//! the sentinel slot and retries the faulting push. Every run-loop entry
//! starts at the sentinel slot again.

use std::io;

pub const STACK_SIZE: usize = 64 << 10;
pub const GUARD_SIZE: usize = 4096;

pub struct CallStack {
    base: *mut u8,
}

// SAFETY: plain memory owned by one translator.
unsafe impl Send for CallStack {}

impl CallStack {
    pub fn new(sentinel: usize) -> io::Result<Self> {
        let total = STACK_SIZE + GUARD_SIZE;
        // SAFETY: an anonymous private mapping at a kernel-chosen address.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the first page of the mapping made above.
        if unsafe { libc::mprotect(base, GUARD_SIZE, libc::PROT_NONE) } != 0 {
            let e = io::Error::last_os_error();
            // SAFETY: unmapping what was mapped above.
            unsafe { libc::munmap(base, total) };
            return Err(e);
        }
        let s = CallStack { base: base.cast() };
        // SAFETY: the top slot lies inside the writable part.
        unsafe { (s.top() as *mut u64).write(sentinel as u64) };
        Ok(s)
    }

    /// The sentinel slot: rsp when generated code is entered.
    pub fn top(&self) -> usize {
        self.base as usize + GUARD_SIZE + STACK_SIZE - 8
    }

    pub fn guard(&self) -> usize {
        self.base as usize
    }
}

impl Drop for CallStack {
    fn drop(&mut self) {
        // SAFETY: the mapping was made in `new` with this size; no code
        // runs on it once its translator is dropped.
        unsafe { libc::munmap(self.base.cast(), STACK_SIZE + GUARD_SIZE) };
    }
}
