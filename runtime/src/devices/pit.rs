//! The Intel 8254 programmable interval timer (Intel 8254 data sheet,
//! order no. 231164), with the PC's system control port B (0x61) that
//! drives channel 2's gate and reads its output.
//!
//! Nothing ticks. Each channel keeps what the data sheet's counting
//! element (CE) does from some CLK pulse on (the pulse that loaded it,
//! its period, the mode) and every access computes the count and OUT
//! from [`Clock::now`], converted to pulses of the 1.193182 MHz input.
//! Pulse `k` happens at `clock::ns_of_ticks(k)`; "at pulse `t`" below
//! means after the `t`th pulse and before the next, which is where an
//! access at time `now` stands for `t = clock::ticks(now)`.
//!
//! Channel 0's OUT is IRQ0, edge-triggered at the 8259: the line follows
//! OUT when the guest's accesses change it, and [`Timed`] raises it at
//! each rising edge of OUT (low then high, so that every period is an
//! edge even if the line was not seen to fall). A late `advance` (the
//! host did not run bt86 for a while) raises one edge at once and owes
//! the others it missed, up to [`MAX_OWED_EDGES`]: they come one per
//! [`OWED_EDGE_GAP_NS`], as KVM's PIT reinjects lost ticks, so that a
//! guest counting ticks (jiffies) does not fall behind its other clocks.
//! Reprogramming channel 0 drops what is owed.
//!
//! Channels 0 and 1 have their gates tied high (so modes 1 and 5, which
//! wait for a rising gate, never start on them); channel 2's gate is
//! port 0x61 bit 0.

use super::clock::{self, Clock, Timed};
use super::{IoAction, IrqLine, Port, PortDevice};

/// The CLK input of all three channels.
pub const PIT_HZ: u64 = 1_193_182;
pub const BASE: u16 = 0x40;
pub const PORT_COUNT: u16 = 4;
/// Channel 0 edges a late advance may owe (a second at 1 kHz).
pub const MAX_OWED_EDGES: u64 = 1000;
/// Owed edges come this far apart.
pub const OWED_EDGE_GAP_NS: u64 = 100_000;
/// System control port B.
pub const SPEAKER_PORT: u16 = 0x61;
/// Channel 0's output line on the master 8259.
pub const IRQ: u8 = 0;

/// The control word register (write-only).
const CONTROL: u16 = BASE + 3;

// Control word fields (data sheet, "Control Word Format").
const SC_READ_BACK: u8 = 3;
const RW_LATCH: u8 = 0;
const RW_LSB: u8 = 1;
const RW_MSB: u8 = 2;
/// The bits the status byte reports as written: RW, mode, BCD.
const CONTROL_MODE_BITS: u8 = 0x3F;

// Read-back command (data sheet, "Read-Back Command Format"): bits 7-6
// are 11, bits 5-4 active-low COUNT and STATUS latch selects, bits 3-1
// select counters 2, 1, 0.
const RB_NO_COUNT: u8 = 1 << 5;
const RB_NO_STATUS: u8 = 1 << 4;

// Status byte (data sheet, "Status Byte"): then the control word's RW,
// mode and BCD bits.
const STATUS_OUT: u8 = 1 << 7;
const STATUS_NULL_COUNT: u8 = 1 << 6;

// Port 0x61 bits (IBM PC/AT technical reference; PIIX NMI status and
// control register).
const B_GATE2: u8 = 1 << 0;
/// Bits 0-3 (gate 2, speaker data enable, parity and channel check
/// enables) are read/write; the rest are status.
const B_WRITABLE: u8 = 0x0F;
const B_REFRESH: u8 = 1 << 4;
const B_OUT2: u8 = 1 << 5;
/// The refresh-request toggle flips once per DRAM refresh request:
/// every 18 PIT clocks (15.085 us), the period the PC BIOS gives
/// channel 1.
const REFRESH_TICKS: u64 = 18;

/// The 8254's power-on state is undefined. Like QEMU, every channel
/// starts in mode 3, LSB then MSB, binary, with count 0 (65536): what the
/// PC BIOS gives channel 0 for its 18.2 Hz tick.
const POWER_ON_CONTROL: u8 = 0x36;

/// How the guest reads and writes the count (control word bits 5-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Lsb,
    Msb,
    /// LSB then MSB, each way with its own flip-flop.
    Word,
}

/// One loading of the CE: from pulse `load` on, the CE counts `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    /// The pulse that loaded the count: at it, nothing has been counted.
    load: u64,
    /// The count in pulses (1 to 65536, or to 10000 in BCD; more for a
    /// count with invalid BCD digits).
    period: u64,
    /// Mode 3 only: the run starts with the low half-cycle (a new count
    /// loaded at the end of a high one).
    low_first: bool,
}

impl Run {
    fn new(load: u64, period: u64) -> Self {
        Run {
            load,
            period,
            low_first: false,
        }
    }

    /// Mode 3: how far into a cycle (high half first) the run starts.
    fn offset(&self) -> u64 {
        if self.low_first {
            halves(self.period).0
        } else {
            0
        }
    }
}

/// Mode 3's high and low half-cycles for a count: equal for an even
/// count, the high one a pulse longer for an odd one.
fn halves(period: u64) -> (u64, u64) {
    (period.div_ceil(2), period / 2)
}

#[derive(Clone, Copy, Debug)]
struct Counting {
    run: Run,
    /// Modes 2 and 3: a count written while counting, loaded at the end
    /// of the current period (mode 2) or half-cycle (mode 3).
    next: Option<Run>,
    /// CE value and OUT before `run.load`.
    before: (u64, bool),
    /// Modes 0 and 4: the pulse after which a low gate stopped counting.
    paused: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
enum Ce {
    /// Not counting: waiting for a count (after a control word), for a
    /// trigger (modes 1 and 5) or for the gate (modes 2 and 3). `value`
    /// is a plain number (not BCD).
    Held {
        value: u64,
        out: bool,
    },
    Counting(Counting),
}

#[derive(Clone, Copy, Debug)]
struct Latched {
    value: u16,
    /// LSB-then-MSB reads: the LSB has been read.
    msb_next: bool,
}

struct Channel {
    /// Control word bits 5-0 as last written (the status byte's).
    control: u8,
    /// 0 to 5 (6 and 7 are 2 and 3).
    mode: u8,
    bcd: bool,
    access: Access,
    /// The count register (CR) as written (BCD digits in BCD mode).
    cr: u16,
    /// A count has been written since the control word.
    cr_valid: bool,
    /// LSB-then-MSB writes: the LSB written, waiting for the MSB.
    lsb_written: Option<u8>,
    /// LSB-then-MSB reads of the live count: the MSB is next.
    read_msb: bool,
    latch: Option<Latched>,
    status: Option<u8>,
    gate: bool,
    ce: Ce,
    /// Null count: the CR reaches the CE at this pulse (u64::MAX: at a
    /// trigger yet to come).
    loads_at: u64,
}

impl Channel {
    /// The power-on state at pulse `t`: mode 3, count 65536, counting
    /// if the gate is high.
    fn power_on(gate: bool, t: u64) -> Self {
        let mut ch = Channel {
            control: 0,
            mode: 0,
            bcd: false,
            access: Access::Word,
            cr: 0,
            cr_valid: false,
            lsb_written: None,
            read_msb: false,
            latch: None,
            status: None,
            gate,
            ce: Ce::Held {
                value: 0,
                out: true,
            },
            loads_at: 0,
        };
        ch.program(POWER_ON_CONTROL, t);
        ch.cr_valid = true;
        ch.loads_at = 0;
        if gate {
            ch.ce = Ce::Counting(Counting {
                run: Run::new(t, ch.period()),
                next: None,
                before: (0, true),
                paused: None,
            });
        }
        ch
    }

