//! The contract between generated code and the runtime.
//!
//! Generated code runs with the guest's general registers in host registers
//! (DESIGN.md section 3) and reaches everything else through `r14`, which
//! points at a [`CpuState`]. This module fixes that layout, the exit reasons,
//! the helper table and the mode key. The runtime fills in the helper table
//! and owns everything behind [`CpuState::ctx`].

use core::mem::offset_of;

/// Guest register numbers, in the x86 encoding order (which is also the
/// order of [`CpuState::regs`]).
pub mod reg {
    pub const EAX: usize = 0;
    pub const ECX: usize = 1;
    pub const EDX: usize = 2;
    pub const EBX: usize = 3;
    pub const ESP: usize = 4;
    pub const EBP: usize = 5;
    pub const ESI: usize = 6;
    pub const EDI: usize = 7;
}

/// EFLAGS bits (Intel SDM Vol. 1, 3.4.3).
pub mod flags {
    pub const CF: u32 = 1 << 0;
    pub const FIXED1: u32 = 1 << 1;
    pub const PF: u32 = 1 << 2;
    pub const AF: u32 = 1 << 4;
    pub const ZF: u32 = 1 << 6;
    pub const SF: u32 = 1 << 7;
    pub const TF: u32 = 1 << 8;
    pub const IF: u32 = 1 << 9;
    pub const DF: u32 = 1 << 10;
    pub const OF: u32 = 1 << 11;
    pub const IOPL: u32 = 3 << 12;
    pub const NT: u32 = 1 << 14;
    pub const RF: u32 = 1 << 16;
    pub const VM: u32 = 1 << 17;
    pub const AC: u32 = 1 << 18;
    pub const VIF: u32 = 1 << 19;
    pub const VIP: u32 = 1 << 20;
    pub const ID: u32 = 1 << 21;
    /// The flags that live in the host's RFLAGS while guest code runs.
    pub const HOST_LIVE: u32 = CF | PF | AF | ZF | SF | OF | DF;
    /// The status flags (all of HOST_LIVE but DF).
    pub const STATUS: u32 = CF | PF | AF | ZF | SF | OF;
    /// Bits a P6 lets software change in EFLAGS (the rest read as fixed).
    pub const WRITABLE: u32 = STATUS | TF | IF | DF | IOPL | NT | RF | VM | AC | VIF | VIP | ID;
}

/// Why generated code returned to the run loop (`CpuState::exit_reason`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// A direct branch whose target is not chained yet. `eip` is the
    /// target; `exit_arg` is the arena offset of the rel32 to patch (and
    /// `CHAIN_PAST_POLL`).
    Branch = 1,
    /// An indirect branch or return missed the jump cache; `eip` is the target.
    IndirectMiss = 2,
    /// An exit was requested through the poll page; `eip` is the start of
    /// the TU whose head saw it.
    Request = 3,
    /// A guest exception; `eip` is the faulting instruction (or the next
    /// one for traps), `exc_vector`/`exc_error`/`fault_addr` say which.
    Exception = 4,
    /// A helper asked to stop; the runtime knows why.
    Helper = 5,
    /// The run budget (`budget`) ran out; `eip` is the start of a TU.
    Budget = 6,
}

impl ExitReason {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Branch,
            2 => Self::IndirectMiss,
            3 => Self::Request,
            4 => Self::Exception,
            5 => Self::Helper,
            6 => Self::Budget,
            _ => return None,
        })
    }
}

/// The helpers generated code can call. The runtime puts one function
/// pointer per entry into [`CpuState::helpers`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Helper {
    /// Emulates one instruction the host cannot execute for the guest
    /// (I/O, CPUID, RDTSC, BCD adjusts, system instructions, ...).
    Emulate = 0,
    /// At the head of a TU from a page that is written too often to be
    /// write-protected: checks that its guest code is unchanged (the
    /// argument is a [`CodeCheck`]).
    CheckCode = 1,
}

