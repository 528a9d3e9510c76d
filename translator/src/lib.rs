//! bt86's binary translator: guest x86 code in, host x86-64 code out.
//!
//! ```text
//!  guest bytes --(tu::form)--> TU: <=12 decoded instructions
//!      --(lower::*)--> host code + fault sites (emit: dynasm glue, iced for guest ops)
//!      --(arena)--> code arena (fixed, W^X views) --(Translator)--> cache + chains + jump cache
//! ```
//!
//! The translator never depends on the runtime. It owns the ABI between
//! generated code and the runtime ([`abi`]): the CPU state layout, the exit
//! reasons, the helper table and the per-TU fault metadata ([`meta`]).

pub mod abi;
pub mod arena;
pub mod callstack;
mod emit;
mod lower;
pub mod meta;
pub mod poll;
pub mod stats;
pub mod tu;

use hashbrown::HashMap;
use iced_x86::Instruction;

use abi::{CpuState, JUMP_CACHE_ENTRIES, JumpCache, ModeKey};
use arena::{ArenaError, CodeArena};
use callstack::CallStack;
use emit::{Emitter, Stubs, asm};
pub use lower::Instrument;
use meta::FaultMap;
use stats::TranslationStats;
pub use tu::{CodeSource, FetchFault};

/// The code segment code is fetched through: its base, and its limit
/// (the last valid EIP), past which a fetch is #GP(0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CodeSegment {
    pub base: u32,
    pub limit: u32,
}

impl CodeSegment {
    pub const FLAT: CodeSegment = CodeSegment {
        base: 0,
        limit: u32::MAX,
    };
}

/// What identifies a translation (DESIGN.md section 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TuKey {
    /// Guest physical address of the first byte.
    pub phys: u32,
    /// Guest linear EIP.
    pub eip: u32,
    /// The CS limit: a TU stops where fetching would fault.
    pub cs_limit: u32,
    pub mode: ModeKey,
    /// Under paging, for an EIP whose instruction may run into the next
    /// page ([`tu::may_cross_page`]): the guest physical address of that
    /// page ([`TuKey::NO_NEXT`] if it is not mapped); else `NO_NEXT`.
    pub next_page: u32,
}

impl TuKey {
    pub const NO_NEXT: u32 = u32::MAX;

    /// Bytes of a TU of `len` bytes that lie in its first page, and the
    /// rest (in `next_page`).
    fn split(&self, len: u32) -> (u32, u32) {
        if self.next_page == Self::NO_NEXT {
            return (len, 0);
        }
        let room = 0x1000 - (self.phys & 0xFFF);
        (len.min(room), len.saturating_sub(room))
    }
}

#[derive(Debug)]
pub enum TranslateError {
    /// The first instruction cannot be fetched.
    Fetch(FetchFault),
    /// A TU larger than the whole arena (cannot happen with sane sizes).
    ArenaTooSmall,
    /// A bug: the translator built code it cannot encode.
    Internal(String),
}

impl std::fmt::Display for TranslateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TranslateError::Fetch(ff) => write!(f, "cannot fetch guest code at {:#010x}", ff.addr),
            TranslateError::ArenaTooSmall => {
                write!(f, "a translation does not fit in the code arena")
            }
            TranslateError::Internal(m) => write!(f, "translator bug: {m}"),
        }
    }
}

impl std::error::Error for TranslateError {}

/// Counters of the translation cache.
#[derive(Clone, Copy, Debug, Default)]
pub struct CacheCounters {
    pub chains: u64,
    pub flushes: u64,
    /// Pages whose translations were dropped (`Translator::invalidate_page`).
    pub invalidations: u64,
    pub jc_inserts: u64,
}

