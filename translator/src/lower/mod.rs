//! Lowering: one decoded guest instruction at a time into host code.
//!
//! Each family lives in its own file; [`lower_insn`] picks the family from
//! the instruction's mnemonic. What a family emits keeps the invariant of
//! DESIGN.md section 5: every host instruction that can fault comes before
//! any change to guest-visible state, so a fault anywhere in an
//! instruction's code leaves the guest exactly as before it (up to the
//! [`Fixup`] recorded for its site).

mod branch;
mod fpu;
mod ident;
mod stack;
mod string;
mod system;

use dynasmrt::DynamicLabel;
use iced_x86::{Code, Instruction, MemoryOperand, Mnemonic, Register};

use crate::abi::{ExitReason, ModeKey, off};
use crate::emit::{Emitter, EncodeError, asm};
use crate::meta::{Fixup, Site};
use crate::stats::CodeClass;

/// How TUs are instrumented; baked into the code, so a change needs a flush.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Instrument {
    /// Count TU heads and jump-cache hits in the CPU state.
    pub stats: bool,
    /// Decrement `CpuState::budget` at each TU head and exit at zero.
    pub budget: bool,
}

/// What ends a TU and how control leaves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// The instruction falls through to the next one.
    Next,
    /// The instruction left the TU itself (branch, exit, exception).
    Ends,
}

/// An exit path placed after the TU body, out of the hot path.
enum Cold {
    /// The unchained side of a chain slot: exit with the branch target.
    Chain {
        label: DynamicLabel,
        target: u32,
        slot: usize,
        /// The chain may enter the target past its poll.
        past_poll: bool,
    },
    /// A branch that cannot be chained (to another page under paging,
    /// where mappings may change): through the jump cache.
    Probe { label: DynamicLabel, target: u32 },
    /// The budget check at the head.
    HeadExit {
        label: DynamicLabel,
        reason: ExitReason,
    },
}

pub struct TuBuilder<'a> {
    pub e: Emitter,
    pub mode: ModeKey,
    pub instrument: Instrument,
    /// Arena offset of this TU's first byte.
    arena_off: u32,
    tu_eip: u32,
    sites: Vec<Site>,
    cold: Vec<Cold>,
    insns: &'a [Instruction],
    /// The exit-request page TU heads poll.
    poll_page: usize,
    /// Guest physical address of the TU's first byte.
    tu_phys: u32,
    /// Instructions (by guest physical address) the runtime emulates.
    emulated: &'a hashbrown::HashSet<u32>,
    /// Guest esp is r12 + this: runs of push/pop/call/ret move r12 once.
    esp_pending: i32,
    /// The guest's FPU state is in the host FPU here (an FPU instruction
    /// since the TU head or the last helper call made sure of it).
    pub fpu_in: bool,
    /// A self-checking TU: the head compares its guest code with this.
    check: Option<*const crate::abi::CodeCheck>,
    /// Immediates loaded from guest memory (see `ident::lower_live_imm`).
    pub live: Vec<(u16, u8)>,
}

#[derive(Debug)]
pub struct LoweredTu {
    pub code: Vec<u8>,
    /// Sites with arena offsets.
    pub sites: Vec<Site>,
    /// (TU offset, length) of the immediates loaded from guest memory.
    pub live: Vec<(u16, u8)>,
}

impl<'a> TuBuilder<'a> {
    pub fn new(
        e: Emitter,
        arena_off: u32,
        tu_eip: u32,
        mode: ModeKey,
        instrument: Instrument,
        poll_page: usize,
        tu_phys: u32,
        emulated: &'a hashbrown::HashSet<u32>,
        insns: &'a [Instruction],
        check: Option<*const crate::abi::CodeCheck>,
    ) -> Self {
        TuBuilder {
            e,
            mode,
            instrument,
            arena_off,
            tu_eip,
            sites: Vec::new(),
            cold: Vec::new(),
            insns,
            poll_page,
            tu_phys,
            emulated,
            esp_pending: 0,
            fpu_in: false,
            check,
            live: Vec::new(),
        }
    }