pub const HELPER_COUNT: usize = 2;

/// What a self-checking TU compares: its guest code as translated.
pub struct CodeCheck {
    /// Guest physical address and EIP of the TU's first byte.
    pub phys: u32,
    pub eip: u32,
    pub bytes: Box<[u8]>,
    /// Bytes at `phys`; the rest are at `next_phys` (a TU whose one
    /// instruction runs into another page under paging).
    pub split: u32,
    pub next_phys: u32,
    /// (offset, length) of immediates the TU loads from guest memory when
    /// it runs: changing them does not make the TU stale.
    pub live: Vec<(u16, u8)>,
    /// Checks this TU passed since it was translated (the runtime counts
    /// them to find pages whose code stopped changing).
    pub passes: std::cell::Cell<u32>,
}

impl CodeCheck {
    /// Whether guest bytes `now` (as long as `bytes`) are the code this
    /// TU was translated from, live immediates aside.
    pub fn matches(&self, now: &[u8]) -> bool {
        if now.len() != self.bytes.len() {
            return false;
        }
        let mut from = 0;
        for &(at, len) in &self.live {
            let at = at as usize;
            if now[from..at] != self.bytes[from..at] {
                return false;
            }
            from = at + len as usize;
        }
        now[from..] == self.bytes[from..]
    }
}

/// How an `ExitReason::Exception` came about (`CpuState::exc_kind`); the
/// system CPU needs it for privilege checks and error codes.
pub mod exc_kind {
    /// Raised by the CPU while executing an instruction (a fault or trap).
    pub const HARDWARE: u32 = 0;
    /// `int n`: a software interrupt (gate DPL is checked).
    pub const SOFTWARE_INT: u32 = 1;
    /// `int3` / `into`: software exceptions (gate DPL is checked, no error code).
    pub const SOFTWARE_EXC: u32 = 2;
    /// An external interrupt from the interrupt controller (no error code,
    /// no DPL check).
    pub const EXTERNAL: u32 = 3;
}

/// Set in `CpuState::exc_error` of a #PF that the fault handler made from
/// a host fault in the shadow (the page is not mapped there, or mapped
/// read-only): the run loop decides what it is for the guest (a hidden
/// fault, self-modifying code, a true #PF).
pub const SHADOW_FAULT: u32 = 1 << 31;

/// A helper returns this to let the TU go on; anything else exits to the
/// run loop with `ExitReason::Helper` (or whatever reason the helper stored).
pub const HELPER_CONTINUE: u32 = 0;
pub const HELPER_EXIT: u32 = 1;

/// The signature of every helper: the CPU state (guest registers spilled
/// into `regs`, flags into `arith_flags`, `eip` the instruction's) and the
/// decoded guest instruction the call site stands for.
pub type HelperFn =
    unsafe extern "sysv64" fn(cpu: *mut CpuState, insn: *const iced_x86::Instruction) -> u32;

/// Entries of the per-vCPU jump cache probed inline by indirect branches.
pub const JUMP_CACHE_BITS: u32 = 16;
pub const JUMP_CACHE_ENTRIES: usize = 1 << JUMP_CACHE_BITS;

/// The jump cache: guest linear EIP -> host code address, indexed by the low
/// 16 bits of the EIP. Keys and targets are separate arrays so the inline
/// probe can scale its index by 4 and by 8 without shifting (which would
/// clobber the guest flags). An empty slot points at the miss stub, so a
/// key that happens to match an empty slot still lands somewhere correct.
#[repr(C)]
pub struct JumpCache {
    pub keys: [u32; JUMP_CACHE_ENTRIES],
    pub targets: [u64; JUMP_CACHE_ENTRIES],
}

pub const JC_KEYS: i32 = offset_of!(JumpCache, keys) as i32;
pub const JC_TARGETS: i32 = offset_of!(JumpCache, targets) as i32;

