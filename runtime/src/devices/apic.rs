//! The local APIC of the one CPU (Intel SDM vol. 3A, chapter 10
//! "Advanced Programmable Interrupt Controller (APIC)"; chapter 11 in
//! recent editions), as the xAPIC of a late P6 (Pentium M, Core) and
//! QEMU report it: version 0x14, six LVT entries, registers in the 4 KiB
//! page at 0xFEE00000, a timer counting at a 1 GHz bus clock.
//!
//! [`LocalApic`] is the state machine: MMIO accesses program it, messages
//! (from the I/O APIC, or its own IPIs and LVT entries) raise requests,
//! and the CPU side asks for the interrupt to take ([`Ack`]).
//! [`LocalApicHandle`] shares it between the MMIO bus, the ticker thread
//! (the timer is [`Timed`]), the I/O APIC ([`InterruptTarget`]) and the
//! CPU, with the "interrupt pending" state mirrored in an atomic and a
//! kick when an interrupt becomes deliverable. [`CpuInterrupts`] is the
//! CPU's [`InterruptController`] on a machine with an APIC: it puts the
//! 8259's INTR on LINT0 (virtual wire mode) and runs the 8259's
//! acknowledge cycle for ExtINT.
//!
//! Locking: the handle calls out (the EOI broadcast to the I/O APIC,
//! re-arming the ticker) only after releasing the APIC's lock, so the I/O
//! APIC may deliver into the APIC while it holds its own lock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::InterruptController;
use super::clock::{self, Clock, Ticker, TickerHandle, Timed};
use super::ioapic::IoApicHandle;
use super::mmio::MmioDevice;

/// Where the APIC's registers are (IA32_APIC_BASE after reset). Moving
/// them is not supported: a write of another base to the MSR is ignored.
pub const DEFAULT_BASE: u32 = 0xFEE0_0000;
/// The register page.
pub const MMIO_SIZE: u32 = 0x1000;
/// IA32_APIC_BASE (SDM vol. 3A, 10.4.3-10.4.4).
pub const MSR_APIC_BASE: u32 = 0x1B;
/// CPUID.1:EDX bit 9: an on-chip APIC is present and globally enabled.
pub const CPUID_EDX_APIC: u32 = 1 << 9;
/// The version register: version 0x14 (an xAPIC: Linux's `APIC_XAPIC`,
/// so it neither checks I/O APIC IDs against the APIC bus nor sends the
/// INIT level de-assert), maximum LVT entry 5 (timer, thermal, perf,
/// LINT0, LINT1, error), as Pentium M / Core 2 processors and QEMU.
pub const VERSION: u32 = 0x0005_0014;
/// The timer's input clock: the core crystal clock CPUID leaf 0x15
/// reports, which Linux takes as the timer's rate instead of calibrating
/// it.
pub const BUS_HZ: u64 = crate::cpu::cpuid::CRYSTAL_HZ;
/// Periodic timer interrupts come at most this often (ns), whatever the
/// guest programs, so that a tiny period cannot keep the ticker busy.
/// The current count is still exact. KVM limits periodic timers the same
/// way (to 200 us).
const MIN_PERIODIC_NS: u64 = 100_000;
/// A periodic timer's expiries that found bt86 not running (the host
/// descheduled it) are delivered late, one per `MIN_PERIODIC_NS`, as
/// KVM's PIT reinjects lost ticks: a guest that counts ticks (jiffies)
/// must not fall behind its other clocks (Linux then marks the TSC
/// unstable). One is raised only once the last one left the IRR. At
/// most this much time's worth is owed; older ones are lost, as they
/// would be under a long-masked interrupt.
const MAX_OWED_NS: u64 = 1_000_000_000;
/// How long an expiry waits for the last one to leave the IRR before it
/// looks again.
const OWED_RETRY_NS: u64 = 1_000_000;

/// Register offsets in the page (SDM vol. 3A, table 10-1).
mod reg {
    pub const ID: u32 = 0x020;
    pub const VERSION: u32 = 0x030;
    pub const TPR: u32 = 0x080;
    pub const APR: u32 = 0x090;
    pub const PPR: u32 = 0x0A0;
    pub const EOI: u32 = 0x0B0;
    pub const RRD: u32 = 0x0C0;
    pub const LDR: u32 = 0x0D0;
    pub const DFR: u32 = 0x0E0;
    pub const SVR: u32 = 0x0F0;
    pub const ISR: u32 = 0x100;
    pub const TMR: u32 = 0x180;
    pub const IRR: u32 = 0x200;
    pub const ESR: u32 = 0x280;
    pub const ICR_LOW: u32 = 0x300;
    pub const ICR_HIGH: u32 = 0x310;
    /// The first LVT entry (timer); the others follow 16 bytes apart.
    pub const LVT: u32 = 0x320;
    pub const TIMER_INITIAL: u32 = 0x380;
    pub const TIMER_CURRENT: u32 = 0x390;
    pub const TIMER_DIVIDE: u32 = 0x3E0;
}

/// IA32_APIC_BASE bits (SDM vol. 3A, 10.4.4).
const BASE_BSP: u64 = 1 << 8;
const BASE_ENABLE: u64 = 1 << 11;
/// Bits 12-35: the page (MAXPHYADDR is 36 with PAE and no leaf
/// 0x80000008). The rest but BSP and enable is reserved (bit 10, x2APIC
/// mode, is not offered).
const BASE_ADDRESS: u64 = 0xF_FFFF_F000;

/// LVT entries, in register order. Entries 1 and 2 (thermal sensor,
/// performance counters) are stored and never raised: bt86 has neither
/// source.
const TIMER: usize = 0;
const LINT0: usize = 3;
const LINT1: usize = 4;
const ERROR: usize = 5;
const LVT_COUNT: usize = 6;

/// LVT bits (SDM vol. 3A, 10.5.1).
const LVT_VECTOR: u32 = 0xFF;
const LVT_DELIVERY_MODE: u32 = 0x700;
const LVT_POLARITY_LOW: u32 = 1 << 13;
const LVT_REMOTE_IRR: u32 = 1 << 14;
const LVT_LEVEL: u32 = 1 << 15;
const LVT_MASKED: u32 = 1 << 16;
/// Timer mode 01: periodic (10, TSC-deadline, is not offered).
const LVT_PERIODIC: u32 = 1 << 17;
/// What software may write in each entry (delivery status, remote IRR and
/// the reserved bits are not).
const LVT_WRITABLE: [u32; LVT_COUNT] = [
    LVT_VECTOR | LVT_MASKED | LVT_PERIODIC,
    LVT_VECTOR | LVT_DELIVERY_MODE | LVT_MASKED,
    LVT_VECTOR | LVT_DELIVERY_MODE | LVT_MASKED,
    LVT_VECTOR | LVT_DELIVERY_MODE | LVT_POLARITY_LOW | LVT_LEVEL | LVT_MASKED,
    LVT_VECTOR | LVT_DELIVERY_MODE | LVT_POLARITY_LOW | LVT_LEVEL | LVT_MASKED,
    LVT_VECTOR | LVT_MASKED,
];

/// Spurious-interrupt vector register (SDM vol. 3A, 10.9): the
/// vector, software enable (bit 8), focus processor checking disabled
/// (bit 9). EOI-broadcast suppression (bit 12) is not offered.
const SVR_ENABLE: u32 = 1 << 8;
const SVR_WRITABLE: u32 = 0x3FF;
const SVR_RESET: u32 = 0xFF;

/// Error status bits (SDM vol. 3A, 10.5.3). The accept and checksum
/// errors belong to the serial APIC bus, which an xAPIC does not have.
const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;
const ESR_ILLEGAL_REGISTER: u32 = 1 << 7;

/// Interrupt command register bits (SDM vol. 3A, 10.6.1).
const ICR_LOGICAL: u32 = 1 << 11;
const ICR_SHORTHAND_SHIFT: u32 = 18;
/// Vector, delivery mode, destination mode, level, trigger mode and
/// shorthand: the delivery status (bit 12) always reads 0 (idle).
const ICR_LOW_WRITABLE: u32 = 0x000C_CFFF;
const ICR_HIGH_WRITABLE: u32 = 0xFF00_0000;

/// The destination that reaches every APIC (xAPIC broadcast).
pub const BROADCAST: u8 = 0xFF;

/// How an interrupt message is delivered (the 3-bit field of LVT
/// entries, the ICR and I/O APIC redirection entries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    Fixed,
    LowestPriority,
    Smi,
    Nmi,
    Init,
    StartUp,
    ExtInt,
    Reserved,
}

impl DeliveryMode {
    /// From the field's value (bits 8-10 shifted down).
    pub fn from_field(bits: u32) -> Self {
        match bits & 7 {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            2 => DeliveryMode::Smi,
            4 => DeliveryMode::Nmi,
            5 => DeliveryMode::Init,
            6 => DeliveryMode::StartUp,
            7 => DeliveryMode::ExtInt,
            _ => DeliveryMode::Reserved,
        }
    }

    fn of(entry: u32) -> Self {
        Self::from_field(entry >> 8)
    }
}

/// An interrupt message on the APIC bus (from the I/O APIC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    pub vector: u8,
    pub mode: DeliveryMode,
    /// Logical destination mode (else physical).
    pub logical: bool,
    /// An APIC ID (physical), a logical destination, or [`BROADCAST`].
    pub dest: u8,
    /// Level-triggered: an EOI for the vector is broadcast back.
    pub level: bool,
}