    /// Lowers the whole TU. If the last instruction falls through (the TU
    /// was cut at the size limit, after a sensitive instruction or before
    /// an undecodable one), a chain to `next_eip` follows it.
    pub fn build(mut self, next_eip: u32) -> Result<LoweredTu, EncodeError> {
        // A fault at the head (the poll) means "exit before this TU".
        self.site(self.tu_eip, Fixup::None);
        self.head();
        let mut flow = Flow::Next;
        let insns = self.insns;
        for (i, insn) in insns.iter().enumerate() {
            if !stack::defers_esp(insn) {
                self.flush_esp();
            }
            let fixup = match self.esp_pending {
                0 => Fixup::None,
                d if self.stack32() => Fixup::EspDelta(d),
                d => Fixup::SpDelta(d),
            };
            self.site(insn.ip32(), fixup);
            flow = lower_insn(&mut self, insn)?;
            if flow == Flow::Ends {
                break;
            }
            if insn.is_jcc_short_or_near() && i + 1 < insns.len() {
                // Not taken: the TU goes on with the next block.
                self.count_block(i + 1);
            }
        }
        if flow == Flow::Next {
            self.chain_to(next_eip);
        }
        debug_assert_eq!(self.esp_pending, 0, "esp left pending at a TU exit");
        self.emit_cold();
        let code = self
            .e
            .ops
            .finalize()
            .map_err(|e| EncodeError(format!("{e}")))?;
        let base = self.arena_off;
        let sites = self
            .sites
            .into_iter()
            .map(|s| Site {
                host_off: s.host_off + base,
                ..s
            })
            .collect();
        Ok(LoweredTu {
            code,
            sites,
            live: self.live,
        })
    }

    /// Starts the code of a guest instruction (or re-marks it with a fixup).
    pub fn site(&mut self, guest_eip: u32, fixup: Fixup) {
        self.sites.push(Site {
            host_off: self.e.offset() as u32,
            guest_eip,
            fixup,
        });
    }

    /// A self-checking TU (its page is written often) of flat code.
    pub fn self_checking_flat(&self) -> bool {
        self.check.is_some() && self.mode.0 & ModeKey::FLAT != 0
    }

    /// Whether `insn` runs as the same host instruction (IDENT; its memory
    /// operand, if any, rebased onto guest memory), as [`lower_insn`]
    /// lowers it.
    fn runs_unchanged(&self, insn: &Instruction) -> bool {
        use ident::Family;
        if self.emulated.contains(&self.phys(insn)) {
            return false;
        }
        match ident::family(insn) {
            Family::Ident => !ident::loads_live_imm(self, insn),
            Family::Fpu(kind) => fpu::blocked(kind, self.mode).is_none(),
            _ => false,
        }
    }

    pub fn tu_eip(&self) -> u32 {
        self.tu_eip
    }

    /// The guest physical address of an instruction of this TU.
    fn phys(&self, insn: &Instruction) -> u32 {
        self.tu_phys
            .wrapping_add(insn.ip32().wrapping_sub(self.tu_eip))
    }

    /// Whether a memory access through segment `seg` must add its base:
    /// always for FS and GS, for the others outside flat mode.
    pub fn needs_segment_base(&self, seg: Register) -> bool {
        matches!(seg, Register::FS | Register::GS)
            || (self.mode.0 & ModeKey::FLAT == 0 && seg != Register::None)
    }

    /// `reg += base of segment seg` without touching the flags, after
    /// checking `size` bytes at offset `reg` against the segment's limit
    /// where the mode says it must be; `offset16` says the offset is known
    /// to fit in 16 bits (r10 is clobbered unless `reg` is r9, which uses
    /// r8).
    pub fn add_segment_base(&mut self, reg: Register, seg: Register, size: u32, offset16: bool) {
        let scratch = if reg == Register::R9D {
            Register::R8D
        } else {
            Register::R10D
        };
        self.check_limit(reg, scratch, seg, size, offset16);
        let at = off::SEG_BASE + 4 * seg.number() as i32;
        let load = MemoryOperand::with_base_displ(Register::R14, at as i64);
        self.e
            .put(Instruction::with2(Code::Mov_r32_rm32, scratch, load).expect("mov"));
        let sum = MemoryOperand::with_base_index(reg.full_register(), scratch.full_register());
        self.e
            .put(Instruction::with2(Code::Lea_r32_m, reg, sum).expect("lea"));
    }

