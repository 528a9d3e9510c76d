//! The PC's real-time clock and CMOS RAM: a Motorola MC146818A (MC146818A
//! data sheet) at ports 0x70 (index; bit 7 is the NMI mask) and 0x71
//! (data), its interrupt on IRQ 8.
//!
//! Nothing here counts ticks. The chip's 15-stage divider chain is a phase
//! (`div_zero`, a clock time at which it rolled over to a new second) and
//! the time is a count of seconds at that phase (`secs_zero`): the time,
//! UIP and the flags of register C are all derived from [`Clock::now`]
//! when the guest looks at them, and the flags that fell due since the
//! last look are caught up in one step. The [`Timed`] deadline is only for
//! the interrupts that cannot wait for the guest to look.
//!
//! While the time stands still (SET, or the divider stopped) it lives in
//! the time registers as raw bytes, as on the chip: the guest writes them
//! in whatever format it likes and they are read as a time, in the format
//! of register B, when the clock starts again.
//!
//! Simplifications, all shared with QEMU (hw/rtc/mc146818rtc.c): the
//! update happens at once at the end of the 244 us UIP window (the chip
//! takes up to 1984 us more with UIP still up); a change of DM or 24/12
//! while the time runs shows the time in the new format at once (the chip
//! wants the time written again); the day of the week follows the date (a
//! written day of week is not kept); the calendar is Gregorian with the
//! century byte (the chip takes every fourth year, 2100 included, for a
//! leap year). Daylight saving (DSE) and the square wave output (SQWE) are
//! stored and do nothing.

use std::time::{SystemTime, UNIX_EPOCH};

use super::clock::{self, Clock, Timed};
use super::{IoAction, IrqLine, Port, PortDevice};

pub const BASE: u16 = 0x70;
pub const PORT_COUNT: u16 = 2;
/// The RTC's interrupt request line on a PC (the slave PIC's IR0).
pub const IRQ: u8 = 8;

// Port offsets from BASE.
const INDEX_PORT: u16 = 0;
const DATA_PORT: u16 = 1;
const INDEX_NMI_MASK: u8 = 0x80;

// The chip's registers (data sheet, "Address map").
const SECONDS: u8 = 0x00;
const SECONDS_ALARM: u8 = 0x01;
const MINUTES: u8 = 0x02;
const MINUTES_ALARM: u8 = 0x03;
const HOURS: u8 = 0x04;
const HOURS_ALARM: u8 = 0x05;
const DAY_OF_WEEK: u8 = 0x06;
const DAY_OF_MONTH: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
const REG_A: u8 = 0x0A;
const REG_B: u8 = 0x0B;
const REG_C: u8 = 0x0C;
const REG_D: u8 = 0x0D;
/// The century, in the format of the other time registers (IBM PC/AT
/// CMOS map; the ACPI FADT's default CENTURY index).
const CENTURY: u8 = 0x32;

// Register A (data sheet, "Register A").
const A_UIP: u8 = 0x80;
const A_DV: u8 = 0x70;
/// DV2-0 = 010: a 32.768 kHz time base, the divider counting. PC chipsets
/// run only in this setting; 11x holds the divider in reset and the rest
/// are test modes or invalid, and stop the clock here.
const A_DV_RUNNING: u8 = 0x20;
const A_RS: u8 = 0x0F;

// Register B (data sheet, "Register B").
const B_SET: u8 = 0x80;
const B_PIE: u8 = 0x40;
const B_AIE: u8 = 0x20;
const B_UIE: u8 = 0x10;
/// Binary (1) or BCD (0) time registers.
const B_DM: u8 = 0x04;
/// 24-hour (1) or 12-hour (0) hours registers.
const B_24H: u8 = 0x02;

// Register C (data sheet, "Register C"). Each flag sits at the bit of its
// enable in register B.
const C_IRQF: u8 = 0x80;
const C_PF: u8 = 0x40;
const C_AF: u8 = 0x20;
const C_UF: u8 = 0x10;
const C_FLAGS: u8 = C_PF | C_AF | C_UF;

/// Register D: valid RAM and time (the battery is good).
const D_VRT: u8 = 0x80;

/// An alarm register whose two high bits are set matches any value.
const ALARM_DONT_CARE: u8 = 0xC0;
/// 12-hour mode: the hours registers' PM bit.
const HOURS_PM: u8 = 0x80;

// The PC's CMOS RAM map (IBM PC/AT Technical Reference, "CMOS RAM address
// map"; what QEMU's pc_cmos_init writes for SeaBIOS and Linux).
const FLOPPY_TYPES: u8 = 0x10;
const EQUIPMENT: u8 = 0x14;
/// Base memory in KiB (16 bits, little-endian).
const BASE_MEMORY: u8 = 0x15;
/// Memory above 1 MiB in KiB (16 bits), and its copy at 0x30.
const EXTENDED_MEMORY: u8 = 0x17;
const EXTENDED_MEMORY_COPY: u8 = 0x30;
/// The bytes the checksum covers, and the checksum (high byte first).
const CHECKSUM_FIRST: u8 = 0x10;
const CHECKSUM_LAST: u8 = 0x2D;
const CHECKSUM: u8 = 0x2E;
/// Memory above 16 MiB (below 4 GiB) in 64 KiB units (16 bits).
const MEMORY_ABOVE_16M: u8 = 0x34;
/// Memory above 4 GiB in 64 KiB units (24 bits; QEMU and SeaBIOS).
const MEMORY_ABOVE_4G: u8 = 0x5B;
/// The number of CPUs less one (QEMU and SeaBIOS).
const CPU_COUNT: u8 = 0x5F;

/// Equipment byte: a math coprocessor (bit 1) and a pointing device
/// (bit 2); display bits 5-4 = 00, an adapter with its own BIOS (EGA or
/// VGA); no floppies (bits 0 and 7-6). What QEMU writes with no floppy.
const EQUIPMENT_FPU_MOUSE: u8 = 0x06;
const BASE_MEMORY_KIB: u64 = 640;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

const NS_PER_SEC: i64 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;
/// The time base: the divider's input, and its count per second.
const DIVIDER_HZ: u64 = 32_768;
/// UIP rises this many time-base cycles (244 us) before each update
/// (data sheet, table "Update cycle times", tBUC).
const UIP_CYCLES: u64 = 8;

/// Where the clock's time comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartTime {
    /// The host's UTC time when the device is created.
    Host,
    /// This many seconds since the Unix epoch (UTC) at clock time 0, for
    /// reproducible runs.
    Fixed(i64),
}

