//! The machine: guest RAM, the port bus with its devices, one vCPU, the
//! translator, and the run loop that ties them together.

use std::io::Write;

use translator::abi::{
    CpuState, ExitReason, Helper, ModeKey, SHADOW_FAULT, exc_kind, flags, vector,
};
use translator::{CodeSegment, CodeSource, Instrument, TranslateError, Translator, TuKey};

use crate::cpu::{Exception, Stop, System, emulate_helper};
use crate::devices::clock::Clock;
use crate::devices::rtc::StartTime;
use crate::devices::{PortBus, debugcon};
use crate::loader::{self, BootState, LoadError};
use crate::memory::{Filled, GuestMemory, MemFault, MemoryError, PAGE_SIZE};
use crate::paging::AccessKind;
use crate::pc::{PcConfig, Platform};
use crate::signals;

/// Where a character device's output goes.
pub enum OutputSink {
    Stdout,
    Writer(Box<dyn Write + Send>),
    None,
}

pub struct MachineConfig {
    pub ram_size: usize,
    pub debugcon: OutputSink,
    pub debugcon_port: u16,
    /// COM1, a 16550A at 0x3F8.
    pub serial: OutputSink,
    /// COM2, COM3, COM4 in order (missing ones write nowhere).
    pub extra_serial: Vec<OutputSink>,
    /// Host input goes to COM1 ([`Machine::serial_input`]), so its
    /// interrupt may come while the guest waits in hlt.
    pub serial_input: bool,
    /// The RTC's time at power-on.
    pub rtc_start: StartTime,
    /// A triple fault ends the run instead of resetting the machine.
    pub no_reboot: bool,
    /// Attach the PC's devices (`pc::Platform`); without them every port
    /// is unclaimed (conformance tests expect that).
    pub devices: bool,
    /// Count TUs executed and jump-cache hits (costs a little at run time).
    pub stats: bool,
    /// Stop after this many TU executions (for tests and fuzzing).
    pub tu_budget: Option<u64>,
    pub arena_size: usize,
    /// Most guest pages mapped in the paging shadow spaces at once (each
    /// can cost the process one kernel mapping); past it they are dropped
    /// and refilled.
    pub shadow_pages: usize,
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            ram_size: 128 << 20,
            debugcon: OutputSink::Stdout,
            debugcon_port: debugcon::DEFAULT_PORT,
            serial: OutputSink::Stdout,
            extra_serial: Vec::new(),
            serial_input: false,
            rtc_start: StartTime::Host,
            devices: true,
            no_reboot: false,
            stats: false,
            tu_budget: None,
            arena_size: translator::DEFAULT_ARENA_SIZE,
            shadow_pages: crate::shadow::DEFAULT_BUDGET,
        }
    }
}

#[derive(Debug)]
pub enum MachineError {
    Memory(MemoryError),
    Arena(translator::arena::ArenaError),
    Load(LoadError),
}

impl std::fmt::Display for MachineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MachineError::Memory(e) => e.fmt(f),
            MachineError::Arena(e) => e.fmt(f),
            MachineError::Load(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for MachineError {}

impl From<LoadError> for MachineError {
    fn from(e: LoadError) -> Self {
        MachineError::Load(e)
    }
}

/// How a run ended, with the process exit status it maps to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOutcome {
    pub stop: Stop,
}

/// Exit statuses of the `bt86` command for runs that did not end through
/// isa-debug-exit (whose statuses are always odd).
pub mod status {
    pub const OK: i32 = 0;
    pub const GUEST_CRASH: i32 = 2;
    pub const UNSUPPORTED: i32 = 4;
    pub const INTERNAL: i32 = 6;
}

impl RunOutcome {
    pub fn exit_status(&self) -> i32 {
        match &self.stop {
            Stop::Halted { .. } => status::OK,
            Stop::DebugExit(s) => *s,
            Stop::Unhandled { .. } | Stop::TripleFault { .. } => status::GUEST_CRASH,
            Stop::Reset => status::OK,
            Stop::Unsupported { .. } => status::UNSUPPORTED,
            Stop::Budget | Stop::Stopped => status::OK,
            Stop::Internal(_) => status::INTERNAL,
        }
    }

    /// A sentence for the user, or None for a normal end.
    pub fn message(&self) -> Option<String> {
        match &self.stop {
            Stop::Halted { .. } | Stop::DebugExit(_) => None,
            Stop::Unhandled { exc, eip, soft } => {
                let mut m = if *soft {
                    format!(
                        "guest executed int {:#04x} at EIP={eip:#010x} with no IDT to handle it",
                        exc.vector
                    )
                } else {
                    format!(
                        "guest exception {} at EIP={eip:#010x} with no IDT to handle it",
                        vector::name(exc.vector)
                    )
                };
                if exc.vector == vector::PF {
                    let rw = if exc.error & 2 != 0 {
                        "write to"
                    } else {
                        "access to"
                    };
                    m += &format!(" ({rw} {:#010x}, which is not RAM)", exc.addr);
                } else if matches!(exc.vector, 8 | 10..=14 | 17) {
                    m += &format!(" (error code {:#x})", exc.error);
                }
                Some(m)
            }
            Stop::Unsupported { eip, what } => {
                Some(format!("unsupported at EIP={eip:#010x}: {what}"))
            }
            Stop::Reset => Some("the guest reset the machine".into()),
            Stop::TripleFault { eip } => Some(format!(
                "triple fault at EIP={eip:#010x} (the machine would reset)"
            )),
            Stop::Budget => Some("run budget exhausted".into()),
            Stop::Stopped => Some("stopped".into()),
            Stop::Internal(m) => Some(format!("internal error: {m}")),
        }
    }
}

/// Write-protected code pages above which all translations are dropped:
/// each protected page splits the RAM mapping in two more pieces, and the
/// kernel allows a process 65,530 mappings, which the paging shadow
/// spaces need too (`shadow::DEFAULT_BUDGET`).
const CODE_PAGE_BUDGET: usize = 8_192;

/// Guest writes to a protected code page after which it is not
/// protected any more (its TUs check their own code instead).
const SMC_HOT_WRITES: u32 = 4;

/// Times a hot page whose code stopped changing is protected again
/// before it stays self-checking for good.
const CALM_ROUNDS: u32 = 3;

/// Exit-request bits of the poll page.
const REQUEST_STOP: u32 = 1 << 0;

/// Exit-request bit: an external interrupt may be pending.
const REQUEST_INTERRUPT: u32 = 1 << 1;

/// Wakes a vCPU sleeping in hlt.
#[derive(Default)]
struct Wake {
    kicked: std::sync::Mutex<bool>,
    cond: std::sync::Condvar,
}