    /// Checks `size` bytes at the offset in `reg` (zero-extended) against
    /// the limit of `seg`, flag-free: a byte load from a limit probe area
    /// that faults as #GP(0), or #SS(0) for SS, when the access is outside
    /// the segment (see `abi::limit`). Nothing when the mode says the
    /// segment needs no check.
    fn check_limit(
        &mut self,
        reg: Register,
        scratch: Register,
        seg: Register,
        size: u32,
        offset16: bool,
    ) {
        use crate::abi::limit;
        let i = seg.number();
        let class = self.mode.limit_class(i);
        if class == limit::NONE {
            return;
        }
        let (s64, r64) = (scratch.full_register(), reg.full_register());
        let size = size.max(1) as i64;
        if class == limit::UP64K && offset16 {
            // 64 KiB and a 16-bit offset: one load past the 64 KiB probe.
            let at = MemoryOperand::with_base_displ(r64, limit::probe64(i) + size - 1);
            let mut load = Instruction::with2(Code::Movzx_r32_rm8, scratch, at).expect("movzx");
            load.set_segment_prefix(Register::GS);
            self.e.put(load);
            return;
        }
        let probe = |b: &mut Self, disp: i64| {
            let sum = MemoryOperand::with_base_index_scale_displ_size(s64, r64, 1, disp, 1);
            b.e.put(Instruction::with2(Code::Lea_r64_m, s64, sum).expect("lea"));
            let at = MemoryOperand::with_base(s64);
            let mut load = Instruction::with2(Code::Movzx_r32_rm8, scratch, at).expect("movzx");
            load.set_segment_prefix(Register::GS);
            b.e.put(load);
        };
        let check =
            MemoryOperand::with_base_displ(Register::R14, (off::SEG_CHECK + 8 * i as i32) as i64);
        self.e
            .put(Instruction::with2(Code::Mov_r64_rm64, s64, check).expect("mov"));
        // Expand-up checks the last byte; expand-down the first one.
        let up = matches!(class, limit::UP | limit::UP64K);
        probe(self, if up { size - 1 } else { 0 });
        if class == limit::DOWN16 {
            let upper = limit::upper16_check_value(i);
            self.e
                .put(Instruction::with2(Code::Mov_r64_imm64, s64, upper as u64).expect("mov"));
            probe(self, size - 1);
        }
    }

    /// Guest `ss:[esp + disp]` (with the pending esp delta) as a host
    /// memory operand (see [`TuBuilder::seg_mem`]); with a 16-bit stack
    /// the offset wraps at 64 KiB.
    /// `size` is the access size, for the limit check.
    pub fn stack_mem(&mut self, disp: i64, size: u32) -> iced_x86::MemoryOperand {
        let disp = self.sp(disp);
        if self.stack32() {
            return self.seg_mem(Register::R12D, disp, Register::SS, size);
        }
        self.seg_mem16(Register::R12D, disp, Register::SS, size)
    }

    /// `lea r9d, [base + disp]`: a guest offset, wrapped at 4 GiB.
    fn lea_r9(&mut self, base: Register, disp: i64) {
        let ea = MemoryOperand::with_base_displ(base.full_register(), disp);
        self.e
            .put(Instruction::with2(Code::Lea_r32_m, Register::R9D, ea).expect("lea"));
    }

    /// Guest `seg:[(base16 + disp) & 0xFFFF]` computed into r9d (r8 clobbered).
    pub fn seg_mem16(
        &mut self,
        base: Register,
        disp: i64,
        seg: Register,
        size: u32,
    ) -> iced_x86::MemoryOperand {
        self.lea_r9(base, disp);
        self.e.put(
            Instruction::with2(Code::Movzx_r32_rm16, Register::R9D, Register::R9W).expect("movzx"),
        );
        if self.needs_segment_base(seg) {
            self.add_segment_base(Register::R9D, seg, size, true);
        }
        crate::emit::gmem(Register::R9D, 0)
    }