/// The CPU state that generated code reads and writes through `r14`.
///
/// While generated code runs, `regs` and `arith_flags` are stale (the live
/// values are in host registers); they are exact whenever the run loop or a
/// helper looks at them.
#[repr(C, align(64))]
pub struct CpuState {
    /// eax ecx edx ebx esp ebp esi edi.
    pub regs: [u32; 8],
    pub eip: u32,
    /// The host RFLAGS image: only the `flags::HOST_LIVE` bits mean anything.
    pub arith_flags: u32,
    /// Guest EFLAGS except the `flags::HOST_LIVE` bits (IF, IOPL, TF, ...).
    pub sys_flags: u32,
    pub exit_reason: u32,
    pub _pad0: [u8; 4],
    pub exc_vector: u32,
    pub exc_error: u32,
    pub exc_kind: u32,
    /// EIP of the instruction that raised the exception (differs from
    /// `eip` for traps and software interrupts).
    pub exc_insn: u32,
    pub fault_addr: u32,
    /// With `ExitReason::Branch`: arena offset of the rel32 to patch, with
    /// `CHAIN_PAST_POLL` or'd in for a forward branch.
    pub exit_arg: u32,
    pub _pad1: [u8; 4],
    /// Host stack pointer of the run loop, restored by the exit path.
    pub host_rsp: u64,
    /// Host address of guest linear 0 (the GS base), and its negation.
    pub gs_base: u64,
    pub neg_gs_base: u64,
    /// Runs out of TUs: decremented at every TU head when the translation
    /// is built with a budget.
    pub budget: u64,
    /// TU heads executed, counted when the translation is built with stats.
    pub tus_executed: u64,
    /// Jump-cache hits, counted with stats.
    pub jc_hits: u64,
    /// Returns that went straight back to their call site, counted with stats.
    pub ret_hits: u64,
    /// Guest instructions executed, by code class (`stats::CodeClass`),
    /// counted with stats as a TU starts and past each conditional branch
    /// it runs on from: the instructions of that block.
    pub class_insns: [u64; crate::stats::CLASSES],
    /// Of those, the ones that ran as the same host instruction (IDENT).
    pub class_ident: [u64; crate::stats::CLASSES],
    /// The host stack generated code runs on (the return stack, see
    /// `callstack`): the address of its sentinel slot, the rsp at entry.
    pub call_stack_top: u64,
    /// Lowest address of the guard page below the return stack.
    pub call_stack_guard: u64,
    /// Generated code's rsp while a helper runs on the host stack.
    pub gen_rsp: u64,
    /// The exit-request page every TU head reads (see `poll`).
    pub poll_page: u64,
    /// Nonzero after sti, mov ss and pop ss: external interrupts wait until
    /// the instruction at `shadow_eip` has run.
    pub shadow: u32,
    pub shadow_eip: u32,
    /// Nonzero while IF is clear and an interrupt waits for it (the run
    /// loop keeps it): a translated sti that sets IF then leaves its TU so
    /// that the interrupt is taken after the next instruction; otherwise
    /// sti goes straight on.
    pub irq_waiting: u32,
    /// The GDT descriptor each segment register was last loaded from by a
    /// protected-mode segment load (`remember_descriptor`): its selector
    /// (`u32::MAX`: none; any other change of the segment forgets it),
    /// the descriptor's linear address and its 8 bytes (accessed bit
    /// set). Generated code reloads the same selector from an unchanged
    /// descriptor without the runtime (`lower::system`).
    pub desc_sel: [u32; 6],
    pub desc_lin: [u32; 6],
    pub desc_raw: [u64; 6],
    /// Segment selectors es cs ss ds fs gs (iced's order, Intel's encoding).
    pub sregs: [u32; 6],
    /// The hidden part of each segment register: base and limit (the
    /// highest valid offset), and the base negated for flag-free
    /// subtraction in generated code.
    pub seg_base: [u32; 6],
    pub seg_limit: [u32; 6],
    pub seg_neg: [u32; 6],
    /// The D/B bit of each segment: 32-bit code (CS) or stack (SS), and
    /// an expand-down segment's upper bound (4 GiB, else 64 KiB).
    pub seg_db: [bool; 6],
    /// Expand-down data (stack) segments: valid offsets lie above the limit.
    pub seg_expand_down: [bool; 6],
    /// What generated code adds to an offset to probe the segment's limit
    /// (see [`limit`]).
    pub seg_check: [i64; 6],
    /// The mode-key bits the segments decide (`ModeKey::FLAT` and the
    /// limit classes), kept current by the segment setters.
    segment_mode: u32,
    /// Bit i set: segment i (es cs ss ds) is not flat (base 0, 4 GiB).
    not_flat: u32,
    /// The current privilege level in protected mode: the RPL of the CS
    /// selector when it was loaded (setting CR0.PE does not change it).
    pub cpl: u32,
    pub cr0: u32,
    pub cr2: u32,
    pub cr3: u32,
    pub cr4: u32,
    pub helpers: [u64; HELPER_COUNT],
    /// The runtime's own context for helpers.
    pub ctx: *mut core::ffi::c_void,
    /// The jump cache, also pinned in r15 while guest code runs.
    pub jump_cache: *mut JumpCache,
    /// The translator's fault metadata, read by the signal handler.
    pub fault_map: *const crate::meta::FaultMap,
    /// Where the signal handler sends a faulting TU (the arena's exit stub).
    pub fault_exit: u64,
    /// What generated code calls before an FPU, MMX or SSE instruction:
    /// the stub that swaps the guest's FPU state in, or a bare `ret` while
    /// it is in (see `Translator::attach` and the stubs).
    pub fpu_enter: u64,
    /// The guest's x87/MMX/SSE state (an FXSAVE64 image) while the host
    /// FPU holds the runtime's.
    pub guest_fpu: FxArea,
    /// The runtime's FPU state while the host FPU holds the guest's.
    pub host_fpu: FxArea,
}