pub struct Translator {
    arena: CodeArena,
    stubs: Stubs,
    /// Arena bytes taken by the stubs; TUs start after them.
    stubs_len: usize,
    map: HashMap<TuKey, usize>,
    /// The TUs with code in each guest physical page.
    by_page: HashMap<u32, Vec<TuKey>>,
    /// The chain slots patched to jump to each TU (by host address), with
    /// where they jumped before: undone when the TU is invalidated.
    chained_to: HashMap<usize, Vec<(u32, usize)>>,
    /// Decoded instructions, kept alive while code refers to them (helper
    /// calls pass their address).
    insns: Vec<Box<[Instruction]>>,
    fault_map: Box<FaultMap>,
    /// One jump cache per mode (its entries are keyed by EIP alone), and
    /// the one generated code uses now.
    jump_caches: Vec<((ModeKey, CodeSegment), Box<JumpCache>)>,
    /// What the runtime knows of each jump cache's entries.
    jc_books: Vec<JumpCacheBook>,
    current_jc: usize,
    call_stack: CallStack,
    poll: std::sync::Arc<poll::PollPage>,
    /// Instructions (by guest physical address) that call the runtime's
    /// `Emulate` helper instead of running natively: divides that raised
    /// #DE (a guest that divides by zero on purpose pays no host signal
    /// each time) and movs that touch devices (no host fault each time).
    emulated: hashbrown::HashSet<u32>,
    instrument: Instrument,
    /// Bumped by every flush: a chain patch requested before a flush is void.
    generation: u64,
    /// Guest physical ranges (start, length) of the TUs translated since
    /// the last `take_translated`: the runtime write-protects their pages.
    translated: Vec<(u32, u32)>,
    /// Guest physical pages written too often to be write-protected: TUs
    /// from them check their own code at their head (`Helper::CheckCode`)
    /// and end after every instruction that may store.
    self_checking: hashbrown::HashSet<u32>,
    /// The code copies those TUs compare with (kept while code uses them;
    /// boxed because generated code holds their addresses and the vector
    /// may move).
    #[allow(clippy::vec_box)]
    checks: Vec<Box<abi::CodeCheck>>,
    pub stats: TranslationStats,
    pub counters: CacheCounters,
}

pub const DEFAULT_ARENA_SIZE: usize = 64 << 20;

impl Translator {
    pub fn new(arena_size: usize, instrument: Instrument) -> Result<Self, ArenaError> {
        let mut arena = CodeArena::new(arena_size)?;
        let poll =
            poll::PollPage::new(arena.page_below()).map_err(|e| ArenaError::Os("poll page", e))?;
        let stubs = emit_stubs(&mut arena, instrument);
        let call_stack =
            CallStack::new(stubs.sentinel).map_err(|e| ArenaError::Os("return stack", e))?;
        let stubs_len = arena.used();
        let fault_map = Box::new(FaultMap::new(arena.base() as u64));
        let jump_caches = vec![(
            (ModeKey::FLAT32_CPL0, CodeSegment::FLAT),
            new_jump_cache(stubs.miss),
        )];
        Ok(Translator {
            arena,
            stubs,
            stubs_len,
            map: HashMap::new(),
            by_page: HashMap::new(),
            chained_to: HashMap::new(),
            insns: Vec::new(),
            fault_map,
            jump_caches,
            jc_books: vec![JumpCacheBook::default()],
            current_jc: 0,
            call_stack,
            emulated: hashbrown::HashSet::new(),
            poll: std::sync::Arc::new(poll),
            instrument,
            generation: 0,
            translated: Vec::new(),
            self_checking: hashbrown::HashSet::new(),
            checks: Vec::new(),
            stats: TranslationStats::default(),
            counters: CacheCounters::default(),
        })
    }

    /// Points a CPU state at this translator's jump cache, fault map and
    /// exit stub. Call before running guest code with it.
    pub fn attach(&mut self, cpu: &mut CpuState) {
        cpu.jump_cache = &mut *self.jump_caches[self.current_jc].1;
        cpu.fault_map = &*self.fault_map;
        cpu.fault_exit = self.stubs.exit as u64;
        cpu.call_stack_top = self.call_stack.top() as u64;
        cpu.call_stack_guard = self.call_stack.guard() as u64;
        cpu.poll_page = self.poll.addr() as u64;
        cpu.fpu_enter = self.stubs.fpu_load as u64;
    }

