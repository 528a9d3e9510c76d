//! The CPU outside generated code: what the runtime keeps beside the
//! translator's [`CpuState`], and the emulation of the instructions the
//! host cannot run for the guest.

mod bcd;
pub mod cpuid;
mod descriptor;
pub mod device;
pub mod emulate;
mod fpu;
pub mod interrupts;
mod operand;
mod string;
mod task;
mod transfer;

use translator::abi::{CpuState, ModeKey};

use crate::devices::PortBus;
use crate::memory::GuestMemory;
use crate::paging::PagingRegs;

pub use cpuid::SIGNATURE as CPUID_SIGNATURE;
pub use emulate::{check_code_helper, emulate_helper};

/// A guest exception raised by emulated code: vector, error code, and the
/// faulting address for #PF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception {
    pub vector: u32,
    pub error: u32,
    pub addr: u32,
}

impl Exception {
    pub fn new(vector: u32) -> Self {
        Exception {
            vector,
            error: 0,
            addr: 0,
        }
    }

    pub fn with_error(vector: u32, error: u32) -> Self {
        Exception {
            vector,
            error,
            addr: 0,
        }
    }
}

impl From<crate::memory::MemFault> for Exception {
    fn from(f: crate::memory::MemFault) -> Self {
        Exception {
            vector: crate::memory::MemFault::VECTOR,
            error: f.error,
            addr: f.addr,
        }
    }
}

/// Why an emulated instruction or an event delivery did not complete: a
/// guest exception.
pub(crate) enum Fail {
    Exc(Exception),
    /// An exception after a task switch committed: it belongs to the new
    /// task, at its first instruction (`CpuState::eip`).
    Task(Exception),
}

impl From<Exception> for Fail {
    fn from(e: Exception) -> Self {
        Fail::Exc(e)
    }
}

impl From<crate::memory::MemFault> for Fail {
    fn from(f: crate::memory::MemFault) -> Self {
        Fail::Exc(f.into())
    }
}

/// Why a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// `hlt` with nothing that could wake the CPU.
    Halted { eip: u32 },
    /// The guest wrote to isa-debug-exit.
    DebugExit(i32),
    /// A guest exception with nowhere to go (no IDT yet).
    Unhandled {
        exc: Exception,
        eip: u32,
        soft: bool,
    },
    /// The guest used something bt86 does not implement yet.
    Unsupported { eip: u32, what: String },
    /// An exception while delivering a double fault.
    TripleFault { eip: u32 },
    /// The guest reset the machine (port 0x92) with `--no-reboot`.
    Reset,
    /// The run budget ran out.
    Budget,
    /// Stopped by the host (`ExitHandle::stop`).
    Stopped,
    /// A bug in bt86, reported instead of crashing.
    Internal(String),
}

/// Execution counters kept by the runtime (the generated code keeps its
/// own in the CPU state).
#[derive(Clone, Debug, Default)]
pub struct ExecCounters {
    pub helper_calls: [u64; HelperKind::ALL.len()],
    /// The `System` helper calls by mnemonic (what a guest's hot path
    /// leaves to the runtime), indexed by `Mnemonic as usize`.
    pub system_insns: Vec<u64>,
    pub exits: [u64; ExitKind::ALL.len()],
    pub exceptions: u64,
    /// External interrupts the CPU took.
    pub interrupts: u64,
    /// Times the run loop entered generated code (each at a TU head).
    pub entries: u64,
    pub port_reads: u64,
    pub port_writes: u64,
    /// Translations dropped because guest or runtime wrote to their code.
    pub smc_invalidations: u64,
    /// Generated code touched a page its shadow space did not map (or
    /// mapped read-only until the dirty bit was set) and the guest's page
    /// tables allowed it: mapped, and the instruction ran again.
    pub hidden_faults: u64,
    /// #PF delivered to the guest.
    pub true_faults: u64,
    /// Instructions run against MMIO devices or ROM after a host fault.
    pub mmio_emulations: u64,
}

/// What the `Emulate` helper was called for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HelperKind {
    Io,
    Cpuid,
    Rdtsc,
    Bcd,
    String,
    Divide,
    /// A mov known to reach a device (MMIO).
    Device,
    System,
}

impl HelperKind {
    pub const ALL: [HelperKind; 8] = [
        HelperKind::Io,
        HelperKind::Cpuid,
        HelperKind::Rdtsc,
        HelperKind::Bcd,
        HelperKind::String,
        HelperKind::Divide,
        HelperKind::Device,
        HelperKind::System,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HelperKind::Io => "io",
            HelperKind::Cpuid => "cpuid",
            HelperKind::Rdtsc => "rdtsc",
            HelperKind::Bcd => "bcd",
            HelperKind::String => "string",
            HelperKind::Divide => "divide",
            HelperKind::Device => "device",
            HelperKind::System => "system",
        }
    }
}

/// Why the run loop got control back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    Branch,
    IndirectMiss,
    Request,
    Exception,
    Helper,
    Reset,
}