    /// 65536 counts in binary, 10000 in BCD.
    fn modulus(&self) -> u64 {
        if self.bcd { 10_000 } else { 0x1_0000 }
    }

    /// The CR as a number of pulses: 0 is the largest count.
    fn period(&self) -> u64 {
        let n = if self.bcd {
            from_bcd(self.cr)
        } else {
            self.cr as u64
        };
        if n == 0 { self.modulus() } else { n }
    }

    /// CE value (a plain number) and OUT `e` pulses into `run`.
    fn phase(&self, run: Run, e: u64) -> (u64, bool) {
        let p = run.period;
        let m = self.modulus();
        let down = (p % m + m - e % m) % m;
        match self.mode {
            // Counts down through 0 and on; OUT goes high at 0 (mode 0)
            // or ends the one-shot there (mode 1).
            0 | 1 => (down, e >= p),
            // OUT low for the one pulse at which the count reaches 0.
            4 | 5 => (down, e != p),
            // Reloads instead of reaching 0; OUT low while the CE is 1.
            2 => {
                let r = e % p;
                ((p - r) % m, r + 1 != p)
            }
            // Counts down by two, loading the count rounded down to even,
            // once per half-cycle.
            _ => {
                let (high, _) = halves(p);
                let c = (e + run.offset()) % p;
                let (j, out) = if c < high {
                    (c, true)
                } else {
                    (c - high, false)
                };
                ((p - p % 2 - 2 * j) % m, out)
            }
        }
    }

    /// CE value (a plain number) and OUT at pulse `t`.
    fn at(&self, t: u64) -> (u64, bool) {
        match self.ce {
            Ce::Held { value, out } => (value, out),
            Ce::Counting(c) => {
                let run = match c.next {
                    Some(n) if t >= n.load => n,
                    _ => c.run,
                };
                if t < run.load {
                    return c.before;
                }
                let end = c.paused.map_or(t, |p| t.min(p.max(run.load)));
                self.phase(run, end - run.load)
            }
        }
    }

    fn out(&self, t: u64) -> bool {
        self.at(t).1
    }

    /// The count as the guest reads it.
    fn count(&self, t: u64) -> u16 {
        let n = self.at(t).0 % self.modulus();
        if self.bcd { to_bcd(n) } else { n as u16 }
    }

    fn status_byte(&self, t: u64) -> u8 {
        let mut s = self.control;
        if self.out(t) {
            s |= STATUS_OUT;
        }
        if t < self.loads_at {
            s |= STATUS_NULL_COUNT;
        }
        s
    }

    /// Makes a pending count of modes 2 and 3 current once loaded.
    fn settle(&mut self, t: u64) {
        if let Ce::Counting(c) = &mut self.ce
            && let Some(n) = c.next
            && t >= n.load
        {
            c.run = n;
            c.next = None;
        }
    }

    /// A control word for this channel.
    fn program(&mut self, v: u8, t: u64) {
        let (value, _) = self.at(t);
        self.control = v & CONTROL_MODE_BITS;
        self.mode = match (v >> 1) & 7 {
            m @ 6..=7 => m - 4,
            m => m,
        };
        self.bcd = v & 1 != 0;
        self.access = match (v >> 4) & 3 {
            RW_LSB => Access::Lsb,
            RW_MSB => Access::Msb,
            _ => Access::Word,
        };
        // "All control logic is immediately reset and OUT goes to a known
        // initial state": low in mode 0, high in the others. A latched
        // count goes with the reprogramming.
        self.ce = Ce::Held {
            value,
            out: self.mode != 0,
        };
        self.cr_valid = false;
        self.lsb_written = None;
        self.read_msb = false;
        self.latch = None;
        self.status = None;
        self.loads_at = u64::MAX;
    }

    fn write(&mut self, v: u8, t: u64) {
        match self.access {
            Access::Lsb => self.load(v as u16, t),
            Access::Msb => self.load((v as u16) << 8, t),
            Access::Word => match self.lsb_written.take() {
                Some(lsb) => self.load(u16::from_le_bytes([lsb, v]), t),
                None => {
                    self.lsb_written = Some(v);
                    // Mode 0: "writing the first byte disables counting;
                    // OUT is set low immediately".
                    if self.mode == 0 {
                        let (value, _) = self.at(t);
                        self.ce = Ce::Held { value, out: false };
                    }
                }
            },
        }
    }

    /// A count written at pulse `t`.
    fn load(&mut self, cr: u16, t: u64) {
        self.settle(t);
        self.cr = cr;
        self.cr_valid = true;
        let period = self.period();
        let (value, out) = self.at(t);
        match self.mode {
            // Loaded at the next pulse, whatever the gate; a count
            // written while counting restarts from it.
            0 | 4 => {
                self.ce = Ce::Counting(Counting {
                    run: Run::new(t + 1, period),
                    next: None,
                    before: (value, self.mode == 4 && out),
                    paused: (!self.gate).then_some(t),
                });
                self.loads_at = t + 1;
            }
            // Waits for the next trigger; the current one-shot goes on.
            1 | 5 => self.loads_at = u64::MAX,
            // A low gate holds the count until it rises.
            _ if !self.gate => self.loads_at = u64::MAX,
            _ => match &mut self.ce {
                Ce::Held { .. } => {
                    self.ce = Ce::Counting(Counting {
                        run: Run::new(t + 1, period),
                        next: None,
                        before: (value, true),
                        paused: None,
                    });
                    self.loads_at = t + 1;
                }
                // Not loaded yet: the new count replaces the old.
                Ce::Counting(c) if t < c.run.load => c.run.period = period,
                Ce::Counting(Counting { next: Some(n), .. }) => n.period = period,
                Ce::Counting(c) => {
                    let run = c.run;
                    let e = t - run.load;
                    let p = run.period;
                    let next = if self.mode == 2 {
                        Run::new(run.load + (e / p + 1) * p, period)
                    } else {
                        let (high, _) = halves(p);
                        let pos = (e + run.offset()) % p;
                        if pos < high {
                            Run {
                                load: t + (high - pos),
                                period,
                                low_first: true,
                            }
                        } else {
                            Run::new(t + (p - pos), period)
                        }
                    };
                    c.next = Some(next);
                    self.loads_at = next.load;
                }
            },
        }
    }

