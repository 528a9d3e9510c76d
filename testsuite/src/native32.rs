//! A native oracle for 32-bit x86 code: runs a small piece of 32-bit code
//! on the host CPU itself, in-process, in the host's 32-bit compatibility
//! mode, and reports the registers, EFLAGS and a small memory window it
//! leaves behind.
//!
//! How it works: one mapping below 2 GiB (`MAP_32BIT`, so every address in
//! it fits a sign-extended disp32) holds a 64-bit trampoline, a 32-bit
//! prologue and epilogue, the code under test, a state block and a stack.
//! The trampoline saves the 64-bit callee-saved registers and the data
//! segment selectors, switches to the low stack and makes a far call
//! through an m16:32 pointer to the user 32-bit code segment (selector
//! 0x23). The prologue loads DS/ES with the flat user data selector (SS's),
//! the input registers and EFLAGS (popfd) and jumps to the code under test,
//! which jumps to the epilogue; that stores registers and EFLAGS (pushfd),
//! clears DF and far-returns (retf, 32-bit) to the trampoline in 64-bit
//! mode (selector 0x33), which restores everything and returns.
//!
//! GS and FS are never touched. The code under test must not fault: callers
//! predict faults (e.g. #DE) themselves and do not run those cases here.

use std::io;
use std::ptr;

use iced_x86::code_asm::*;

/// Linux x86-64 user code segment selectors.
pub const USER32_CS: u16 = 0x23;
pub const USER64_CS: u16 = 0x33;

/// The EFLAGS bits the oracle lets the caller set: the status flags and DF.
pub const SETTABLE_FLAGS: u32 = 0x8D5 | 0x400;

/// Size of the memory window, in dwords.
pub const WINDOW_DWORDS: usize = 8;

/// Registers (eax ecx edx ebx esp ebp esi edi), EFLAGS and the memory window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub regs: [u32; 8],
    pub eflags: u32,
    pub mem: [u32; WINDOW_DWORDS],
}

// Layout of the mapping.
const OFF_TRAMP64: usize = 0x000;
const OFF_ENTRY32: usize = 0x100;
const OFF_EPILOGUE32: usize = 0x200;
const OFF_CODE: usize = 0x400;
const CODE_MAX: usize = 0xC00 - 8;
const CODE_PAGES: usize = 0x1000;
const OFF_IN: usize = 0x1000; // regs[8], eflags
const OFF_OUT: usize = 0x1040; // regs[8], eflags
const OFF_SAVED_RSP: usize = 0x1080;
const OFF_SAVED_ESP32: usize = 0x1088;
const OFF_FARPTR: usize = 0x1090; // m16:32
const OFF_SAVED_DS: usize = 0x10A0;
const OFF_SAVED_ES: usize = 0x10A4;
const OFF_WINDOW: usize = 0x1100;
const OFF_STACK_TOP: usize = 0x1_0000;
const MAP_SIZE: usize = 0x1_0000;

/// The oracle. Not `Sync`: use one per thread.
pub struct Native32 {
    base: *mut u8,
    /// The code currently installed at OFF_CODE.
    code: Vec<u8>,
}

impl std::fmt::Debug for Native32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Native32")
            .field("base", &self.base)
            .finish()
    }
}

fn asm_err(e: IcedError) -> io::Error {
    io::Error::other(e.to_string())
}

/// Whether the host offers a usable 32-bit user code segment: `lar` on
/// selector 0x23 must find a present, DPL-3, 32-bit (D=1, L=0) code
/// segment. Kernels booted with `ia32_emulation=0` mark it not present.
pub fn compat_mode_available() -> bool {
    let ar: u32;
    let ok: u8;
    // SAFETY: lar only reads the descriptor table and sets ZF; it cannot
    // fault for a selector in a register.
    unsafe {
        std::arch::asm!(
            "lar {ar:e}, {sel:e}",
            "setz {ok}",
            ar = out(reg) ar,
            sel = in(reg) USER32_CS as u32,
            ok = out(reg_byte) ok,
            options(nomem, nostack)
        );
    }
    const PRESENT: u32 = 1 << 15;
    const DPL3: u32 = 3 << 13;
    const CODE: u32 = 1 << 11;
    const LONG: u32 = 1 << 21;
    const DB: u32 = 1 << 22;
    ok == 1 && ar & (PRESENT | DPL3 | CODE | DB) == PRESENT | DPL3 | CODE | DB && ar & LONG == 0
}