impl Wake {
    fn kick(&self) {
        *self.kicked.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cond.notify_all();
    }

    /// Sleeps until kicked (or `timeout`, a safety net), and re-arms.
    fn wait(&self, timeout: std::time::Duration) {
        let mut k = self.kicked.lock().unwrap_or_else(|e| e.into_inner());
        if !*k {
            k = self
                .cond
                .wait_timeout(k, timeout)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *k = false;
    }
}

/// Reaches a running machine from another thread: generated code notices
/// at its next TU head, a vCPU in hlt wakes up.
#[derive(Clone)]
pub struct ExitHandle {
    poll: std::sync::Arc<translator::poll::PollPage>,
    wake: std::sync::Arc<Wake>,
}

impl ExitHandle {
    /// Ends the run with `Stop::Stopped`.
    pub fn stop(&self) {
        self.poll.request(REQUEST_STOP);
        self.wake.kick();
    }

    /// Tells the CPU its interrupt controller may have raised INTR: call
    /// after raising an interrupt line from another thread.
    pub fn interrupt(&self) {
        self.poll.request(REQUEST_INTERRUPT);
        self.wake.kick();
    }
}

pub struct Machine {
    cpu: Box<CpuState>,
    sys: Box<System>,
    translator: Translator,
    instrument: Instrument,
    /// The mode and code segment base whose jump cache generated code uses.
    last_mode: ModeKey,
    last_cs: CodeSegment,
    wake: std::sync::Arc<Wake>,
    /// The PC's devices (unless the machine has none).
    platform: Option<Platform>,
    /// What was loaded, to load again when the machine resets.
    boot: Option<BootImage>,
    no_reboot: bool,
    /// The next TU is the one instruction that wrote to translated code,
    /// run alone with its pages unprotected; the code ranges translated
    /// meanwhile, protected once it has run.
    smc_step: bool,
    smc_deferred: Vec<(u32, u32)>,
    /// The next TU is one instruction run against devices or ROM.
    device_step: Option<DeviceStep>,
    /// Device steps of each instruction (by guest physical address).
    device_steps: std::collections::HashMap<u32, u32>,
    /// Guest writes to each protected code page (by page number).
    smc_writes: std::collections::HashMap<u32, u32>,
    /// Times each hot page was protected again (see `CALM_ROUNDS`).
    calm_rounds: std::collections::HashMap<u32, u32>,
    /// The guest TLB epoch the jump caches belong to
    /// (`GuestMemory::tlb_epoch`).
    tlb_epoch: u64,
}

/// The host code of a guest EIP (see `Machine::code_for`).
#[derive(Clone, Copy)]
struct Code {
    host: usize,
    /// Its guest pages are mapped global (or paging is off): a CR3 write
    /// keeps their translations (see `Translator::jump_cache_insert`).
    global: bool,
}

/// An instruction that touched MMIO or wrote to ROM, run again alone:
/// scratch pages replace the device and ROM pages it uses (filled with
/// what the devices read), and what it stored goes to the devices after.
struct DeviceStep {
    /// The space the scratch pages are in (user or supervisor).
    user: bool,
    /// (linear page, guest frame) of each scratch page.
    pages: Vec<(u32, u32)>,
    /// (guest physical, linear, length) of each device store.
    stores: Vec<(u32, u32, usize)>,
}

/// Device steps of one instruction after which it is retranslated to
/// reach the devices through the `Emulate` helper (if it can).
const DEVICE_HOT_STEPS: u32 = 4;

/// A loaded guest image, kept for resets.
enum BootImage {
    Multiboot {
        image: Vec<u8>,
        cmdline: String,
    },
    Flat {
        image: Vec<u8>,
        load: u32,
        entry: Option<u32>,
    },
    Linux {
        image: Vec<u8>,
        cmdline: String,
        initrd: Option<Vec<u8>>,
    },
    /// A firmware ROM: it stays mapped, the CPU starts at the reset vector.
    Firmware,
}

/// Reads guest code at CS base + EIP, up to the CS limit, through the
/// page walk when paging is on (fetch accesses, which set accessed bits).
struct RamCode<'a> {
    mem: &'a GuestMemory,
    cs: CodeSegment,
    /// The #PF of the first page that could not be fetched.
    fault: Option<MemFault>,
}

impl CodeSource for RamCode<'_> {
    fn read_code(&mut self, eip: u32, buf: &mut [u8]) -> usize {
        let in_limit = (self.cs.limit as u64 + 1).saturating_sub(eip as u64);
        let n = buf.len().min(in_limit as usize);
        let lin = self.cs.base.wrapping_add(eip);
        if self.mem.direct() {
            // Every physical address reads something (the open bus all ones).
            let _ = self.mem.read_phys(lin, &mut buf[..n]);
            return n;
        }
        let mut done = 0;
        while done < n {
            let at = lin.wrapping_add(done as u32);
            let len = (PAGE_SIZE - (at as usize & (PAGE_SIZE - 1))).min(n - done);
            match self.mem.translate(at, AccessKind::Fetch) {
                Ok(phys) => {
                    let _ = self.mem.read_phys(phys, &mut buf[done..done + len]);
                    done += len;
                }
                Err(f) => {
                    self.fault.get_or_insert(f);
                    break;
                }
            }
        }
        done
    }

    fn page_room(&self, eip: u32) -> Option<u32> {
        let lin = self.cs.base.wrapping_add(eip);
        (!self.mem.direct()).then(|| 0x1000 - (lin & 0xFFF))
    }
}