impl ExitKind {
    pub const ALL: [ExitKind; 6] = [
        ExitKind::Branch,
        ExitKind::IndirectMiss,
        ExitKind::Request,
        ExitKind::Exception,
        ExitKind::Helper,
        ExitKind::Reset,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ExitKind::Branch => "branch",
            ExitKind::IndirectMiss => "indirect_miss",
            ExitKind::Request => "request",
            ExitKind::Exception => "exception",
            ExitKind::Helper => "helper",
            ExitKind::Reset => "reset",
        }
    }
}

impl ExecCounters {
    pub fn helper(&mut self, kind: HelperKind, insn: &iced_x86::Instruction) {
        self.helper_calls[kind as usize] += 1;
        if kind == HelperKind::System {
            let m = insn.mnemonic() as usize;
            if m >= self.system_insns.len() {
                self.system_insns.resize(m + 1, 0);
            }
            self.system_insns[m] += 1;
        }
    }

    pub fn exit(&mut self, kind: ExitKind) {
        self.exits[kind as usize] += 1;
    }
}

/// A descriptor-table register (GDTR, IDTR).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableReg {
    pub base: u32,
    pub limit: u16,
}

/// Everything the runtime's side of the CPU and the helpers reach: the
/// helpers find it through `CpuState::ctx`. It never contains the
/// `CpuState` itself, so a helper can hold both mutably.
pub struct System {
    pub mem: GuestMemory,
    pub bus: PortBus,
    pub mmio: crate::devices::mmio::MmioBus,
    /// Where external interrupts come from, if anything raises them.
    pub irq: Option<Box<dyn crate::devices::InterruptController>>,
    /// The local APIC (its base MSR, and CPUID's APIC bit).
    pub apic: Option<crate::devices::apic::LocalApicHandle>,
    /// The CPU executed hlt with interrupts on and waits for one.
    pub halted: bool,
    pub stop: Option<Stop>,
    pub counters: ExecCounters,
    pub gdtr: TableReg,
    pub idtr: TableReg,
    /// The task register: selector and the cached TSS base and limit.
    pub tr: u16,
    pub tss_base: u32,
    pub tss_limit: u32,
    /// The TSS is a 32-bit one (else a 286 TSS).
    pub tss32: bool,
    /// The LDT register: selector and the cached table base and limit.
    pub ldtr: u16,
    pub ldt_base: u32,
    pub ldt_limit: u32,
    pub dr: [u32; 8],
    /// Virtual time, which the TSC counts at `cpuid::TSC_HZ` (the timer
    /// devices read the same clock).
    pub clock: crate::devices::clock::Clock,
    /// The guest TSC is the clock's count minus this (a WRMSR to the TSC
    /// sets it).
    pub tsc_offset: u64,
    pub sysenter_cs: u32,
    pub sysenter_esp: u32,
    pub sysenter_eip: u32,
    /// IA32_EFER.NXE.
    pub nxe: bool,
    /// IA32_MISC_ENABLE (fast strings on at reset).
    pub misc_enable: u64,
    /// The A20 gates of the keyboard controller and of port 0x92 (the
    /// line is open while either is): open and closed after a BIOS.
    pub a20_gates: (bool, bool),
}

impl System {
    pub fn new(mem: GuestMemory, bus: PortBus, clock: crate::devices::clock::Clock) -> Self {
        System {
            mem,
            bus,
            mmio: Default::default(),
            irq: None,
            apic: None,
            halted: false,
            stop: None,
            counters: ExecCounters::default(),
            gdtr: TableReg::default(),
            idtr: TableReg::default(),
            tr: 0,
            tss_base: 0,
            tss_limit: 0,
            tss32: true,
            ldtr: 0,
            ldt_base: 0,
            ldt_limit: 0,
            dr: [0, 0, 0, 0, 0xFFFF_0FF0, 0x400, 0xFFFF_0FF0, 0x400],
            clock,
            tsc_offset: 0,
            sysenter_cs: 0,
            sysenter_esp: 0,
            sysenter_eip: 0,
            nxe: false,
            misc_enable: 1,
            a20_gates: (true, false),
        }
    }

    /// The TSC as the guest reads it: the virtual clock at a fixed rate,
    /// which CPUID leaves 0x15/0x16 report, so the guest needs no
    /// calibration (one against the PIT would be at the mercy of host
    /// scheduling) and its TSC agrees with every timer device.
    pub fn guest_tsc(&self) -> u64 {
        self.clock_tsc().wrapping_sub(self.tsc_offset)
    }

    fn clock_tsc(&self) -> u64 {
        crate::devices::clock::ticks(self.clock.now(), cpuid::TSC_HZ)
    }

    /// A WRMSR to the TSC.
    pub fn set_guest_tsc(&mut self, v: u64) {
        self.tsc_offset = self.clock_tsc().wrapping_sub(v);
    }
}