impl Native32 {
    /// Maps and builds the oracle; fails if the host has no 32-bit
    /// compatibility mode for user code.
    pub fn new() -> io::Result<Self> {
        if !compat_mode_available() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no 32-bit compatibility mode (selector 0x23)",
            ));
        }
        // SAFETY: a fresh anonymous private mapping; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                MAP_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = base as *mut u8;
        if base as u64 + MAP_SIZE as u64 > 0x8000_0000 {
            // SAFETY: unmapping what we just mapped.
            unsafe { libc::munmap(base.cast(), MAP_SIZE) };
            return Err(io::Error::other("MAP_32BIT mapping is not below 2 GiB"));
        }
        let mut me = Native32 {
            base,
            code: Vec::new(),
        };
        me.build().map_err(asm_err)?;
        me.set_code(&[])?;
        Ok(me)
    }

    fn addr(&self, off: usize) -> u32 {
        self.base as u32 + off as u32
    }

    /// The host address of the memory window (WINDOW_DWORDS dwords); code
    /// under test addresses it with absolute disp32 operands.
    pub fn window_addr(&self) -> u32 {
        self.addr(OFF_WINDOW)
    }

    /// Where the code under test is placed.
    pub fn code_addr(&self) -> u32 {
        self.addr(OFF_CODE)
    }

    fn write_bytes(&mut self, off: usize, bytes: &[u8]) {
        assert!(off + bytes.len() <= MAP_SIZE);
        // SAFETY: within the mapping, which only this struct uses.
        unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.add(off), bytes.len()) };
    }

    fn write_u32(&mut self, off: usize, v: u32) {
        self.write_bytes(off, &v.to_le_bytes());
    }

    fn read_u32(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        // SAFETY: within the mapping.
        unsafe { ptr::copy_nonoverlapping(self.base.add(off), b.as_mut_ptr(), 4) };
        u32::from_le_bytes(b)
    }

    fn protect_code(&mut self, writable: bool) -> io::Result<()> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ | libc::PROT_EXEC
        };
        // SAFETY: changes the protection of our own code page only.
        let r = unsafe { libc::mprotect(self.base.cast(), CODE_PAGES, prot) };
        if r != 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn build(&mut self) -> Result<(), IcedError> {
        let a = |off: usize| self.addr(off) as u64;
        // The 64-bit trampoline: extern "sysv64" fn().
        let mut t = CodeAssembler::new(64)?;
        t.push(rbx)?;
        t.push(rbp)?;
        t.push(r12)?;
        t.push(r13)?;
        t.push(r14)?;
        t.push(r15)?;
        t.mov(eax, ds)?;
        t.mov(dword_ptr(a(OFF_SAVED_DS)), eax)?;
        t.mov(eax, es)?;
        t.mov(dword_ptr(a(OFF_SAVED_ES)), eax)?;
        t.mov(qword_ptr(a(OFF_SAVED_RSP)), rsp)?;
        t.mov(esp, a(OFF_STACK_TOP) as u32)?;
        t.call(fword_ptr(a(OFF_FARPTR)))?;
        t.mov(rsp, qword_ptr(a(OFF_SAVED_RSP)))?;
        t.mov(eax, dword_ptr(a(OFF_SAVED_DS)))?;
        t.mov(ds, eax)?;
        t.mov(eax, dword_ptr(a(OFF_SAVED_ES)))?;
        t.mov(es, eax)?;
        t.pop(r15)?;
        t.pop(r14)?;
        t.pop(r13)?;
        t.pop(r12)?;
        t.pop(rbp)?;
        t.pop(rbx)?;
        t.ret()?;
        let tramp = t.assemble(a(OFF_TRAMP64))?;
        assert!(tramp.len() <= OFF_ENTRY32 - OFF_TRAMP64);

        // The 32-bit prologue.
        let mut p = CodeAssembler::new(32)?;
        p.mov(eax, ss)?;
        p.mov(ds, eax)?;
        p.mov(es, eax)?;
        p.mov(dword_ptr(a(OFF_SAVED_ESP32)), esp)?;
        p.push(dword_ptr(a(OFF_IN + 32)))?;
        for (i, r) in [eax, ecx, edx, ebx, esp, ebp, esi, edi]
            .into_iter()
            .enumerate()
        {
            if i != 0 && i != 4 {
                p.mov(r, dword_ptr(a(OFF_IN + 4 * i)))?;
            }
        }
        p.mov(eax, dword_ptr(a(OFF_IN)))?;
        p.popfd()?;
        p.jmp(a(OFF_CODE))?;
        let pro = p.assemble(a(OFF_ENTRY32))?;
        assert!(pro.len() <= OFF_EPILOGUE32 - OFF_ENTRY32);

        // The 32-bit epilogue.
        let mut e = CodeAssembler::new(32)?;
        e.pushfd()?;
        for (i, r) in [eax, ecx, edx, ebx, esp, ebp, esi, edi]
            .into_iter()
            .enumerate()
        {
            e.mov(dword_ptr(a(OFF_OUT + 4 * i)), r)?;
        }
        e.pop(dword_ptr(a(OFF_OUT + 32)))?;
        e.cld()?;
        e.mov(esp, dword_ptr(a(OFF_SAVED_ESP32)))?;
        e.retf()?;
        let epi = e.assemble(a(OFF_EPILOGUE32))?;
        assert!(epi.len() <= OFF_CODE - OFF_EPILOGUE32);

        self.write_bytes(OFF_TRAMP64, &tramp);
        self.write_bytes(OFF_ENTRY32, &pro);
        self.write_bytes(OFF_EPILOGUE32, &epi);
        let entry = self.addr(OFF_ENTRY32);
        self.write_u32(OFF_FARPTR, entry);
        self.write_bytes(OFF_FARPTR + 4, &USER32_CS.to_le_bytes());
        Ok(())
    }

    /// Installs 32-bit `code` (which must fall off its end to finish and
    /// must have been assembled for `code_addr()`).
    pub fn set_code(&mut self, code: &[u8]) -> io::Result<()> {
        if self.code == code && !code.is_empty() {
            return Ok(());
        }
        if code.len() > CODE_MAX {
            return Err(io::Error::other("code too long"));
        }
        self.protect_code(true)?;
        self.write_bytes(OFF_CODE, code);
        // jmp rel32 to the epilogue.
        let next = OFF_CODE + code.len() + 5;
        let rel = (OFF_EPILOGUE32 as i64 - next as i64) as i32;
        let mut j = vec![0xE9];
        j.extend_from_slice(&rel.to_le_bytes());
        self.write_bytes(OFF_CODE + code.len(), &j);
        self.protect_code(false)?;
        self.code = code.to_vec();
        Ok(())
    }

    /// Runs the installed code once. Only `SETTABLE_FLAGS` of the input
    /// EFLAGS are used. ESP is not taken from the input: the code runs on
    /// the oracle's own stack, and the returned esp is the input's plus
    /// whatever the code did to esp.
    pub fn run(&mut self, input: &State) -> State {
        for i in 0..8 {
            self.write_u32(OFF_IN + 4 * i, input.regs[i]);
        }
        self.write_u32(OFF_IN + 32, (input.eflags & SETTABLE_FLAGS) | 2);
        for i in 0..WINDOW_DWORDS {
            self.write_u32(OFF_WINDOW + 4 * i, input.mem[i]);
        }
        // SAFETY: the trampoline is a complete sysv64 function that keeps
        // every callee-saved register (and the DS/ES selectors), returns
        // with DF clear, and runs the 32-bit code on its own stack inside
        // the mapping. The code under test is the caller's responsibility:
        // it must not fault and must end by falling through.
        unsafe {
            let f: extern "sysv64" fn() = std::mem::transmute(self.base.add(OFF_TRAMP64));
            f();
        }
        let mut out = State::default();
        for i in 0..8 {
            out.regs[i] = self.read_u32(OFF_OUT + 4 * i);
        }
        // The epilogue stored esp after its pushfd; the prologue saved it
        // just before the code's initial esp (its push/popfd nets out).
        let esp_in_code = self.read_u32(OFF_SAVED_ESP32);
        out.regs[4] =
            input.regs[4].wrapping_add(out.regs[4].wrapping_add(4).wrapping_sub(esp_in_code));
        out.eflags = self.read_u32(OFF_OUT + 32);
        for i in 0..WINDOW_DWORDS {
            out.mem[i] = self.read_u32(OFF_WINDOW + 4 * i);
        }
        out
    }

    /// Assembles `body` for the code area (with `mem` = the window's
    /// address + `mem_off`), installs it and runs it on `input`.
    pub fn run_asm(
        &mut self,
        mem_off: u32,
        body: impl FnOnce(&mut CodeAssembler, u32) -> Result<(), IcedError>,
        input: &State,
    ) -> io::Result<State> {
        let mut a = CodeAssembler::new(32).map_err(asm_err)?;
        body(&mut a, self.window_addr() + mem_off).map_err(asm_err)?;
        let code = a.assemble(self.code_addr() as u64).map_err(asm_err)?;
        self.set_code(&code)?;
        Ok(self.run(input))
    }
}