impl Machine {
    pub fn new(config: MachineConfig) -> Result<Self, MachineError> {
        let mut mem = GuestMemory::new(config.ram_size).map_err(MachineError::Memory)?;
        mem.set_mapping_budget(config.shadow_pages);
        let mut bus = PortBus::new();
        let instrument = Instrument {
            stats: config.stats,
            budget: config.tu_budget.is_some(),
        };
        let mut translator =
            Translator::new(config.arena_size, instrument).map_err(MachineError::Arena)?;
        let wake: std::sync::Arc<Wake> = Default::default();
        let clock = Clock::host();
        let mut mmio = crate::devices::mmio::MmioBus::default();
        let platform = config.devices.then(|| {
            // Interrupt requests kick the CPU out of generated code (or
            // hlt).
            let exit = ExitHandle {
                poll: translator.poll().clone(),
                wake: wake.clone(),
            };
            let mut serial = vec![config.serial];
            serial.extend(config.extra_serial);
            let pc = PcConfig {
                ram_size: config.ram_size,
                serial,
                serial_input: config.serial_input,
                debugcon: config.debugcon,
                debugcon_port: config.debugcon_port,
                rtc_start: config.rtc_start,
            };
            let kick = std::sync::Arc::new(move || exit.interrupt());
            Platform::build(pc, clock.clone(), &mut bus, &mut mmio, kick)
        });
        let mut cpu = Box::new(CpuState::new());
        translator.attach(&mut cpu);
        cpu.set_gs_base(mem.shadow_base());
        cpu.helpers[Helper::Emulate as usize] = emulate_helper as *const () as usize as u64;
        cpu.helpers[Helper::CheckCode as usize] =
            crate::cpu::check_code_helper as *const () as usize as u64;
        cpu.budget = config.tu_budget.unwrap_or(u64::MAX);
        let mut sys = Box::new(System::new(mem, bus, clock));
        sys.mmio = mmio;
        if let Some(p) = &platform {
            sys.irq = Some(p.interrupt_controller());
            sys.apic = Some(p.lapic.clone());
        }
        let mut m = Machine {
            cpu,
            sys,
            translator,
            instrument,
            last_mode: ModeKey::FLAT32_CPL0,
            last_cs: CodeSegment::FLAT,
            wake,
            platform,
            boot: None,
            no_reboot: config.no_reboot,
            smc_step: false,
            smc_deferred: Vec::new(),
            device_step: None,
            device_steps: std::collections::HashMap::new(),
            smc_writes: std::collections::HashMap::new(),
            calm_rounds: std::collections::HashMap::new(),
            tlb_epoch: 0,
        };
        m.describe_to_firmware();
        m.reset_flat(BootState {
            eip: 0,
            eax: 0,
            ebx: 0,
            esp: 0,
            esi: 0,
        });
        Ok(m)
    }

    /// Puts the CPU in 32-bit flat protected mode, paging and interrupts
    /// off, as multiboot requires (selectors as QEMU's loader sets them),
    /// and the PIC as a PC BIOS leaves it (a guest loaded without one).
    fn reset_flat(&mut self, boot: BootState) {
        if let Some(p) = &self.platform {
            p.reset(true);
        }
        let cpu = &mut self.cpu;
        cpu.regs = [0; 8];
        cpu.regs[0] = boot.eax;
        cpu.regs[3] = boot.ebx;
        cpu.regs[4] = boot.esp;
        cpu.regs[6] = boot.esi;
        cpu.eip = boot.eip;
        cpu.set_eflags(flags::FIXED1);
        for (i, sel) in [0x18, 0x10, 0x18, 0x18, 0x18, 0x18].into_iter().enumerate() {
            cpu.set_segment_db(i, sel, 0, u32::MAX, true);
        }
        cpu.cr0 = 0x11; // PE | ET
    }

    /// Puts the CPU in real mode at `cs:ip` as after a far jump from reset:
    /// segment bases selector * 16, 64 KiB limits, the IVT at 0, flags 2.
    /// The caller sets registers and memory.
    pub fn reset_real(&mut self, cs: u16, ip: u16) {
        let cpu = &mut self.cpu;
        cpu.regs = [0; 8];
        cpu.set_eflags(flags::FIXED1);
        cpu.cr0 = 0x10; // ET
        for i in 0..6 {
            cpu.set_segment_db(i, 0, 0, 0xFFFF, false);
        }
        cpu.set_segment_db(crate::cpu::SREG_CS, cs, (cs as u32) << 4, 0xFFFF, false);
        cpu.eip = ip as u32;
        self.sys.idtr = crate::cpu::TableReg {
            base: 0,
            limit: 0x3FF,
        };
        self.sys.gdtr = crate::cpu::TableReg {
            base: 0,
            limit: 0xFFFF,
        };
    }

    /// The CPU as after RESET (Intel SDM Vol. 3A, 9.1.1): real mode at
    /// F000:FFF0 with the CS base at 0xFFFF0000 (the top of the ROM),
    /// EDX = the CPUID signature, CR0 = 0x60000010.
    fn reset_vector(&mut self) {
        self.reset_real(0xF000, 0xFFF0);
        let cpu = &mut self.cpu;
        cpu.set_segment_db(crate::cpu::SREG_CS, 0xF000, 0xFFFF_0000, 0xFFFF, false);
        cpu.regs[2] = crate::cpu::CPUID_SIGNATURE;
        cpu.cr0 = 0x6000_0010;
        self.sys.idtr.limit = 0xFFFF;
    }

    /// Installs a firmware ROM (`--bios`) and starts the CPU at its reset
    /// vector.
    pub fn load_bios(&mut self, image: &[u8]) -> Result<(), MachineError> {
        self.sys.mem.map_rom(image).map_err(MachineError::Memory)?;
        self.reset_vector();
        self.boot = Some(BootImage::Firmware);
        Ok(())
    }

    /// Drops every translation (after the caller rewrote guest code).
    pub fn flush_translations(&mut self) {
        self.translator.flush();
        self.sys.mem.release_code();
    }

    pub fn load_multiboot(&mut self, image: &[u8], cmdline: &str) -> Result<(), MachineError> {
        let boot = loader::multiboot::load(&self.sys.mem, image, cmdline)?;
        self.reset_flat(boot);
        self.boot = Some(BootImage::Multiboot {
            image: image.to_vec(),
            cmdline: cmdline.to_string(),
        });
        Ok(())
    }

    /// Loads a kernel given with `--kernel`: a bzImage by the Linux boot
    /// protocol, anything else as multiboot. `initrd` is for Linux only.
    pub fn load_kernel(
        &mut self,
        image: &[u8],
        cmdline: &str,
        initrd: Option<&[u8]>,
    ) -> Result<(), MachineError> {
        if loader::bzimage::is_bzimage(image) {
            return self.load_linux(image, cmdline, initrd);
        }
        if initrd.is_some() {
            return Err(MachineError::Load(loader::LoadError::Unsupported(
                "an initrd needs a Linux bzImage kernel (multiboot modules are not supported)"
                    .into(),
            )));
        }
        self.load_multiboot(image, cmdline)
    }

    /// The machine's memory map as e820 reports it: conventional memory,
    /// the EBDA and BIOS areas reserved, the rest of RAM.
    pub fn e820(&self) -> Vec<(u64, u64, loader::bzimage::E820)> {
        use loader::bzimage::E820;
        let ram = self.sys.mem.size() as u64;
        vec![
            (0, 0x9_FC00, E820::Ram),
            (0x9_FC00, 0x400, E820::Reserved),
            (0xF_0000, 0x1_0000, E820::Reserved),
            (0x10_0000, ram - 0x10_0000, E820::Ram),
        ]
    }