/// Where interrupt messages go: the local APIC(s). The I/O APIC delivers
/// to one; tests record.
pub trait InterruptTarget: Send + Sync {
    /// Delivers `msg`; true if an APIC accepted it (a level-triggered
    /// fixed interrupt then awaits its EOI).
    fn deliver(&self, msg: &Message) -> bool;
}

/// What the CPU takes when it acknowledges an interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ack {
    /// Deliver this vector: a fixed interrupt now in service, or the
    /// spurious vector when the request went away (nothing in service).
    Vector(u8),
    /// ExtINT: the 8259 supplies the vector; the CPU runs its
    /// acknowledge cycle.
    ExtInt,
}

/// Called when an interrupt becomes deliverable (wakes a CPU in hlt,
/// ends its TU).
pub type Kick = Arc<dyn Fn() + Send + Sync>;
/// Receives the vector of each EOI for a level-triggered interrupt (the
/// I/O APIC's `eoi`).
pub type EoiSink = Arc<dyn Fn(u8) + Send + Sync>;

/// An IA32_APIC_BASE write with reserved bits set: the CPU raises #GP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReservedBits(pub u64);

/// The state the CPU reads without locking.
struct Signals {
    /// An interrupt is deliverable: a fixed vector above the processor
    /// priority, or ExtINT.
    interrupt: AtomicBool,
    nmi: AtomicBool,
    kick: Kick,
}

/// A 256-bit vector register (IRR, ISR, TMR).
type Vectors = [u32; 8];

fn test(bits: &Vectors, v: u8) -> bool {
    bits[usize::from(v >> 5)] & (1 << (v & 31)) != 0
}

fn put(bits: &mut Vectors, v: u8, on: bool) {
    let word = &mut bits[usize::from(v >> 5)];
    if on {
        *word |= 1 << (v & 31);
    } else {
        *word &= !(1 << (v & 31));
    }
}

/// The highest vector set.
fn highest(bits: &Vectors) -> Option<u8> {
    (0..8)
        .rev()
        .find(|&i| bits[i] != 0)
        .map(|i| (i as u32 * 32 + 31 - bits[i].leading_zeros()) as u8)
}

/// The timer (SDM vol. 3A, 10.5.4): the current count is computed from
/// the clock, never stored.
#[derive(Clone, Debug, Default)]
struct Timer {
    initial: u32,
    /// The divide configuration register (bits 0, 1 and 3).
    divide: u32,
    /// Counting at the current divider since this time (ns)...
    start: u64,
    /// ...with this many counts of the period (or the one shot) done.
    done: u64,
    /// Periodic: expiries since the period count began accounted for.
    periods: u64,
    /// One-shot: the count reached 0 and its interrupt is past.
    expired: bool,
    /// Periodic: no interrupt before this time.
    not_before: u64,
}

impl Timer {
    /// Divide by 2, 4, 8, 16, 32, 64, 128 or 1.
    fn divisor(&self) -> u64 {
        match (self.divide & 3) | ((self.divide >> 1) & 4) {
            7 => 1,
            n => 2 << n,
        }
    }

    /// Counts since the count was `initial` (periodic: summed over the
    /// periods).
    fn elapsed(&self, now: u64) -> u64 {
        self.done + clock::ticks(now.saturating_sub(self.start), BUS_HZ) / self.divisor()
    }

    /// The time `counts` counts take.
    fn ns(&self, counts: u64) -> u64 {
        clock::ns_of_ticks(counts * self.divisor(), BUS_HZ)
    }

    /// Counts done in the current period (one-shot: up to `initial`).
    fn counts_in_period(&self, now: u64, periodic: bool) -> u64 {
        let (e, n) = (self.elapsed(now), u64::from(self.initial));
        if n == 0 {
            0
        } else if periodic {
            e % n
        } else {
            e.min(n)
        }
    }

    fn current(&self, now: u64, periodic: bool) -> u32 {
        (u64::from(self.initial) - self.counts_in_period(now, periodic)) as u32
    }

    /// Goes on counting from `counts` done (after a change of the divider
    /// or the mode, which keep the current count).
    fn rebase(&mut self, now: u64, counts: u64) {
        self.start = now;
        self.done = counts;
        self.periods = 0;
        self.not_before = 0;
    }

    /// When the next interrupt falls due, if the timer runs.
    fn deadline(&self, periodic: bool) -> Option<u64> {
        let n = u64::from(self.initial);
        if n == 0 {
            None
        } else if periodic {
            let next = n * (self.periods + 1);
            Some((self.start + self.ns(next.saturating_sub(self.done))).max(self.not_before))
        } else if self.expired {
            None
        } else {
            Some(self.start + self.ns(n.saturating_sub(self.done)))
        }
    }

    /// Accounts for the expiry whose interrupt is being raised at `now`:
    /// periodic, the next one due (the later ones still owed, up to
    /// `MAX_OWED_NS` of them, come after it).
    fn take_expiry(&mut self, now: u64) {
        let n = u64::from(self.initial);
        let due = self.elapsed(now) / n;
        let owed_max = (MAX_OWED_NS / self.ns(n).max(1)).max(1);
        self.periods = (self.periods + 1)
            .max(due.saturating_sub(owed_max))
            .min(due);
    }

    /// Accounts for the expiries up to `now` (their interrupt is taken,
    /// or lost to the mask).
    fn catch_up(&mut self, now: u64, periodic: bool) {
        let n = u64::from(self.initial);
        if n == 0 {
            return;
        }
        let e = self.elapsed(now);
        if periodic {
            self.periods = e / n;
        } else if e >= n {
            self.expired = true;
        }
    }
}

/// The local APIC state machine.
pub struct LocalApic {
    clock: Clock,
    signals: Arc<Signals>,
    /// IA32_APIC_BASE.
    base: u64,
    id: u8,
    tpr: u8,
    ldr: u32,
    dfr: u32,
    svr: u32,
    irr: Vectors,
    isr: Vectors,
    tmr: Vectors,
    /// The ESR as read, and the errors since it was last written.
    esr: u32,
    esr_pending: u32,
    icr: [u32; 2],
    lvt: [u32; LVT_COUNT],
    timer: Timer,
    /// LINT0 and LINT1 input levels (wires: kept across resets).
    lint: [bool; 2],
    /// An ExtINT message from the I/O APIC waits for its acknowledge.
    extint_message: bool,
    /// EOIs of level-triggered vectors, for the I/O APIC.
    eoi_out: Vec<u8>,
}

impl LocalApic {
    /// The APIC as after power-on, kicking `kick` when an interrupt
    /// becomes deliverable.
    pub fn new(clock: Clock, kick: Kick) -> Self {
        let mut a = LocalApic {
            clock,
            signals: Arc::new(Signals {
                interrupt: AtomicBool::new(false),
                nmi: AtomicBool::new(false),
                kick,
            }),
            base: 0,
            id: 0,
            tpr: 0,
            ldr: 0,
            dfr: 0,
            svr: 0,
            irr: [0; 8],
            isr: [0; 8],
            tmr: [0; 8],
            esr: 0,
            esr_pending: 0,
            icr: [0; 2],
            lvt: [0; LVT_COUNT],
            timer: Timer::default(),
            lint: [false; 2],
            extint_message: false,
            eoi_out: Vec::new(),
        };
        a.reset(false);
        a
    }

    /// A machine reset: the power-on state (SDM vol. 3A, 10.4.7.1), or
    /// (`bios`) as a PC BIOS leaves it for a guest loaded without one:
    /// software-enabled, LINT0 ExtINT and LINT1 NMI (virtual wire mode,
    /// MP spec 3.6.2.2, as SeaBIOS programs it).
    ///
    /// One departure from the SDM, as in QEMU: LINT0 comes out of reset
    /// unmasked in ExtINT mode rather than masked, so that firmware which
    /// never programs the APIC still gets the 8259's interrupts.
    pub fn reset(&mut self, bios: bool) {
        self.base = u64::from(DEFAULT_BASE) | BASE_BSP | BASE_ENABLE;
        self.clear();
        if bios {
            self.svr |= SVR_ENABLE;
            self.lvt[LINT0] = 0x8700;
            self.lvt[LINT1] = 0x0400;
        }
        self.publish();
    }

    /// The registers after power-on (the base MSR apart).
    fn clear(&mut self) {
        self.id = 0;
        self.tpr = 0;
        self.ldr = 0;
        self.dfr = u32::MAX;
        self.svr = SVR_RESET;
        self.irr = [0; 8];
        self.isr = [0; 8];
        self.tmr = [0; 8];
        self.esr = 0;
        self.esr_pending = 0;
        self.icr = [0; 2];
        self.lvt = [LVT_MASKED; LVT_COUNT];
        self.lvt[LINT0] = 7 << 8;
        self.timer = Timer::default();
        self.extint_message = false;
        self.signals.nmi.store(false, Ordering::Release);
    }

    /// Globally enabled (IA32_APIC_BASE bit 11): CPUID reports an APIC.
    pub fn enabled(&self) -> bool {
        self.base & BASE_ENABLE != 0
    }