pub struct Rtc {
    clock: Clock,
    irq: Box<dyn IrqLine>,
    irq_level: bool,
    /// The CMOS RAM. Registers A-D live in their own fields; the time
    /// registers (0, 2, 4, 6-9 and the century) hold the time only while
    /// it stands still.
    ram: [u8; 128],
    index: u8,
    nmi_masked: bool,
    /// Register A without UIP.
    reg_a: u8,
    reg_b: u8,
    /// PF, AF and UF (IRQF is derived from them and register B).
    flags: u8,
    /// A clock time (ns) at which the divider started a second.
    div_zero: i64,
    /// The time (seconds since the Unix epoch) from `div_zero` on.
    secs_zero: i64,
    /// The clock time up to which `flags` is caught up.
    synced: u64,
}

impl Rtc {
    pub fn new(clock: Clock, irq: Box<dyn IrqLine>, start: StartTime) -> Rtc {
        // The time (ns since the epoch) at clock time 0.
        let start_ns: i128 = match start {
            StartTime::Fixed(secs) => secs as i128 * NS_PER_SEC as i128,
            StartTime::Host => {
                let host = match SystemTime::now().duration_since(UNIX_EPOCH) {
                    Ok(d) => d.as_nanos() as i128,
                    Err(e) => -(e.duration().as_nanos() as i128),
                };
                host - clock.now() as i128
            }
        };
        let ns = NS_PER_SEC as i128;
        let synced = clock.now();
        let mut rtc = Rtc {
            clock,
            irq,
            irq_level: false,
            ram: [0; 128],
            index: 0,
            nmi_masked: false,
            // As a PC BIOS leaves it: 32.768 kHz time base, 1024 Hz
            // periodic rate, BCD, 24-hour, no interrupts.
            reg_a: A_DV_RUNNING | 0x06,
            reg_b: B_24H,
            flags: 0,
            div_zero: -(start_ns.rem_euclid(ns) as i64),
            secs_zero: start_ns.div_euclid(ns) as i64,
            synced,
        };
        rtc.ram[FLOPPY_TYPES as usize] = 0;
        rtc.ram[EQUIPMENT as usize] = EQUIPMENT_FPU_MOUSE;
        rtc.set_memory_size(0);
        rtc
    }

    /// Fills the memory size fields a PC BIOS and Linux read, for RAM
    /// from address 0 up: what lies below 4 GiB at 0x15-0x18, 0x30-0x31
    /// and 0x34-0x35, the rest at 0x5B-0x5D.
    pub fn set_memory_size(&mut self, ram_bytes: u64) {
        let below_4g = ram_bytes.min(4 * GIB);
        let above_4g = ram_bytes - below_4g;
        let base = (below_4g / KIB).min(BASE_MEMORY_KIB);
        let extended = (below_4g.saturating_sub(MIB) / KIB).min(0xFFFF);
        let above_16m = (below_4g.saturating_sub(16 * MIB) / (64 * KIB)).min(0xFFFF);
        let above_4g = (above_4g / (64 * KIB)).min(0xFF_FFFF);
        self.set_le(BASE_MEMORY, base, 2);
        self.set_le(EXTENDED_MEMORY, extended, 2);
        self.set_le(EXTENDED_MEMORY_COPY, extended, 2);
        self.set_le(MEMORY_ABOVE_16M, above_16m, 2);
        self.set_le(MEMORY_ABOVE_4G, above_4g, 3);
        self.update_checksum();
    }

    /// Records the number of CPUs for SeaBIOS (as QEMU does).
    pub fn set_cpu_count(&mut self, n: u8) {
        self.ram[CPU_COUNT as usize] = n.saturating_sub(1);
    }

    /// Whether the guest masked NMIs (bit 7 of the last index written).
    pub fn nmi_masked(&self) -> bool {
        self.nmi_masked
    }

    fn set_le(&mut self, at: u8, value: u64, len: usize) {
        for i in 0..len {
            self.ram[at as usize + i] = (value >> (8 * i)) as u8;
        }
    }

    /// The standard checksum: the sum of bytes 0x10-0x2D, high byte at
    /// 0x2E. Only the host's changes update it, as a BIOS setup would;
    /// a guest writing those bytes keeps the checksum right itself.
    fn update_checksum(&mut self) {
        let sum: u16 = self.ram[CHECKSUM_FIRST as usize..=CHECKSUM_LAST as usize]
            .iter()
            .map(|&b| b as u16)
            .sum();
        self.ram[CHECKSUM as usize..CHECKSUM as usize + 2].copy_from_slice(&sum.to_be_bytes());
    }
}

// Time.
impl Rtc {
    fn divider_running(&self) -> bool {
        self.reg_a & A_DV == A_DV_RUNNING
    }

    /// Whether the time advances (rather than standing in the registers).
    fn counting(&self) -> bool {
        self.divider_running() && self.reg_b & B_SET == 0
    }

    /// Nanoseconds of the divider at clock time `t`.
    fn divider_ns(&self, t: u64) -> u64 {
        (t as i64).saturating_sub(self.div_zero).max(0) as u64
    }

    /// The time (seconds since the epoch) at clock time `t`, counting.
    fn secs_at(&self, t: u64) -> i64 {
        let elapsed = (self.divider_ns(t) / NS_PER_SEC as u64) as i64;
        self.secs_zero.saturating_add(elapsed)
    }

    /// The clock time at which the divider reaches `ns`.
    fn clock_at(&self, divider_ns: u64) -> u64 {
        self.div_zero.saturating_add(divider_ns as i64).max(0) as u64
    }

    fn uip(&self, now: u64) -> bool {
        let cycle = clock::ticks(self.divider_ns(now), DIVIDER_HZ) % DIVIDER_HZ;
        self.counting() && cycle >= DIVIDER_HZ - UIP_CYCLES
    }

    /// The periodic interrupt's period in time-base cycles, or None when
    /// the rate select bits turn it off. Rates 1 and 2 come from the
    /// divider's eighth and ninth stages, not its first two, with a
    /// 32.768 kHz time base (data sheet, table "Periodic interrupt rate").
    fn period_cycles(&self) -> Option<u64> {
        match self.reg_a & A_RS {
            0 => None,
            rs @ (1 | 2) => Some(1 << (rs + 6)),
            rs => Some(1 << (rs - 1)),
        }
    }