    /// What fw_cfg tells firmware about the machine: RAM, CPUs, the e820
    /// map, the I/O APIC's IRQ 0 on pin 2.
    fn describe_to_firmware(&self) {
        use crate::devices::fw_cfg;
        let Some(p) = &self.platform else { return };
        let e820: Vec<(u64, u64, u32)> = self
            .e820()
            .into_iter()
            .map(|(base, len, kind)| (base, len, kind as u32))
            .collect();
        p.fw_cfg
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_ram_size(self.sys.mem.size() as u64)
            .set_nographic(true)
            .set_cpu_count(1)
            .set_max_cpus(1)
            .set_e820(&e820)
            .add_bytes(fw_cfg::IRQ0_OVERRIDE, 1u32.to_le_bytes().to_vec());
    }

    /// Loads a Linux bzImage and enters its 32-bit entry point.
    pub fn load_linux(
        &mut self,
        image: &[u8],
        cmdline: &str,
        initrd: Option<&[u8]>,
    ) -> Result<(), MachineError> {
        let e820 = self.e820();
        let boot = loader::bzimage::load(&self.sys.mem, image, cmdline, initrd, &e820)?;
        self.reset_flat(boot);
        self.sys.gdtr = crate::cpu::TableReg {
            base: loader::bzimage::GDT,
            limit: 31,
        };
        // Without firmware, the MP table is how the kernel finds the
        // APICs (there are no ACPI tables). fw_cfg says what was loaded
        // where, as QEMU's does for -kernel.
        if let Some(p) = &self.platform {
            loader::place(
                &self.sys.mem,
                "the MP table",
                crate::pc::MP_TABLE as u64,
                &p.mp_table(),
                0,
            )?;
            let setup = loader::bzimage::setup_part(image)?;
            let mut fw = p.fw_cfg.lock().unwrap_or_else(|e| e.into_inner());
            fw.set_setup(loader::bzimage::ZERO_PAGE, setup.to_vec())
                .set_kernel(loader::bzimage::KERNEL_BASE, image[setup.len()..].to_vec())
                .set_cmdline(loader::bzimage::CMDLINE, cmdline)
                .set_kernel_entry(loader::bzimage::KERNEL_BASE);
            if let Some(rd) = initrd {
                let at = loader::bzimage::initrd_address(&self.sys.mem);
                fw.set_initrd(at, rd.to_vec());
            }
        }
        self.boot = Some(BootImage::Linux {
            image: image.to_vec(),
            cmdline: cmdline.to_string(),
            initrd: initrd.map(<[u8]>::to_vec),
        });
        Ok(())
    }

    pub fn load_flat(
        &mut self,
        image: &[u8],
        load: u32,
        entry: Option<u32>,
    ) -> Result<(), MachineError> {
        let boot = loader::flat::load(&self.sys.mem, image, load, entry)?;
        self.reset_flat(boot);
        self.boot = Some(BootImage::Flat {
            image: image.to_vec(),
            load,
            entry,
        });
        Ok(())
    }

    /// A machine reset (after a triple fault): RAM cleared, the CPU and
    /// its tables back to their start, every translation dropped, and the
    /// guest image loaded again, or the CPU at the firmware's reset vector.
    /// Returns false if nothing was loaded to start again.
    fn reboot(&mut self) -> bool {
        let Some(boot) = self.boot.take() else {
            return false;
        };
        let ram = self.sys.mem.size();
        let _ = self.sys.mem.fill(0, ram, 0);
        self.sys.gdtr = crate::cpu::TableReg::default();
        self.sys.idtr = crate::cpu::TableReg::default();
        (self.sys.tr, self.sys.tss_base, self.sys.tss_limit) = (0, 0, 0);
        (self.sys.ldtr, self.sys.ldt_base, self.sys.ldt_limit) = (0, 0, 0);
        self.sys.halted = false;
        self.sys.dr = [0, 0, 0, 0, 0xFFFF_0FF0, 0x400, 0xFFFF_0FF0, 0x400];
        (
            self.sys.sysenter_cs,
            self.sys.sysenter_esp,
            self.sys.sysenter_eip,
        ) = (0, 0, 0);
        self.cpu.cr2 = 0;
        self.cpu.cr3 = 0;
        self.cpu.cr4 = 0;
        self.sys.nxe = false;
        // A20 is open again, as a BIOS leaves it.
        self.sys.a20_gates = (true, false);
        if let Err(e) = self.sys.mem.set_a20(true) {
            log::error!(target: "bt86::machine", "reopening A20 at reset: {e}");
        }
        self.cpu.guest_fpu = translator::abi::FxArea::initial();
        self.cpu.shadow = 0;
        self.translator.flush();
        let loaded = match &boot {
            BootImage::Multiboot { image, cmdline } => {
                self.load_multiboot(&image.clone(), &cmdline.clone())
            }
            BootImage::Flat { image, load, entry } => self.load_flat(&image.clone(), *load, *entry),
            BootImage::Linux {
                image,
                cmdline,
                initrd,
            } => self.load_linux(&image.clone(), &cmdline.clone(), initrd.clone().as_deref()),
            BootImage::Firmware => {
                if let Some(p) = &self.platform {
                    p.reset(false);
                }
                self.reset_vector();
                self.boot = Some(BootImage::Firmware);
                Ok(())
            }
        };
        crate::cpu::sync_paging(&self.cpu, &mut self.sys, crate::cpu::TlbFlush::None);
        self.sys.counters.exit(crate::cpu::ExitKind::Reset);
        log::info!(target: "bt86::machine", "machine reset");
        loaded.is_ok()
    }

    /// Host input for COM1 (with the PC devices).
    pub fn serial_input(&self) -> Option<crate::pc::SerialInput> {
        let p = self.platform.as_ref()?;
        Some(crate::pc::SerialInput::new(p.serial[0].clone()))
    }

    pub fn cpu(&self) -> &CpuState {
        &self.cpu
    }

    pub fn cpu_mut(&mut self) -> &mut CpuState {
        &mut self.cpu
    }

    pub fn memory(&self) -> &GuestMemory {
        &self.sys.mem
    }

    pub fn system(&self) -> &System {
        &self.sys
    }

    pub fn translator(&self) -> &Translator {
        &self.translator
    }

    /// The mode generated code is translated for: protected or real mode,
    /// 32- or 16-bit code and stack, flat segments or not, the CPL, and
    /// whether TUs hold one instruction (single-step, interrupt shadow).
    fn mode(&self, one_insn: bool) -> ModeKey {
        crate::cpu::mode_key(&self.cpu, one_insn)
    }

    fn code_segment(&self) -> CodeSegment {
        CodeSegment {
            base: self.cpu.seg_base[crate::cpu::SREG_CS],
            limit: self.cpu.seg_limit[crate::cpu::SREG_CS],
        }
    }