    /// The exit-request page generated code polls (shareable with other
    /// threads that need to stop the vCPU).
    pub fn poll(&self) -> &std::sync::Arc<poll::PollPage> {
        &self.poll
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Makes TUs from guest physical page `page` self-checking from now
    /// on (the runtime stops write-protecting it); drops its translations
    /// if it was not already. Returns whether it was new.
    pub fn set_self_checking(&mut self, page: u32) -> bool {
        if !self.self_checking.insert(page) {
            return false;
        }
        self.invalidate_page(page);
        true
    }

    /// Makes TUs from `page` ordinary again (its code stopped changing:
    /// the runtime protects it again); drops its self-checking ones.
    /// Returns whether it was self-checking.
    pub fn clear_self_checking(&mut self, page: u32) -> bool {
        if !self.self_checking.remove(&page) {
            return false;
        }
        self.invalidate_page(page);
        true
    }

    /// The guest physical ranges (start, length) of the TUs translated
    /// since the last call (or the last flush).
    pub fn take_translated(&mut self) -> Vec<(u32, u32)> {
        std::mem::take(&mut self.translated)
    }

    #[inline]
    pub fn lookup(&self, key: &TuKey) -> Option<usize> {
        self.map.get(key).copied()
    }

    /// The host code for `key`, translating it if needed.
    pub fn get(&mut self, key: TuKey, src: &mut dyn CodeSource) -> Result<usize, TranslateError> {
        match self.lookup(&key) {
            Some(host) => Ok(host),
            None => self.translate(key, src),
        }
    }

    fn translate(&mut self, key: TuKey, src: &mut dyn CodeSource) -> Result<usize, TranslateError> {
        let t0 = stats::cycles();
        let mut formed = tu::form(src, key.eip, key.mode).map_err(TranslateError::Fetch)?;
        let page = |a: u32| a >> 12;
        let last = match key.split(formed.len) {
            (_, 0) => key.phys.wrapping_add(formed.len.max(1) - 1),
            _ => key.next_page,
        };
        let checked = self.self_checking.contains(&page(key.phys))
            || self.self_checking.contains(&page(last));
        if checked {
            // A store may change the code that follows it: end the TU there,
            // so the next TU's head checks it.
            if let Some(i) = formed.insns.iter().position(may_store) {
                formed.insns.truncate(i + 1);
                formed.next_eip = formed.insns[i].next_ip32();
                formed.len = formed.next_eip.wrapping_sub(key.eip);
            }
        }
        let insns: Box<[Instruction]> = formed.insns.into_boxed_slice();
        let (first, rest) = key.split(formed.len);
        let mut check = checked.then(|| {
            let mut bytes = vec![0u8; formed.len as usize];
            let n = src.read_code(key.eip, &mut bytes);
            bytes.truncate(n);
            Box::new(abi::CodeCheck {
                phys: key.phys,
                eip: key.eip,
                bytes: bytes.into_boxed_slice(),
                split: first,
                next_phys: key.next_page,
                live: Vec::new(),
                passes: Default::default(),
            })
        });
        let check_ptr = check.as_ref().map(|c| &**c as *const abi::CodeCheck);
        for attempt in 0..2 {
            let base = self.arena.next_addr();
            let arena_off = (base - self.arena.base()) as u32;
            let e = Emitter::new(base, self.stubs);
            let builder = lower::TuBuilder::new(
                e,
                arena_off,
                key.eip,
                key.mode,
                self.instrument,
                self.poll.addr(),
                key.phys,
                &self.emulated,
                &insns,
                check_ptr,
            );
            let lowered = builder
                .build(formed.next_eip)
                .map_err(|e| TranslateError::Internal(e.0))?;
            let Some(off) = self.arena.put(&lowered.code) else {
                if attempt == 0 {
                    self.flush();
                    continue;
                }
                return Err(TranslateError::ArenaTooSmall);
            };
            debug_assert_eq!(off, arena_off);
            self.fault_map
                .push_tu(off, off + lowered.code.len() as u32, &lowered.sites);
            let cycles = stats::cycles().wrapping_sub(t0);
            self.stats.record(
                key.mode,
                formed.len,
                insns.len() as u32,
                lowered.code.len() as u32,
                cycles,
            );
            self.insns.push(insns);
            self.map.insert(key, base);
            if let Some(c) = check.as_mut() {
                c.live = lowered.live;
            }
            self.translated.push((key.phys, first));
            let mut pages = vec![
                page(key.phys),
                page(key.phys.wrapping_add(first.max(1) - 1)),
            ];
            if rest != 0 {
                self.translated.push((key.next_page, rest));
                pages.push(page(key.next_page));
            }
            pages.dedup();
            for p in pages {
                self.by_page.entry(p).or_default().push(key);
            }
            if let Some(c) = check {
                self.checks.push(c);
            }
            if log::log_enabled!(target: "bt86::jit", log::Level::Trace) {
                log::trace!(target: "bt86::jit", "TU {:#010x} -> {:#x} (arena +{:#x}):\n{}", key.eip, base, arena_off, disassemble(&lowered.code, base));
            }
            return Ok(base);
        }
        Err(TranslateError::ArenaTooSmall)
    }

    /// Patches the chain slot `exit_arg` names (`CpuState::exit_arg` of an
    /// `ExitReason::Branch`) to jump straight to `target` (a TU's host
    /// address; past its poll for a forward branch), if no flush happened
    /// since `generation` was read.
    pub fn chain(&mut self, generation: u64, exit_arg: u32, target: usize) {
        let patch_at = exit_arg & !abi::CHAIN_PAST_POLL;
        if generation != self.generation || patch_at as usize >= self.arena.used() {
            return;
        }
        let entry = if exit_arg & abi::CHAIN_PAST_POLL != 0 {
            target + poll::POLL_LEN
        } else {
            target
        };
        let before = self.arena.rel32_target(patch_at);
        self.arena.patch_rel32(patch_at, entry);
        self.chained_to
            .entry(target)
            .or_default()
            .push((patch_at, before));
        self.counters.chains += 1;
    }

    /// Drops the translations with code in guest physical page `page`
    /// (it was written): later lookups translate again, chains into them
    /// go back to their exits and the jump caches are emptied. Their code
    /// stays in the arena, unreachable, until the next flush. Returns
    /// whether there were any.
    pub fn invalidate_page(&mut self, page: u32) -> bool {
        let Some(keys) = self.by_page.remove(&page) else {
            return false;
        };
        for key in keys {
            let Some(host) = self.map.remove(&key) else {
                continue;
            };
            for (site, before) in self.chained_to.remove(&host).unwrap_or_default() {
                self.arena.patch_rel32(site, before);
            }
        }
        self.clear_jump_caches();
        self.counters.invalidations += 1;
        true
    }

    /// Remembers guest `eip` -> `host` for inline indirect-branch probes,
    /// in the cache of the current mode and code segment. `global`: the
    /// code's page is mapped global (or paging is off), so the entry
    /// survives a CR3 write (see [`Translator::clear_local_jump_caches`]).
    pub fn jump_cache_insert(&mut self, eip: u32, host: usize, global: bool) {
        let i = eip as usize & (JUMP_CACHE_ENTRIES - 1);
        let jc = &mut self.jump_caches[self.current_jc].1;
        let book = &mut self.jc_books[self.current_jc];
        book.local |= !global;
        if jc.targets[i] == self.stubs.miss as u64 {
            book.filled.push(i as u16);
        }
        jc.keys[i] = eip;
        jc.targets[i] = host as u64;
        self.counters.jc_inserts += 1;
    }

    /// Points `cpu` (and the inserts that follow) at the jump cache of
    /// `mode` with code segment `cs` (its entries are keyed by EIP),
    /// creating it the first time: switching modes (a system call, an
    /// interrupt from user code) keeps every mode's entries.
    pub fn select_jump_cache(&mut self, cpu: &mut CpuState, mode: ModeKey, cs: CodeSegment) {
        let key = (mode, cs);
        let i = match self.jump_caches.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                self.jump_caches
                    .push((key, new_jump_cache(self.stubs.miss)));
                self.jc_books.push(JumpCacheBook::default());
                self.jump_caches.len() - 1
            }
        };
        self.current_jc = i;
        cpu.jump_cache = &mut *self.jump_caches[i].1;
    }

    /// Empties every jump cache (their entries are keyed by linear EIP:
    /// the runtime calls this when guest mappings change).
    pub fn clear_jump_caches(&mut self) {
        for i in 0..self.jump_caches.len() {
            self.clear_jump_cache(i);
        }
    }

    /// Empties the jump caches that hold code of non-global pages: a CR3
    /// write keeps the guest's global TLB entries, and so the entries of
    /// caches that only hold code from them (a kernel's).
    pub fn clear_local_jump_caches(&mut self) {
        for i in 0..self.jump_caches.len() {
            if self.jc_books[i].local {
                self.clear_jump_cache(i);
            }
        }
    }

    /// Drops the jump-cache entries of code in the 4 MiB of linear
    /// addresses around `lin` (INVLPG of `lin`: its page may have been part
    /// of a large one), and of TUs that may run into them.
    pub fn forget_jump_region(&mut self, lin: u32) {
        let miss = self.stubs.miss as u64;
        let region = lin >> 22;
        let touches = |start: u32| {
            start >> 22 == region
                || (tu::may_cross_page(start) && (start | 0xFFF).wrapping_add(1) >> 22 == region)
        };
        for (((_, cs), jc), book) in self.jump_caches.iter_mut().zip(&mut self.jc_books) {
            book.filled.retain(|&i| {
                let i = i as usize;
                let stale = jc.targets[i] != miss && touches(cs.base.wrapping_add(jc.keys[i]));
                if stale {
                    jc.keys[i] = 0;
                    jc.targets[i] = miss;
                }
                !stale
            });
        }
    }

    fn clear_jump_cache(&mut self, i: usize) {
        let miss = self.stubs.miss;
        let (jc, book) = (&mut self.jump_caches[i].1, &mut self.jc_books[i]);
        if book.filled.len() < JUMP_CACHE_ENTRIES / 8 {
            for &i in &book.filled {
                jc.keys[i as usize] = 0;
                jc.targets[i as usize] = miss as u64;
            }
        } else {
            reset_jump_cache(jc, miss);
        }
        *book = JumpCacheBook::default();
    }

    /// Drops every translation and chain.
    /// Has the instruction at guest physical `addr` call the runtime from
    /// now on (its page's translations are dropped). Returns false if it
    /// already did.
    pub fn emulate_insn(&mut self, addr: u32) -> bool {
        if !self.emulated.insert(addr) {
            return false;
        }
        self.invalidate_page(addr >> 12);
        true
    }

    pub fn flush(&mut self) {
        // The stubs stay: they do not depend on any translation.
        self.arena.truncate(self.stubs_len);
        self.map.clear();
        self.by_page.clear();
        self.chained_to.clear();
        self.insns.clear();
        self.fault_map.clear();
        self.clear_jump_caches();
        self.generation += 1;
        self.translated.clear();
        self.checks.clear();
        self.counters.flushes += 1;
        log::debug!(target: "bt86::jit", "translation cache flushed");
    }

    /// Runs guest code from host address `host` until it exits.
    ///
    /// # Safety
    /// `cpu` must be attached to this translator ([`Translator::attach`]),
    /// valid and not otherwise borrowed for the duration; its helper table
    /// must hold valid helpers; the GS base must point at the guest's
    /// address space; and the fault handler must be installed.
    pub unsafe fn run(&self, cpu: *mut CpuState, host: usize) {
        // SAFETY: the enter stub was emitted by `emit_stubs` with exactly
        // this signature; the caller upholds the rest.
        let enter: unsafe extern "sysv64" fn(*mut CpuState, u64) =
            unsafe { std::mem::transmute(self.stubs.enter) };
        // SAFETY: see above.
        unsafe { enter(cpu, host as u64) };
    }

    pub fn code_bytes(&self) -> usize {
        self.arena.used()
    }
}