    /// Puts the running time into the time registers.
    fn freeze(&mut self, now: u64) {
        let t = DateTime::from_secs(self.secs_at(now));
        for reg in [
            SECONDS,
            MINUTES,
            HOURS,
            DAY_OF_WEEK,
            DAY_OF_MONTH,
            MONTH,
            YEAR,
            CENTURY,
        ] {
            self.ram[reg as usize] = self.time_register(&t, reg);
        }
    }

    /// Runs the time on from the time registers, from the divider's
    /// current phase.
    fn thaw(&mut self, now: u64) {
        let secs = self.registers_time().to_secs();
        let elapsed = (self.divider_ns(now) / NS_PER_SEC as u64) as i64;
        self.secs_zero = secs.saturating_sub(elapsed);
        log::debug!(target: "bt86::rtc", "time set to {secs} s since the epoch");
    }

    fn encode(&self, v: u8) -> u8 {
        if self.reg_b & B_DM != 0 {
            v
        } else {
            ((v / 10) << 4) | (v % 10)
        }
    }

    /// A time register's value; invalid BCD digits count as their value
    /// (the chip's behaviour with them is undefined).
    fn decode(&self, b: u8) -> u8 {
        if self.reg_b & B_DM != 0 {
            b
        } else {
            (b >> 4) * 10 + (b & 0x0F)
        }
    }

    fn encode_hour(&self, hour: u8) -> u8 {
        if self.reg_b & B_24H != 0 {
            self.encode(hour)
        } else {
            let h12 = match hour % 12 {
                0 => 12,
                h => h,
            };
            self.encode(h12) | if hour >= 12 { HOURS_PM } else { 0 }
        }
    }

    fn decode_hour(&self, b: u8) -> u8 {
        let v = self.decode(b & !HOURS_PM);
        if self.reg_b & B_24H != 0 {
            v
        } else {
            v % 12 + if b & HOURS_PM != 0 { 12 } else { 0 }
        }
    }

    fn time_register(&self, t: &DateTime, reg: u8) -> u8 {
        match reg {
            SECONDS => self.encode(t.second),
            MINUTES => self.encode(t.minute),
            HOURS => self.encode_hour(t.hour),
            DAY_OF_WEEK => self.encode(t.weekday),
            DAY_OF_MONTH => self.encode(t.day),
            MONTH => self.encode(t.month),
            YEAR => self.encode(t.year.rem_euclid(100) as u8),
            _ => self.encode(t.year.div_euclid(100).rem_euclid(100) as u8),
        }
    }

    /// The time the time registers hold. Out-of-range fields carry into
    /// the next (a 60th second is the next minute's first).
    fn registers_time(&self) -> DateTime {
        let r = |reg: u8| self.decode(self.ram[reg as usize]);
        DateTime {
            year: r(CENTURY) as i64 * 100 + r(YEAR) as i64,
            month: r(MONTH).clamp(1, 12),
            day: r(DAY_OF_MONTH).max(1),
            hour: self.decode_hour(self.ram[HOURS as usize]),
            minute: r(MINUTES),
            second: r(SECONDS),
            weekday: 0,
        }
    }

    /// An alarm register as a value it matches: None for any value,
    /// Some(None) if it matches none (not a value the time register can
    /// hold in the current format: the chip compares the bytes).
    fn alarm_field(&self, reg: u8, limit: u8) -> Option<Option<u8>> {
        let b = self.ram[reg as usize];
        if b & ALARM_DONT_CARE == ALARM_DONT_CARE {
            return None;
        }
        let (v, back) = if reg == HOURS_ALARM {
            let v = self.decode_hour(b);
            (v, self.encode_hour(v))
        } else {
            let v = self.decode(b);
            (v, self.encode(v))
        };
        Some((v < limit && back == b).then_some(v))
    }

    /// Seconds from time `secs` to the next later time that matches the
    /// alarm, or None if no time does.
    fn seconds_to_alarm(&self, secs: i64) -> Option<i64> {
        let fields = [
            self.alarm_field(HOURS_ALARM, 24),
            self.alarm_field(MINUTES_ALARM, 60),
            self.alarm_field(SECONDS_ALARM, 60),
        ];
        let mut ranges = [(0, 0); 3];
        for (range, (field, limit)) in ranges.iter_mut().zip(fields.into_iter().zip([24, 60, 60])) {
            *range = match field {
                None => (0, limit),
                Some(Some(v)) => (v as i64, v as i64 + 1),
                Some(None) => return None,
            };
        }
        let day = secs.div_euclid(SECS_PER_DAY);
        let tod = secs.rem_euclid(SECS_PER_DAY);
        let (ch, cm, cs) = (tod / 3600, tod / 60 % 60, tod % 60);
        // The first (h, m, s) after now: today, or else tomorrow's first.
        // Each loop skips what is past, so this takes a few hundred steps
        // at most.
        for next_day in [false, true] {
            for h in ranges[0].0..ranges[0].1 {
                if !next_day && h < ch {
                    continue;
                }
                for m in ranges[1].0..ranges[1].1 {
                    if !next_day && h == ch && m < cm {
                        continue;
                    }
                    for s in ranges[2].0..ranges[2].1 {
                        if !next_day && h == ch && m == cm && s <= cs {
                            continue;
                        }
                        let at = (day + next_day as i64) * SECS_PER_DAY + h * 3600 + m * 60 + s;
                        return Some(at - secs);
                    }
                }
            }
        }
        None
    }

    /// Sets the flags that fell due after `synced`, up to `now`.
    fn catch_up(&mut self, now: u64) {
        if now <= self.synced {
            return;
        }
        let (from, to) = (self.divider_ns(self.synced), self.divider_ns(now));
        self.synced = now;
        if !self.divider_running() {
            return;
        }
        // PF follows the divider whether or not PIE is on (data sheet,
        // "Register C").
        let tick = |p: u64| clock::ticks(to, DIVIDER_HZ) / p > clock::ticks(from, DIVIDER_HZ) / p;
        if self.period_cycles().is_some_and(tick) {
            self.flags |= C_PF;
        }
        // With SET there are no update cycles, so neither UF nor AF.
        let second = NS_PER_SEC as u64;
        let updates = (to / second - from / second) as i64;
        if self.reg_b & B_SET == 0 && updates > 0 {
            self.flags |= C_UF;
            let before = self.secs_zero.saturating_add((from / second) as i64);
            if self.seconds_to_alarm(before).is_some_and(|d| d <= updates) {
                self.flags |= C_AF;
            }
        }
        self.update_irq();
    }

    /// IRQF = PF.PIE + AF.AIE + UF.UIE, and the IRQ pin follows it.
    fn irqf(&self) -> bool {
        self.flags & self.reg_b & C_FLAGS != 0
    }

