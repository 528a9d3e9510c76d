//! The process-wide fault handler (DESIGN.md section 5) and the GS base.
//!
//! A fault whose RIP lies in generated code is a guest event: the handler
//! maps RIP to the guest instruction through the TU's fault metadata,
//! repairs the registers the translation had borrowed, records the guest
//! exception in the CPU state (found through r14, which generated code
//! keeps pinned) and rewrites the context to resume at the arena's exit
//! stub. Anything else goes to the handler that was installed before.
//! No allocation, no locks, no logging, no unwinding in here.

use std::cell::RefCell;

use std::sync::Once;

use translator::abi::{CpuState, ExitReason, exc_kind, vector};
use translator::arena::is_generated_code;
use translator::meta::Fixup;

const SIGNALS: [libc::c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGTRAP,
];

/// The handlers that were installed before ours, indexed like SIGNALS.
static mut PREVIOUS: [std::mem::MaybeUninit<libc::sigaction>; 5] =
    [std::mem::MaybeUninit::uninit(); 5];
static INSTALL: Once = Once::new();

/// Size of the alternate signal stack of threads that run guest code.
const ALT_STACK_SIZE: usize = 256 << 10;

struct AltStack {
    base: *mut libc::c_void,
}

impl Drop for AltStack {
    fn drop(&mut self) {
        let disable = libc::stack_t {
            ss_sp: std::ptr::null_mut(),
            ss_flags: libc::SS_DISABLE,
            ss_size: 0,
        };
        // SAFETY: disabling this thread's alternate stack before freeing
        // the memory it pointed to.
        unsafe {
            libc::sigaltstack(&disable, std::ptr::null_mut());
            libc::munmap(self.base, ALT_STACK_SIZE);
        }
    }
}

thread_local! {
    static ALT_STACK: RefCell<Option<AltStack>> = const { RefCell::new(None) };
}

/// Installs the handler (once per process) and gives the calling thread an
/// alternate signal stack large enough for it (once per thread).
pub fn prepare_thread() {
    INSTALL.call_once(install);
    ALT_STACK.with(|s| {
        let mut s = s.borrow_mut();
        if s.is_some() {
            return;
        }
        // SAFETY: an anonymous private mapping for the stack.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ALT_STACK_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            log::warn!(target: "bt86::signals", "no alternate signal stack: {}", std::io::Error::last_os_error());
            return;
        }
        let st = libc::stack_t { ss_sp: base, ss_flags: 0, ss_size: ALT_STACK_SIZE };
        // SAFETY: `st` describes the mapping made above, which lives as
        // long as this thread (dropped with the thread-local).
        unsafe { libc::sigaltstack(&st, std::ptr::null_mut()) };
        *s = Some(AltStack { base });
    });
}

fn install() {
    for (i, &sig) in SIGNALS.iter().enumerate() {
        // SAFETY: a zeroed sigaction is a valid starting point; we fill the
        // handler, flags and an empty mask, and keep the previous handler
        // in PREVIOUS, written only here, before our handler can run.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
            libc::sigemptyset(&mut sa.sa_mask);
            let prev = &raw mut PREVIOUS[i];
            libc::sigaction(sig, &sa, (*prev).as_mut_ptr());
        }
    }
}

/// Sets the calling thread's GS base (the host address of guest linear 0).
pub fn set_gs_base(base: u64) {
    if has_wrgsbase() {
        // SAFETY: the kernel enabled FSGSBASE (AT_HWCAP2); GS is not used
        // by Rust or glibc on x86-64 Linux.
        unsafe { std::arch::asm!("wrgsbase {}", in(reg) base, options(nostack, preserves_flags)) };
    } else {
        // SAFETY: ARCH_SET_GS with a user address.
        unsafe { libc::syscall(libc::SYS_arch_prctl, 0x1001, base) };
    }
}

fn has_wrgsbase() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    const HWCAP2_FSGSBASE: u64 = 1 << 1;
    // SAFETY: getauxval has no preconditions.
    *HAS.get_or_init(|| unsafe { libc::getauxval(libc::AT_HWCAP2) } & HWCAP2_FSGSBASE != 0)
}