    fn software_enabled(&self) -> bool {
        self.svr & SVR_ENABLE != 0
    }

    /// IA32_APIC_BASE as RDMSR reads it.
    pub fn base_msr(&self) -> u64 {
        self.base
    }

    /// WRMSR to IA32_APIC_BASE. Clearing the enable bit turns the APIC
    /// off (the CPU then acts as one without an APIC: LINT0 is INTR,
    /// LINT1 NMI, the registers read as all ones) and loses its state
    /// (SDM vol. 3A, 10.4.3); setting it again gives the power-on state.
    /// The BSP flag is read-only; another base address is ignored
    /// (relocating the registers is not supported).
    pub fn set_base_msr(&mut self, v: u64) -> Result<(), ReservedBits> {
        if v & !(BASE_ADDRESS | BASE_BSP | BASE_ENABLE) != 0 {
            return Err(ReservedBits(v));
        }
        if v & BASE_ADDRESS != u64::from(DEFAULT_BASE) {
            log::warn!(
                target: "bt86::apic",
                "the guest moves the local APIC to {:#x}: not supported, it stays at {DEFAULT_BASE:#x}",
                v & BASE_ADDRESS
            );
        }
        if (v ^ self.base) & BASE_ENABLE != 0 {
            self.clear();
            self.base ^= BASE_ENABLE;
        }
        self.publish();
        Ok(())
    }

    /// The processor priority (SDM vol. 3A, 10.8.3.1).
    fn ppr(&self) -> u8 {
        let isrv = highest(&self.isr).unwrap_or(0);
        if self.tpr >> 4 >= isrv >> 4 {
            self.tpr
        } else {
            isrv & 0xF0
        }
    }

    /// The arbitration priority (SDM vol. 3A, 10.6.2.4, P6 family).
    fn apr(&self) -> u8 {
        let (tpr, isrv, irrv) = (
            self.tpr >> 4,
            highest(&self.isr).unwrap_or(0) >> 4,
            highest(&self.irr).unwrap_or(0) >> 4,
        );
        if tpr >= irrv && tpr > isrv {
            self.tpr
        } else {
            (tpr & isrv).max(irrv) << 4
        }
    }

    /// The fixed interrupt the CPU would take: the highest requested
    /// vector, if its priority class is above the processor priority's.
    fn deliverable(&self) -> Option<u8> {
        if !self.enabled() || !self.software_enabled() {
            return None;
        }
        let v = highest(&self.irr)?;
        (v >> 4 > self.ppr() >> 4).then_some(v)
    }

    /// LINT0 or LINT1 is asserted, after the LVT's polarity.
    fn lint_asserted(&self, n: usize) -> bool {
        self.lint[n] != (self.lvt[LINT0 + n] & LVT_POLARITY_LOW != 0)
    }

    /// An ExtINT request: the 8259's INTR through LINT0 (straight through
    /// when the APIC is off), or an ExtINT message. ExtINT bypasses the
    /// priorities and the IRR.
    fn extint_ready(&self) -> bool {
        if !self.enabled() {
            return self.lint[0];
        }
        let lvt = self.lvt[LINT0];
        self.extint_message
            || (lvt & LVT_MASKED == 0
                && DeliveryMode::of(lvt) == DeliveryMode::ExtInt
                && self.lint_asserted(0))
    }

    /// Whether the 8259's INTR reaches the CPU (APIC off, or LINT0 an
    /// unmasked ExtINT): its interrupts may wake a halted CPU.
    pub fn extint_open(&self) -> bool {
        let lvt = self.lvt[LINT0];
        !self.enabled() || (lvt & LVT_MASKED == 0 && DeliveryMode::of(lvt) == DeliveryMode::ExtInt)
    }

    /// Whether an interrupt is deliverable (ExtINT or a fixed vector).
    pub fn pending(&self) -> bool {
        self.extint_ready() || self.deliverable().is_some()
    }

    /// Publishes the pending state for the CPU, kicking it when an
    /// interrupt becomes deliverable.
    fn publish(&self) {
        if self.pending() {
            if !self.signals.interrupt.swap(true, Ordering::AcqRel) {
                (self.signals.kick)();
            }
        } else {
            self.signals.interrupt.store(false, Ordering::Release);
        }
    }

    fn raise_nmi(&self) {
        if !self.signals.nmi.swap(true, Ordering::AcqRel) {
            (self.signals.kick)();
        }
    }

    /// Takes a pending NMI (LINT1 in NMI mode, an NMI message or IPI).
    pub fn take_nmi(&mut self) -> bool {
        self.signals.nmi.swap(false, Ordering::AcqRel)
    }

    /// The interrupt-acknowledge cycle. ExtINT first (it ignores the
    /// priorities), then the highest deliverable fixed vector, which goes
    /// in service; if the request went away (the CPU saw it pending, then
    /// raised the TPR, or the APIC was software-disabled), the spurious
    /// vector, with nothing in service (SDM vol. 3A, 10.9). With the APIC
    /// off, INTR is the 8259's.
    pub fn acknowledge(&mut self) -> Option<Ack> {
        let ack = if !self.enabled() {
            Ack::ExtInt
        } else if self.extint_ready() {
            self.extint_message = false;
            Ack::ExtInt
        } else if let Some(v) = self.deliverable() {
            put(&mut self.irr, v, false);
            put(&mut self.isr, v, true);
            Ack::Vector(v)
        } else {
            Ack::Vector(self.svr as u8)
        };
        self.publish();
        Some(ack)
    }

    /// Accepts a fixed interrupt into the IRR (from the I/O APIC, an IPI
    /// or an LVT entry): refused when the APIC is disabled, or with an
    /// illegal vector (0-15, which sets the ESR's receive illegal vector
    /// error, SDM vol. 3A, 10.5.3). `level` sets its TMR bit: its EOI is
    /// broadcast to the I/O APIC.
    pub fn accept(&mut self, vector: u8, level: bool) -> bool {
        let ok = self.accept_fixed(vector, level);
        self.publish();
        ok
    }

    fn accept_fixed(&mut self, vector: u8, level: bool) -> bool {
        if !self.enabled() || !self.software_enabled() {
            return false;
        }
        if vector < 16 {
            self.error(ESR_RECEIVE_ILLEGAL_VECTOR);
            return false;
        }
        put(&mut self.irr, vector, true);
        put(&mut self.tmr, vector, level);
        true
    }

    /// Records an error and raises the error LVT entry. A masked entry
    /// keeps errors out of the ESR (SDM vol. 3A, 8.5.3 of the 2008
    /// edition); an illegal error vector is not delivered (that would be
    /// one more error).
    fn error(&mut self, bits: u32) {
        let lvt = self.lvt[ERROR];
        if lvt & LVT_MASKED != 0 {
            return;
        }
        self.esr_pending |= bits;
        let v = (lvt & LVT_VECTOR) as u8;
        if v >= 16 {
            put(&mut self.irr, v, true);
            put(&mut self.tmr, v, false);
        }
    }

    /// Raises the interrupt of LVT entry `i` (timer, thermal, perf, error).
    fn local_interrupt(&mut self, i: usize) {
        let lvt = self.lvt[i];
        if lvt & LVT_MASKED != 0 {
            return;
        }
        match DeliveryMode::of(lvt) {
            DeliveryMode::Fixed => {
                self.accept_fixed(lvt as u8, false);
            }
            DeliveryMode::Nmi => self.raise_nmi(),
            m => log::debug!(target: "bt86::apic", "LVT {i} in {m:?} mode ignored"),
        }
    }

    /// Whether a message for `dest` is for this APIC (SDM vol. 3A,
    /// 10.6.2): physical, its ID; logical, the flat model's bit mask or
    /// the cluster model's cluster and mask against the LDR; 0xFF, all.
    fn matches(&self, dest: u8, logical: bool) -> bool {
        if dest == BROADCAST {
            return true;
        }
        if !logical {
            return dest == self.id;
        }
        let ldr = (self.ldr >> 24) as u8;
        match self.dfr >> 28 {
            0xF => ldr & dest != 0,
            0x0 => dest >> 4 == ldr >> 4 && dest & ldr & 0xF != 0,
            _ => false,
        }
    }