    /// The translation key of guest `eip` (its physical address: a fetch
    /// through the page walk) and whether its code's pages are mapped
    /// global (a CR3 write keeps their translations); or the fault
    /// fetching its first byte raises.
    fn key(&self, eip: u32) -> Result<(TuKey, bool), Exception> {
        let cs = self.code_segment();
        if eip > cs.limit {
            return Err(Exception::with_error(vector::GP, 0));
        }
        let lin = cs.base.wrapping_add(eip);
        let mem = &self.sys.mem;
        let (phys, global) = mem.translate_code(lin)?;
        let (next_page, next_global) = if mem.paged() && translator::tu::may_cross_page(lin) {
            let next = (lin | 0xFFF).wrapping_add(1);
            // A next page that is not there is so in this address space.
            mem.translate_code(next).unwrap_or((TuKey::NO_NEXT, false))
        } else {
            (TuKey::NO_NEXT, true)
        };
        let key = TuKey {
            phys,
            eip,
            cs_limit: cs.limit,
            mode: self.last_mode,
            next_page,
        };
        Ok((key, global && next_global))
    }

    /// The host code for guest `eip`, or None if fetching it raised an
    /// exception that was delivered (the CPU is now at its handler).
    fn code_for(&mut self, eip: u32) -> Result<Option<Code>, Stop> {
        let (key, global) = match self.key(eip) {
            Ok(k) => k,
            Err(exc) => {
                self.exception(exc, eip, eip, exc_kind::HARDWARE)?;
                return Ok(None);
            }
        };
        let cs = self.code_segment();
        let generation = self.translator.generation();
        let mut src = RamCode {
            mem: &self.sys.mem,
            cs,
            fault: None,
        };
        let got = self.translator.get(key, &mut src);
        let paging_fault = src.fault;
        if self.translator.generation() != generation {
            // The arena filled up and was flushed: no code is left to guard.
            self.sys.mem.release_code();
        }
        // Write-protect the pages of new translations (self-modifying
        // code faults on them): after the instruction that wrote to code
        // has run, if this is its translation.
        let translated = self.translator.take_translated();
        if self.smc_step {
            self.smc_deferred.extend(translated);
        } else {
            for (phys, len) in translated {
                self.sys.mem.protect_code(phys, len);
            }
        }
        match got {
            Ok(host) => Ok(Some(Code { host, global })),
            Err(TranslateError::Fetch(f)) => {
                // An instruction fetch beyond the CS limit: #GP(0); from no
                // memory: #PF (I/D set). The run goes on at the handler.
                let exc = if f.addr > cs.limit || f.addr < eip {
                    Exception::with_error(vector::GP, 0)
                } else if let Some(pf) = paging_fault {
                    pf.into()
                } else {
                    Exception {
                        vector: vector::PF,
                        error: 0x10,
                        addr: cs.base.wrapping_add(f.addr),
                    }
                };
                self.exception(exc, eip, eip, exc_kind::HARDWARE)?;
                Ok(None)
            }
            Err(e) => Err(Stop::Internal(e.to_string())),
        }
    }

    /// Delivers a guest exception through the IDT or IVT; the run ends if
    /// that cannot be done (no IDT, something unsupported), and a triple
    /// fault resets the machine unless `no_reboot`.
    fn exception(
        &mut self,
        exc: Exception,
        eip: u32,
        insn_eip: u32,
        kind: u32,
    ) -> Result<(), Stop> {
        self.sys.counters.exceptions += 1;
        if exc.vector == vector::PF && kind == exc_kind::HARDWARE {
            self.sys.counters.true_faults += 1;
            self.cpu.cr2 = exc.addr;
        }
        match crate::cpu::interrupts::deliver(
            &mut self.cpu,
            &mut self.sys,
            exc,
            eip,
            insn_eip,
            kind,
        ) {
            Err(Stop::TripleFault { .. }) if !self.no_reboot && self.reboot() => Ok(()),
            r => r,
        }
    }