impl Drop for Native32 {
    fn drop(&mut self) {
        // SAFETY: our mapping, no longer used.
        unsafe { libc::munmap(self.base.cast(), MAP_SIZE) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(regs: [u32; 8], eflags: u32) -> State {
        State {
            regs,
            eflags,
            mem: [0; WINDOW_DWORDS],
        }
    }

    #[test]
    fn add_and_flags() {
        let mut n = Native32::new().unwrap();
        let out = n
            .run_asm(
                0,
                |a, _| a.add(eax, ebx),
                &st([0xFFFF_FFFF, 1, 2, 1, 0x1000, 5, 6, 7], 0),
            )
            .unwrap();
        assert_eq!(out.regs, [0, 1, 2, 1, 0x1000, 5, 6, 7]);
        let f = out.eflags & SETTABLE_FLAGS;
        assert_eq!(f, 0x01 | 0x04 | 0x10 | 0x40, "{f:#x}"); // CF PF AF ZF
    }

    #[test]
    fn bcd_runs_in_compat_mode() {
        let mut n = Native32::new().unwrap();
        // 0x79 + 0x35 = 0xAE, daa -> 0x14 with CF.
        let out = n
            .run_asm(0, |a, _| a.daa(), &st([0xAE, 0, 0, 0, 0, 0, 0, 0], 0))
            .unwrap();
        assert_eq!(out.regs[0] & 0xFF, 0x14);
        assert_eq!(out.eflags & 1, 1);
        let out = n
            .run_asm(0, |a, _| a.aam(10), &st([99, 0, 0, 0, 0, 0, 0, 0], 0))
            .unwrap();
        assert_eq!(out.regs[0] & 0xFFFF, 0x0909);
    }

    #[test]
    fn memory_window_and_df() {
        let mut n = Native32::new().unwrap();
        let mut s = st([0, 0, 0, 0x1234_5678, 0, 0, 0, 0], 0x400);
        s.mem[2] = 10;
        let out = n.run_asm(8, |a, m| a.add(dword_ptr(m), ebx), &s).unwrap();
        assert_eq!(out.mem[2], 0x1234_5682);
        assert_eq!(out.eflags & 0x400, 0x400);
        // esp changes are reported relative to the input's esp.
        let out = n
            .run_asm(0, |a, _| a.push(eax), &st([0, 0, 0, 0, 0x8000, 0, 0, 0], 0))
            .unwrap();
        assert_eq!(out.regs[4], 0x7FFC);
    }
}