    /// Guest `seg:[base + disp]` (base a host register holding a guest
    /// register) as a host memory operand: `gs: [base + disp]` when the
    /// segment base is 0, else the address computed into r9d (r8 clobbered).
    pub fn seg_mem(
        &mut self,
        base: Register,
        disp: i64,
        seg: Register,
        size: u32,
    ) -> iced_x86::MemoryOperand {
        if !self.needs_segment_base(seg) {
            return crate::emit::gmem(base, disp);
        }
        self.lea_r9(base, disp);
        self.add_segment_base(Register::R9D, seg, size, false);
        crate::emit::gmem(Register::R9D, 0)
    }

    /// The displacement from r12 of guest `[esp + disp]`.
    pub fn sp(&self, disp: i64) -> i64 {
        self.esp_pending as i64 + disp
    }

    /// Moves guest esp by `delta`, lazily: the `lea` comes with the next
    /// instruction that needs r12 exact (see `stack::defers_esp`).
    pub fn adjust_esp(&mut self, delta: i32) {
        self.esp_pending = self.esp_pending.wrapping_add(delta);
    }

    /// Makes r12 the guest esp again (only SP moves with a 16-bit stack).
    pub fn flush_esp(&mut self) {
        let d = std::mem::take(&mut self.esp_pending);
        if d != 0 {
            if self.stack32() {
                asm!(self.e; lea r12d, [r12 + d]);
            } else {
                asm!(self.e; lea r12w, [r12 + d]);
            }
        }
    }

    /// Whether the stack is 32-bit (SS.B): esp, else sp wrapping at 64 KiB.
    pub fn stack32(&self) -> bool {
        self.mode.0 & ModeKey::STACK32 != 0
    }

    /// Marks the current point as belonging to the last site again, with a
    /// fixup that holds from here on.
    pub fn fixup_from_here(&mut self, fixup: Fixup) {
        let eip = self.sites.last().map_or(self.tu_eip, |s| s.guest_eip);
        self.site(eip, fixup);
    }

    /// The TU head: counters, the budget and the exit-request poll (see
    /// `poll`). The budget check must keep the guest flags: it borrows rcx
    /// and tests with jrcxz.
    fn head(&mut self) {
        let at = self.e.offset();
        let page = MemoryOperand::with_base_displ(Register::RIP, self.poll_page as i64);
        self.e
            .put(Instruction::with2(Code::Mov_r32_rm32, Register::R11D, page).expect("mov"));
        debug_assert_eq!(self.e.offset() - at, crate::poll::POLL_LEN);
        if let Some(check) = self.check {
            // Self-checking: the runtime compares the guest code with
            // what was translated and leaves if it changed.
            self.call_helper(crate::abi::Helper::CheckCode, self.tu_eip, check as i64);
        }
        if self.instrument.stats {
            asm!(self.e
                ; mov work, QWORD [cpu + off::TUS_EXECUTED]
                ; lea work, [work + 1]
                ; mov QWORD [cpu + off::TUS_EXECUTED], work
            );
            self.count_block(0);
        }
        if self.instrument.budget {
            let out = self.e.label();
            let go = self.e.label();
            asm!(self.e
                ; mov work, rcx
                ; mov rcx, QWORD [cpu + off::BUDGET]
                ; lea rcx, [rcx - 1]
                ; mov QWORD [cpu + off::BUDGET], rcx
                ; jrcxz >zero
                ; mov rcx, work
                ; jmp =>go
                ; zero:
                ; mov rcx, work
                ; jmp =>out
                ; =>go
            );
            self.cold.push(Cold::HeadExit {
                label: out,
                reason: ExitReason::Budget,
            });
        }
    }

