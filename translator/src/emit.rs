//! The emitter: the only module that assembles host code.
//!
//! Glue (state accesses, exits, probes) is written with `dynasm!` through
//! the [`asm!`] macro, which names the pinned registers once. Guest
//! instructions, and every host instruction that touches guest memory, go
//! through iced-x86's encoder, which always emits the `0x67` prefix that
//! keeps a guest address 32-bit (dynasmrt drops it on a bare `[disp32]`).

use dynasmrt::x64::X64Relocation;
use dynasmrt::{DynamicLabel, DynasmApi, VecAssembler};
use iced_x86::{Code, Encoder, Instruction, MemoryOperand, Register};

use crate::abi::{ExitReason, JC_KEYS, JC_TARGETS, off};

/// Assembles glue code into an [`Emitter`], with the pinned registers named:
/// `cpu` (r14, the CPU state), `jc` (r15, the jump cache), `work` (r11),
/// `gesp` (r12, guest esp).
macro_rules! asm {
    ($e:expr; $($t:tt)*) => {{
        #[allow(unused_imports)]
        use dynasmrt::{DynasmApi as _, DynasmLabelApi as _};
        dynasmrt::dynasm!($e.ops
            ; .arch x64
            ; .alias cpu, r14
            ; .alias jc, r15
            ; .alias work, r11
            ; .alias gesp, r12
            ; $($t)*
        )
    }};
}
pub(crate) use asm;

/// Addresses of the shared stubs every TU jumps to.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stubs {
    /// `extern "sysv64" fn(cpu: *mut CpuState, target: u64)`: loads the
    /// guest state and jumps to `target`.
    pub enter: usize,
    /// Saves the guest state and returns to the run loop.
    pub exit: usize,
    /// Calls helper `r11` with instruction `r10`, guest state spilled.
    pub helper: usize,
    /// An indirect branch to guest `r11d` that missed the jump cache.
    pub miss: usize,
    /// Jumps to guest `r11d` through the jump cache (shared probe).
    pub probe: usize,
    /// Where a `ret` on an empty return stack lands.
    pub sentinel: usize,
    /// Called before an FPU instruction while the guest's FPU state is
    /// out: swaps it in (see `CpuState::fpu_enter`).
    pub fpu_load: usize,
}

pub struct Emitter {
    pub ops: VecAssembler<X64Relocation>,
    base: usize,
    enc: Encoder,
    pub stubs: Stubs,
}

#[derive(Debug)]
pub struct EncodeError(pub String);

impl Emitter {
    /// An emitter whose byte 0 will live at host address `base`.
    pub fn new(base: usize, stubs: Stubs) -> Self {
        Emitter {
            ops: VecAssembler::new(base),
            base,
            enc: Encoder::new(64),
            stubs,
        }
    }

    pub fn offset(&self) -> usize {
        self.ops.offset().0
    }

    pub fn addr(&self) -> usize {
        self.base + self.offset()
    }

    pub fn label(&mut self) -> DynamicLabel {
        self.ops.new_dynamic_label()
    }

    pub fn bind(&mut self, l: DynamicLabel) {
        asm!(self; =>l);
    }

    /// Encodes one host instruction (no relative branches) here.
    pub fn insn(&mut self, i: &Instruction) -> Result<(), EncodeError> {
        let rip = self.addr() as u64;
        self.enc
            .encode(i, rip)
            .map_err(|e| EncodeError(format!("{e}: {i:?}")))?;
        let mut bytes = self.enc.take_buffer();
        self.ops.extend(bytes.iter().copied());
        bytes.clear();
        self.enc.set_buffer(bytes);
        Ok(())
    }

    /// Like [`Emitter::insn`] for instructions this module builds itself,
    /// which always encode.
    pub fn put(&mut self, i: Instruction) {
        if let Err(e) = self.insn(&i) {
            unreachable!("bt86 built an unencodable instruction: {}", e.0);
        }
    }

    /// Pads with NOPs so that a `len`-byte instruction emitted next has its
    /// last four bytes (a rel32) 4-byte aligned, then returns nothing: the
    /// caller emits the instruction.
    pub fn align_rel32(&mut self, len: usize) {
        self.nop((4 - (self.addr() + len) % 4) % 4);
    }

    /// One NOP instruction of `len` (0 to 3) bytes.
    fn nop(&mut self, len: usize) {
        let bytes: &[u8] = match len {
            0 => &[],
            1 => &[0x90],
            2 => &[0x66, 0x90],
            3 => &[0x0F, 0x1F, 0x00],
            _ => unreachable!("a {len}-byte NOP"),
        };
        self.ops.extend(bytes.iter().copied());
    }

    /// `jmp rel32` to `target` whose rel32 is aligned for patching; returns
    /// the offset of the rel32 (relative to this emitter's start).
    pub fn patchable_jmp(&mut self, target: DynamicLabel) -> usize {
        self.align_rel32(5);
        let at = self.offset();
        asm!(self; jmp =>target);
        debug_assert_eq!(self.offset(), at + 5, "dynasm must emit jmp rel32");
        self.offset() - 4
    }