fn new_jump_cache(miss: usize) -> Box<JumpCache> {
    let mut jc = Box::new(JumpCache {
        keys: [0; JUMP_CACHE_ENTRIES],
        targets: [0; JUMP_CACHE_ENTRIES],
    });
    reset_jump_cache(&mut jc, miss);
    jc
}

/// What the translator keeps on one jump cache.
#[derive(Debug, Default)]
struct JumpCacheBook {
    /// The entries filled since it was last cleared (while few, clearing
    /// resets just those).
    filled: Vec<u16>,
    /// Some entry is code of a page not mapped global.
    local: bool,
}

fn reset_jump_cache(jc: &mut JumpCache, miss: usize) {
    jc.keys.fill(0);
    jc.targets.fill(miss as u64);
}

/// Emits the shared stubs at the start of the arena.
/// Whether `insn` may write memory (conservatively: any memory operand,
/// and the instructions that store implicitly).
fn may_store(insn: &Instruction) -> bool {
    (0..insn.op_count()).any(|i| {
        matches!(
            insn.op_kind(i),
            iced_x86::OpKind::Memory
                | iced_x86::OpKind::MemoryESDI
                | iced_x86::OpKind::MemoryESEDI
                | iced_x86::OpKind::MemoryESRDI
        )
    }) || insn.stack_pointer_increment() < 0
}