    /// The gate input changes at pulse `t` (sampled at the next one).
    fn set_gate(&mut self, high: bool, t: u64) {
        if high == self.gate {
            return;
        }
        self.settle(t);
        self.gate = high;
        let now = self.at(t);
        match self.mode {
            // Modes 0 and 4 count only while the gate is high.
            0 | 4 => {
                if let Ce::Counting(c) = &mut self.ce {
                    if !high {
                        c.paused = Some(t);
                    } else if let Some(p) = c.paused.take() {
                        c.run.load += t.saturating_sub(p.max(c.run.load));
                    }
                }
            }
            // Modes 2 and 3: a low gate stops counting and sets OUT high.
            2 | 3 if !high => {
                self.ce = Ce::Held {
                    value: now.0,
                    out: true,
                }
            }
            // A trigger: modes 1 and 5 start their one-shot, modes 2 and
            // 3 reload; the CR is loaded at the next pulse.
            _ if high && self.cr_valid => {
                self.ce = Ce::Counting(Counting {
                    run: Run::new(t + 1, self.period()),
                    next: None,
                    before: now,
                    paused: None,
                });
                self.loads_at = self.loads_at.min(t + 1);
            }
            _ => {}
        }
    }

    /// The first pulse after `after` at which OUT rises.
    fn next_rise(&self, after: u64) -> Option<u64> {
        let Ce::Counting(c) = &self.ce else {
            return None;
        };
        let until = c.next.map_or(u64::MAX, |n| n.load);
        let first = self
            .run_rise(c.run, c.before.1, c.paused, after)
            .filter(|&r| r <= until);
        match (first, c.next) {
            (Some(r), _) => Some(r),
            (None, Some(n)) => self.run_rise(n, true, None, after.max(n.load)),
            (None, None) => None,
        }
    }

    fn run_rise(&self, run: Run, before: bool, paused: Option<u64>, after: u64) -> Option<u64> {
        if run.load > after && !before && self.phase(run, 0).1 {
            return Some(run.load);
        }
        let from = after.saturating_sub(run.load) + 1;
        let p = run.period;
        let e = match self.mode {
            0 | 1 => p,
            4 | 5 => p + 1,
            // A count of 1 (illegal in mode 2) keeps OUT low; in mode 3 it
            // has no low half-cycle. Neither has edges.
            2 if p >= 2 => from.div_ceil(p) * p,
            3 if p >= 2 => from + (p - (from + run.offset()) % p) % p,
            _ => return None,
        };
        if e < from || paused.is_some_and(|pz| e > pz.saturating_sub(run.load)) {
            return None;
        }
        Some(run.load + e)
    }

    fn latch_count(&mut self, t: u64) {
        // A second latch before the first is read is ignored.
        if self.latch.is_none() {
            self.latch = Some(Latched {
                value: self.count(t),
                msb_next: false,
            });
        }
    }

    fn latch_status(&mut self, t: u64) {
        if self.status.is_none() {
            self.status = Some(self.status_byte(t));
        }
    }

    fn read(&mut self, t: u64) -> u8 {
        // A latched status is read first, then a latched count.
        if let Some(s) = self.status.take() {
            return s;
        }
        if let Some(l) = &mut self.latch {
            let [lsb, msb] = l.value.to_le_bytes();
            return match self.access {
                Access::Lsb => {
                    self.latch = None;
                    lsb
                }
                Access::Msb => {
                    self.latch = None;
                    msb
                }
                Access::Word if l.msb_next => {
                    self.latch = None;
                    msb
                }
                Access::Word => {
                    l.msb_next = true;
                    lsb
                }
            };
        }
        let [lsb, msb] = self.count(t).to_le_bytes();
        match self.access {
            Access::Lsb => lsb,
            Access::Msb => msb,
            Access::Word => {
                self.read_msb = !self.read_msb;
                if self.read_msb { lsb } else { msb }
            }
        }
    }
}

fn from_bcd(v: u16) -> u64 {
    (0..4).fold(0, |acc, i| acc * 10 + ((v >> (12 - 4 * i)) & 0xF) as u64)
}

fn to_bcd(n: u64) -> u16 {
    (0..4).fold(0, |acc, i| {
        acc | (((n / 10u64.pow(i)) % 10) as u16) << (4 * i)
    })
}

/// The 8254 and port 0x61. Register it at [`BASE`] (`PORT_COUNT` ports)
/// and at [`SPEAKER_PORT`] (one port); it dispatches on the port.
pub struct Pit {
    clock: Clock,
    irq: Box<dyn IrqLine>,
    channels: [Channel; 3],
    /// Port 0x61 bits 0-3 as written.
    port_b: u8,
    /// The level last driven on IRQ0.
    line: bool,
    /// The latest pulse seen: channel 0's rising edges up to it have been
    /// raised (or are owed), and time does not go back before it.
    seen: u64,
    /// Channel 0 rising edges missed by a late advance, not raised yet.
    owed: u64,
    /// When (ns) the last edge was raised.
    raised_at: u64,
}

impl Pit {
    pub fn new(clock: Clock, irq: Box<dyn IrqLine>) -> Pit {
        let t = clock::ticks(clock.now(), PIT_HZ);
        let mut pit = Pit {
            clock,
            irq,
            channels: [
                Channel::power_on(true, t),
                Channel::power_on(true, t),
                Channel::power_on(false, t),
            ],
            port_b: 0,
            line: false,
            seen: t,
            owed: 0,
            raised_at: 0,
        };
        pit.line = pit.channels[0].out(t);
        pit.irq.set_level(pit.line);
        pit
    }

    /// Back to the power-on state (a machine reset).
    pub fn reset(&mut self) {
        let t = self.tick();
        self.sync(t);
        self.channels = [
            Channel::power_on(true, t),
            Channel::power_on(true, t),
            Channel::power_on(false, t),
        ];
        self.port_b = 0;
        self.owed = 0;
        self.sync(t);
    }

    /// The current pulse.
    fn tick(&self) -> u64 {
        clock::ticks(self.clock.now(), PIT_HZ).max(self.seen)
    }

    /// Brings IRQ0 to pulse `t`: one edge if OUT rose since the last
    /// pulse seen (more rises are owed), then the line follows OUT.
    fn sync(&mut self, t: u64) {
        if t > self.seen {
            let mut rises = 0;
            let mut after = self.seen;
            while rises <= MAX_OWED_EDGES {
                match self.channels[0].next_rise(after) {
                    Some(r) if r <= t => {
                        rises += 1;
                        after = r;
                    }
                    _ => break,
                }
            }
            if rises > 0 {
                self.raise_edge(t);
                self.owed = (self.owed + rises - 1).min(MAX_OWED_EDGES);
            }
            self.seen = t;
        }
        self.follow_out(t);
    }

    /// A rising edge on IRQ0 at pulse `t` (the line follows OUT after).
    fn raise_edge(&mut self, t: u64) {
        if self.line {
            self.irq.set_level(false);
        }
        self.irq.set_level(true);
        self.line = true;
        self.raised_at = clock::ns_of_ticks(t, PIT_HZ);
    }