    /// With stats on, adds the instructions of the block that starts at
    /// `self.insns[from]` (up to a conditional branch, which a TU runs
    /// past when it is not taken, or the end), and its IDENT ones, to the
    /// counters of the TU's class. Flag-free.
    fn count_block(&mut self, from: usize) {
        if !self.instrument.stats {
            return;
        }
        let rest = &self.insns[from..];
        let len = rest
            .iter()
            .position(|i| i.is_jcc_short_or_near())
            .map_or(rest.len(), |j| j + 1);
        let block = &rest[..len];
        let class = 8 * CodeClass::of(self.mode).index() as i32;
        let ident = block.iter().filter(|i| self.runs_unchanged(i)).count() as i32;
        for (at, n) in [(off::CLASS_INSNS, len as i32), (off::CLASS_IDENT, ident)] {
            if n > 0 {
                asm!(self.e
                    ; mov work, QWORD [cpu + at + class]
                    ; lea work, [work + n]
                    ; mov QWORD [cpu + at + class], work
                );
            }
        }
    }

    /// A patchable jump to guest `target`, initially to an exit that asks
    /// the run loop to translate and chain it.
    pub fn chain_to(&mut self, target: u32) {
        self.chain_slot(target, |e, l| e.patchable_jmp(l));
    }

    /// Leaves the TU for the run loop at guest `eip` through an exit that
    /// is never chained (the run loop looks at the new state first).
    pub fn exit_to_run_loop(&mut self, eip: u32) {
        self.flush_esp();
        self.e.exit_with(eip, ExitReason::Helper);
    }

    /// A patchable host `call` to guest `target` (a translated call: the
    /// host pushes the landing pad that follows it).
    pub fn call_chained(&mut self, target: u32) {
        self.chain_slot(target, |e, l| e.patchable_call(l));
    }

    /// Like [`TuBuilder::chain_to`], taken if condition `cc` holds.
    pub fn chain_if(&mut self, cc: u8, target: u32) {
        self.chain_slot(target, |e, l| e.patchable_jcc(cc, l));
    }

    /// Like [`TuBuilder::chain_to`], but skipped when the short branch
    /// `short` (opcode bytes; its rel8 is added) is taken.
    pub fn chain_unless(&mut self, short: &[u8], target: u32) {
        self.chain_slot(target, |e, l| e.skip_over_patchable_jmp(short, l));
    }

    /// Emits a chain slot for guest `target` (`emit` places it and returns
    /// its offset), with its unchained exit among the cold code.
    fn chain_slot(&mut self, target: u32, emit: impl FnOnce(&mut Emitter, DynamicLabel) -> usize) {
        self.flush_esp();
        let label = self.e.label();
        let slot = emit(&mut self.e, label);
        if self.chainable(target) {
            // Forward branches skip the target's poll (see `POLL_LEN`).
            let from = self.sites.last().map_or(self.tu_eip, |s| s.guest_eip);
            self.cold.push(Cold::Chain {
                label,
                target,
                slot,
                past_poll: target > from,
            });
        } else {
            self.cold.push(Cold::Probe { label, target });
        }
    }

    /// Whether a direct branch to `target` may be chained. Under paging
    /// only within the TU's own page with flat code (both ends then move
    /// together whatever the guest maps there), and not to a TU that may
    /// run into the next page: every other mapping may change with CR3,
    /// INVLPG and the page tables, and such branches go through the jump
    /// cache, which the run loop drops with the guest TLB.
    fn chainable(&self, target: u32) -> bool {
        let m = self.mode.0;
        m & ModeKey::PG == 0
            || (m & ModeKey::FLAT != 0
                && target >> 12 == self.tu_eip >> 12
                && !crate::tu::may_cross_page(target))
    }

    fn emit_cold(&mut self) {
        let tu_eip = self.tu_eip;
        for c in std::mem::take(&mut self.cold) {
            match c {
                Cold::Chain {
                    label,
                    target,
                    slot,
                    past_poll,
                } => {
                    let mut arg = self.arena_off + slot as u32;
                    if past_poll {
                        arg |= crate::abi::CHAIN_PAST_POLL;
                    }
                    self.e.bind(label);
                    asm!(self.e; mov DWORD [cpu + off::EXIT_ARG], arg as i32);
                    self.e.exit_with(target, ExitReason::Branch);
                }
                Cold::Probe { label, target } => {
                    self.e.bind(label);
                    let probe = self.e.stubs.probe;
                    asm!(self.e
                        ; mov r11d, target as i32
                        ; jmp extern probe
                    );
                }
                Cold::HeadExit { label, reason } => {
                    self.e.bind(label);
                    self.e.exit_with(tu_eip, reason);
                }
            }
        }
    }