    /// An interrupt message from the bus (the I/O APIC).
    pub fn deliver(&mut self, msg: &Message) -> bool {
        if !self.enabled() || !self.matches(msg.dest, msg.logical) {
            return false;
        }
        let ok = match msg.mode {
            // With one CPU the lowest priority is this one.
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                self.accept_fixed(msg.vector, msg.level)
            }
            DeliveryMode::Nmi => {
                self.raise_nmi();
                true
            }
            DeliveryMode::ExtInt => {
                self.extint_message = true;
                true
            }
            m => {
                log::debug!(target: "bt86::apic", "{m:?} message ignored");
                false
            }
        };
        self.publish();
        ok
    }

    /// Drives the LINT0 (`n` 0) or LINT1 input to `level`.
    pub fn set_lint(&mut self, n: usize, level: bool) {
        let n = n.min(1);
        let (raw, was) = (self.lint[n], self.lint_asserted(n));
        self.lint[n] = level;
        if !self.enabled() {
            // Without the APIC, LINT1 is the NMI pin (LINT0, INTR, is
            // followed by `extint_ready`).
            if n == 1 && level && !raw {
                self.raise_nmi();
            }
        } else {
            let lvt = self.lvt[LINT0 + n];
            let rising = self.lint_asserted(n) && !was;
            if lvt & LVT_MASKED == 0 {
                match DeliveryMode::of(lvt) {
                    // Followed as a level by `extint_ready`.
                    DeliveryMode::ExtInt => {}
                    // NMI is always edge-triggered.
                    DeliveryMode::Nmi if rising => self.raise_nmi(),
                    DeliveryMode::Fixed if lvt & LVT_LEVEL != 0 => self.lint_level(n),
                    DeliveryMode::Fixed if rising => {
                        self.accept_fixed(lvt as u8, false);
                    }
                    _ => {}
                }
            }
        }
        self.publish();
    }

    /// A level-triggered fixed LINT input: asserted, unmasked and not
    /// awaiting an EOI, it requests its vector (remote IRR, SDM vol. 3A,
    /// 10.5.1).
    fn lint_level(&mut self, n: usize) {
        let lvt = self.lvt[LINT0 + n];
        if lvt & (LVT_MASKED | LVT_REMOTE_IRR) == 0
            && lvt & LVT_LEVEL != 0
            && DeliveryMode::of(lvt) == DeliveryMode::Fixed
            && self.lint_asserted(n)
            && self.accept_fixed(lvt as u8, true)
        {
            self.lvt[LINT0 + n] |= LVT_REMOTE_IRR;
        }
    }

    /// A write to the EOI register: the highest vector in service is
    /// done; a level-triggered one's EOI goes to the I/O APIC and to a
    /// level LINT input waiting for it.
    fn eoi(&mut self) {
        let Some(v) = highest(&self.isr) else {
            return;
        };
        put(&mut self.isr, v, false);
        if !test(&self.tmr, v) {
            return;
        }
        self.eoi_out.push(v);
        for n in 0..2 {
            let lvt = &mut self.lvt[LINT0 + n];
            if *lvt & LVT_REMOTE_IRR != 0 && *lvt as u8 == v {
                *lvt &= !LVT_REMOTE_IRR;
                self.lint_level(n);
            }
        }
    }

    /// The EOIs of level-triggered vectors since the last call, for the
    /// I/O APIC (the handle passes them on).
    pub fn take_eois(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.eoi_out)
    }

    /// A write to ICR low sends an IPI. There is no other CPU: what is
    /// for this one is delivered, the rest (INIT and start-up to the
    /// others) completes at once. The delivery status stays idle.
    fn send_ipi(&mut self) {
        let lo = self.icr[0];
        let vector = lo as u8;
        let to_self = match (lo >> ICR_SHORTHAND_SHIFT) & 3 {
            0 => self.matches((self.icr[1] >> 24) as u8, lo & ICR_LOGICAL != 0),
            // Self, all including self.
            1 | 2 => true,
            _ => false,
        };
        match DeliveryMode::of(lo) {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority if vector < 16 => {
                let receive = if to_self {
                    ESR_RECEIVE_ILLEGAL_VECTOR
                } else {
                    0
                };
                self.error(ESR_SEND_ILLEGAL_VECTOR | receive);
            }
            DeliveryMode::Fixed | DeliveryMode::LowestPriority if to_self => {
                self.accept_fixed(vector, false);
            }
            DeliveryMode::Nmi if to_self => self.raise_nmi(),
            DeliveryMode::Init | DeliveryMode::StartUp | DeliveryMode::Smi if to_self => {
                log::debug!(target: "bt86::apic", "IPI to self ignored: ICR {lo:#010x}");
            }
            _ => {}
        }
    }

    /// A write to the spurious-interrupt vector register. Software
    /// disabling masks every LVT entry (SDM vol. 3A, 10.4.7.2).
    fn write_svr(&mut self, v: u32) {
        self.svr = v & SVR_WRITABLE;
        if !self.software_enabled() {
            for l in &mut self.lvt {
                *l |= LVT_MASKED;
            }
        }
    }

    fn write_lvt(&mut self, i: usize, v: u32, now: u64) {
        let old = self.lvt[i];
        let mut new = (v & LVT_WRITABLE[i]) | (old & LVT_REMOTE_IRR);
        if new & LVT_LEVEL == 0 {
            new &= !LVT_REMOTE_IRR;
        }
        if !self.software_enabled() {
            new |= LVT_MASKED;
        }
        self.lvt[i] = new;
        match i {
            TIMER => {
                let periodic = old & LVT_PERIODIC != 0;
                if (old ^ new) & LVT_PERIODIC != 0 {
                    // A mode change keeps the current count.
                    let k = self.timer.counts_in_period(now, periodic);
                    self.timer.rebase(now, k);
                    if periodic {
                        self.timer.expired = false;
                    }
                } else if old & LVT_MASKED != 0 && new & LVT_MASKED == 0 {
                    // What expired under the mask stays lost.
                    self.timer.catch_up(now, periodic);
                }
            }
            LINT0 | LINT1 => self.lint_level(i - LINT0),
            _ => {}
        }
    }

    fn periodic(&self) -> bool {
        self.lvt[TIMER] & LVT_PERIODIC != 0
    }

    fn read_register(&mut self, r: u32) -> Option<u32> {
        let now = self.clock.now();
        let index = |base: u32| ((r - base) >> 4) as usize;
        Some(match r {
            reg::ID => u32::from(self.id) << 24,
            reg::VERSION => VERSION,
            reg::TPR => u32::from(self.tpr),
            reg::APR => u32::from(self.apr()),
            reg::PPR => u32::from(self.ppr()),
            // Write-only; the remote read register has nothing to read
            // without an APIC bus.
            reg::EOI | reg::RRD => 0,
            reg::LDR => self.ldr,
            reg::DFR => self.dfr,
            reg::SVR => self.svr,
            0x100..=0x170 => self.isr[index(reg::ISR)],
            0x180..=0x1F0 => self.tmr[index(reg::TMR)],
            0x200..=0x270 => self.irr[index(reg::IRR)],
            reg::ESR => self.esr,
            reg::ICR_LOW => self.icr[0],
            reg::ICR_HIGH => self.icr[1],
            0x320..=0x370 => self.lvt[index(reg::LVT)],
            reg::TIMER_INITIAL => self.timer.initial,
            reg::TIMER_CURRENT => self.timer.current(now, self.periodic()),
            reg::TIMER_DIVIDE => self.timer.divide,
            _ => return None,
        })
    }

    fn write_register(&mut self, r: u32, v: u32) {
        let now = self.clock.now();
        match r {
            reg::ID => self.id = (v >> 24) as u8,
            reg::TPR => self.tpr = v as u8,
            reg::EOI => self.eoi(),
            reg::LDR => self.ldr = v & 0xFF00_0000,
            reg::DFR => self.dfr = v | 0x0FFF_FFFF,
            reg::SVR => self.write_svr(v),
            // Write-then-read: the write latches the errors seen since
            // the last one (SDM vol. 3A, 10.5.3).
            reg::ESR => self.esr = std::mem::take(&mut self.esr_pending),
            reg::ICR_LOW => {
                self.icr[0] = v & ICR_LOW_WRITABLE;
                self.send_ipi();
            }
            reg::ICR_HIGH => self.icr[1] = v & ICR_HIGH_WRITABLE,
            0x320..=0x370 => self.write_lvt(((r - reg::LVT) >> 4) as usize, v, now),
            reg::TIMER_INITIAL => {
                self.timer = Timer {
                    initial: v,
                    start: now,
                    divide: self.timer.divide,
                    ..Timer::default()
                };
            }
            reg::TIMER_DIVIDE => {
                let k = self.timer.counts_in_period(now, self.periodic());
                self.timer.divide = v & 0xB;
                self.timer.rebase(now, k);
            }
            // Read-only.
            reg::VERSION | reg::APR | reg::PPR | reg::RRD | 0x100..=0x270 | reg::TIMER_CURRENT => {}
            _ => self.error(ESR_ILLEGAL_REGISTER),
        }
    }

    /// Whether the timer will raise an interrupt by itself (for `hlt`).
    pub fn timer_armed(&self) -> bool {
        self.deadline().is_some()
    }
}

impl MmioDevice for LocalApic {
    /// Registers are 32 bits at 16-byte aligned offsets; a narrower read
    /// inside one gets its bytes, bytes 4-15 of a slot read 0. A reserved
    /// offset reads 0 and sets the illegal register address error. An
    /// APIC that is off is not there: all ones.
    fn read(&mut self, offset: u32, size: u8) -> u64 {
        if !self.enabled() {
            return u64::MAX;
        }
        let (r, byte) = (offset & 0xFF0, offset & 0xF);
        let v = match self.read_register(r) {
            Some(v) => v,
            None => {
                self.error(ESR_ILLEGAL_REGISTER);
                0
            }
        };
        self.publish();
        let v = if byte < 4 { v >> (byte * 8) } else { 0 };
        u64::from(v) & (u64::MAX >> (64 - 8 * u32::from(size.clamp(1, 8))))
    }

    /// Only 32-bit (or 64-bit: the low half) writes at a register's
    /// offset do anything, as in QEMU.
    fn write(&mut self, offset: u32, size: u8, value: u64) {
        if !self.enabled() || size < 4 || offset & 0xF != 0 {
            return;
        }
        self.write_register(offset & 0xFF0, value as u32);
        self.publish();
    }
}