    fn update_irq(&mut self) {
        let level = self.irqf();
        if level != self.irq_level {
            self.irq_level = level;
            self.irq.set_level(level);
        }
    }

    /// Writes registers A and B, starting or stopping the time.
    fn reconfigure(&mut self, now: u64, reg_a: u8, reg_b: u8) {
        let (was_counting, was_dividing) = (self.counting(), self.divider_running());
        if was_counting && !(reg_a & A_DV == A_DV_RUNNING && reg_b & B_SET == 0) {
            // Frozen in the old format, as the chip's registers are.
            self.freeze(now);
        }
        self.reg_a = reg_a;
        self.reg_b = reg_b;
        if !was_dividing && self.divider_running() {
            // The first update comes half a second after the divider
            // leaves reset (data sheet, "DV2, DV1, DV0").
            self.div_zero = (now as i64).saturating_sub(NS_PER_SEC / 2);
        }
        if !was_counting && self.counting() {
            self.thaw(now);
        }
    }
}

// Register access.
impl Rtc {
    fn read_register(&mut self, reg: u8) -> u8 {
        let now = self.clock.now();
        self.catch_up(now);
        match reg {
            SECONDS | MINUTES | HOURS | DAY_OF_WEEK | DAY_OF_MONTH | MONTH | YEAR | CENTURY
                if self.counting() =>
            {
                self.time_register(&DateTime::from_secs(self.secs_at(now)), reg)
            }
            REG_A => self.reg_a | if self.uip(now) { A_UIP } else { 0 },
            REG_B => self.reg_b,
            REG_C => {
                let v = self.flags | if self.irqf() { C_IRQF } else { 0 };
                self.flags = 0;
                self.update_irq();
                v
            }
            REG_D => D_VRT,
            _ => self.ram[reg as usize],
        }
    }

    fn write_register(&mut self, reg: u8, v: u8) {
        let now = self.clock.now();
        self.catch_up(now);
        match reg {
            SECONDS | MINUTES | HOURS | DAY_OF_WEEK | DAY_OF_MONTH | MONTH | YEAR | CENTURY => {
                if self.counting() {
                    // The guest sets the clock while it runs.
                    self.freeze(now);
                    self.ram[reg as usize] = v;
                    self.thaw(now);
                } else {
                    self.ram[reg as usize] = v;
                }
            }
            REG_A => self.reconfigure(now, v & !A_UIP, self.reg_b),
            // SET going high clears UIE (data sheet, "UIE").
            REG_B if v & B_SET != 0 => self.reconfigure(now, self.reg_a, v & !B_UIE),
            REG_B => self.reconfigure(now, self.reg_a, v),
            REG_C | REG_D => {} // read-only
            _ => self.ram[reg as usize] = v,
        }
        self.update_irq();
    }

    fn read_port(&mut self, offset: u16) -> u8 {
        match offset {
            // The index register is write-only.
            INDEX_PORT => 0xFF,
            DATA_PORT => self.read_register(self.index),
            _ => 0xFF,
        }
    }

    fn write_port(&mut self, offset: u16, v: u8) {
        match offset {
            INDEX_PORT => {
                self.index = v & !INDEX_NMI_MASK;
                self.nmi_masked = v & INDEX_NMI_MASK != 0;
            }
            DATA_PORT => self.write_register(self.index, v),
            _ => {}
        }
    }
}

/// The registers are bytes: a wider access is split into byte accesses at
/// consecutive ports, as the ISA bus does. Bytes past port 0x71 read as
/// all ones and are not written.
impl PortDevice for Rtc {
    fn read(&mut self, port: Port, size: u8) -> u32 {
        (0..size as u16).fold(0, |acc, i| {
            let byte = self.read_port(port.0.wrapping_sub(BASE).wrapping_add(i));
            acc | (byte as u32) << (8 * i)
        })
    }

    fn write(&mut self, port: Port, size: u8, value: u32) -> IoAction {
        for i in 0..size as u16 {
            let offset = port.0.wrapping_sub(BASE).wrapping_add(i);
            self.write_port(offset, (value >> (8 * i)) as u8);
        }
        IoAction::None
    }
}

impl Timed for Rtc {
    /// The next periodic, update-ended or alarm interrupt that is enabled
    /// and whose flag is not already up (a flag that is up until register
    /// C is read makes no new interrupt).
    fn deadline(&self) -> Option<u64> {
        if !self.divider_running() {
            return None;
        }
        let from = self.divider_ns(self.synced);
        let mut next: Option<u64> = None;
        let mut consider = |divider_ns: u64| {
            next = Some(next.map_or(divider_ns, |n| n.min(divider_ns)));
        };
        let periodic = self.reg_b & B_PIE != 0 && self.flags & C_PF == 0;
        if let Some(p) = self.period_cycles().filter(|_| periodic) {
            let cycle = (clock::ticks(from, DIVIDER_HZ) / p + 1) * p;
            consider(clock::ns_of_ticks(cycle, DIVIDER_HZ));
        }
        if self.reg_b & B_SET == 0 {
            let second = NS_PER_SEC as u64;
            let updates = from / second;
            if self.reg_b & B_UIE != 0 && self.flags & C_UF == 0 {
                consider((updates + 1) * second);
            }
            if self.reg_b & B_AIE != 0 && self.flags & C_AF == 0 {
                let now = self.secs_zero.saturating_add(updates as i64);
                if let Some(d) = self.seconds_to_alarm(now) {
                    consider((updates + d as u64) * second);
                }
            }
        }
        next.map(|n| self.clock_at(n))
    }

    fn advance(&mut self, now: u64) {
        self.catch_up(now);
    }
}

/// A UTC date and time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DateTime {
    year: i64,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    /// 1 = Sunday, as the day-of-week register counts.
    weekday: u8,
}