    /// Runs the guest until it stops.
    pub fn run(&mut self) -> RunOutcome {
        signals::prepare_thread();
        signals::set_gs_base(self.cpu.gs_base);
        // The CPU state may have been set from outside (a loader, a test).
        crate::cpu::sync_paging(&self.cpu, &mut self.sys, crate::cpu::TlbFlush::None);
        let mut next: Option<usize> = None;
        let stop = loop {
            match self.sys.stop.take() {
                // The guest pulsed the reset line.
                Some(Stop::Reset) if !self.no_reboot && self.reboot() => {
                    next = None;
                    continue;
                }
                Some(stop) => break stop,
                None => {}
            }
            // The runtime wrote to code pages (an emulated store, an
            // exception frame), or a self-checking TU found its code
            // changed.
            for page in self.sys.mem.take_written_code() {
                self.invalidate_page(page);
                next = None;
            }
            // A hot page whose code stopped changing is protected again
            // (and must be written as often again to turn hot).
            for page in self.sys.mem.take_calm_code() {
                // Code and data that keep sharing a page would cycle
                // between the two: after a few rounds it stays hot.
                let rounds = self.calm_rounds.entry(page).or_insert(0);
                if *rounds >= CALM_ROUNDS {
                    continue;
                }
                *rounds += 1;
                if self.translator.clear_self_checking(page) {
                    log::debug!(target: "bt86::smc", "page {page:#x} is protected again");
                    self.smc_writes.remove(&page);
                    self.sys.mem.clear_hot(page as usize);
                    self.invalidate_page(page);
                    next = None;
                }
            }
            if self.sys.mem.code_page_count() > CODE_PAGE_BUDGET {
                // Protection would split the RAM mapping into too many
                // pieces: start over.
                self.flush_translations();
                next = None;
            }
            if self.sys.halted
                && let Err(stop) = self.wait_for_interrupt()
            {
                break stop;
            }
            // sti/mov ss hold interrupts off until the next instruction ran.
            let in_shadow = self.cpu.shadow != 0 && self.cpu.shadow_eip == self.cpu.eip;
            // An instruction about to run with scratch pages (a device
            // step) runs before any interrupt.
            if !in_shadow && self.device_step.is_none() {
                self.cpu.shadow = 0;
                if let Some(vector) = self.acknowledge_interrupt() {
                    next = None;
                    let eip = self.cpu.eip;
                    let exc = Exception::new(vector as u32);
                    if let Err(stop) = self.exception(exc, eip, eip, exc_kind::EXTERNAL) {
                        break stop;
                    }
                    continue;
                }
            }
            if self.sync_space() {
                next = None;
            }
            let tf = self.cpu.sys_flags & flags::TF != 0;
            let mode = self.mode(tf || in_shadow || self.smc_step || self.device_step.is_some());
            let cs = self.code_segment();
            if mode != self.last_mode || cs != self.last_cs {
                // Jump-cache entries are keyed by EIP alone: each mode and
                // code segment has its own.
                self.translator.select_jump_cache(&mut self.cpu, mode, cs);
                self.last_mode = mode;
                self.last_cs = cs;
                next = None;
            }
            let host = match next.take() {
                Some(h) => h,
                None => match self.code_for(self.cpu.eip) {
                    Ok(Some(code)) => code.host,
                    Ok(None) => continue,
                    Err(stop) => break stop,
                },
            };
            // RF (set by iret) is cleared as the next instruction starts.
            self.cpu.sys_flags &= !flags::RF;
            // For a translated sti (see `CpuState::irq_waiting`); one that
            // comes later makes a TU head leave (the poll).
            self.cpu.irq_waiting = (self.cpu.sys_flags & flags::IF == 0
                && self.sys.irq.as_mut().is_some_and(|i| i.pending()))
                as u32;
            self.sys.counters.entries += 1;
            self.enter(host);
            if std::mem::take(&mut self.smc_step) {
                for (phys, len) in std::mem::take(&mut self.smc_deferred) {
                    self.sys.mem.protect_code(phys, len);
                }
            }
            if in_shadow {
                self.cpu.shadow = 0;
            }
            let reason = ExitReason::from_u32(self.cpu.exit_reason);
            if let Some(step) = self.device_step.take() {
                let completed = matches!(
                    reason,
                    Some(ExitReason::Branch | ExitReason::IndirectMiss | ExitReason::Helper)
                );
                self.finish_device_step(step, completed);
            }
            // Chains and jump-cache entries stay within one mode, and a
            // one-instruction TU always comes back here.
            let link = mode.0 & ModeKey::ONE_INSN == 0
                && self.mode(false) == mode
                && self.code_segment() == cs;
            match reason {
                Some(ExitReason::Branch) => {
                    self.sys.counters.exit(crate::cpu::ExitKind::Branch);
                    let generation = self.translator.generation();
                    let patch_at = self.cpu.exit_arg;
                    if link {
                        match self.code_for(self.cpu.eip) {
                            Ok(Some(target)) => {
                                self.translator.chain(generation, patch_at, target.host);
                                next = Some(target.host);
                            }
                            Ok(None) => {}
                            Err(stop) => break stop,
                        }
                    }
                }
                Some(ExitReason::IndirectMiss) => {
                    self.sys.counters.exit(crate::cpu::ExitKind::IndirectMiss);
                    if link {
                        match self.code_for(self.cpu.eip) {
                            Ok(Some(target)) => {
                                self.translator.jump_cache_insert(
                                    self.cpu.eip,
                                    target.host,
                                    target.global,
                                );
                                next = Some(target.host);
                            }
                            Ok(None) => {}
                            Err(stop) => break stop,
                        }
                    }
                }
                Some(ExitReason::Request) => {
                    self.sys.counters.exit(crate::cpu::ExitKind::Request);
                    if self.translator.poll().take() & REQUEST_STOP != 0 {
                        break Stop::Stopped;
                    }
                }
                Some(ExitReason::Exception) => {
                    self.sys.counters.exit(crate::cpu::ExitKind::Exception);
                    let c = &self.cpu;
                    let mut exc = Exception {
                        vector: c.exc_vector,
                        error: c.exc_error,
                        addr: c.fault_addr,
                    };
                    if exc.vector == vector::PF && exc.error & SHADOW_FAULT != 0 {
                        let write = exc.error & 2 != 0;
                        match self.shadow_fault(exc.addr, write) {
                            Ok(Some(e)) => exc = e,
                            Ok(None) => {
                                next = None;
                                continue;
                            }
                            Err(stop) => break stop,
                        }
                    }
                    let c = &self.cpu;
                    let (eip, insn_eip, kind) = (c.eip, c.exc_insn, c.exc_kind);
                    if exc.vector == vector::DE && kind == exc_kind::HARDWARE {
                        // A guest that divides by zero once may do it often:
                        // emulate that divide from now on (no host signal).
                        let linear = c.seg_base[crate::cpu::SREG_CS].wrapping_add(insn_eip);
                        if let Ok(phys) = self.sys.mem.translate(linear, AccessKind::Fetch) {
                            self.translator.emulate_insn(phys);
                        }
                    }
                    if exc.vector == vector::MF
                        && kind == exc_kind::HARDWARE
                        && self.cpu.cr0 & crate::cpu::cr::CR0_NE == 0
                        && let Some(f) = self.platform.as_ref().map(|p| &p.ferr)
                    {
                        // CR0.NE clear: the x87 exception is reported on
                        // FERR# (IRQ 13), and the instruction waits for it
                        // to be handled (it runs again after).
                        if f.assert()
                            && let Err(stop) = self.frozen_on_ferr()
                        {
                            break stop;
                        }
                        next = None;
                        continue;
                    }
                    if let Err(stop) = self.exception(exc, eip, insn_eip, kind) {
                        break stop;
                    }
                }
                Some(ExitReason::Helper) => self.sys.counters.exit(crate::cpu::ExitKind::Helper),
                Some(ExitReason::Budget) => break Stop::Budget,
                None => {
                    break Stop::Internal(format!("unknown exit reason {}", self.cpu.exit_reason));
                }
            }
            // TF was set when the instruction started and it completed:
            // the single-step trap (#DB, DR6.BS) comes before the next one.
            let completed = matches!(
                reason,
                Some(ExitReason::Branch | ExitReason::IndirectMiss | ExitReason::Helper)
            );
            if tf && completed && self.sys.stop.is_none() {
                self.sys.dr[6] |= crate::cpu::cr::DR6_BS;
                next = None;
                let eip = self.cpu.eip;
                if let Err(stop) =
                    self.exception(Exception::new(vector::DB), eip, eip, exc_kind::HARDWARE)
                {
                    break stop;
                }
            }
        };
        RunOutcome { stop }
    }

    /// The vector of an external interrupt the CPU takes now, if IF is set
    /// and the controller raises one.
    fn acknowledge_interrupt(&mut self) -> Option<u8> {
        if self.cpu.sys_flags & flags::IF == 0 {
            return None;
        }
        let irq = self.sys.irq.as_mut()?;
        if !irq.pending() {
            return None;
        }
        let v = irq.acknowledge()?;
        self.sys.counters.interrupts += 1;
        self.sys.halted = false;
        Some(v)
    }