/// `fxsave64`/`fxrstor64` of the CPU-state area at `at`.
fn fx(e: &mut Emitter, code: iced_x86::Code, at: i32) {
    let m = iced_x86::MemoryOperand::with_base_displ(iced_x86::Register::R14, at as i64);
    e.put(iced_x86::Instruction::with1(code, m).expect("fx"));
}

/// On the way out to Rust (registers and flags saved, r11 free): if the guest's
/// FPU state is in, save it and give the runtime its own back, so that no
/// guest control word or MXCSR ever reaches Rust code.
fn fpu_swap_out(
    e: &mut Emitter,
    fpu_ret: dynasmrt::DynamicLabel,
    fpu_load: dynasmrt::DynamicLabel,
) {
    use abi::off;
    asm!(e
        ; lea r11, [=>fpu_ret]
        ; cmp QWORD [cpu + off::FPU_ENTER], r11
        ; jne >out
    );
    fx(e, iced_x86::Code::Fxsave64_m512byte, off::GUEST_FPU);
    fx(e, iced_x86::Code::Fxrstor64_m512byte, off::HOST_FPU);
    asm!(e
        ; lea r11, [=>fpu_load]
        ; mov QWORD [cpu + off::FPU_ENTER], r11
        ; out:
    );
}

fn emit_stubs(arena: &mut CodeArena, instrument: Instrument) -> Stubs {
    use abi::{ExitReason, flags, off};
    let base = arena.next_addr();
    let mut e = Emitter::new(base, Stubs::default());
    let exit = e.label();
    let exit_saved = e.label();
    let helper = e.label();
    let fpu_load = e.label();
    let fpu_ret = e.label();

    macro_rules! save_regs {
        () => {
            asm!(e
                ; mov DWORD [cpu + off::reg(0)], eax
                ; mov DWORD [cpu + off::reg(1)], ecx
                ; mov DWORD [cpu + off::reg(2)], edx
                ; mov DWORD [cpu + off::reg(3)], ebx
                ; mov DWORD [cpu + off::reg(4)], r12d
                ; mov DWORD [cpu + off::reg(5)], ebp
                ; mov DWORD [cpu + off::reg(6)], esi
                ; mov DWORD [cpu + off::reg(7)], edi
            )
        };
    }
    // Loads the flags first (with eax as scratch), then the registers.
    macro_rules! load_state {
        () => {
            asm!(e
                ; mov eax, DWORD [cpu + off::ARITH_FLAGS]
                ; and eax, flags::HOST_LIVE as i32
                ; or eax, 0x202
                ; push rax
                ; popfq
                ; mov eax, DWORD [cpu + off::reg(0)]
                ; mov ecx, DWORD [cpu + off::reg(1)]
                ; mov edx, DWORD [cpu + off::reg(2)]
                ; mov ebx, DWORD [cpu + off::reg(3)]
                ; mov r12d, DWORD [cpu + off::reg(4)]
                ; mov ebp, DWORD [cpu + off::reg(5)]
                ; mov esi, DWORD [cpu + off::reg(6)]
                ; mov edi, DWORD [cpu + off::reg(7)]
            )
        };
    }

    // enter(cpu: rdi, target: rsi): generated code runs on the return
    // stack (see `callstack`), starting at its sentinel slot.
    let enter_off = e.offset();
    asm!(e
        ; push rbx
        ; push rbp
        ; push r12
        ; push r13
        ; push r14
        ; push r15
        ; mov QWORD [rdi + off::HOST_RSP], rsp
        ; mov r14, rdi
        ; mov r15, QWORD [r14 + off::JUMP_CACHE]
        ; mov r11, rsi
        ; mov rsp, QWORD [r14 + off::CALL_STACK_TOP]
    );
    load_state!();
    asm!(e; jmp r11);

    // exit: guest state in registers -> CPU state, back to the run loop.
    e.bind(exit);
    save_regs!();
    asm!(e
        ; pushfq
        ; pop r11
        ; mov DWORD [cpu + off::ARITH_FLAGS], r11d
    );
    e.bind(exit_saved);
    fpu_swap_out(&mut e, fpu_ret, fpu_load);
    asm!(e
        ; cld
        ; mov rsp, QWORD [cpu + off::HOST_RSP]
        ; pop r15
        ; pop r14
        ; pop r13
        ; pop r12
        ; pop rbp
        ; pop rbx
        ; ret
    );

    // helper: r11 = helper index, r10 = instruction, r13 = where to go on.
    // The helper runs on the run loop's host stack (16-byte aligned below
    // HOST_RSP), not on the return stack.
    e.bind(helper);
    save_regs!();
    asm!(e
        ; pushfq
        ; pop rax
        ; mov DWORD [cpu + off::ARITH_FLAGS], eax
    );
    // Helpers are Rust: the guest's FPU state goes out first (the helper
    // index moves to rdx, which the swap leaves alone).
    asm!(e; mov rdx, r11);
    fpu_swap_out(&mut e, fpu_ret, fpu_load);
    asm!(e
        ; cld
        ; mov QWORD [cpu + off::GEN_RSP], rsp
        ; mov rsp, QWORD [cpu + off::HOST_RSP]
        ; lea rsp, [rsp - 8]
        ; mov rdi, r14
        ; mov rsi, r10
        ; call QWORD [cpu + rdx * 8 + off::HELPERS]
        ; mov rsp, QWORD [cpu + off::GEN_RSP]
        ; test eax, eax
        ; jnz =>exit_saved
    );
    load_state!();
    asm!(e; jmp r13);

    // miss: an indirect branch to guest r11d not in the jump cache.
    let miss_off = e.offset();
    asm!(e
        ; mov DWORD [cpu + off::EIP], r11d
        ; mov DWORD [cpu + off::EXIT_REASON], ExitReason::IndirectMiss as i32
        ; jmp =>exit
    );
    e.stubs.miss = base + miss_off;

    // probe: the shared jump-cache probe for returns that missed their
    // landing pad.
    let probe_off = e.offset();
    emit::jump_cache_probe(&mut e, instrument.stats);
    e.stubs.probe = base + probe_off;

    // sentinel: a return on an empty return stack popped the sentinel slot;
    // put it back and probe.
    let sentinel_off = e.offset();
    asm!(e
        ; lea rsp, [rsp - 8]
        ; jmp extern (base + probe_off)
    );

    // fpu_load: called (on the return stack, flags live, r11 free) before
    // an FPU instruction while the guest's FPU state is out: keep the
    // runtime's, load the guest's, and make later calls plain returns.
    e.bind(fpu_load);
    fx(&mut e, iced_x86::Code::Fxsave64_m512byte, off::HOST_FPU);
    fx(&mut e, iced_x86::Code::Fxrstor64_m512byte, off::GUEST_FPU);
    asm!(e
        ; lea r11, [=>fpu_ret]
        ; mov QWORD [cpu + off::FPU_ENTER], r11
    );
    e.bind(fpu_ret);
    asm!(e; ret);

    let addr = |e: &Emitter, l| base + e.ops.labels().resolve_dynamic(l).expect("stub label").0;
    let stubs = Stubs {
        enter: base + enter_off,
        exit: addr(&e, exit),
        helper: addr(&e, helper),
        miss: base + miss_off,
        probe: base + probe_off,
        sentinel: base + sentinel_off,
        fpu_load: addr(&e, fpu_load),
    };
    let code = e.ops.finalize().expect("stubs assemble");
    arena.put(&code).expect("the arena holds the stubs");
    stubs
}

/// Host code as Intel-syntax text, for traces and golden tests.
pub fn disassemble(code: &[u8], addr: usize) -> String {
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
    let mut out = String::new();
    let mut f = IntelFormatter::new();
    let mut d = Decoder::with_ip(64, code, addr as u64, DecoderOptions::NONE);
    for insn in d.iter() {
        out.push_str(&format!("  {:6x}  ", insn.ip() as usize - addr));
        f.format(&insn, &mut out);
        out.push('\n');
    }
    out
}