/// An FXSAVE area: 512 bytes, 16-byte aligned.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
pub struct FxArea(pub [u8; 512]);

impl FxArea {
    /// The state after FNINIT with SSE's defaults: control word 0x037F,
    /// every register empty, MXCSR 0x1F80 (exceptions masked).
    pub fn initial() -> Self {
        let mut a = [0u8; 512];
        a[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
        a[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
        FxArea(a)
    }
}

impl CpuState {
    pub fn new() -> Self {
        CpuState {
            regs: [0; 8],
            eip: 0,
            arith_flags: 0,
            sys_flags: flags::FIXED1,
            exit_reason: 0,
            _pad0: [0; 4],
            exc_vector: 0,
            exc_error: 0,
            exc_kind: 0,
            exc_insn: 0,
            fault_addr: 0,
            exit_arg: 0,
            _pad1: [0; 4],
            host_rsp: 0,
            gs_base: 0,
            neg_gs_base: 0,
            budget: u64::MAX,
            tus_executed: 0,
            jc_hits: 0,
            ret_hits: 0,
            class_insns: [0; crate::stats::CLASSES],
            class_ident: [0; crate::stats::CLASSES],
            call_stack_top: 0,
            call_stack_guard: 0,
            gen_rsp: 0,
            poll_page: 0,
            shadow: 0,
            shadow_eip: 0,
            irq_waiting: 0,
            desc_sel: [u32::MAX; 6],
            desc_lin: [0; 6],
            desc_raw: [0; 6],
            sregs: [0; 6],
            seg_base: [0; 6],
            seg_limit: [u32::MAX; 6],
            seg_neg: [0; 6],
            seg_db: [true; 6],
            seg_expand_down: [false; 6],
            seg_check: [0; 6],
            segment_mode: ModeKey::FLAT,
            not_flat: 0,
            cpl: 0,
            cr0: 0,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            helpers: [0; HELPER_COUNT],
            ctx: core::ptr::null_mut(),
            jump_cache: core::ptr::null_mut(),
            fault_map: core::ptr::null(),
            fault_exit: 0,
            fpu_enter: 0,
            guest_fpu: FxArea::initial(),
            host_fpu: FxArea([0; 512]),
        }
    }

    /// The guest's EFLAGS, put together from its two homes.
    pub fn eflags(&self) -> u32 {
        (self.arith_flags & flags::HOST_LIVE) | (self.sys_flags & !flags::HOST_LIVE) | flags::FIXED1
    }

    pub fn set_eflags(&mut self, v: u32) {
        let v = (v & flags::WRITABLE) | flags::FIXED1;
        self.arith_flags = v & flags::HOST_LIVE;
        self.sys_flags = v & !flags::HOST_LIVE;
    }

    /// Loads segment register `i` (es cs ss ds fs gs) with its hidden
    /// part, expand-up; D/B stays as it was unless set with
    /// [`CpuState::set_segment_db`].
    pub fn set_segment(&mut self, i: usize, selector: u16, base: u32, limit: u32) {
        const CS: usize = 1;
        if i == CS {
            self.cpl = if self.cr0 & 1 != 0 {
                selector as u32 & 3
            } else {
                0
            };
        }
        self.sregs[i] = selector as u32;
        self.desc_sel[i] = u32::MAX;
        if self.seg_base[i] == base && self.seg_limit[i] == limit && !self.seg_expand_down[i] {
            // The usual case (a ring change between flat segments): the
            // hidden part, its checks and the mode bits stay.
            return;
        }
        self.seg_base[i] = base;
        self.seg_neg[i] = base.wrapping_neg();
        self.seg_limit[i] = limit;
        self.seg_expand_down[i] = false;
        self.segment_changed(i);
    }

    /// Like [`CpuState::set_segment`], with the D/B bit.
    pub fn set_segment_db(&mut self, i: usize, selector: u16, base: u32, limit: u32, db: bool) {
        // D/B alone does not change an expand-up segment's checks.
        self.seg_db[i] = db;
        self.set_segment(i, selector, base, limit);
    }

    /// Segment `i` was just loaded with `selector` from the GDT descriptor
    /// `raw` (accessed bit set) at linear address `lin` (see `desc_sel`).
    pub fn remember_descriptor(&mut self, i: usize, selector: u16, lin: u32, raw: u64) {
        self.desc_sel[i] = selector as u32;
        self.desc_lin[i] = lin;
        self.desc_raw[i] = raw;
    }

    /// The GDT moved (lgdt): no segment's descriptor is where it was read.
    pub fn forget_descriptors(&mut self) {
        self.desc_sel = [u32::MAX; 6];
    }

    /// Marks data segment `i` expand-down (after loading it).
    pub fn set_expand_down(&mut self, i: usize, expand_down: bool) {
        if self.seg_expand_down[i] != expand_down {
            self.seg_expand_down[i] = expand_down;
            self.segment_changed(i);
        }
    }

    /// After segment `i`'s base, limit or kind changed: its limit check
    /// value and its part of `segment_mode` (its limit class, and FLAT).
    fn segment_changed(&mut self, i: usize) {
        self.seg_check[i] = limit::check_value(i, self.seg_limit[i], self.seg_expand_down[i]);
        if i < 4 {
            let flat = self.seg_base[i] == 0 && self.seg_limit[i] == u32::MAX;
            self.not_flat = (self.not_flat & !(1 << i)) | (!flat as u32) << i;
        }
        let shift = ModeKey::LIMIT_SHIFT + limit::CLASS_BITS * i as u32;
        let mut m = self.segment_mode & !(7 << shift) & !ModeKey::FLAT;
        m |= self.limit_class(i) << shift;
        if self.not_flat == 0 {
            m |= ModeKey::FLAT;
        }
        self.segment_mode = m;
    }

    /// The mode-key bits the segments decide: `ModeKey::FLAT` and each
    /// segment's limit class.
    pub fn segment_mode(&self) -> u32 {
        self.segment_mode
    }

    /// How generated code must check accesses through segment `i`.
    pub fn limit_class(&self, i: usize) -> u32 {
        limit::class(self.seg_limit[i], self.seg_expand_down[i], self.seg_db[i])
    }

    /// Whether `size` bytes at `offset` lie within segment `i`.
    #[inline]
    pub fn segment_allows(&self, i: usize, offset: u32, size: u32) -> bool {
        limit::allows(
            self.seg_limit[i],
            self.seg_expand_down[i],
            self.seg_db[i],
            offset,
            size,
        )
    }

    /// The linear address of `offset` in segment `i`.
    pub fn linear(&self, i: usize, offset: u32) -> u32 {
        self.seg_base[i].wrapping_add(offset)
    }

    pub fn set_gs_base(&mut self, base: u64) {
        self.gs_base = base;
        self.neg_gs_base = base.wrapping_neg();
    }
}

impl Default for CpuState {
    fn default() -> Self {
        Self::new()
    }
}

macro_rules! offsets {
    ($($name:ident = $field:ident;)*) => {
        $(pub const $name: i32 = offset_of!(CpuState, $field) as i32;)*
    };
}

/// Field offsets used by generated code.
pub mod off {
    use super::*;
    offsets! {
        REGS = regs;
        EIP = eip;
        ARITH_FLAGS = arith_flags;
        SYS_FLAGS = sys_flags;
        EXIT_REASON = exit_reason;
        EXC_VECTOR = exc_vector;
        EXC_ERROR = exc_error;
        EXC_KIND = exc_kind;
        EXC_INSN = exc_insn;
        SREGS = sregs;
        SEG_BASE = seg_base;
        SEG_NEG = seg_neg;
        SEG_CHECK = seg_check;
        FAULT_ADDR = fault_addr;
        EXIT_ARG = exit_arg;
        HOST_RSP = host_rsp;
        GS_BASE = gs_base;
        NEG_GS_BASE = neg_gs_base;
        BUDGET = budget;
        TUS_EXECUTED = tus_executed;
        JC_HITS = jc_hits;
        RET_HITS = ret_hits;
        CLASS_INSNS = class_insns;
        CLASS_IDENT = class_ident;
        CALL_STACK_TOP = call_stack_top;
        GEN_RSP = gen_rsp;
        SHADOW = shadow;
        SHADOW_EIP = shadow_eip;
        IRQ_WAITING = irq_waiting;
        DESC_SEL = desc_sel;
        DESC_LIN = desc_lin;
        DESC_RAW = desc_raw;
        HELPERS = helpers;
        JUMP_CACHE = jump_cache;
        FPU_ENTER = fpu_enter;
        GUEST_FPU = guest_fpu;
        HOST_FPU = host_fpu;
    }

    /// Offset of guest register `r` in `regs`.
    pub const fn reg(r: usize) -> i32 {
        REGS + 4 * r as i32
    }
}

/// Segment limit checks (Intel SDM Vol. 3A, 5.3).
///
/// Generated code checks an access of `size` bytes at `offset` without
/// touching the flags: it adds the offset (and, expand-up, `size - 1`) to
/// the segment's [`CpuState::seg_check`] and loads a byte at that
/// GS-relative address. Each probe area has 4 GiB readable (anonymous
/// zero pages) at `P` with 4 GiB of no access on either side, so the load
/// faults exactly when the access is outside the segment; the fault
/// handler makes that #GP(0), or #SS(0) in the SS area.
///
/// - expand-up: check = P + 2^32 - 1 - limit, valid iff the sum < P + 4 GiB;
/// - expand-down: check = P - 1 - limit, valid iff the sum (offset alone)
///   >= P; with B = 0, a second probe checks the 64 KiB upper bound.
///
/// The common 64 KiB segment (real mode, most 16-bit code) has a shorter
/// form for offsets known to fit in 16 bits (16-bit addressing, SP): one
/// load at `P64 + offset + size - 1`, with 64 KiB readable at P64 (in the
/// guard below guest space, within a displacement's reach) and no access
/// after it.
pub mod limit {
    /// No check: expand-up with a 4 GiB limit.
    pub const NONE: u32 = 0;
    pub const UP: u32 = 1;
    /// Expand-down with B = 1 (upper bound 4 GiB).
    pub const DOWN32: u32 = 2;
    /// Expand-down with B = 0 (upper bound 64 KiB).
    pub const DOWN16: u32 = 3;
    /// Expand-up with a 64 KiB limit.
    pub const UP64K: u32 = 4;
    /// Bits per segment in the mode key.
    pub const CLASS_BITS: u32 = 3;

    const GIB: i64 = 1 << 30;
    /// The readable part of the probe areas, relative to the GS base
    /// (past the 1 GiB guard above guest space, 1 GiB apart): #GP and #SS.
    pub const PROBE_GP: i64 = 9 * GIB;
    pub const PROBE_SS: i64 = PROBE_GP + 13 * GIB;
    /// Where the probe areas start and end, relative to the GS base (the
    /// end leaves room for the largest access past the last fault page).
    pub const AREA_START: i64 = PROBE_GP - 4 * GIB;
    pub const AREA_END: i64 = PROBE_SS + 8 * GIB + (1 << 16);
    /// The 64 KiB probes (readable 64 KiB at each), below guest space.
    pub const PROBE64_GP: i64 = -GIB;
    pub const PROBE64_SS: i64 = -GIB + (1 << 20);
    const K64: i64 = 1 << 16;

    const SREG_SS: usize = 2;

    pub fn probe(i: usize) -> i64 {
        if i == SREG_SS { PROBE_SS } else { PROBE_GP }
    }

    pub fn probe64(i: usize) -> i64 {
        if i == SREG_SS { PROBE64_SS } else { PROBE64_GP }
    }

    #[inline]
    pub fn class(limit: u32, expand_down: bool, big: bool) -> u32 {
        match (expand_down, big) {
            (false, _) if limit == u32::MAX => NONE,
            (false, _) if limit == 0xFFFF => UP64K,
            (false, _) => UP,
            (true, true) => DOWN32,
            (true, false) => DOWN16,
        }
    }

    pub fn check_value(i: usize, limit: u32, expand_down: bool) -> i64 {
        let p = probe(i);
        if expand_down {
            p - 1 - limit as i64
        } else {
            p + u32::MAX as i64 - limit as i64
        }
    }

    /// The check value of the 64 KiB upper bound of a DOWN16 segment.
    pub fn upper16_check_value(i: usize) -> i64 {
        check_value(i, 0xFFFF, false)
    }

    /// Whether `size` bytes at `offset` lie within a segment (what the
    /// probes decide, for the runtime's own accesses).
    #[inline]
    pub fn allows(limit: u32, expand_down: bool, big: bool, offset: u32, size: u32) -> bool {
        let last = offset as u64 + size.max(1) as u64 - 1;
        match class(limit, expand_down, big) {
            NONE => true,
            UP | UP64K => last <= limit as u64,
            DOWN32 => offset > limit,
            _ => offset > limit && last <= 0xFFFF,
        }
    }

    /// The exception vector of a fault at GS-relative `off`, if it is in a
    /// probe area: #GP or #SS.
    pub fn probe_fault(off: i64) -> Option<u32> {
        let past64 = |p: i64| (p + K64..p + 2 * K64).contains(&off);
        if past64(PROBE64_GP) {
            Some(super::vector::GP)
        } else if past64(PROBE64_SS) {
            Some(super::vector::SS)
        } else if !(AREA_START..AREA_END).contains(&off) {
            None
        } else if off < PROBE_SS - 4 * GIB {
            Some(super::vector::GP)
        } else {
            Some(super::vector::SS)
        }
    }
}

/// What a translation depends on besides the bytes (DESIGN.md section 4):
/// code and stack size, flat segments and limit classes, protected mode,
/// paging (branches across pages are not chained), v8086, the CPL, the
/// FPU bits of CR0/CR4, and one-instruction TUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModeKey(pub u32);

impl ModeKey {
    pub const CODE32: u32 = 1 << 0;
    pub const STACK32: u32 = 1 << 1;
    pub const FLAT: u32 = 1 << 2;
    pub const PE: u32 = 1 << 3;
    pub const PG: u32 = 1 << 4;
    pub const VM86: u32 = 1 << 5;
    /// One instruction per TU and no chaining: single-stepping (TF) and
    /// the instruction in an interrupt shadow run this way.
    pub const ONE_INSN: u32 = 1 << 6;
    /// CR0.TS, CR0.EM, CR0.MP and CR4.OSFXSR: what FPU, MMX and SSE
    /// instructions translate to (the instruction, #NM or #UD).
    pub const FPU_TS: u32 = 1 << 7;
    pub const FPU_EM: u32 = 1 << 10;
    pub const FPU_MP: u32 = 1 << 11;
    pub const OSFXSR: u32 = 1 << 30;
    /// CPL in bits 8-9.
    pub const CPL_SHIFT: u32 = 8;
    /// The limit class (see [`limit`]) of segment i (es cs ss ds fs gs) in
    /// the 3 bits from 12 + 3i.
    pub const LIMIT_SHIFT: u32 = 12;

    pub const FLAT32_CPL0: ModeKey = ModeKey(Self::CODE32 | Self::STACK32 | Self::FLAT | Self::PE);

    pub fn cpl(self) -> u32 {
        (self.0 >> Self::CPL_SHIFT) & 3
    }

    /// How accesses through segment `i` (es cs ss ds fs gs) are checked.
    pub fn limit_class(self, i: usize) -> u32 {
        (self.0 >> (Self::LIMIT_SHIFT + limit::CLASS_BITS * i as u32)) & 7
    }
}

/// Guest exception vectors (Intel SDM Vol. 3A, table 6-1).
pub mod vector {
    pub const DE: u32 = 0;
    pub const DB: u32 = 1;
    pub const BP: u32 = 3;
    pub const OF: u32 = 4;
    pub const BR: u32 = 5;
    pub const UD: u32 = 6;
    pub const NM: u32 = 7;
    pub const DF: u32 = 8;
    pub const TS: u32 = 10;
    pub const NP: u32 = 11;
    pub const SS: u32 = 12;
    pub const GP: u32 = 13;
    pub const PF: u32 = 14;
    pub const MF: u32 = 16;
    pub const AC: u32 = 17;
    pub const XM: u32 = 19;

    pub fn name(v: u32) -> &'static str {
        match v {
            DE => "#DE (divide error)",
            DB => "#DB (debug)",
            2 => "NMI",
            BP => "#BP (breakpoint)",
            OF => "#OF (overflow)",
            BR => "#BR (BOUND range exceeded)",
            UD => "#UD (invalid opcode)",
            NM => "#NM (device not available)",
            DF => "#DF (double fault)",
            TS => "#TS (invalid TSS)",
            NP => "#NP (segment not present)",
            SS => "#SS (stack fault)",
            GP => "#GP (general protection)",
            PF => "#PF (page fault)",
            MF => "#MF (x87 floating-point error)",
            AC => "#AC (alignment check)",
            XM => "#XM (SIMD floating-point)",
            _ => "exception",
        }
    }
}

/// In `CpuState::exit_arg` of a branch exit: the branch goes to a higher
/// guest address, so its chain may enter the target past the poll
/// (`poll::POLL_LEN`). Arena offsets stay below it.
pub const CHAIN_PAST_POLL: u32 = 1 << 31;