    /// `call rel32` to `target` with an aligned, patchable rel32; returns
    /// the offset of the rel32.
    pub fn patchable_call(&mut self, target: DynamicLabel) -> usize {
        self.align_rel32(5);
        let at = self.offset();
        asm!(self; call =>target);
        debug_assert_eq!(self.offset(), at + 5, "dynasm must emit call rel32");
        self.offset() - 4
    }

    /// Emits `short` (a short-branch opcode whose rel8 follows) so that,
    /// when taken, it skips a patchable `jmp target` placed right after it.
    /// Returns the offset of that jmp's rel32.
    pub fn skip_over_patchable_jmp(&mut self, short: &[u8], target: DynamicLabel) -> usize {
        let jmp_at = self.addr() + short.len() + 1;
        let pad = (4 - (jmp_at + 1) % 4) % 4;
        self.ops.extend(short.iter().copied());
        self.ops.push((pad + 5) as u8);
        self.nop(pad);
        let slot = self.patchable_jmp(target);
        debug_assert_eq!(slot, jmp_at + pad + 1 - self.base);
        slot
    }

    /// `jcc rel32` (condition `cc`, Intel's 4-bit encoding) to `target`
    /// with an aligned, patchable rel32; returns the offset of the rel32.
    pub fn patchable_jcc(&mut self, cc: u8, target: DynamicLabel) -> usize {
        self.align_rel32(6);
        let at = self.offset();
        match cc & 15 {
            0 => asm!(self; jo =>target),
            1 => asm!(self; jno =>target),
            2 => asm!(self; jb =>target),
            3 => asm!(self; jae =>target),
            4 => asm!(self; je =>target),
            5 => asm!(self; jne =>target),
            6 => asm!(self; jbe =>target),
            7 => asm!(self; ja =>target),
            8 => asm!(self; js =>target),
            9 => asm!(self; jns =>target),
            10 => asm!(self; jp =>target),
            11 => asm!(self; jnp =>target),
            12 => asm!(self; jl =>target),
            13 => asm!(self; jge =>target),
            14 => asm!(self; jle =>target),
            _ => asm!(self; jg =>target),
        }
        debug_assert_eq!(self.offset(), at + 6, "dynasm must emit jcc rel32");
        self.offset() - 4
    }

    /// Stores a 32-bit immediate into a CPU state field.
    pub fn set_state32(&mut self, field: i32, value: u32) {
        asm!(self; mov DWORD [cpu + field], value as i32);
    }

    /// Leaves the TU: `eip` and the reason go to the CPU state, then the
    /// common exit saves the guest registers.
    pub fn exit_with(&mut self, eip: u32, reason: ExitReason) {
        self.set_state32(off::EIP, eip);
        self.set_state32(off::EXIT_REASON, reason as u32);
        let exit = self.stubs.exit;
        asm!(self; jmp extern exit);
    }
}

/// A guest memory operand `gs: addr32 [base + disp]`.
pub fn gmem(base: Register, disp: i64) -> MemoryOperand {
    MemoryOperand::new(
        base,
        Register::None,
        1,
        disp,
        if disp == 0 { 0 } else { 4 },
        false,
        Register::GS,
    )
}

/// `mov dword/word [mem], src`.
pub fn store(size: u32, mem: MemoryOperand, src: Register) -> Instruction {
    let code = if size == 2 {
        Code::Mov_rm16_r16
    } else {
        Code::Mov_rm32_r32
    };
    Instruction::with2(code, mem, src).expect("store operands")
}

/// `mov r32/r16, dword/word [mem]`.
pub fn load(size: u32, dst: Register, mem: MemoryOperand) -> Instruction {
    let code = if size == 2 {
        Code::Mov_r16_rm16
    } else {
        Code::Mov_r32_rm32
    };
    Instruction::with2(code, dst, mem).expect("load operands")
}
/// Jumps to guest `r11d` through the jump cache, keeping the guest flags:
/// the key compare is `key - target` done with not/lea and tested with
/// jrcxz (rcx parked in r10); the index is the low 16 bits of the target.
pub fn jump_cache_probe(e: &mut Emitter, stats: bool) {
    let miss = e.stubs.miss;
    asm!(e
        ; mov r10, rcx
        ; movzx r9d, r11w
        ; mov ecx, DWORD [jc + r9 * 4 + JC_KEYS]
        ; not ecx
        ; lea ecx, [rcx + r11 + 1]
        ; jrcxz >hit
        ; mov rcx, r10
        ; jmp extern miss
        ; hit:
        ; mov rcx, r10
    );
    if stats {
        count(e, off::JC_HITS);
    }
    asm!(e; jmp QWORD [jc + r9 * 8 + JC_TARGETS]);
}

/// Increments a 64-bit counter in the CPU state without touching flags.
pub fn count(e: &mut Emitter, field: i32) {
    asm!(e
        ; mov r10, QWORD [cpu + field]
        ; lea r10, [r10 + 1]
        ; mov QWORD [cpu + field], r10
    );
}