impl DateTime {
    fn from_secs(secs: i64) -> DateTime {
        let days = secs.div_euclid(SECS_PER_DAY);
        let tod = secs.rem_euclid(SECS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        DateTime {
            year,
            month,
            day,
            hour: (tod / 3600) as u8,
            minute: (tod / 60 % 60) as u8,
            second: (tod % 60) as u8,
            // 1970-01-01 was a Thursday.
            weekday: ((days + 4).rem_euclid(7) + 1) as u8,
        }
    }

    /// Seconds since the epoch (the weekday is not looked at).
    fn to_secs(self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * SECS_PER_DAY
            + self.hour as i64 * 3600
            + self.minute as i64 * 60
            + self.second as i64
    }
}

/// Days since 1970-01-01 of a Gregorian date (month 1-12; a day past the
/// month's end runs into the next). The era arithmetic of Howard
/// Hinnant's "chrono-compatible low-level date algorithms".
pub fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let (m, d) = (month as i64, day as i64);
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The Gregorian (year, month, day) of a day since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March, so that February's length comes last.
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + (month <= 2) as i64;
    (year, month as u8, day as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// 2023-11-14 22:13:20 UTC, a Tuesday.
    const NOV_14_2023: i64 = 1_700_000_000;
    const SEC: u64 = 1_000_000_000;

    /// The line's level and how many times it rose.
    #[derive(Clone, Default)]
    struct Line(Arc<Mutex<(bool, u32)>>);

    impl IrqLine for Line {
        fn set_level(&mut self, high: bool) {
            let mut s = self.0.lock().unwrap();
            if high && !s.0 {
                s.1 += 1;
            }
            s.0 = high;
        }
    }

    impl Line {
        fn high(&self) -> bool {
            self.0.lock().unwrap().0
        }
        fn rises(&self) -> u32 {
            self.0.lock().unwrap().1
        }
    }

    fn rtc_at(secs: i64) -> (Rtc, Clock, Line) {
        let clock = Clock::manual();
        let line = Line::default();
        let rtc = Rtc::new(
            clock.clone(),
            Box::new(line.clone()),
            StartTime::Fixed(secs),
        );
        (rtc, clock, line)
    }

    fn rd(r: &mut Rtc, reg: u8) -> u8 {
        r.write(Port(BASE), 1, reg as u32);
        r.read(Port(BASE + 1), 1) as u8
    }

    fn wr(r: &mut Rtc, reg: u8, v: u8) {
        r.write(Port(BASE), 1, reg as u32);
        r.write(Port(BASE + 1), 1, v as u32);
    }

    /// Seconds, minutes, hours, day of week, day, month, year, century.
    fn time(r: &mut Rtc) -> [u8; 8] {
        [
            SECONDS,
            MINUTES,
            HOURS,
            DAY_OF_WEEK,
            DAY_OF_MONTH,
            MONTH,
            YEAR,
            CENTURY,
        ]
        .map(|reg| rd(r, reg))
    }

    #[test]
    fn power_on_registers_are_as_a_pc_bios_leaves_them() {
        let (mut r, _, line) = rtc_at(NOV_14_2023);
        assert_eq!(rd(&mut r, REG_A), 0x26);
        assert_eq!(rd(&mut r, REG_B), 0x02);
        assert_eq!(rd(&mut r, REG_C), 0x00);
        assert_eq!(rd(&mut r, REG_D), 0x80);
        assert!(!line.high());
    }

    #[test]
    fn the_time_reads_in_bcd_at_a_fixed_start() {
        let (mut r, _, _) = rtc_at(NOV_14_2023);
        assert_eq!(time(&mut r), [0x20, 0x13, 0x22, 3, 0x14, 0x11, 0x23, 0x20]);
    }

    #[test]
    fn binary_mode_reads_the_time_in_binary() {
        let (mut r, _, _) = rtc_at(NOV_14_2023);
        wr(&mut r, REG_B, B_DM | B_24H);
        assert_eq!(time(&mut r), [20, 13, 22, 3, 14, 11, 23, 20]);
    }

    #[test]
    fn twelve_hour_mode_sets_the_pm_bit() {
        let (mut r, _, _) = rtc_at(NOV_14_2023);
        wr(&mut r, REG_B, 0);
        assert_eq!(rd(&mut r, HOURS), 0x80 | 0x10, "10 PM in BCD");
        wr(&mut r, REG_B, B_DM);
        assert_eq!(rd(&mut r, HOURS), 0x80 | 10, "10 PM in binary");

        // Midnight is 12 AM and noon 12 PM. 2000-01-01 was a Saturday.
        let (mut r, clock, _) = rtc_at(946_684_800);
        wr(&mut r, REG_B, 0);
        assert_eq!(rd(&mut r, HOURS), 0x12);
        assert_eq!(rd(&mut r, DAY_OF_WEEK), 7);
        clock.set(12 * 3600 * SEC);
        assert_eq!(rd(&mut r, HOURS), 0x92);
        clock.set(13 * 3600 * SEC);
        assert_eq!(rd(&mut r, HOURS), 0x81);
    }

    #[test]
    fn the_time_moves_with_the_clock_across_the_year() {
        // 2023-12-31 23:59:58, a Sunday.
        let (mut r, clock, _) = rtc_at(1_704_067_198);
        assert_eq!(time(&mut r), [0x58, 0x59, 0x23, 1, 0x31, 0x12, 0x23, 0x20]);
        clock.set(2 * SEC - 1);
        assert_eq!(rd(&mut r, SECONDS), 0x59);
        clock.set(2 * SEC);
        assert_eq!(time(&mut r), [0x00, 0x00, 0x00, 2, 0x01, 0x01, 0x24, 0x20]);
        // A day and an hour, a minute and a second later, without
        // anything reading in between.
        clock.set((2 + 86_400 + 3_661) * SEC);
        assert_eq!(time(&mut r), [0x01, 0x01, 0x01, 3, 0x02, 0x01, 0x24, 0x20]);
    }

    #[test]
    fn february_has_29_days_in_leap_years_only() {
        // 2024-02-28 23:59:59: then the 29th, then March.
        let (mut r, clock, _) = rtc_at(1_709_164_799);
        clock.set(SEC);
        assert_eq!((rd(&mut r, DAY_OF_MONTH), rd(&mut r, MONTH)), (0x29, 0x02));
        clock.set(SEC + 86_400 * SEC);
        assert_eq!((rd(&mut r, DAY_OF_MONTH), rd(&mut r, MONTH)), (0x01, 0x03));
        // 2023-02-28 23:59:59: then March.
        let (mut r, clock, _) = rtc_at(1_677_628_799);
        clock.set(SEC);
        assert_eq!((rd(&mut r, DAY_OF_MONTH), rd(&mut r, MONTH)), (0x01, 0x03));
        // 2000 is a leap year (divisible by 400): 2000-02-29 exists.
        let (mut r, _, _) = rtc_at(951_782_400);
        assert_eq!((rd(&mut r, DAY_OF_MONTH), rd(&mut r, MONTH)), (0x29, 0x02));
        // 2100 is not: 2100-02-28 23:59:59 goes to March 1st.
        let (mut r, clock, _) = rtc_at(4_107_542_399);
        assert_eq!(time(&mut r)[4..], [0x28, 0x02, 0x00, 0x21]);
        clock.set(SEC);
        assert_eq!(time(&mut r)[4..], [0x01, 0x03, 0x00, 0x21]);
    }

    #[test]
    fn month_lengths_are_kept() {
        // The last second of each month of 2023 (not a leap year).
        let mut secs = 1_672_531_200; // 2023-01-01 00:00:00
        for (month, days) in [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
            .into_iter()
            .enumerate()
        {
            secs += days * 86_400;
            let (mut r, _, _) = rtc_at(secs - 1);
            let last = [
                0x31, 0x28, 0x31, 0x30, 0x31, 0x30, 0x31, 0x31, 0x30, 0x31, 0x30, 0x31,
            ];
            assert_eq!(rd(&mut r, DAY_OF_MONTH), last[month]);
            let (mut r, _, _) = rtc_at(secs);
            assert_eq!(rd(&mut r, DAY_OF_MONTH), 0x01);
        }
        assert_eq!(secs, 1_704_067_200, "2024-01-01");
    }

    #[test]
    fn uip_is_up_for_the_244_us_before_each_update() {
        let (mut r, clock, _) = rtc_at(NOV_14_2023);
        assert_eq!(rd(&mut r, REG_A) & A_UIP, 0);
        clock.set(SEC - 250_000);
        assert_eq!(rd(&mut r, REG_A) & A_UIP, 0);
        clock.set(SEC - 240_000);
        assert_eq!(rd(&mut r, REG_A), A_UIP | 0x26);
        assert_eq!(rd(&mut r, SECONDS), 0x20, "not updated yet");
        clock.set(SEC);
        assert_eq!(rd(&mut r, REG_A) & A_UIP, 0);
        assert_eq!(rd(&mut r, SECONDS), 0x21);
        // SET stops updates, and UIP with them.
        clock.set(2 * SEC - 100_000);
        wr(&mut r, REG_B, B_SET | B_24H);
        assert_eq!(rd(&mut r, REG_A) & A_UIP, 0);
        // UIP is read-only.
        wr(&mut r, REG_B, B_24H);
        wr(&mut r, REG_A, 0xA6);
        clock.set(2 * SEC + 1000);
        assert_eq!(rd(&mut r, REG_A), 0x26);
    }

    #[test]
    fn set_freezes_the_time_for_the_guest_to_write() {
        let (mut r, clock, _) = rtc_at(NOV_14_2023);
        clock.set(SEC * 3 / 10);
        wr(&mut r, REG_B, B_SET | B_UIE | B_24H);
        assert_eq!(rd(&mut r, REG_B), B_SET | B_24H, "SET clears UIE");
        clock.set(5 * SEC);
        assert_eq!(rd(&mut r, SECONDS), 0x20, "no updates while SET");
        // 2001-02-03 04:05:06.
        for (reg, v) in [
            (SECONDS, 0x06),
            (MINUTES, 0x05),
            (HOURS, 0x04),
            (DAY_OF_MONTH, 0x03),
            (MONTH, 0x02),
            (YEAR, 0x01),
            (CENTURY, 0x20),
        ] {
            wr(&mut r, reg, v);
        }
        clock.set(5 * SEC + SEC * 7 / 10);
        assert_eq!(rd(&mut r, SECONDS), 0x06);
        wr(&mut r, REG_B, B_24H);
        // The divider kept its phase: the next update is at 6 s.
        clock.set(6 * SEC - 1);
        assert_eq!(
            time(&mut r),
            [0x06, 0x05, 0x04, 7, 0x03, 0x02, 0x01, 0x20],
            "2001-02-03 was a Saturday"
        );
        clock.set(6 * SEC);
        assert_eq!(rd(&mut r, SECONDS), 0x07);
    }

    #[test]
    fn the_time_written_under_set_is_read_in_the_new_format() {
        let (mut r, clock, _) = rtc_at(NOV_14_2023);
        // Binary, 12-hour: 11:59:59 PM, 1999-12-31.
        wr(&mut r, REG_B, B_SET | B_DM);
        for (reg, v) in [
            (SECONDS, 59),
            (MINUTES, 59),
            (HOURS, 0x80 | 11),
            (DAY_OF_MONTH, 31),
            (MONTH, 12),
            (YEAR, 99),
            (CENTURY, 19),
        ] {
            wr(&mut r, reg, v);
        }
        wr(&mut r, REG_B, B_DM);
        clock.set(SEC);
        wr(&mut r, REG_B, B_24H);
        assert_eq!(
            time(&mut r),
            [0x00, 0x00, 0x00, 7, 0x01, 0x01, 0x00, 0x20],
            "2000-01-01, a Saturday"
        );
    }

    #[test]
    fn writing_the_time_while_it_runs_sets_it() {
        let (mut r, clock, _) = rtc_at(NOV_14_2023);
        clock.set(SEC / 2);
        wr(&mut r, MINUTES, 0x30);
        assert_eq!(time(&mut r)[..3], [0x20, 0x30, 0x22]);
        clock.set(SEC);
        assert_eq!(time(&mut r)[..3], [0x21, 0x30, 0x22]);
        wr(&mut r, YEAR, 0x99);
        assert_eq!(
            time(&mut r)[3..],
            [7, 0x14, 0x11, 0x99, 0x20],
            "2099-11-14 is a Saturday"
        );
    }

    #[test]
    fn the_first_update_comes_half_a_second_after_the_divider_reset() {
        let (mut r, clock, _) = rtc_at(NOV_14_2023);
        clock.set(SEC / 4);
        wr(&mut r, REG_A, 0x70);
        assert_eq!(rd(&mut r, REG_C), C_PF, "from before the reset");
        clock.set(10 * SEC);
        assert_eq!(rd(&mut r, SECONDS), 0x20, "the divider is held");
        assert_eq!(rd(&mut r, REG_C), 0, "no flags with the divider held");
        wr(&mut r, REG_A, 0x26);
        clock.set(10 * SEC + SEC / 2 - 1);
        assert_eq!(rd(&mut r, SECONDS), 0x20);
        clock.set(10 * SEC + SEC / 2);
        assert_eq!(rd(&mut r, SECONDS), 0x21);
    }

    /// Follows the deadlines for a second as the ticker would, reading C
    /// at each interrupt: the number of interrupts.
    fn interrupts_in_a_second(r: &mut Rtc, clock: &Clock, line: &Line) -> u32 {
        let start = clock.now();
        let mut n = 0;
        while let Some(d) = r.deadline() {
            if d > start + SEC {
                break;
            }
            clock.set(d);
            r.advance(d);
            assert!(line.high(), "an interrupt at {d}");
            assert_ne!(rd(r, REG_C) & C_IRQF, 0);
            assert!(!line.high(), "reading C lowers the line");
            n += 1;
        }
        n
    }

    #[test]
    fn the_periodic_interrupt_comes_at_the_selected_rate() {
        for (rs, hz) in [(1, 256), (2, 128), (3, 8192), (6, 1024), (15, 2)] {
            let (mut r, clock, line) = rtc_at(NOV_14_2023);
            wr(&mut r, REG_A, 0x20 | rs);
            wr(&mut r, REG_B, B_PIE | B_24H);
            assert_eq!(
                interrupts_in_a_second(&mut r, &clock, &line),
                hz,
                "rate {rs}"
            );
            assert_eq!(line.rises(), hz);
        }
        let (mut r, clock, _) = rtc_at(NOV_14_2023);
        wr(&mut r, REG_A, 0x26);
        wr(&mut r, REG_B, B_PIE | B_24H);
        assert_eq!(r.deadline(), Some(976_563), "1024 Hz: 976.5625 us");
        wr(&mut r, REG_A, 0x20);
        assert_eq!(r.deadline(), None, "rate 0 is off");
        clock.set(SEC / 2);
        assert_eq!(rd(&mut r, REG_C), 0);
    }

    #[test]
    fn pf_is_set_without_pie_and_pie_then_raises_irqf() {
        let (mut r, clock, line) = rtc_at(NOV_14_2023);
        assert_eq!(r.deadline(), None, "no interrupt enabled");
        clock.set(1_000_000);
        assert_eq!(rd(&mut r, REG_C), C_PF);
        assert!(!line.high());
        clock.set(2_000_000);
        wr(&mut r, REG_B, B_PIE | B_24H);
        assert!(line.high(), "IRQF = PF.PIE");
        wr(&mut r, REG_B, B_24H);
        assert!(!line.high(), "and falls with PIE");
        assert_eq!(rd(&mut r, REG_C), C_PF);
        assert_eq!(rd(&mut r, REG_C), 0, "reading C cleared it");
    }

    #[test]
    fn a_pending_flag_makes_no_new_deadline_until_c_is_read() {
        let (mut r, clock, line) = rtc_at(NOV_14_2023);
        wr(&mut r, REG_B, B_PIE | B_24H);
        let d = r.deadline().unwrap();
        clock.set(d);
        r.advance(d);
        assert!(line.high());
        assert_eq!(r.deadline(), None);
        clock.set(d + 10_000_000);
        assert_eq!(rd(&mut r, REG_C), C_IRQF | C_PF);
        assert!(r.deadline().unwrap() > d + 10_000_000);
        assert_eq!(line.rises(), 1);
    }

    #[test]
    fn the_update_ended_interrupt_comes_each_second() {
        let (mut r, clock, line) = rtc_at(NOV_14_2023);
        wr(&mut r, REG_A, 0x20); // no PF
        clock.set(SEC / 3);
        wr(&mut r, REG_B, B_UIE | B_24H);
        assert_eq!(r.deadline(), Some(SEC));
        r.advance(SEC - 1);
        assert!(!line.high());
        clock.set(SEC);
        r.advance(SEC);
        assert!(line.high());
        assert_eq!(rd(&mut r, REG_C), C_IRQF | C_UF);
        assert_eq!(rd(&mut r, SECONDS), 0x21);
        assert_eq!(r.deadline(), Some(2 * SEC));
        assert_eq!(interrupts_in_a_second(&mut r, &clock, &line), 1);
        // Without UIE, UF is still set by each update.
        wr(&mut r, REG_B, B_24H);
        clock.set(4 * SEC);
        assert_eq!(rd(&mut r, REG_C), C_UF);
    }

    #[test]
    fn the_alarm_fires_when_the_time_matches() {
        let (mut r, clock, line) = rtc_at(NOV_14_2023); // 22:13:20
        wr(&mut r, REG_A, 0x20); // no PF
        wr(&mut r, HOURS_ALARM, 0x22);
        wr(&mut r, MINUTES_ALARM, 0x13);
        wr(&mut r, SECONDS_ALARM, 0x25);
        wr(&mut r, REG_B, B_AIE | B_24H);
        assert_eq!(r.deadline(), Some(5 * SEC));
        clock.set(5 * SEC);
        r.advance(5 * SEC);
        assert!(line.high());
        assert_eq!(rd(&mut r, REG_C), C_IRQF | C_AF | C_UF);
        assert_eq!(
            r.deadline(),
            Some((5 + 86_400) * SEC),
            "the same time tomorrow"
        );
        // Not seen by the ticker: still flagged when the guest looks.
        clock.set((5 + 86_400 + 3) * SEC);
        assert_eq!(rd(&mut r, REG_C) & (C_IRQF | C_AF), C_IRQF | C_AF);
    }

    #[test]
    fn dont_care_alarm_values_match_any_time() {
        let (mut r, clock, line) = rtc_at(NOV_14_2023); // 22:13:20
        wr(&mut r, REG_A, 0x20); // no PF

        // Every minute at :00.
        wr(&mut r, HOURS_ALARM, 0xC0);
        wr(&mut r, MINUTES_ALARM, 0xFF);
        wr(&mut r, SECONDS_ALARM, 0x00);
        wr(&mut r, REG_B, B_AIE | B_24H);
        assert_eq!(r.deadline(), Some(40 * SEC));
        clock.set(40 * SEC);
        r.advance(40 * SEC);
        assert_eq!(rd(&mut r, REG_C) & C_AF, C_AF);
        assert_eq!(r.deadline(), Some(100 * SEC));
        // Every hour at 30:15.
        wr(&mut r, MINUTES_ALARM, 0x30);
        wr(&mut r, SECONDS_ALARM, 0x15);
        assert_eq!(r.deadline(), Some((40 + 16 * 60 + 15) * SEC));
        // Every second.
        wr(&mut r, SECONDS_ALARM, 0xC0);
        wr(&mut r, MINUTES_ALARM, 0xC0);
        assert_eq!(r.deadline(), Some(41 * SEC));
        assert_eq!(interrupts_in_a_second(&mut r, &clock, &line), 1);
        // A value the time never takes never matches.
        wr(&mut r, SECONDS_ALARM, 0x60);
        assert_eq!(r.deadline(), None);
    }

    #[test]
    fn a_12_hour_alarm_compares_with_the_12_hour_time() {
        let (mut r, clock, _) = rtc_at(NOV_14_2023); // 10:13:20 PM
        wr(&mut r, REG_A, 0x20); // no PF
        wr(&mut r, REG_B, 0);
        wr(&mut r, HOURS_ALARM, 0x80 | 0x11);
        wr(&mut r, MINUTES_ALARM, 0x00);
        wr(&mut r, SECONDS_ALARM, 0x00);
        wr(&mut r, REG_B, B_AIE);
        let eleven_pm = (46 * 60 + 40) * SEC;
        assert_eq!(r.deadline(), Some(eleven_pm));
        clock.set(eleven_pm);
        assert_eq!(rd(&mut r, HOURS), 0x80 | 0x11);
        assert_eq!(rd(&mut r, REG_C), C_IRQF | C_AF | C_UF);
    }

    #[test]
    fn register_c_reads_clear_it_and_the_line_follows_irqf() {
        let (mut r, clock, line) = rtc_at(NOV_14_2023);
        wr(&mut r, REG_B, B_UIE | B_24H);
        clock.set(SEC);
        r.advance(SEC);
        assert!(line.high());
        // A second update while UF is up raises nothing new.
        clock.set(2 * SEC);
        r.advance(2 * SEC);
        assert_eq!(line.rises(), 1);
        assert_eq!(rd(&mut r, REG_C), C_IRQF | C_UF | C_PF);
        assert!(!line.high());
        assert_eq!(rd(&mut r, REG_C), 0);
        // Writes to C and D change nothing.
        wr(&mut r, REG_C, 0xFF);
        wr(&mut r, REG_D, 0x00);
        assert_eq!(rd(&mut r, REG_C), 0);
        assert_eq!(rd(&mut r, REG_D), D_VRT);
    }

    #[test]
    fn the_index_keeps_the_nmi_mask_apart_and_ram_keeps_its_bytes() {
        let (mut r, _, _) = rtc_at(NOV_14_2023);
        assert!(!r.nmi_masked());
        r.write(Port(BASE), 1, 0x80 | REG_D as u32);
        assert!(r.nmi_masked());
        assert_eq!(r.read(Port(BASE + 1), 1), D_VRT as u32);
        assert_eq!(r.read(Port(BASE), 1), 0xFF, "the index is write-only");
        for reg in [0x0E, 0x40, 0x7F] {
            wr(&mut r, reg, reg ^ 0x5A);
        }
        assert!(!r.nmi_masked());
        for reg in [0x0E, 0x40, 0x7F] {
            assert_eq!(rd(&mut r, reg), reg ^ 0x5A);
        }
        // A word access is the index then the data.
        r.write(Port(BASE), 2, 0xA5_40);
        assert_eq!(r.read(Port(BASE), 2), 0xA5_FF);
        assert_eq!(r.read(Port(BASE + 1), 2), 0xFF_A5);
    }

    fn word(r: &Rtc, at: u8) -> u16 {
        u16::from_le_bytes([r.ram[at as usize], r.ram[at as usize + 1]])
    }

    fn checksum_holds(r: &Rtc) -> bool {
        let sum: u16 = (0x10..=0x2D).map(|i| r.ram[i] as u16).sum();
        r.ram[0x2E] == (sum >> 8) as u8 && r.ram[0x2F] == sum as u8
    }

    #[test]
    fn memory_size_fields_for_16_mib() {
        let (mut r, _, _) = rtc_at(0);
        r.set_memory_size(16 * MIB);
        assert_eq!(rd(&mut r, 0x15), 0x80);
        assert_eq!(rd(&mut r, 0x16), 0x02, "640 KiB");
        assert_eq!(rd(&mut r, 0x17), 0x00);
        assert_eq!(rd(&mut r, 0x18), 0x3C, "15 MiB = 15360 KiB");
        assert_eq!(word(&r, 0x30), 15_360);
        assert_eq!(word(&r, 0x34), 0);
        assert_eq!(&r.ram[0x5B..0x5E], &[0, 0, 0]);
        assert_eq!(rd(&mut r, 0x10), 0, "no floppies");
        assert_eq!(rd(&mut r, 0x14), 0x06);
        // 0x06 + 0x80 + 0x02 + 0x00 + 0x3C.
        assert_eq!((rd(&mut r, 0x2E), rd(&mut r, 0x2F)), (0x00, 0xC4));
        assert!(checksum_holds(&r));
    }

    #[test]
    fn memory_size_fields_for_256_mib() {
        let (mut r, _, _) = rtc_at(0);
        r.set_memory_size(256 * MIB);
        assert_eq!(word(&r, 0x15), 640);
        assert_eq!(word(&r, 0x17), 0xFFFF, "255 MiB in KiB is capped");
        assert_eq!(word(&r, 0x30), 0xFFFF);
        assert_eq!(word(&r, 0x34), 3840, "240 MiB in 64 KiB units");
        assert_eq!(&r.ram[0x5B..0x5E], &[0, 0, 0]);
        // 0x06 + 0x80 + 0x02 + 0xFF + 0xFF.
        assert_eq!((rd(&mut r, 0x2E), rd(&mut r, 0x2F)), (0x02, 0x86));
        assert!(checksum_holds(&r));
    }

    #[test]
    fn memory_size_fields_above_4_gib() {
        let (mut r, _, _) = rtc_at(0);
        r.set_memory_size(6 * GIB + 64 * KIB);
        assert_eq!(word(&r, 0x17), 0xFFFF);
        assert_eq!(word(&r, 0x34), 0xFF00, "4 GiB - 16 MiB");
        assert_eq!(&r.ram[0x5B..0x5E], &[0x01, 0x80, 0x00], "2 GiB + 64 KiB");
        assert!(checksum_holds(&r));
        r.set_cpu_count(4);
        assert_eq!(rd(&mut r, 0x5F), 3);
        r.set_cpu_count(1);
        assert_eq!(rd(&mut r, 0x5F), 0);
    }

    #[test]
    fn a_host_start_reads_a_valid_present_day_time() {
        let clock = Clock::manual();
        let mut r = Rtc::new(clock, Box::new(super::super::NoIrq), StartTime::Host);
        let t = time(&mut r);
        assert_eq!(t[7], 0x20, "the 21st century");
        assert!(t[6] >= 0x24, "not before 2024");
        for b in t {
            assert!(b & 0x0F <= 9 && b >> 4 <= 9, "BCD: {b:#x}");
        }
    }

    #[test]
    fn civil_dates_round_trip() {
        for days in (-800_000..800_000).step_by(37) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