/// The guest exception of a SIGFPE at host instruction `rip`: an integer
/// divide is #DE; an unmasked x87 exception (reported by the next x87
/// instruction, as the guest's #MF is) is #MF; an unmasked SSE exception
/// is #XM, or #UD without CR4.OSXMMEXCPT. The faulting opcode decides
/// (si_code only as a fallback: not every environment fills it in).
fn fpe_vector(si_code: libc::c_int, rip: usize, cr4: u32) -> u32 {
    // si_code values of <asm-generic/siginfo.h> (libc does not name them).
    const FPE_INTDIV: libc::c_int = 1;
    const FPE_INTOVF: libc::c_int = 2;
    // The first byte after the prefixes, read one at a time: they and the
    // opcode are all part of the faulting instruction.
    let is_prefix = |b: u8| {
        matches!(
            b,
            0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0x66 | 0x67 | 0xF0 | 0xF2 | 0xF3 | 0x40
                ..=0x4F
        )
    };
    let opcode = (0..15)
        // SAFETY: rip is in the code arena (checked by the caller), at the
        // start of the faulting instruction, which holds these bytes.
        .map(|i| unsafe { *(rip as *const u8).add(i) })
        .find(|&b| !is_prefix(b));
    match opcode {
        Some(0xF6 | 0xF7) => vector::DE,
        Some(0xD8..=0xDF | 0x9B) => vector::MF,
        _ if matches!(si_code, FPE_INTDIV | FPE_INTOVF) => vector::DE,
        _ if cr4 & crate::cpu::cr::CR4_OSXMMEXCPT != 0 => vector::XM,
        _ => vector::UD,
    }
}