    /// hlt with interrupts on: sleep (no busy wait) until the controller
    /// raises an interrupt, or the run is stopped.
    fn wait_for_interrupt(&mut self) -> Result<(), Stop> {
        loop {
            if self.cpu.sys_flags & flags::IF != 0
                && self.sys.irq.as_mut().is_some_and(|i| i.pending())
            {
                self.sys.halted = false;
                return Ok(());
            }
            if self.translator.poll().take() & REQUEST_STOP != 0 {
                return Err(Stop::Stopped);
            }
            self.wake.wait(std::time::Duration::from_millis(100));
        }
    }

    /// Generated code touched linear `lin` (a write if `write`) where its
    /// shadow maps nothing, or maps read-only. Maps the page (a hidden
    /// fault) or handles the write to translated code, and returns None
    /// to run the instruction again; or returns the guest exception.
    fn shadow_fault(&mut self, lin: u32, write: bool) -> Result<Option<Exception>, Stop> {
        let user = crate::cpu::cpl(&self.cpu) == 3;
        let filled = match self.sys.mem.fill_shadow(lin, write, user) {
            Ok(f) => f,
            Err(fault) => return Ok(Some(fault.into())),
        };
        if self.sys.mem.paged() {
            self.sys.counters.hidden_faults += 1;
        }
        match filled {
            Filled::Mapped => Ok(None),
            Filled::CodeWrite { phys } => {
                // Guest code wrote to a page holding translated code: drop
                // the translations and run the writing instruction again,
                // alone and with its pages unprotected (they are protected
                // again after it, or it would fault forever on its own
                // page). A page written again and again stops being
                // protected: its TUs check their own code instead.
                let page = phys >> 12;
                let writes = self.smc_writes.entry(page).or_insert(0);
                *writes += 1;
                if *writes >= SMC_HOT_WRITES {
                    log::debug!(target: "bt86::smc", "page {page:#x} turns self-checking");
                    self.translator.set_self_checking(page);
                    self.sys.mem.set_hot(page as usize);
                }
                self.invalidate_page(page);
                self.smc_step = true;
                Ok(None)
            }
            // The runtime drops writes to ROM; translated code cannot yet
            // (its faulting instruction would have to be emulated).
            // The write is dropped: the instruction runs on a private copy.
            Filled::RomWrite { .. } => self.device_access(lin, write),
            // Not RAM: a device's page, or the open bus, which reads all
            // ones (a kernel running before paging reads its stack
            // canary at an address that is its virtual one).
            Filled::NoMemory { .. } => self.device_access(lin, write),
            Filled::AboveFourGiB => Ok(Some(MemFault::no_memory(lin, write).into())),
        }
    }

    /// The guest instruction at `eip` (CS-relative), if it can be fetched.
    fn decode_at(&self, eip: u32) -> Option<iced_x86::Instruction> {
        let mut bytes = [0u8; 15];
        let n = RamCode {
            mem: &self.sys.mem,
            cs: self.code_segment(),
            fault: None,
        }
        .read_code(eip, &mut bytes);
        let bitness = if self.cpu.seg_db[crate::cpu::SREG_CS] {
            32
        } else {
            16
        };
        let mut d = iced_x86::Decoder::with_ip(
            bitness,
            &bytes[..n],
            eip as u64,
            iced_x86::DecoderOptions::NONE,
        );
        let insn = d.decode();
        (!insn.is_invalid()).then_some(insn)
    }

    /// The instruction that faulted at linear `lin` touched an MMIO
    /// device's page (or wrote to ROM): prepares a device step (see
    /// [`DeviceStep`]) and returns None to run it, or the guest exception.
    fn device_access(&mut self, lin: u32, write: bool) -> Result<Option<Exception>, Stop> {
        use iced_x86::OpAccess;
        let eip = self.cpu.exc_insn;
        let Some(insn) = self.decode_at(eip) else {
            return Err(Stop::Internal(format!(
                "the instruction at {eip:#010x} touched a device but cannot be decoded again"
            )));
        };
        let cpu = &*self.cpu;
        let reg = |r: iced_x86::Register, _: usize, _: usize| {
            Some(if r.is_segment_register() {
                cpu.seg_base[r.number() - iced_x86::Register::ES.number()] as u64
            } else {
                crate::cpu::device::register(cpu, r) as u64
            })
        };
        if crate::cpu::device::is_data_mov(&insn)
            && let Ok(phys) = self.sys.mem.translate(
                self.code_segment().base.wrapping_add(eip),
                AccessKind::Fetch,
            )
        {
            let steps = self.device_steps.entry(phys).or_insert(0);
            *steps += 1;
            if *steps > DEVICE_HOT_STEPS {
                // It keeps touching devices: from now on it calls the
                // runtime, which reaches them without a host fault.
                self.translator.emulate_insn(phys);
                return Ok(None);
            }
        }
        let user = crate::cpu::cpl(cpu) == 3;
        let mut step = DeviceStep {
            user,
            pages: Vec::new(),
            stores: Vec::new(),
        };
        let mut info = iced_x86::InstructionInfoFactory::new();
        let used: Vec<_> = info.info(&insn).used_memory().to_vec();
        let repeated = insn.has_rep_prefix() || insn.has_repne_prefix();
        for m in used {
            let Some(lin) = m.virtual_address(0, reg) else {
                continue;
            };
            let (lin, size) = (lin as u32, m.memory_size().size().max(1));
            let reads = matches!(
                m.access(),
                OpAccess::Read | OpAccess::CondRead | OpAccess::ReadWrite | OpAccess::ReadCondWrite
            );
            let writes = matches!(
                m.access(),
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            );
            let kind = if writes {
                AccessKind::Write
            } else {
                AccessKind::Read
            };
            let mut done = 0;
            while done < size {
                let at = lin.wrapping_add(done as u32);
                let len = (PAGE_SIZE - (at as usize & (PAGE_SIZE - 1))).min(size - done);
                done += len;
                let phys = match self.sys.mem.translate(at, kind) {
                    Ok(p) => p,
                    Err(f) => {
                        self.drop_device_step(step);
                        return Ok(Some(f.into()));
                    }
                };
                let device = !self.sys.mem.is_memory(phys);
                let rom_write = writes && self.sys.mem.is_rom(phys);
                if !device && !rom_write {
                    continue;
                }
                if device && repeated {
                    self.drop_device_step(step);
                    if self.sys.mmio.claims(phys) {
                        return Err(Stop::Unsupported {
                            eip,
                            what: format!("`{insn}`: a repeated string instruction on MMIO"),
                        });
                    }
                    // On the open bus: the runtime runs it (its accesses
                    // read all ones there and drop the writes).
                    let lin = self.code_segment().base.wrapping_add(eip);
                    match self.sys.mem.translate(lin, AccessKind::Fetch) {
                        Ok(at) if self.translator.emulate_insn(at) => return Ok(None),
                        _ => {
                            return Err(Stop::Internal(format!(
                                "`{insn}` at {eip:#010x} keeps faulting on the open bus"
                            )));
                        }
                    }
                }
                let page = (at >> 12, phys >> 12);
                if !step.pages.contains(&page) {
                    if let Err(e) = self.sys.mem.map_scratch(user, page.0, page.1) {
                        self.drop_device_step(step);
                        return Err(Stop::Internal(e.to_string()));
                    }
                    step.pages.push(page);
                }
                if device && reads {
                    let mut buf = vec![0u8; len];
                    self.sys.mmio.read(phys, &mut buf);
                    self.sys.mem.write_space(user, at, &buf);
                }
                if device && writes {
                    step.stores.push((phys, at, len));
                }
            }
        }
        if step.pages.is_empty() {
            // iced does not list the access that faulted: running the
            // instruction again would fault again forever. It is an access
            // to no memory, as without a device.
            return Ok(Some(MemFault::no_memory(lin, write).into()));
        }
        self.sys.counters.mmio_emulations += 1;
        self.device_step = Some(step);
        Ok(None)
    }