    fn follow_out(&mut self, t: u64) {
        let out = self.channels[0].out(t);
        if out != self.line {
            self.irq.set_level(out);
            self.line = out;
        }
    }

    fn read_byte(&mut self, port: u16, t: u64) -> u8 {
        match port {
            BASE..CONTROL => self.channels[(port - BASE) as usize].read(t),
            SPEAKER_PORT => {
                let mut v = self.port_b;
                if (t / REFRESH_TICKS) % 2 == 1 {
                    v |= B_REFRESH;
                }
                if self.channels[2].out(t) {
                    v |= B_OUT2;
                }
                v
            }
            // The control word register is write-only.
            _ => 0xFF,
        }
    }

    fn write_byte(&mut self, port: u16, v: u8, t: u64) {
        match port {
            BASE..CONTROL => {
                if port == BASE {
                    self.owed = 0;
                }
                self.channels[(port - BASE) as usize].write(v, t)
            }
            CONTROL => self.control(v, t),
            SPEAKER_PORT => {
                self.port_b = v & B_WRITABLE;
                self.channels[2].set_gate(v & B_GATE2 != 0, t);
            }
            _ => {}
        }
    }

    fn control(&mut self, v: u8, t: u64) {
        let sc = v >> 6;
        if sc == SC_READ_BACK {
            for (i, ch) in self.channels.iter_mut().enumerate() {
                if v & (2 << i) != 0 {
                    if v & RB_NO_COUNT == 0 {
                        ch.latch_count(t);
                    }
                    if v & RB_NO_STATUS == 0 {
                        ch.latch_status(t);
                    }
                }
            }
        } else if (v >> 4) & 3 == RW_LATCH {
            self.channels[sc as usize].latch_count(t);
        } else {
            if sc == 0 {
                self.owed = 0;
            }
            self.channels[sc as usize].program(v, t);
        }
    }
}

/// The 8254's registers are bytes: a wider access is split into byte
/// accesses at consecutive ports, as the ISA bus does. Ports that are
/// not the PIT's read as all ones and ignore writes.
impl PortDevice for Pit {
    fn read(&mut self, port: Port, size: u8) -> u32 {
        let t = self.tick();
        self.sync(t);
        (0..size.min(4) as u16).fold(0, |acc, i| {
            acc | (self.read_byte(port.0.wrapping_add(i), t) as u32) << (8 * i)
        })
    }

    fn write(&mut self, port: Port, size: u8, value: u32) -> IoAction {
        let t = self.tick();
        self.sync(t);
        for i in 0..size.min(4) as u16 {
            self.write_byte(port.0.wrapping_add(i), (value >> (8 * i)) as u8, t);
        }
        self.sync(t);
        IoAction::None
    }
}

impl Timed for Pit {
    /// When channel 0's OUT next rises, or an owed edge is due.
    fn deadline(&self) -> Option<u64> {
        let rise = self.channels[0]
            .next_rise(self.seen)
            .map(|t| clock::ns_of_ticks(t, PIT_HZ));
        let owed = (self.owed > 0).then_some(self.raised_at + OWED_EDGE_GAP_NS);
        rise.into_iter().chain(owed).min()
    }