/// The guest exception a host signal in generated code stands for (but
/// SIGFPE: see [`fpe_vector`]).
fn classify(sig: libc::c_int, fault: u64, gs_base: u64, err: u64) -> (u32, u32, u32) {
    match sig {
        libc::SIGILL => (vector::UD, 0, 0),
        libc::SIGTRAP => (vector::DB, 0, 0),
        _ => {
            let off = fault.wrapping_sub(gs_base) as i64;
            let guard = crate::memory::GUARD as i64;
            if let Some(v) = translator::abi::limit::probe_fault(off) {
                // A segment limit probe (`abi::limit`): #GP(0) or #SS(0).
                (v, 0, 0)
            } else if (-guard..(1i64 << 32) + guard).contains(&off) && fault != 0 {
                // A guest access to no memory (possibly a string instruction
                // run past either end of the space, which wraps for the
                // guest): #PF with the linear address. The host error
                // code's bit 1 says whether it was a write.
                let write = (err >> 1) & 1;
                (
                    vector::PF,
                    (write << 1) as u32 | translator::abi::SHADOW_FAULT,
                    off as u32,
                )
            } else {
                // A #GP in the host (si_addr 0): the guest's own #GP(0).
                (vector::GP, 0, 0)
            }
        }
    }
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid ucontext for SA_SIGINFO handlers.
    let uc = unsafe { &mut *(ctx as *mut libc::ucontext_t) };
    let gregs = &mut uc.uc_mcontext.gregs;
    let rip = gregs[libc::REG_RIP as usize] as usize;
    if !is_generated_code(rip) {
        forward(sig, info, ctx);
        return;
    }
    // In generated code r14 always holds the CPU state (it is pinned and
    // no guest instruction can name it).
    let cpu = gregs[libc::REG_R14 as usize] as *mut CpuState;
    // SAFETY: see above; the run loop made `cpu` valid for this run and
    // does not touch it while generated code executes.
    let cpu = unsafe { &mut *cpu };
    // SAFETY: info is valid for SA_SIGINFO handlers.
    let fault = unsafe { (*info).si_addr() } as u64;
    let guard = cpu.call_stack_guard;
    if sig == libc::SIGSEGV && fault.wrapping_sub(guard) < translator::callstack::GUARD_SIZE as u64
    {
        // The return stack overflowed (calls without returns): it is only a
        // hint, so start it over at the sentinel slot and retry the push.
        gregs[libc::REG_RSP as usize] = cpu.call_stack_top as i64;
        return;
    }
    let poll_request = sig == libc::SIGSEGV && fault.wrapping_sub(cpu.poll_page) < 4096;
    // SAFETY: fault_map was set by Translator::attach and is only changed
    // by the run loop on this thread, never while generated code runs.
    let map = unsafe { &*cpu.fault_map };
    let Some(site) = map.lookup((rip as u64).wrapping_sub(map.base) as u32) else {
        forward(sig, info, ctx);
        return;
    };
    match site.fixup {
        Fixup::None => {}
        Fixup::Borrowed(r) => {
            gregs[greg_index(r)] = gregs[libc::REG_R10 as usize];
        }
        Fixup::SpDelta(d) => {
            let r12 = gregs[libc::REG_R12 as usize] as u32;
            let sp = (r12 as u16).wrapping_add(d as u16);
            gregs[libc::REG_R12 as usize] = ((r12 & 0xFFFF_0000) | sp as u32) as i64;
        }
        Fixup::EspDelta(d) => {
            let r12 = gregs[libc::REG_R12 as usize] as u32;
            gregs[libc::REG_R12 as usize] = r12.wrapping_add(d as u32) as i64;
        }
        Fixup::StringBias { si, di } => {
            // Host pointer = GS base + segment base + guest register.
            let unbias = |v: i64, seg: usize| {
                let base = cpu.seg_base.get(seg).copied().unwrap_or(0) as u64;
                (v as u64).wrapping_sub(cpu.gs_base).wrapping_sub(base) as u32 as i64
            };
            if let Some(seg) = si {
                gregs[libc::REG_RSI as usize] = unbias(gregs[libc::REG_RSI as usize], seg as usize);
            }
            if di {
                gregs[libc::REG_RDI as usize] = unbias(gregs[libc::REG_RDI as usize], 0);
            }
        }
    }
    if poll_request {
        // A TU head polled the exit-request page while it was armed.
        cpu.eip = site.guest_eip;
        cpu.exit_reason = ExitReason::Request as u32;
        gregs[libc::REG_RIP as usize] = cpu.fault_exit as i64;
        return;
    }
    let (vec, err, addr) = if sig == libc::SIGFPE {
        // SAFETY: info is valid for SA_SIGINFO handlers.
        (fpe_vector(unsafe { (*info).si_code }, rip, cpu.cr4), 0, 0)
    } else {
        classify(
            sig,
            fault,
            cpu.gs_base,
            gregs[libc::REG_ERR as usize] as u64,
        )
    };
    cpu.eip = site.guest_eip;
    cpu.exc_insn = site.guest_eip;
    cpu.exc_vector = vec;
    cpu.exc_error = err;
    cpu.exc_kind = exc_kind::HARDWARE;
    cpu.fault_addr = addr;
    cpu.exit_reason = ExitReason::Exception as u32;
    gregs[libc::REG_RIP as usize] = cpu.fault_exit as i64;
}

/// ucontext gregs index of host register number `r` (hardware encoding).
fn greg_index(r: u8) -> usize {
    (match r {
        0 => libc::REG_RAX,
        1 => libc::REG_RCX,
        2 => libc::REG_RDX,
        3 => libc::REG_RBX,
        4 => libc::REG_RSP,
        5 => libc::REG_RBP,
        6 => libc::REG_RSI,
        7 => libc::REG_RDI,
        8 => libc::REG_R8,
        9 => libc::REG_R9,
        10 => libc::REG_R10,
        11 => libc::REG_R11,
        12 => libc::REG_R12,
        13 => libc::REG_R13,
        14 => libc::REG_R14,
        _ => libc::REG_R15,
    }) as usize
}

/// Hands a signal that is not ours to the handler installed before.
fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let Some(i) = SIGNALS.iter().position(|&s| s == sig) else {
        return;
    };
    // SAFETY: PREVIOUS[i] was written by `install` before our handler was
    // registered, and never changes after.
    let prev = unsafe { PREVIOUS[i].assume_init_ref() };
    let h = prev.sa_sigaction;
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        // Restore the default action and return: the instruction faults
        // again and the process dies the way it would have without us.
        // SAFETY: resetting a signal to its default disposition.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    } else if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was registered with this signature.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(h) };
        f(sig, info, ctx);
    } else {
        // SAFETY: as above, the one-argument form.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
        f(sig);
    }
}