    /// After a device step: the stores go to the devices if the
    /// instruction completed, and the pages are put back.
    fn finish_device_step(&mut self, step: DeviceStep, completed: bool) {
        if completed {
            for &(phys, lin, len) in &step.stores {
                let mut buf = vec![0u8; len];
                self.sys.mem.read_space(step.user, lin, &mut buf);
                self.sys.mmio.write(phys, &buf);
            }
        }
        self.drop_device_step(step);
    }

    fn drop_device_step(&mut self, step: DeviceStep) {
        for (page, frame) in step.pages {
            self.sys.mem.unmap_scratch(step.user, page, frame);
        }
    }

    /// Before entering generated code: the runtime's accesses get the
    /// privilege of the CPL (whatever changes the paging registers syncs
    /// them itself: `cpu::sync_paging`), generated code the shadow space
    /// for it (identity without paging, else the supervisor or user
    /// space), and the jump caches are dropped if the guest TLB was.
    /// Returns whether they were.
    fn sync_space(&mut self) -> bool {
        let user = crate::cpu::cpl(&self.cpu) == 3;
        self.sys.mem.set_user(user);
        let gs = self.sys.mem.space_base(user);
        if gs != self.cpu.gs_base {
            self.cpu.set_gs_base(gs);
            signals::set_gs_base(gs);
        }
        let epoch = self.sys.mem.tlb_epoch();
        if epoch == self.tlb_epoch {
            return false;
        }
        self.tlb_epoch = epoch;
        let flush = self.sys.mem.take_linear_flush();
        if flush.all {
            self.translator.clear_jump_caches();
        } else {
            if flush.non_global {
                self.translator.clear_local_jump_caches();
            }
            for lin in flush.regions {
                self.translator.forget_jump_region(lin);
            }
        }
        true
    }

    /// The x87 instruction that raised FERR# came back with it still
    /// asserted: the CPU waits for an interrupt (the IRQ 13 handler clears
    /// the exception), as frozen as in `hlt`; if none can come, the run
    /// ends.
    fn frozen_on_ferr(&mut self) -> Result<(), Stop> {
        let can_wake = self.cpu.sys_flags & flags::IF != 0
            && self
                .sys
                .irq
                .as_mut()
                .is_some_and(|i| i.may_interrupt() || i.pending());
        if !can_wake {
            return Err(Stop::Unsupported {
                eip: self.cpu.eip,
                what: "an x87 exception with CR0.NE clear raised FERR# (IRQ 13), which cannot be taken: the CPU would wait forever".into(),
            });
        }
        self.sys.halted = true;
        Ok(())
    }

    /// Self-modifying code: drops the translations of guest physical
    /// page `page` and its write protection.
    fn invalidate_page(&mut self, page: u32) {
        self.translator.invalidate_page(page);
        self.sys.mem.release_page(page);
        self.sys.counters.smc_invalidations += 1;
    }

    /// Gives guest physical `base..base+len` (whole pages above RAM and
    /// outside the ROM) to an MMIO device.
    pub fn register_mmio(
        &mut self,
        base: u32,
        len: u32,
        dev: Box<dyn crate::devices::mmio::MmioDevice + Send>,
    ) -> Result<(), crate::devices::mmio::BadRange> {
        let end = base as u64 + len as u64;
        let mem = &self.sys.mem;
        if (base as usize) < mem.size()
            || (base as u64..end)
                .step_by(4096)
                .any(|a| mem.is_rom(a as u32))
        {
            return Err(crate::devices::mmio::BadRange {
                base,
                len,
                why: "the range overlaps RAM or the ROM",
            });
        }
        self.sys.mmio.register(base, len, dev)
    }

    /// Connects the source of external interrupts.
    pub fn set_interrupt_controller(&mut self, irq: Box<dyn crate::devices::InterruptController>) {
        self.sys.irq = Some(irq);
    }

    fn enter(&mut self, host: usize) {
        // What the code about to run was looked up with must be traced.
        self.sys.mem.trace_pending_tables();
        // Re-derive the helpers' context pointer from a fresh borrow of the
        // System box right before generated code may use it.
        self.cpu.ctx = (&mut *self.sys as *mut System).cast();
        let cpu: *mut CpuState = &mut *self.cpu;
        // SAFETY: `cpu` is attached to this translator, its helpers and
        // ctx are valid for the whole call, GS points at this machine's
        // shadow (set in `run`) and the fault handler is installed.
        unsafe { self.translator.run(cpu, host) };
    }

    /// A handle other threads use to stop this machine's run or to tell
    /// it about interrupts.
    pub fn exit_handle(&self) -> ExitHandle {
        ExitHandle {
            poll: self.translator.poll().clone(),
            wake: self.wake.clone(),
        }
    }

    /// Statistics for reports.
    pub fn report(&self) -> crate::report::Report {
        crate::report::Report::collect(&self.translator, &self.cpu, &self.sys, self.instrument)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Machines on several threads at once: each owns its mappings, GS base
    /// and signal stack, and dropping one never touches another's memory.
    #[test]
    fn machines_run_and_drop_concurrently() {
        let threads: Vec<_> = (0..2)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..50 {
                        let config = MachineConfig {
                            ram_size: 2 << 20,
                            debugcon: OutputSink::None,
                            arena_size: 1 << 20,
                            ..Default::default()
                        };
                        let mut m = Machine::new(config).unwrap();
                        m.load_flat(&[0xF4], 0x1000, None).unwrap();
                        assert_eq!(m.run().stop, Stop::Halted { eip: 0x1001 });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