    fn advance(&mut self, now: u64) {
        let t = clock::ticks(now, PIT_HZ).max(self.seen);
        let raised = self.raised_at;
        self.sync(t);
        if self.owed > 0 && self.raised_at == raised && now >= raised + OWED_EDGE_GAP_NS {
            self.owed -= 1;
            self.raise_edge(t);
            self.follow_out(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// An edge-triggered controller input: counts rising edges.
    #[derive(Clone, Default)]
    struct Edges(Arc<Mutex<(bool, u32)>>);

    impl IrqLine for Edges {
        fn set_level(&mut self, high: bool) {
            let mut s = self.0.lock().unwrap();
            if high && !s.0 {
                s.1 += 1;
            }
            s.0 = high;
        }
    }

    impl Edges {
        fn rises(&self) -> u32 {
            self.0.lock().unwrap().1
        }
        fn level(&self) -> bool {
            self.0.lock().unwrap().0
        }
    }

    const CH0: u16 = 0;
    const CH2: u16 = 2;
    // Control words, LSB then MSB, binary, channel 0 (add the channel in
    // bits 7-6).
    const MODE0: u8 = 0x30;
    const MODE1: u8 = 0x32;
    const MODE2: u8 = 0x34;
    const MODE3: u8 = 0x36;
    const MODE4: u8 = 0x38;
    const MODE5: u8 = 0x3A;
    const BCD: u8 = 0x01;

    struct Rig {
        pit: Pit,
        clock: Clock,
        irq: Edges,
    }

    impl Rig {
        fn new() -> Rig {
            let clock = Clock::manual();
            let irq = Edges::default();
            let pit = Pit::new(clock.clone(), Box::new(irq.clone()));
            Rig { pit, clock, irq }
        }

        /// Moves the clock to CLK pulse `tick` (it never goes back).
        fn at(&mut self, tick: u64) -> &mut Self {
            self.clock.set(clock::ns_of_ticks(tick, PIT_HZ));
            self
        }

        fn outb(&mut self, port: u16, v: u8) {
            self.pit.write(Port(port), 1, v as u32);
        }

        fn inb(&mut self, port: u16) -> u8 {
            self.pit.read(Port(port), 1) as u8
        }

        /// A control word for channel `ch`, then `count` LSB and MSB.
        fn program(&mut self, ch: u16, control: u8, count: u16) {
            self.outb(CONTROL, (ch as u8) << 6 | control);
            self.outb(BASE + ch, count as u8);
            self.outb(BASE + ch, (count >> 8) as u8);
        }

        /// Reads the count, LSB then MSB.
        fn count(&mut self, ch: u16) -> u16 {
            let lsb = self.inb(BASE + ch);
            u16::from_le_bytes([lsb, self.inb(BASE + ch)])
        }

        /// The status byte, by a read-back command.
        fn status(&mut self, ch: u16) -> u8 {
            self.outb(CONTROL, 0xC0 | RB_NO_COUNT | 2 << ch);
            self.inb(BASE + ch)
        }

        fn out(&mut self, ch: u16) -> bool {
            self.status(ch) & STATUS_OUT != 0
        }

        fn gate2(&mut self, high: bool) {
            self.outb(SPEAKER_PORT, high as u8);
        }

        /// OUT at each pulse of `ticks`.
        fn outs(&mut self, ch: u16, ticks: std::ops::RangeInclusive<u64>) -> Vec<bool> {
            ticks.map(|t| self.at(t).out(ch)).collect()
        }

        /// The count at each pulse of `ticks`.
        fn counts(&mut self, ch: u16, ticks: std::ops::RangeInclusive<u64>) -> Vec<u16> {
            ticks.map(|t| self.at(t).count(ch)).collect()
        }

        fn deadline_tick(&self) -> Option<u64> {
            self.pit.deadline().map(|ns| clock::ticks(ns, PIT_HZ))
        }

        /// What the ticker does at the deadline; returns its pulse.
        fn fire(&mut self) -> u64 {
            let ns = self.pit.deadline().expect("a deadline");
            self.clock.set(ns);
            self.pit.advance(ns);
            clock::ticks(ns, PIT_HZ)
        }
    }

    const H: bool = true;
    const L: bool = false;

    // In all tests the count is written at pulse 0, so the CE is loaded
    // at pulse 1 (the data sheet's "next CLK pulse").

    #[test]
    fn mode0_out_rises_n_plus_one_pulses_after_the_count_and_stays_high() {
        let mut r = Rig::new();
        r.program(CH0, MODE0, 5);
        assert_eq!(r.counts(CH0, 1..=7), [5, 4, 3, 2, 1, 0, 0xFFFF]);
        let mut r = Rig::new();
        r.program(CH0, MODE0, 5);
        assert_eq!(r.outs(CH0, 0..=8), [L, L, L, L, L, L, H, H, H]);
        assert!(r.at(100_000).out(CH0), "stays high after wrapping");
    }

    #[test]
    fn mode0_raises_irq0_once_at_terminal_count() {
        let mut r = Rig::new();
        r.program(CH0, MODE0, 5);
        assert!(!r.irq.level(), "the control word sets OUT low");
        let rises = r.irq.rises();
        assert_eq!(r.deadline_tick(), Some(6));
        assert_eq!(r.fire(), 6);
        assert_eq!(r.irq.rises(), rises + 1);
        assert!(r.irq.level());
        assert_eq!(r.deadline_tick(), None);
        let later = r.at(70_000).clock.now();
        r.pit.advance(later);
        assert_eq!(r.irq.rises(), rises + 1);
    }

    #[test]
    fn mode0_first_byte_stops_the_count_and_the_second_restarts_it() {
        let mut r = Rig::new();
        r.program(CH0, MODE0, 100);
        r.at(11).outb(BASE, 50);
        assert_eq!(r.at(20).count(CH0), 90, "stopped at pulse 11");
        r.outb(BASE, 0);
        assert_eq!(r.at(21).count(CH0), 50);
        assert_eq!(r.at(30).count(CH0), 41);
        assert_eq!(r.outs(CH0, 70..=71), [L, H]);
    }

    #[test]
    fn mode1_one_shot_starts_at_a_gate_trigger_and_retriggers() {
        let mut r = Rig::new();
        r.gate2(false);
        r.program(CH2, MODE1, 3);
        assert_ne!(r.at(5).status(CH2) & STATUS_NULL_COUNT, 0, "waits");
        assert!(r.out(CH2));
        r.at(10).gate2(true);
        assert_eq!(r.outs(CH2, 10..=15), [H, L, L, L, H, H]);
        assert_eq!(r.at(16).status(CH2) & STATUS_NULL_COUNT, 0);
        // Retriggered during the pulse: low for 3 pulses from the new load.
        r.at(30).gate2(false);
        r.gate2(true);
        r.at(32).gate2(false);
        r.gate2(true);
        assert_eq!(r.outs(CH2, 31..=37), [L, L, L, L, L, H, H]);
        // A new count does not change the one-shot under way, only the
        // next one.
        r.at(40).gate2(false);
        r.gate2(true);
        r.at(42).outb(BASE + CH2, 10);
        r.outb(BASE + CH2, 0);
        assert_eq!(r.outs(CH2, 43..=44), [L, H]);
        r.at(50).gate2(false);
        r.gate2(true);
        assert_eq!(r.outs(CH2, 60..=61), [L, H]);
    }

    #[test]
    fn mode1_and_5_never_start_on_a_gate_tied_high() {
        let mut r = Rig::new();
        r.program(CH0, MODE1, 3);
        assert_eq!(r.outs(CH0, 0..=10), [H; 11]);
        assert_eq!(r.deadline_tick(), None);
        r.program(CH0, MODE5, 3);
        assert_eq!(r.outs(CH0, 10..=20), [H; 11]);
        assert_eq!(r.deadline_tick(), None);
    }

    #[test]
    fn mode2_counts_n_to_1_and_out_is_low_for_one_pulse() {
        let mut r = Rig::new();
        r.program(CH0, MODE2, 4);
        assert_eq!(r.counts(CH0, 1..=9), [4, 3, 2, 1, 4, 3, 2, 1, 4]);
        let mut r = Rig::new();
        r.program(CH0, MODE2, 4);
        assert_eq!(r.outs(CH0, 1..=9), [H, H, H, L, H, H, H, L, H]);
    }

    #[test]
    fn mode2_raises_irq0_at_the_end_of_each_period() {
        let mut r = Rig::new();
        r.program(CH0, MODE2, 100);
        let rises = r.irq.rises();
        for (i, tick) in [101, 201, 301].into_iter().enumerate() {
            assert_eq!(r.deadline_tick(), Some(tick));
            r.fire();
            assert_eq!(r.irq.rises(), rises + 1 + i as u32);
            assert!(r.irq.level());
        }
    }

    #[test]
    fn mode3_even_count_is_a_square_wave_counting_by_two() {
        let mut r = Rig::new();
        r.program(CH0, MODE3, 4);
        assert_eq!(r.counts(CH0, 1..=8), [4, 2, 4, 2, 4, 2, 4, 2]);
        let mut r = Rig::new();
        r.program(CH0, MODE3, 4);
        assert_eq!(r.outs(CH0, 1..=8), [H, H, L, L, H, H, L, L]);
    }

    #[test]
    fn mode3_odd_count_is_high_one_pulse_longer_than_low() {
        let mut r = Rig::new();
        r.program(CH0, MODE3, 5);
        assert_eq!(r.counts(CH0, 1..=10), [4, 2, 0, 4, 2, 4, 2, 0, 4, 2]);
        let mut r = Rig::new();
        r.program(CH0, MODE3, 5);
        assert_eq!(r.outs(CH0, 1..=10), [H, H, H, L, L, H, H, H, L, L]);
    }

    #[test]
    fn mode3_raises_irq0_at_the_start_of_each_high_half() {
        let mut r = Rig::new();
        r.program(CH0, MODE3, 10);
        let rises = r.irq.rises();
        for (i, tick) in [11, 21, 31].into_iter().enumerate() {
            assert_eq!(r.deadline_tick(), Some(tick));
            r.fire();
            assert_eq!(r.irq.rises(), rises + 1 + i as u32);
        }
    }

    #[test]
    fn mode4_strobes_low_n_plus_one_pulses_after_the_count() {
        let mut r = Rig::new();
        r.program(CH0, MODE4, 3);
        assert_eq!(r.counts(CH0, 1..=5), [3, 2, 1, 0, 0xFFFF]);
        let mut r = Rig::new();
        r.program(CH0, MODE4, 3);
        let rises = r.irq.rises();
        assert_eq!(r.outs(CH0, 0..=4), [H, H, H, H, L]);
        assert_eq!(r.deadline_tick(), Some(5), "OUT rises after the strobe");
        r.fire();
        assert_eq!(r.irq.rises(), rises + 1);
        assert_eq!(r.deadline_tick(), None, "one strobe per count");
        assert_eq!(r.outs(CH0, 5..=70_000).iter().filter(|&&o| !o).count(), 0);
    }

    #[test]
    fn mode5_strobes_n_plus_one_pulses_after_a_gate_trigger() {
        let mut r = Rig::new();
        r.gate2(false);
        r.program(CH2, MODE5, 3);
        r.at(10).gate2(true);
        assert_eq!(r.outs(CH2, 10..=16), [H, H, H, H, L, H, H]);
        // Retriggerable: the count starts over from the trigger.
        r.at(20).gate2(false);
        r.gate2(true);
        r.at(22).gate2(false);
        r.gate2(true);
        assert_eq!(r.outs(CH2, 23..=27), [H, H, H, L, H]);
    }

    #[test]
    fn count_zero_is_65536_in_binary() {
        let mut r = Rig::new();
        r.program(CH0, MODE0, 0);
        assert_eq!(r.counts(CH0, 1..=2), [0, 0xFFFF]);
        assert_eq!(r.outs(CH0, 65_536..=65_537), [L, H]);
    }

    #[test]
    fn count_zero_is_10000_in_bcd() {
        let mut r = Rig::new();
        r.program(CH0, MODE0 | BCD, 0);
        assert_eq!(r.counts(CH0, 1..=2), [0, 0x9999]);
        assert_eq!(r.outs(CH0, 10_000..=10_001), [L, H]);
    }

    #[test]
    fn bcd_counts_read_as_decimal_digits() {
        let mut r = Rig::new();
        r.program(CH0, MODE2 | BCD, 0x1234);
        assert_eq!(r.at(6).count(CH0), 0x1229);
        assert_eq!(r.at(1234).count(CH0), 0x0001);
        assert_eq!(r.at(1235).count(CH0), 0x1234, "reloaded");
        assert_eq!(r.deadline_tick(), Some(1 + 2 * 1234));
    }

    #[test]
    fn a_latched_count_holds_until_read_and_a_second_latch_is_ignored() {
        let mut r = Rig::new();
        r.program(CH0, MODE2, 1000);
        r.at(10).outb(CONTROL, 0x00);
        r.at(20).outb(CONTROL, 0x00);
        assert_eq!(r.at(30).count(CH0), 991);
        assert_eq!(r.count(CH0), 971, "released: the live count again");
        // Reprogramming drops the latch.
        r.at(40).outb(CONTROL, 0x00);
        r.program(CH0, MODE2, 500);
        assert_eq!(r.at(41).count(CH0), 500);
    }

    #[test]
    fn lsb_only_and_msb_only_counts() {
        let mut r = Rig::new();
        r.outb(CONTROL, 0x10); // channel 0, LSB only, mode 0
        r.outb(BASE, 0x50);
        assert_eq!(r.at(1).inb(BASE), 0x50);
        assert_eq!(r.at(11).inb(BASE), 0x46);
        assert_eq!(r.inb(BASE), 0x46, "no flip-flop: LSB again");
        assert_eq!(r.outs(CH0, 80..=81), [L, H]);

        let mut r = Rig::new();
        r.outb(CONTROL, 0x20); // channel 0, MSB only, mode 0
        r.outb(BASE, 0x12);
        assert_eq!(r.at(1).inb(BASE), 0x12);
        assert_eq!(r.at(257).inb(BASE), 0x11);
        assert_eq!(r.outs(CH0, 0x1200..=0x1201), [L, H]);
    }

    #[test]
    fn word_reads_take_each_byte_from_the_clock_at_its_read() {
        let mut r = Rig::new();
        r.program(CH0, MODE0, 0x1234);
        assert_eq!(r.at(1).inb(BASE), 0x34);
        assert_eq!(r.at(53).inb(BASE), 0x12, "MSB of 0x1200");
        assert_eq!(r.at(54).inb(BASE), 0xFF, "LSB of 0x11FF");
    }

    #[test]
    fn reads_and_writes_have_separate_flip_flops() {
        let mut r = Rig::new();
        r.program(CH0, MODE4, 0x1234);
        assert_eq!(r.at(1).inb(BASE), 0x34);
        r.outb(BASE, 0x00);
        assert_eq!(r.inb(BASE), 0x12);
        r.outb(BASE, 0x01);
        assert_eq!(r.at(2).count(CH0), 0x0100);
    }

    #[test]
    fn read_back_latches_status_and_count_of_several_channels() {
        let mut r = Rig::new();
        r.gate2(true);
        r.program(CH0, MODE2, 100);
        r.program(CH2, MODE0, 50);
        r.at(10).outb(CONTROL, 0xC0 | 1 << 1 | 1 << 3);
        r.at(20);
        // Status first (OUT, no null count, the control word's bits),
        // then the count, all as at pulse 10.
        assert_eq!(r.inb(BASE), STATUS_OUT | MODE2);
        assert_eq!(r.count(CH0), 91);
        assert_eq!(r.inb(BASE + 2), MODE0);
        assert_eq!(r.count(CH2), 41);
        assert_eq!(r.count(CH0), 81, "released");
    }

    #[test]
    fn a_second_read_back_before_reading_is_ignored() {
        let mut r = Rig::new();
        r.program(CH0, MODE2, 100);
        r.at(10).outb(CONTROL, 0xC0 | RB_NO_COUNT | 1 << 1);
        // At pulse 100 OUT is low (the count is 1); this status is lost.
        r.at(100).outb(CONTROL, 0xC0 | RB_NO_COUNT | 1 << 1);
        assert_eq!(r.inb(BASE), STATUS_OUT | MODE2);
        assert_eq!(r.status(CH0), MODE2);
    }

    #[test]
    fn null_count_is_set_until_the_count_reaches_the_ce() {
        let mut r = Rig::new();
        r.outb(CONTROL, MODE2);
        assert_ne!(r.status(CH0) & STATUS_NULL_COUNT, 0);
        r.outb(BASE, 100);
        r.outb(BASE, 0);
        assert_ne!(r.status(CH0) & STATUS_NULL_COUNT, 0);
        assert_eq!(r.at(1).status(CH0) & STATUS_NULL_COUNT, 0);
        // Mode 2 loads a count written while counting at the period's end.
        r.at(50).outb(BASE, 10);
        r.outb(BASE, 0);
        assert_ne!(r.at(100).status(CH0) & STATUS_NULL_COUNT, 0);
        assert_eq!(r.at(101).status(CH0) & STATUS_NULL_COUNT, 0);
    }

    #[test]
    fn gate_low_pauses_mode0_on_channel2() {
        let mut r = Rig::new();
        r.gate2(true);
        r.program(CH2, MODE0, 100);
        r.at(11).gate2(false);
        assert_eq!(r.at(50).count(CH2), 90);
        r.gate2(true);
        assert_eq!(r.at(60).count(CH2), 80);
        assert_eq!(r.outs(CH2, 139..=140), [L, H]);
    }

    #[test]
    fn mode0_count_written_with_the_gate_low_starts_when_it_rises() {
        let mut r = Rig::new();
        r.gate2(false);
        r.program(CH2, MODE0, 10);
        assert_eq!(r.at(5).count(CH2), 10, "loaded, not counting");
        r.at(20).gate2(true);
        assert_eq!(r.outs(CH2, 29..=30), [L, H]);
    }

    #[test]
    fn gate_low_sets_mode2_out_high_and_a_rising_gate_reloads() {
        let mut r = Rig::new();
        r.gate2(true);
        r.program(CH2, MODE2, 10);
        r.at(4).gate2(false);
        assert_eq!(r.at(20).count(CH2), 7);
        assert!(r.out(CH2));
        r.gate2(true);
        assert_eq!(r.at(21).count(CH2), 10);
        assert_eq!(r.outs(CH2, 29..=31), [H, L, H]);
    }

    #[test]
    fn gate_low_sets_mode3_out_high_at_once_and_a_rising_gate_reloads() {
        let mut r = Rig::new();
        r.gate2(true);
        r.program(CH2, MODE3, 10);
        assert!(!r.at(7).out(CH2));
        r.gate2(false);
        assert!(r.out(CH2), "no CLK pulse needed");
        assert_eq!(r.at(20).count(CH2), 8);
        r.gate2(true);
        assert_eq!(r.outs(CH2, 21..=31), [H, H, H, H, H, L, L, L, L, L, H]);
    }

    #[test]
    fn port_61_reads_the_gate_and_out_of_channel2() {
        let mut r = Rig::new();
        r.outb(SPEAKER_PORT, 0x03);
        r.program(CH2, MODE0, 10);
        assert_eq!(r.inb(SPEAKER_PORT) & !B_REFRESH, 0x03);
        assert_eq!(r.at(11).inb(SPEAKER_PORT) & !B_REFRESH, 0x03 | B_OUT2);
    }

    #[test]
    fn port_61_keeps_bits_0_to_3_and_ignores_writes_to_4_to_7() {
        let mut r = Rig::new();
        r.program(CH2, MODE0, 10);
        r.outb(SPEAKER_PORT, 0xFE);
        assert_eq!(r.inb(SPEAKER_PORT), 0x0E);
        r.outb(SPEAKER_PORT, 0xF0);
        assert_eq!(r.inb(SPEAKER_PORT), 0x00);
    }

    #[test]
    fn port_61_refresh_bit_toggles_every_15_us() {
        let mut r = Rig::new();
        let refresh = |r: &mut Rig, ns: u64| {
            r.clock.set(ns);
            r.inb(SPEAKER_PORT) & B_REFRESH != 0
        };
        assert!(!refresh(&mut r, 0));
        assert!(!refresh(&mut r, 15_000));
        assert!(refresh(&mut r, 15_090));
        assert!(refresh(&mut r, 30_000));
        assert!(!refresh(&mut r, 30_200));
    }

    #[test]
    fn modes_6_and_7_are_modes_2_and_3() {
        let mut r = Rig::new();
        r.program(CH0, 0x3C, 4);
        assert_eq!(r.status(CH0) & CONTROL_MODE_BITS, 0x3C, "as written");
        assert_eq!(r.outs(CH0, 1..=5), [H, H, H, L, H]);
        let mut r = Rig::new();
        r.program(CH0, 0x3E, 4);
        assert_eq!(r.outs(CH0, 1..=5), [H, H, L, L, H]);
    }

    #[test]
    fn a_new_mode2_count_is_loaded_at_the_end_of_the_period() {
        let mut r = Rig::new();
        r.program(CH0, MODE2, 100);
        r.at(150);
        assert_eq!(r.count(CH0), 51);
        r.outb(BASE, 20);
        r.outb(BASE, 0);
        assert_eq!(r.count(CH0), 51);
        assert_eq!(r.deadline_tick(), Some(201));
        assert_eq!(r.at(200).count(CH0), 1);
        // Reading at pulse 202 raised the edge of pulse 201.
        assert_eq!(r.at(202).count(CH0), 19);
        assert_eq!(r.deadline_tick(), Some(221));
        r.fire();
        assert_eq!(r.deadline_tick(), Some(241));
    }

    #[test]
    fn a_new_mode3_count_is_loaded_at_the_end_of_the_half_cycle() {
        let mut r = Rig::new();
        r.program(CH0, MODE3, 100);
        r.at(20);
        r.outb(BASE, 10);
        r.outb(BASE, 0);
        // The high half of 100 ends at pulse 51; the new count starts
        // with its low half there.
        assert_eq!(r.deadline_tick(), Some(56));
        assert_eq!(r.outs(CH0, 50..=51), [H, L]);
        assert_eq!(r.count(CH0), 10);
        assert_eq!(r.outs(CH0, 55..=56), [L, H]);
        assert_eq!(r.outs(CH0, 60..=61), [H, L]);
        assert_eq!(r.deadline_tick(), Some(66));
        r.fire();
        assert_eq!(r.deadline_tick(), Some(76));
    }

    #[test]
    fn a_control_word_moves_the_deadline() {
        let mut r = Rig::new();
        r.program(CH0, MODE2, 1000);
        assert_eq!(r.deadline_tick(), Some(1001));
        r.at(300).outb(CONTROL, MODE0);
        assert_eq!(r.deadline_tick(), None);
        assert!(!r.irq.level());
        r.outb(BASE, 10);
        r.outb(BASE, 0);
        assert_eq!(r.deadline_tick(), Some(311));
        // Back to periodic: OUT goes high at once (an edge, as on a PC).
        let rises = r.irq.rises();
        r.at(305).program(CH0, MODE2, 50);
        assert_eq!(r.irq.rises(), rises + 1);
        assert_eq!(r.deadline_tick(), Some(356));
    }

    #[test]
    fn a_late_advance_raises_one_edge_and_owes_the_others() {
        let mut r = Rig::new();
        r.program(CH0, MODE2, 1000);
        let rises = r.irq.rises();
        assert_eq!(r.deadline_tick(), Some(1001));
        // Rises at 1001, 2001, 3001 and 4001: one now, three owed.
        r.at(4501);
        r.pit.advance(r.clock.now());
        assert_eq!(r.irq.rises(), rises + 1);
        assert_eq!(r.count(CH0), 500, "the count follows the clock");
        let gap = clock::ticks(OWED_EDGE_GAP_NS, PIT_HZ);
        for k in 1..=3 {
            let due = r.fire();
            assert!(due.abs_diff(4501 + k * gap) <= 1, "owed edge {k} at {due}");
            assert_eq!(r.irq.rises(), rises + 1 + k as u32);
        }
        assert_eq!(r.fire(), 5001, "then on time again");
        assert_eq!(r.irq.rises(), rises + 5);
    }

    #[test]
    fn reprogramming_channel0_drops_owed_edges() {
        let mut r = Rig::new();
        r.program(CH0, MODE2, 100);
        r.at(10_000);
        r.pit.advance(r.clock.now());
        assert!(r.pit.owed > 0);
        r.program(CH0, MODE2, 50_000);
        assert_eq!(r.pit.owed, 0);
        assert_eq!(r.deadline_tick(), Some(60_001));
    }

    #[test]
    fn at_most_max_owed_edges_are_owed() {
        let mut r = Rig::new();
        r.program(CH0, MODE2, 10);
        r.at(10 * (MAX_OWED_EDGES + 500));
        r.pit.advance(r.clock.now());
        assert_eq!(r.pit.owed, MAX_OWED_EDGES);
    }

    #[test]
    fn an_access_after_a_missed_deadline_raises_its_edge_once() {
        let mut r = Rig::new();
        r.program(CH0, MODE2, 100);
        let rises = r.irq.rises();
        let stale = r.at(150).clock.now();
        r.count(CH0);
        assert_eq!(r.irq.rises(), rises + 1);
        assert_eq!(r.deadline_tick(), Some(201));
        r.pit.advance(stale);
        r.pit.advance(clock::ns_of_ticks(120, PIT_HZ));
        assert_eq!(r.irq.rises(), rises + 1);
    }

    #[test]
    fn power_on_channel0_runs_mode3_with_count_65536() {
        let mut r = Rig::new();
        assert_eq!(r.status(CH0), STATUS_OUT | MODE3);
        assert_eq!(r.deadline_tick(), Some(65_536));
        assert!(r.irq.level());
        assert!(
            r.inb(SPEAKER_PORT) & B_OUT2 != 0,
            "mode 3, gate low: OUT high"
        );
    }

    #[test]
    fn wide_accesses_are_split_into_bytes() {
        let mut r = Rig::new();
        r.program(CH2, MODE0, 10);
        r.outb(SPEAKER_PORT, 0x0C);
        assert_eq!(r.pit.read(Port(SPEAKER_PORT), 2), 0xFF0C);
        assert_eq!(r.pit.read(Port(CONTROL), 4), 0xFFFF_FFFF);
        r.pit.write(Port(CONTROL), 2, 0x00_00); // a latch, then nothing
        assert_eq!(r.pit.read(Port(BASE), 1), 0x00);
    }

    /// Linux's quick_pit_calibrate (arch/x86/kernel/tsc.c): channel 2 in
    /// mode 0 from 0xFFFF, polled for each MSB value in turn. Each port
    /// access takes 1 us, about what it takes on a PC.
    #[test]
    fn linux_quick_pit_calibrate_sees_each_msb_in_turn() {
        let mut r = Rig::new();
        let io = |r: &mut Rig, port: u16, v: Option<u8>| {
            r.clock.advance(1_000);
            match v {
                Some(v) => {
                    r.outb(port, v);
                    0
                }
                None => r.inb(port),
            }
        };
        let b = io(&mut r, SPEAKER_PORT, None);
        io(&mut r, SPEAKER_PORT, Some((b & !0x02) | 0x01));
        io(&mut r, CONTROL, Some(0xB0));
        io(&mut r, CH2 + BASE, Some(0xFF));
        io(&mut r, CH2 + BASE, Some(0xFF));
        let loaded = clock::ticks(r.clock.now(), PIT_HZ) + 1;
        let verify_msb = |r: &mut Rig, val: u8| {
            io(r, BASE + CH2, None);
            io(r, BASE + CH2, None) == val
        };
        verify_msb(&mut r, 0);
        for i in 0..=60u64 {
            let val = 0xFF - i as u8;
            let mut count = 0;
            while count < 50_000 && verify_msb(&mut r, val) {
                count += 1;
            }
            // About 256 pulses (214 us) at 2 us a loop.
            assert!(count > 5, "MSB {val:#x} seen {count} times");
            // The MSB that ended the loop is the next one, read within
            // a microsecond of the pulse that made it.
            let change = clock::ns_of_ticks(loaded + 256 * (i + 1), PIT_HZ);
            let now = r.clock.now();
            assert!(now >= change && now < change + 2_000, "MSB {val:#x}");
        }
    }

    /// Linux's pit_calibrate_tsc: channel 2 in mode 0 with a 10 ms count,
    /// polled on port 0x61 bit 5.
    #[test]
    fn linux_pit_calibrate_tsc_sees_out2_rise_after_the_count() {
        let mut r = Rig::new();
        r.at(12_345);
        let latch: u16 = (PIT_HZ / 100) as u16;
        let b = r.inb(SPEAKER_PORT);
        r.outb(SPEAKER_PORT, (b & !0x02) | 0x01);
        r.outb(CONTROL, 0xB0);
        r.outb(BASE + CH2, latch as u8);
        r.outb(BASE + CH2, (latch >> 8) as u8);
        let start = r.clock.now();
        let mut pitcnt = 0u32;
        while r.inb(SPEAKER_PORT) & 0x20 == 0 {
            r.clock.advance(1_000);
            pitcnt += 1;
        }
        let rise = clock::ns_of_ticks(12_345 + 1 + latch as u64, PIT_HZ);
        assert!(r.clock.now() >= rise && r.clock.now() < rise + 1_000);
        assert!(pitcnt >= 1_000, "CAL_PIT_LOOPS");
        assert!((r.clock.now() - start).abs_diff(10_000_000) < 2_000);
        assert_eq!(r.inb(SPEAKER_PORT) & 0x03, 0x01, "gate on, speaker off");
    }

    #[test]
    fn the_ticker_raises_irq0_through_timed_ports() {
        use clock::{Ticker, TimedPorts};
        use std::time::{Duration, Instant};
        let clock = Clock::manual();
        let irq = Edges::default();
        let pit = Arc::new(Mutex::new(Pit::new(clock.clone(), Box::new(irq.clone()))));
        let ticker = Ticker::new(clock.clone());
        ticker.add(pit.clone());
        let mut ports = TimedPorts::new(pit, ticker.handle());
        ports.write(Port(CONTROL), 1, MODE2 as u32);
        ports.write(Port(BASE), 1, 100);
        ports.write(Port(BASE), 1, 0);
        let rises = irq.rises();
        let wait_for = |n: u32| {
            let start = Instant::now();
            while irq.rises() < n {
                assert!(start.elapsed() < Duration::from_secs(10), "no IRQ0");
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        clock.set(clock::ns_of_ticks(101, PIT_HZ));
        wait_for(rises + 1);
        // Several periods late: one edge.
        clock.set(clock::ns_of_ticks(1_000, PIT_HZ));
        wait_for(rises + 2);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(irq.rises(), rises + 2);
    }

    #[test]
    fn reset_returns_to_power_on_state() {
        let mut r = Rig::new();
        r.program(CH0, MODE0 | BCD, 0x10);
        r.outb(SPEAKER_PORT, 0x0F);
        r.at(1000).pit.reset();
        assert_eq!(r.status(CH0), STATUS_OUT | MODE3);
        assert_eq!(r.inb(SPEAKER_PORT) & B_WRITABLE, 0);
        assert_eq!(r.deadline_tick(), Some(1000 + 65_536));
    }
}