    /// Calls helper `Emulate` for instruction `insn` with the guest state
    /// spilled; the helper either returns (the TU goes on) or exits.
    pub fn call_emulate(&mut self, insn: &Instruction) {
        let ptr = insn as *const Instruction as i64;
        self.call_helper(crate::abi::Helper::Emulate, insn.ip32(), ptr);
    }

    /// Calls `helper` with argument `arg` for the instruction at `eip`,
    /// guest state spilled; it returns here or leaves the TU.
    fn call_helper(&mut self, helper: crate::abi::Helper, eip: u32, arg: i64) {
        self.flush_esp();
        let stub = self.e.stubs.helper;
        asm!(self.e
            ; mov DWORD [cpu + off::EIP], eip as i32
            ; mov r10, QWORD arg
            ; mov r11d, helper as i32
            ; lea r13, [>back]
            ; jmp extern stub
            ; back:
        );
    }

    /// Raises guest exception `vector` at `eip` (the faulting instruction
    /// for faults, the next one for traps and software interrupts), raised
    /// by the current instruction.
    pub fn raise(&mut self, vector: u32, kind: u32, eip: u32) {
        self.flush_esp();
        let insn = self.sites.last().map_or(self.tu_eip, |s| s.guest_eip);
        self.e.set_state32(off::EXC_INSN, insn);
        self.e.set_state32(off::EXC_VECTOR, vector);
        self.e.set_state32(off::EXC_ERROR, 0);
        self.e.set_state32(off::EXC_KIND, kind);
        self.e.exit_with(eip, ExitReason::Exception);
    }
}

/// Lowers one guest instruction.
fn lower_insn(b: &mut TuBuilder, insn: &Instruction) -> Result<Flow, EncodeError> {
    use ident::Family;
    if b.emulated.contains(&b.phys(insn)) {
        // A divide that raised #DE before (the runtime divides, so the
        // next #DE needs no host signal), or a mov that touches devices.
        b.call_emulate(insn);
        return Ok(Flow::Next);
    }
    let family = ident::family(insn);
    if !matches!(family, Family::Ident | Family::Nop | Family::Fpu(_)) {
        // Anything else may call a helper (which swaps the FPU state out)
        // or leave the TU.
        b.fpu_in = false;
    }
    match family {
        Family::Ident => ident::lower(b, insn).map(|()| Flow::Next),
        Family::Fpu(kind) => fpu::lower(b, insn, kind),
        Family::Nop => Ok(Flow::Next),
        Family::Stack => stack::lower(b, insn),
        Family::Branch => branch::lower(b, insn),
        Family::String => string::lower(b, insn),
        Family::System => system::lower(b, insn),
        Family::Invalid => {
            b.raise(
                crate::abi::vector::UD,
                crate::abi::exc_kind::HARDWARE,
                insn.ip32(),
            );
            Ok(Flow::Ends)
        }
    }
}

/// True for the instructions a TU ends with: control transfers (but a
/// conditional branch, past which the TU goes on when it is not taken)
/// and those whose effects may change how later code translates.
pub fn ends_tu(insn: &Instruction) -> bool {
    use ident::Family;
    match ident::family(insn) {
        // A TU runs on past a conditional branch that is not taken.
        Family::Branch => !insn.is_jcc_short_or_near(),
        Family::Invalid => true,
        Family::System => !matches!(insn.mnemonic(), Mnemonic::Cli | Mnemonic::Clc),
        // popf may set TF (single-stepping is a mode of its own) or IF; a
        // segment load may change the mode.
        Family::Stack => {
            matches!(insn.mnemonic(), Mnemonic::Popf | Mnemonic::Popfd)
                || (insn.mnemonic() == Mnemonic::Pop && insn.op0_register().is_segment_register())
        }
        _ => false,
    }
}