/// Control and debug register bits the runtime looks at (Intel SDM Vol.
/// 3A, 2.5 and 17.2).
pub mod cr {
    pub const CR0_PE: u32 = 1 << 0;
    pub const CR0_MP: u32 = 1 << 1;
    pub const CR0_EM: u32 = 1 << 2;
    pub const CR0_TS: u32 = 1 << 3;
    pub const CR0_ET: u32 = 1 << 4;
    pub const CR0_NE: u32 = 1 << 5;
    pub const CR0_WP: u32 = 1 << 16;
    pub const CR0_NW: u32 = 1 << 29;
    pub const CR0_CD: u32 = 1 << 30;
    pub const CR0_PG: u32 = 1 << 31;
    pub const CR4_TSD: u32 = 1 << 2;
    pub const CR4_PSE: u32 = 1 << 4;
    pub const CR4_PAE: u32 = 1 << 5;
    pub const CR4_MCE: u32 = 1 << 6;
    pub const CR4_PGE: u32 = 1 << 7;
    pub const CR4_OSFXSR: u32 = 1 << 9;
    pub const CR4_OSXMMEXCPT: u32 = 1 << 10;
    /// DR6: single-step, task-switch trap.
    pub const DR6_BS: u32 = 1 << 14;
    pub const DR6_BT: u32 = 1 << 15;
}

/// The registers guest paging depends on.
#[inline]
pub fn paging_regs(cpu: &CpuState, sys: &System) -> PagingRegs {
    PagingRegs {
        cr0: cpu.cr0,
        cr3: cpu.cr3,
        cr4: cpu.cr4,
        nxe: sys.nxe,
    }
}

/// Which guest TLB entries an instruction drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlbFlush {
    None,
    /// A CR3 write: all but global pages.
    NonGlobal,
}

/// After CR0, CR3, CR4 or EFER changed (or may have): gives the runtime's
/// accesses the new paging registers and drops the shadow mappings the
/// change invalidates: every one when the paging mode changed, the
/// non-global ones for a CR3 write.
#[inline]
pub fn sync_paging(cpu: &CpuState, sys: &mut System, flush: TlbFlush) {
    let old = sys.mem.paging();
    let new = paging_regs(cpu, sys);
    sys.mem.set_context(new, cpl(cpu) == 3);
    let done = if old.layout() != new.layout() {
        sys.mem.paging_changed()
    } else if flush == TlbFlush::NonGlobal && new.enabled() {
        sys.mem.cr3_written(old.cr3 == new.cr3)
    } else {
        Ok(())
    };
    if let Err(e) = done {
        // Paging cannot run: the run ends before guest code does.
        sys.stop = Some(Stop::Internal(e.to_string()));
    }
}

/// The mode generated code is translated for (`ModeKey`): protected or
/// real mode, 32- or 16-bit code and stack, the segments' flatness and
/// limit classes, v8086, the FPU bits of CR0/CR4, the CPL, and whether
/// TUs hold one instruction (single-step, interrupt shadow). An emulated
/// instruction that changes it leaves its TU.
pub fn mode_key(cpu: &CpuState, one_insn: bool) -> ModeKey {
    let bit = |on: bool, b: u32| if on { b } else { 0 };
    ModeKey(
        bit(cpu.cr0 & cr::CR0_PE != 0, ModeKey::PE)
            | bit(cpu.cr0 & cr::CR0_PG != 0, ModeKey::PG)
            | bit(cpu.seg_db[SREG_CS], ModeKey::CODE32)
            | bit(cpu.seg_db[SREG_SS], ModeKey::STACK32)
            | cpu.segment_mode()
            | bit(v86(cpu), ModeKey::VM86)
            | bit(cpu.cr0 & cr::CR0_TS != 0, ModeKey::FPU_TS)
            | bit(cpu.cr0 & cr::CR0_EM != 0, ModeKey::FPU_EM)
            | bit(cpu.cr0 & cr::CR0_MP != 0, ModeKey::FPU_MP)
            | bit(cpu.cr4 & cr::CR4_OSFXSR != 0, ModeKey::OSFXSR)
            | bit(one_insn, ModeKey::ONE_INSN)
            | (cpl(cpu) << ModeKey::CPL_SHIFT),
    )
}

/// The current privilege level: 0 in real mode, else the RPL CS was
/// loaded with (right after CR0.PE is set that is still 0, whatever the
/// real-mode CS value). v8086 code runs at CPL 3.
pub fn cpl(cpu: &CpuState) -> u32 {
    if cpu.cr0 & cr::CR0_PE == 0 {
        0
    } else if v86(cpu) {
        3
    } else {
        cpu.cpl
    }
}

/// Virtual-8086 mode: protected mode with EFLAGS.VM set.
pub fn v86(cpu: &CpuState) -> bool {
    cpu.cr0 & cr::CR0_PE != 0 && cpu.sys_flags & translator::abi::flags::VM != 0
}

/// Segments work as in real mode (base = selector * 16): real and v8086
/// mode.
pub fn real_addressing(cpu: &CpuState) -> bool {
    cpu.cr0 & cr::CR0_PE == 0 || cpu.sys_flags & translator::abi::flags::VM != 0
}

pub const SREG_ES: usize = 0;
pub const SREG_CS: usize = 1;
pub const SREG_SS: usize = 2;
pub const SREG_DS: usize = 3;
pub const SREG_FS: usize = 4;
pub const SREG_GS: usize = 5;