impl Timed for LocalApic {
    fn deadline(&self) -> Option<u64> {
        if self.lvt[TIMER] & LVT_MASKED != 0 {
            return None;
        }
        self.timer.deadline(self.periodic())
    }

    fn advance(&mut self, now: u64) {
        if self.deadline().is_none_or(|d| d > now) {
            return;
        }
        if self.periodic() {
            if test(&self.irr, self.lvt[TIMER] as u8) {
                // The last one is not taken yet (the CPU thread waits for
                // the host, or the guest keeps IF clear): this one stays
                // owed rather than merge with it; look again later.
                self.timer.not_before = now + OWED_RETRY_NS;
                return;
            }
            self.timer.not_before = now + MIN_PERIODIC_NS;
            self.timer.take_expiry(now);
        } else {
            self.timer.expired = true;
        }
        self.local_interrupt(TIMER);
        self.publish();
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the handle calls out to, set once when the machine is wired.
#[derive(Default)]
struct Links {
    eoi: OnceLock<EoiSink>,
    ticker: OnceLock<TickerHandle>,
}

/// The local APIC shared by the MMIO bus, the ticker, the I/O APIC and
/// the CPU. The pending state and NMIs are mirrored in atomics, so the
/// CPU's checks take no lock.
#[derive(Clone)]
pub struct LocalApicHandle {
    apic: Arc<Mutex<LocalApic>>,
    signals: Arc<Signals>,
    links: Arc<Links>,
}

impl LocalApicHandle {
    /// A powered-on APIC reading `clock`; `kick` is called when an
    /// interrupt or NMI becomes deliverable.
    pub fn new(clock: Clock, kick: Kick) -> Self {
        let apic = LocalApic::new(clock, kick);
        LocalApicHandle {
            signals: apic.signals.clone(),
            apic: Arc::new(Mutex::new(apic)),
            links: Arc::default(),
        }
    }

    /// Lets `ticker` raise the timer's interrupts (once).
    pub fn attach_ticker(&self, ticker: &Ticker) {
        if self.links.ticker.set(ticker.handle()).is_ok() {
            ticker.add(self.apic.clone());
        }
    }

    /// Sends the EOIs of level-triggered vectors to `sink` (the I/O
    /// APIC's `eoi`). Set once.
    pub fn connect_eoi(&self, sink: EoiSink) {
        if self.links.eoi.set(sink).is_err() {
            log::warn!(target: "bt86::apic", "the EOI broadcast is already connected");
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut LocalApic) -> T) -> T {
        f(&mut lock(&self.apic))
    }

    /// Runs `f`, then, with the lock released, passes on EOIs and tells
    /// the ticker if the timer's deadline moved earlier.
    fn with_callouts<T>(&self, f: impl FnOnce(&mut LocalApic) -> T) -> T {
        let mut a = lock(&self.apic);
        let r = f(&mut a);
        let (eois, deadline) = (a.take_eois(), a.deadline());
        drop(a);
        if let Some(sink) = self.links.eoi.get() {
            for v in eois {
                sink(v);
            }
        }
        if let Some(t) = self.links.ticker.get() {
            t.rearm_for(deadline);
        }
        r
    }

    /// A machine reset (see [`LocalApic::reset`]).
    pub fn reset(&self, bios: bool) {
        self.with_callouts(|a| a.reset(bios));
    }

    /// Whether an interrupt is deliverable (no lock).
    pub fn pending(&self) -> bool {
        self.signals.interrupt.load(Ordering::Acquire)
    }

    /// The interrupt-acknowledge cycle (see [`LocalApic::acknowledge`]).
    pub fn acknowledge(&self) -> Option<Ack> {
        self.with(LocalApic::acknowledge)
    }

    /// Takes a pending NMI. NMIs ignore IF: the CPU checks this at every
    /// instruction boundary where it checks for interrupts.
    pub fn take_nmi(&self) -> bool {
        self.signals.nmi.swap(false, Ordering::AcqRel)
    }

    /// A fixed interrupt (see [`LocalApic::accept`]).
    pub fn accept(&self, vector: u8, level: bool) -> bool {
        self.with(|a| a.accept(vector, level))
    }

    /// Drives LINT0. In ExtINT mode (virtual wire) its level is the
    /// 8259's INTR; [`CpuInterrupts`] drives it so.
    pub fn set_lint0(&self, level: bool) {
        self.with(|a| a.set_lint(0, level));
    }

    /// Drives LINT1 (NMI in virtual wire mode).
    pub fn set_lint1(&self, level: bool) {
        self.with(|a| a.set_lint(1, level));
    }

    /// RDMSR IA32_APIC_BASE.
    pub fn base_msr(&self) -> u64 {
        self.with(|a| a.base_msr())
    }

    /// WRMSR IA32_APIC_BASE (see [`LocalApic::set_base_msr`]); Err: #GP.
    pub fn set_base_msr(&self, v: u64) -> Result<(), ReservedBits> {
        self.with_callouts(|a| a.set_base_msr(v))
    }

    /// Whether the APIC is globally enabled: CPUID.1:EDX bit 9
    /// ([`CPUID_EDX_APIC`]) follows it.
    pub fn enabled(&self) -> bool {
        self.with(|a| a.enabled())
    }

    /// Whether the 8259's INTR reaches the CPU (see
    /// [`LocalApic::extint_open`]).
    pub fn extint_open(&self) -> bool {
        self.with(|a| a.extint_open())
    }

    /// Whether the timer will interrupt by itself (for `hlt`).
    pub fn timer_armed(&self) -> bool {
        self.with(|a| a.timer_armed())
    }
}

impl MmioDevice for LocalApicHandle {
    fn read(&mut self, offset: u32, size: u8) -> u64 {
        self.with(|a| a.read(offset, size))
    }

    fn write(&mut self, offset: u32, size: u8, value: u64) {
        self.with_callouts(|a| a.write(offset, size, value));
    }
}

impl InterruptTarget for LocalApicHandle {
    fn deliver(&self, msg: &Message) -> bool {
        self.with(|a| a.deliver(msg))
    }
}

/// The CPU's interrupt controller on a machine with a local APIC: the
/// APIC, with the 8259 on LINT0. INTR is sampled when the CPU asks
/// whether an interrupt is pending (the 8259 kicks the CPU when INTR
/// rises, so the APIC sees the new level at that check); an ExtINT
/// acknowledge runs the 8259's cycle. NMIs are not part of
/// [`InterruptController`]: the run loop asks
/// [`LocalApicHandle::take_nmi`].
pub struct CpuInterrupts {
    apic: LocalApicHandle,
    pic: Box<dyn InterruptController>,
    io_apic: Option<IoApicHandle>,
    /// The INTR level last put on LINT0.
    intr: bool,
}

impl CpuInterrupts {
    pub fn new(
        apic: LocalApicHandle,
        pic: Box<dyn InterruptController>,
        io_apic: Option<IoApicHandle>,
    ) -> Self {
        CpuInterrupts {
            apic,
            pic,
            io_apic,
            intr: false,
        }
    }

    /// Puts the 8259's INTR on LINT0 if it changed.
    fn sample(&mut self) {
        let intr = self.pic.pending();
        if intr != self.intr {
            self.intr = intr;
            self.apic.set_lint0(intr);
        }
    }
}

impl InterruptController for CpuInterrupts {
    fn pending(&mut self) -> bool {
        self.sample();
        self.apic.pending()
    }

    /// Uses the INTR level `pending` sampled: once the APIC has taken
    /// an ExtINT request, the acknowledge goes to the 8259 even if INTR
    /// fell since (the 8259 then answers with its spurious IRQ 7), as
    /// on hardware.
    fn acknowledge(&mut self) -> Option<u8> {
        match self.apic.acknowledge()? {
            Ack::Vector(v) => Some(v),
            Ack::ExtInt => self.pic.acknowledge(),
        }
    }

    fn may_interrupt(&mut self) -> bool {
        self.pending()
            || self.apic.timer_armed()
            || (self.apic.extint_open() && self.pic.may_interrupt())
            || self.io_apic.as_ref().is_some_and(|io| io.may_interrupt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    struct Rig {
        apic: LocalApicHandle,
        clock: Clock,
        kicks: Arc<AtomicU32>,
        eois: Arc<Mutex<Vec<u8>>>,
    }

    /// The time `ticks` cycles of the timer's input clock take.
    fn ns(ticks: u64) -> u64 {
        clock::ns_of_ticks(ticks, BUS_HZ)
    }

    fn rig() -> Rig {
        let clock = Clock::manual();
        let kicks = Arc::new(AtomicU32::new(0));
        let k = kicks.clone();
        let apic = LocalApicHandle::new(
            clock.clone(),
            Arc::new(move || {
                k.fetch_add(1, Ordering::SeqCst);
            }),
        );
        let eois = Arc::new(Mutex::new(Vec::new()));
        let e = eois.clone();
        apic.connect_eoi(Arc::new(move |v| lock(&e).push(v)));
        Rig {
            apic,
            clock,
            kicks,
            eois,
        }
    }

    impl Rig {
        fn r(&self, offset: u32) -> u32 {
            MmioDevice::read(&mut self.apic.clone(), offset, 4) as u32
        }
        fn w(&self, offset: u32, v: u32) {
            MmioDevice::write(&mut self.apic.clone(), offset, 4, u64::from(v));
        }
        /// Software-enabled with spurious vector 0xFF, as Linux does.
        fn enabled(self) -> Self {
            self.w(0xF0, 0x1FF);
            self
        }
        fn kicks(&self) -> u32 {
            self.kicks.load(Ordering::SeqCst)
        }
        fn ack(&self) -> Option<Ack> {
            self.apic.acknowledge()
        }
        fn eoi(&self) {
            self.w(0xB0, 0);
        }
        fn advance(&self, ns: u64) {
            self.clock.advance(ns);
            let now = self.clock.now();
            lock(&self.apic.apic).advance(now);
        }
        fn deadline(&self) -> Option<u64> {
            lock(&self.apic.apic).deadline()
        }
        /// The timer periodic on vector 0x31, dividing by 1, `period`
        /// counts long.
        fn periodic(&self, period: u64) {
            self.w(0x3E0, 0xB);
            self.w(0x320, 0x2_0031);
            self.w(0x380, period as u32);
        }
        fn irr(&self, v: u8) -> bool {
            self.r(0x200 + u32::from(v >> 5) * 0x10) & (1 << (v & 31)) != 0
        }
    }

    #[test]
    fn registers_after_power_on() {
        let t = rig();
        assert_eq!(t.r(0x20), 0, "APIC ID 0");
        assert_eq!(t.r(0x30), 0x0005_0014);
        assert_eq!(t.r(0x80), 0);
        assert_eq!(t.r(0xE0), 0xFFFF_FFFF, "DFR: flat model");
        assert_eq!(t.r(0xF0), 0xFF, "software-disabled, vector 0xFF");
        assert_eq!(t.r(0x320), 0x1_0000, "timer masked");
        assert_eq!(t.r(0x350), 0x700, "LINT0 ExtINT (QEMU's reset state)");
        assert_eq!(t.r(0x360), 0x1_0000);
        assert_eq!(t.r(0x370), 0x1_0000);
        assert_eq!(t.apic.base_msr(), 0xFEE0_0900, "base, BSP, enabled");
        assert!(t.apic.enabled());
    }

    #[test]
    fn bios_reset_leaves_virtual_wire_mode() {
        let t = rig();
        t.apic.reset(true);
        assert_eq!(t.r(0xF0), 0x1FF);
        assert_eq!(t.r(0x350), 0x8700);
        assert_eq!(t.r(0x360), 0x400);
    }

    #[test]
    fn registers_keep_only_their_writable_bits() {
        let t = rig().enabled();
        t.w(0x20, 0xFFFF_FFFF);
        assert_eq!(t.r(0x20), 0xFF00_0000);
        t.w(0x80, 0xFFFF_FFFF);
        assert_eq!(t.r(0x80), 0xFF);
        t.w(0xD0, 0x1234_5678);
        assert_eq!(t.r(0xD0), 0x1200_0000);
        t.w(0xE0, 0);
        assert_eq!(t.r(0xE0), 0x0FFF_FFFF, "cluster model, low bits all ones");
        t.w(0xF0, 0xFFFF_FFFF);
        assert_eq!(t.r(0xF0), 0x3FF);
        t.w(0x310, 0xFFFF_FFFF);
        assert_eq!(t.r(0x310), 0xFF00_0000);
        t.w(0x320, 0xFFFF_FFFF);
        assert_eq!(
            t.r(0x320),
            0x3_00FF,
            "vector, mask, periodic; no TSC-deadline"
        );
        t.w(0x350, 0xFFFF_FFFF);
        assert_eq!(t.r(0x350), 0x1_A7FF, "no delivery status, no remote IRR");
        t.w(0x370, 0xFFFF_FFFF);
        assert_eq!(t.r(0x370), 0x1_00FF);
        t.w(0x3E0, 0xFFFF_FFFF);
        assert_eq!(t.r(0x3E0), 0xB);
        // Read-only registers ignore writes.
        for (off, v) in [(0x30, 0x0005_0014), (0xA0, 0xFF), (0x200, 0), (0x390, 0)] {
            t.w(off, 0x5555_5555);
            assert_eq!(t.r(off), v, "{off:#x}");
        }
    }

    #[test]
    fn narrow_reads_get_the_registers_bytes_and_narrow_writes_do_nothing() {
        let t = rig().enabled();
        let mut h = t.apic.clone();
        assert_eq!(h.read(0x30, 1), 0x14);
        assert_eq!(h.read(0x32, 1), 0x05);
        assert_eq!(h.read(0x34, 4), 0, "bytes 4-15 of a slot");
        h.write(0x80, 1, 0x40);
        assert_eq!(t.r(0x80), 0);
        h.write(0x84, 4, 0x40);
        assert_eq!(t.r(0x80), 0);
    }

    #[test]
    fn the_error_register_is_written_then_read() {
        let t = rig().enabled();
        t.w(0x370, 0xFE);
        assert!(!t.apic.accept(0x05, false), "vectors 0-15 are illegal");
        assert_eq!(t.r(0x280), 0, "not latched until written");
        t.w(0x280, 0);
        assert_eq!(t.r(0x280), 0x40, "receive illegal vector");
        t.w(0x280, 0);
        assert_eq!(t.r(0x280), 0, "back-to-back writes clear it");
        assert!(t.irr(0xFE), "the error LVT interrupt");
        assert!(!t.irr(0x05));
    }

    #[test]
    fn a_reserved_register_is_an_illegal_register_address() {
        let t = rig().enabled();
        t.w(0x370, 0xFE);
        assert_eq!(t.r(0x2F0), 0, "no CMCI entry with five LVTs");
        t.w(0x280, 0);
        assert_eq!(t.r(0x280), 0x80);
        assert!(t.irr(0xFE));
    }

    #[test]
    fn a_masked_error_entry_keeps_errors_out() {
        let t = rig().enabled();
        t.apic.accept(0x01, false);
        t.w(0x280, 0);
        assert_eq!(t.r(0x280), 0);
        assert!(!t.apic.pending());
    }

    #[test]
    fn the_highest_vector_is_taken_first_and_nests_by_class() {
        let t = rig().enabled();
        for v in [0x31, 0x80, 0x45] {
            assert!(t.apic.accept(v, false));
        }
        assert_eq!(t.ack(), Some(Ack::Vector(0x80)));
        assert!(!t.apic.pending(), "0x45 is below the class in service");
        assert_eq!(t.r(0xA0), 0x80, "PPR: the class in service");
        t.apic.accept(0x90, false);
        assert_eq!(t.ack(), Some(Ack::Vector(0x90)), "a higher class nests");
        t.eoi();
        assert_eq!(t.r(0x100 + 4 * 0x10), 1, "EOI cleared 0x90, 0x80 remains");
        t.eoi();
        assert_eq!(t.ack(), Some(Ack::Vector(0x45)));
        assert!(!t.apic.pending(), "0x31 waits for the EOI");
        t.eoi();
        assert_eq!(t.ack(), Some(Ack::Vector(0x31)));
        t.eoi();
        assert_eq!(highest(&lock(&t.apic.apic).isr), None);
    }

    #[test]
    fn a_vector_of_the_class_in_service_waits() {
        let t = rig().enabled();
        t.apic.accept(0x41, false);
        assert_eq!(t.ack(), Some(Ack::Vector(0x41)));
        t.apic.accept(0x4F, false);
        assert!(!t.apic.pending());
        t.eoi();
        assert_eq!(t.ack(), Some(Ack::Vector(0x4F)));
    }

    #[test]
    fn the_task_priority_masks_classes_and_its_drop_kicks() {
        let t = rig().enabled();
        t.w(0x80, 0x50);
        t.apic.accept(0x5F, false);
        assert!(!t.apic.pending(), "class 5 is not above TPR class 5");
        assert_eq!(t.kicks(), 0);
        t.apic.accept(0x61, false);
        assert!(t.apic.pending());
        assert_eq!(t.kicks(), 1);
        assert_eq!(t.ack(), Some(Ack::Vector(0x61)));
        t.eoi();
        assert!(!t.apic.pending());
        t.w(0x80, 0x40);
        assert!(t.apic.pending(), "TPR dropped below 0x5F's class");
        assert_eq!(t.kicks(), 2);
    }

    #[test]
    fn an_eoi_that_uncovers_a_request_kicks() {
        let t = rig().enabled();
        t.apic.accept(0x70, false);
        t.ack();
        t.apic.accept(0x60, false);
        assert_eq!(t.kicks(), 1);
        t.eoi();
        assert!(t.apic.pending());
        assert_eq!(t.kicks(), 2);
    }

    #[test]
    fn processor_and_arbitration_priorities() {
        let t = rig().enabled();
        t.w(0x80, 0x25);
        assert_eq!(t.r(0xA0), 0x25);
        t.apic.accept(0x31, false);
        t.ack();
        assert_eq!(t.r(0xA0), 0x30, "ISR class 3 is above TPR class 2");
        t.w(0x80, 0x45);
        assert_eq!(t.r(0xA0), 0x45);
        // APR: TPR when it is at least the IRR's class and above the ISR's.
        assert_eq!(t.r(0x90), 0x45);
        t.apic.accept(0x61, false);
        assert_eq!(t.r(0x90), 0x60, "max(TPR & ISRV class, IRRV class)");
    }

    #[test]
    fn a_request_that_went_away_gives_the_spurious_vector() {
        let t = rig().enabled();
        t.apic.accept(0x40, false);
        assert!(t.apic.pending());
        // The CPU saw it, then raised its task priority.
        t.w(0x80, 0xF0);
        assert!(!t.apic.pending());
        assert_eq!(t.ack(), Some(Ack::Vector(0xFF)));
        assert_eq!(
            t.r(0x100 + 2 * 0x10),
            0,
            "the spurious vector is not in service"
        );
        assert!(t.irr(0x40), "the request stays");
    }

    #[test]
    fn a_level_triggered_eoi_reaches_the_io_apic() {
        let t = rig().enabled();
        t.apic.accept(0x55, true);
        t.apic.accept(0x56, false);
        assert_eq!(t.r(0x180 + 2 * 0x10), 1 << (0x55 - 0x40), "TMR");
        assert_eq!(t.ack(), Some(Ack::Vector(0x56)));
        t.eoi();
        assert!(lock(&t.eois).is_empty(), "an edge EOI is not broadcast");
        assert_eq!(t.ack(), Some(Ack::Vector(0x55)));
        t.eoi();
        assert_eq!(*lock(&t.eois), vec![0x55]);
        t.eoi();
        assert_eq!(lock(&t.eois).len(), 1, "nothing in service: no EOI");
    }

    #[test]
    fn software_disabled_masks_the_lvt_and_refuses_fixed_interrupts() {
        let t = rig().enabled();
        t.w(0x320, 0x30);
        t.w(0x370, 0xFE);
        t.w(0xF0, 0xFF);
        assert_eq!(t.r(0x320), 0x1_0030);
        assert_eq!(t.r(0x370), 0x1_00FE);
        t.w(0x320, 0x30);
        assert_eq!(t.r(0x320), 0x1_0030, "cannot be unmasked while disabled");
        assert!(!t.apic.accept(0x40, false));
        assert!(!t.apic.pending());
    }

    #[test]
    fn globally_disabled_the_apic_is_gone_and_intr_goes_straight_through() {
        let t = rig().enabled();
        t.w(0x80, 0x20);
        assert_eq!(t.apic.set_base_msr(0xFEE0_0100), Ok(()));
        assert!(!t.apic.enabled());
        assert_eq!(t.apic.base_msr(), 0xFEE0_0100);
        assert_eq!(t.r(0x30), 0xFFFF_FFFF, "no registers");
        t.w(0x80, 0x30);
        assert!(!t.apic.accept(0x40, false));
        t.apic.set_lint0(true);
        assert!(t.apic.pending(), "LINT0 is INTR");
        assert_eq!(t.ack(), Some(Ack::ExtInt));
        t.apic.set_lint1(true);
        assert!(t.apic.take_nmi(), "LINT1 is NMI");
        assert!(!t.apic.take_nmi());
        // Enabled again: the power-on state.
        assert_eq!(t.apic.set_base_msr(0xFEE0_0900), Ok(()));
        assert_eq!(t.r(0x80), 0);
        assert_eq!(t.r(0xF0), 0xFF);
        assert_eq!(t.r(0x350), 0x700);
        // Reserved bits: #GP.
        assert!(t.apic.set_base_msr(0xFEE0_0D00).is_err(), "x2APIC");
        assert!(t.apic.set_base_msr(0x1_0000_0000_0900).is_err());
        assert!(t.apic.set_base_msr(0xFEE0_0901).is_err());
    }

    #[test]
    fn moving_the_base_is_ignored() {
        let t = rig();
        assert_eq!(t.apic.set_base_msr(0xFED0_0900), Ok(()));
        assert_eq!(t.apic.base_msr(), 0xFEE0_0900);
    }

    #[test]
    fn lint0_in_extint_mode_is_the_virtual_wire() {
        let t = rig().enabled();
        t.w(0x80, 0xFF);
        t.apic.set_lint0(true);
        assert!(t.apic.pending(), "ExtINT ignores the task priority");
        assert_eq!(t.kicks(), 1);
        assert_eq!(t.ack(), Some(Ack::ExtInt));
        assert_eq!(t.r(0x100 + 7 * 0x10), 0, "ExtINT bypasses the ISR");
        t.apic.set_lint0(false);
        assert!(!t.apic.pending());
        t.w(0x350, 0x1_0700);
        t.apic.set_lint0(true);
        assert!(!t.apic.pending(), "masked");
        t.w(0x350, 0x700);
        assert!(t.apic.pending());
    }

    #[test]
    fn lint1_in_nmi_mode_raises_an_nmi_on_its_edge() {
        let t = rig().enabled();
        t.w(0x360, 0x400);
        t.apic.set_lint1(true);
        assert!(t.apic.take_nmi());
        assert!(!t.apic.take_nmi(), "taken");
        t.apic.set_lint1(true);
        assert!(!t.apic.take_nmi(), "no new edge");
        assert!(!t.apic.pending(), "an NMI is not an INTR interrupt");
    }

    #[test]
    fn a_level_fixed_lint_waits_for_its_eoi() {
        let t = rig().enabled();
        t.w(0x350, 0x8000 | 0x66);
        t.apic.set_lint0(true);
        assert_eq!(t.r(0x350) & LVT_REMOTE_IRR, LVT_REMOTE_IRR);
        assert_eq!(t.ack(), Some(Ack::Vector(0x66)));
        assert!(!t.apic.pending());
        t.eoi();
        assert_eq!(t.ack(), Some(Ack::Vector(0x66)), "still asserted");
        t.apic.set_lint0(false);
        t.eoi();
        assert_eq!(t.r(0x350) & LVT_REMOTE_IRR, 0);
        assert!(!t.apic.pending());
        // Active low: asserted by a low level.
        t.w(0x350, 0x2000 | 0x67);
        t.apic.set_lint0(true);
        t.apic.set_lint0(false);
        assert_eq!(t.ack(), Some(Ack::Vector(0x67)));
    }

    #[test]
    fn self_ipis() {
        let t = rig().enabled();
        t.w(0x300, 0x4_0000 | 0x41);
        assert_eq!(t.r(0x300), 0x4_0041, "delivery status idle");
        assert!(t.irr(0x41), "shorthand self");
        t.w(0x300, 0x8_0000 | 0x42);
        assert!(t.irr(0x42), "all including self");
        t.w(0x300, 0xC_0000 | 0x43);
        assert!(!t.irr(0x43), "all excluding self: nobody");
        t.w(0x310, 0);
        t.w(0x300, 0x44);
        assert!(t.irr(0x44), "physical destination 0 is this APIC");
        t.w(0x310, 0x0300_0000);
        t.w(0x300, 0x45);
        assert!(!t.irr(0x45), "APIC 3 does not exist");
        // INIT and start-up to the others just complete.
        t.w(0x300, 0xC_4500);
        t.w(0x300, 0xC_4600 | 0x10);
        assert_eq!(t.r(0x300), 0xC_4610, "delivery status idle");
        assert!(!t.irr(0x10));
        t.w(0x300, 0x4_0400);
        assert!(t.apic.take_nmi(), "NMI to self");
        // Illegal vectors.
        t.w(0x370, 0xFE);
        t.w(0x300, 0x4_0000 | 0x0F);
        t.w(0x280, 0);
        assert_eq!(t.r(0x280), 0x60, "send and receive illegal vector");
    }

    #[test]
    fn logical_destinations_flat_and_cluster() {
        let t = rig().enabled();
        let msg = |dest, logical| Message {
            vector: 0x50,
            mode: DeliveryMode::Fixed,
            logical,
            dest,
            level: false,
        };
        t.w(0xD0, 0x0100_0000);
        assert!(t.apic.deliver(&msg(0x01, true)), "flat: bit 0");
        assert!(t.apic.deliver(&msg(0x03, true)));
        assert!(!t.apic.deliver(&msg(0x02, true)));
        assert!(t.apic.deliver(&msg(0xFF, true)), "broadcast");
        assert!(t.apic.deliver(&msg(0x00, false)), "physical ID 0");
        assert!(!t.apic.deliver(&msg(0x01, false)));
        t.w(0xE0, 0x0FFF_FFFF);
        t.w(0xD0, 0x2100_0000);
        assert!(t.apic.deliver(&msg(0x21, true)), "cluster 2, member 1");
        assert!(t.apic.deliver(&msg(0x23, true)));
        assert!(!t.apic.deliver(&msg(0x11, true)), "another cluster");
        assert!(!t.apic.deliver(&msg(0x22, true)));
    }

    #[test]
    fn messages_in_nmi_and_extint_modes() {
        let t = rig().enabled();
        let msg = |mode| Message {
            vector: 0,
            mode,
            logical: false,
            dest: 0,
            level: false,
        };
        assert!(t.apic.deliver(&msg(DeliveryMode::Nmi)));
        assert!(t.apic.take_nmi());
        assert!(t.apic.deliver(&msg(DeliveryMode::ExtInt)));
        assert_eq!(t.ack(), Some(Ack::ExtInt));
        assert!(!t.apic.pending());
        assert!(!t.apic.deliver(&msg(DeliveryMode::Init)));
    }

    #[test]
    fn one_shot_timer_counts_down_once() {
        let t = rig().enabled();
        t.w(0x3E0, 0x3); // divide by 16
        t.w(0x320, 0x30);
        t.w(0x380, 1000);
        assert_eq!(t.r(0x390), 1000);
        assert_eq!(t.deadline(), Some(ns(16_000)));
        t.advance(ns(1600));
        assert_eq!(t.r(0x390), 900);
        t.advance(ns(16_000) - 1 - ns(1600));
        assert!(!t.irr(0x30));
        assert_eq!(t.r(0x390), 1);
        t.advance(1);
        assert!(t.irr(0x30));
        assert_eq!(t.r(0x390), 0);
        assert_eq!(t.deadline(), None, "once");
        t.advance(ns(1_000_000));
        assert_eq!(t.r(0x390), 0, "stays at 0");
        assert_eq!(t.kicks(), 1);
    }

    #[test]
    fn periodic_timer_reloads() {
        let t = rig().enabled();
        t.periodic(1_000_000);
        assert_eq!(t.deadline(), Some(ns(1_000_000)));
        t.advance(ns(1_000_000));
        assert_eq!(t.ack(), Some(Ack::Vector(0x31)));
        t.eoi();
        assert_eq!(t.deadline(), Some(ns(2_000_000)));
        assert_eq!(t.r(0x390), 1_000_000, "reloaded");
        t.advance(ns(1_250_000) - ns(1_000_000));
        assert_eq!(t.r(0x390), 750_000);
        // A late tick (bt86 was not running): the periods missed come one
        // by one, MIN_PERIODIC_NS apart, then the timer is on time again.
        let late = ns(4_250_000);
        t.advance(late - ns(1_250_000));
        assert_eq!(t.r(0x390), 750_000, "the count is not disturbed");
        for k in 1..=3 {
            assert_eq!(t.ack(), Some(Ack::Vector(0x31)), "period {}", k + 1);
            t.eoi();
            assert!(!t.apic.pending());
            if k < 3 {
                let next = late + k * MIN_PERIODIC_NS;
                assert_eq!(t.deadline(), Some(next));
                t.advance(next - t.clock.now());
            }
        }
        assert_eq!(t.deadline(), Some(ns(5_000_000)));
    }

    #[test]
    fn an_expiry_that_finds_the_last_one_pending_stays_owed() {
        let t = rig().enabled();
        let period = BUS_HZ / 1000; // 1 ms
        t.periodic(period);
        t.advance(ns(period));
        assert!(t.irr(0x31));
        // The next period ends before the CPU took the first interrupt.
        t.advance(ns(2 * period) - ns(period));
        assert_eq!(t.ack(), Some(Ack::Vector(0x31)));
        t.eoi();
        assert!(!t.apic.pending(), "the second one was not merged away...");
        let d = t.deadline().unwrap();
        assert_eq!(d, ns(2 * period) + OWED_RETRY_NS);
        t.advance(d - t.clock.now());
        assert_eq!(t.ack(), Some(Ack::Vector(0x31)), "...but owed");
        t.eoi();
        // Meanwhile the third period ended too: owed, then on time.
        let d = t.deadline().unwrap();
        assert_eq!(d, ns(3 * period) + MIN_PERIODIC_NS);
        t.advance(d - t.clock.now());
        assert_eq!(t.ack(), Some(Ack::Vector(0x31)));
        t.eoi();
        assert_eq!(t.deadline(), Some(ns(4 * period)));
    }

    #[test]
    fn at_most_a_second_of_missed_periods_is_owed() {
        let t = rig().enabled();
        let period = BUS_HZ / 100; // 10 ms
        t.periodic(period);
        t.advance(ns(period));
        assert_eq!(t.ack(), Some(Ack::Vector(0x31)));
        t.eoi();
        // Five seconds pass unseen: 500 periods end, 100 are delivered.
        t.advance(ns(period * 501) - ns(period));
        let mut late = 0;
        while t.ack() == Some(Ack::Vector(0x31)) {
            t.eoi();
            late += 1;
            let d = t.deadline().unwrap();
            if d >= ns(period * 502) {
                break;
            }
            t.advance(d - t.clock.now());
        }
        assert_eq!(late, 100);
    }

    #[test]
    fn a_tiny_period_is_rate_limited_but_counts_exactly() {
        let t = rig().enabled();
        t.periodic(10);
        t.advance(ns(10));
        assert!(t.irr(0x31));
        assert!(
            ns(20) < ns(10) + MIN_PERIODIC_NS,
            "a period under the minimum"
        );
        assert_eq!(t.deadline(), Some(ns(10) + MIN_PERIODIC_NS));
        t.advance(ns(15) - ns(10));
        assert_eq!(t.r(0x390), 5);
    }

    #[test]
    fn every_divide_configuration() {
        let t = rig().enabled();
        for (conf, div) in [
            (0x0, 2),
            (0x1, 4),
            (0x2, 8),
            (0x3, 16),
            (0x8, 32),
            (0x9, 64),
            (0xA, 128),
            (0xB, 1),
        ] {
            t.w(0x3E0, conf);
            t.w(0x380, 100_000);
            t.advance(ns(div * 10));
            assert_eq!(t.r(0x390), 100_000 - 10, "divide config {conf:#x}");
        }
    }

    #[test]
    fn changing_the_divider_keeps_the_count() {
        let t = rig().enabled();
        t.w(0x3E0, 0xB);
        t.w(0x380, 1000);
        t.advance(ns(100));
        t.w(0x3E0, 0x0); // by 2
        assert_eq!(t.r(0x390), 900);
        t.advance(ns(100));
        assert_eq!(t.r(0x390), 850);
    }

    #[test]
    fn a_masked_timer_counts_and_loses_its_interrupt() {
        let t = rig().enabled();
        t.w(0x3E0, 0xB);
        t.w(0x320, 0x1_0030);
        t.w(0x380, 1000);
        assert_eq!(t.deadline(), None);
        t.advance(ns(400));
        assert_eq!(t.r(0x390), 600);
        t.advance(ns(1000));
        t.w(0x320, 0x30);
        assert_eq!(t.deadline(), None, "the one-shot expired under the mask");
        assert!(!t.irr(0x30));
        // Periodic: unmasked, it interrupts from the next period on.
        t.w(0x320, 0x3_0030);
        t.w(0x380, 1000);
        t.advance(ns(2500));
        t.w(0x320, 0x2_0030);
        assert_eq!(t.deadline(), Some(t.clock.now() + ns(3000) - ns(2500)));
    }

    #[test]
    fn a_zero_initial_count_stops_the_timer() {
        let t = rig().enabled();
        t.w(0x320, 0x30);
        t.w(0x380, 1000);
        t.w(0x380, 0);
        assert_eq!(t.deadline(), None);
        assert_eq!(t.r(0x390), 0);
    }

    #[test]
    fn mode_changes_keep_the_count() {
        let t = rig().enabled();
        t.w(0x3E0, 0xB);
        t.w(0x320, 0x2_0030);
        t.w(0x380, 1000);
        t.advance(ns(2300));
        t.w(0x320, 0x30);
        assert_eq!(t.r(0x390), 700);
        assert_eq!(t.deadline(), Some(t.clock.now() + ns(700)));
    }

    #[test]
    fn the_ticker_raises_the_timer_interrupt() {
        let t = rig().enabled();
        let ticker = Ticker::new(t.clock.clone());
        t.apic.attach_ticker(&ticker);
        t.w(0x3E0, 0xB);
        t.w(0x320, 0x30);
        t.w(0x380, 5000);
        t.clock.set(ns(5000));
        let start = std::time::Instant::now();
        while !t.apic.pending() {
            assert!(start.elapsed() < std::time::Duration::from_secs(10));
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(t.ack(), Some(Ack::Vector(0x30)));
    }

    /// An 8259 stand-in: INTR and the vector of its acknowledge cycle.
    struct FakePic(Arc<Mutex<Option<u8>>>);

    impl InterruptController for FakePic {
        fn pending(&mut self) -> bool {
            lock(&self.0).is_some()
        }
        fn acknowledge(&mut self) -> Option<u8> {
            Some(lock(&self.0).take().unwrap_or(0x27))
        }
        fn may_interrupt(&mut self) -> bool {
            true
        }
    }

    #[test]
    fn the_cpu_interface_puts_the_8259_on_lint0() {
        let t = rig().enabled();
        let intr = Arc::new(Mutex::new(None));
        let mut cpu = CpuInterrupts::new(t.apic.clone(), Box::new(FakePic(intr.clone())), None);
        assert!(!cpu.pending());
        *lock(&intr) = Some(0x20);
        assert!(cpu.pending());
        assert_eq!(cpu.acknowledge(), Some(0x20), "the 8259's cycle");
        assert!(!cpu.pending());
        t.apic.accept(0x41, false);
        assert_eq!(cpu.acknowledge(), Some(0x41));
        t.eoi();
        // Linux masks LINT0 once the I/O APIC routes the ISA interrupts.
        t.w(0x350, 0x1_0700);
        *lock(&intr) = Some(0x21);
        assert!(!cpu.pending());
        assert!(!cpu.may_interrupt(), "nothing but the closed 8259");
        t.w(0x320, 0x30);
        t.w(0x380, 100);
        assert!(cpu.may_interrupt(), "the timer runs");
    }
}
