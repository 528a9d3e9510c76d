//! The PC's two cascaded 8259A programmable interrupt controllers (Intel
//! 8259A data sheet; the slave's INT output drives the master's IR2), with
//! the PIIX edge/level control registers (ELCR, ports 0x4D0-0x4D1).
//!
//! [`Pic`] is the state machine: device lines go in (`set_irq`), port
//! accesses program it, and the CPU side asks whether INTR is up and runs
//! the acknowledge cycle. [`PicHandle`] shares it between the port bus,
//! the CPU ([`super::InterruptController`]) and the devices' IRQ lines.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{IoAction, IrqLine, Port, PortDevice};

pub const MASTER: u16 = 0x20;
pub const SLAVE: u16 = 0xA0;
pub const ELCR: u16 = 0x4D0;
/// The master input the slave is cascaded on.
const CASCADE: u8 = 2;

/// One 8259A.
#[derive(Clone, Debug, Default)]
struct Chip {
    /// Interrupt request, in-service and mask registers.
    irr: u8,
    isr: u8,
    imr: u8,
    /// The input lines' levels (edge detection, level mode).
    lines: u8,
    /// Level-triggered inputs (ELCR).
    elcr: u8,
    /// Inputs that may be level-triggered (the others ignore ELCR writes).
    elcr_mask: u8,
    /// ICW2: the vector of IR0.
    base: u8,
    /// The initialization word expected next (2, 3, 4), or 0: ready.
    icw_step: u8,
    icw4: bool,
    single: bool,
    auto_eoi: bool,
    rotate_on_auto_eoi: bool,
    special_fully_nested: bool,
    special_mask: bool,
    /// OCW3: reads of the command port return ISR (else IRR).
    read_isr: bool,
    /// OCW3: the next read of the command port is a poll.
    poll: bool,
    /// The input of lowest priority is `priority_add - 1` (rotation).
    priority_add: u8,
}

impl Chip {
    fn new(elcr_mask: u8) -> Self {
        Chip {
            elcr_mask,
            ..Chip::default()
        }
    }

    /// The highest-priority input in `mask` (0-7), if any.
    fn highest(&self, mask: u8) -> Option<u8> {
        (0..8)
            .map(|i| (i + self.priority_add) & 7)
            .find(|&irq| mask & (1 << irq) != 0)
    }

    /// The input this chip asks to interrupt with: the highest pending
    /// unmasked one, if it has priority over those in service.
    fn pending(&self) -> Option<u8> {
        let irq = self.highest(self.irr & !self.imr)?;
        // In special mask mode masked inputs in service do not block;
        // in special fully nested mode (master) the cascade input does not
        // block the slave's further requests.
        let mut in_service = self.isr;
        if self.special_mask {
            in_service &= !self.imr;
        }
        if self.special_fully_nested {
            in_service &= !(1 << CASCADE);
        }
        match self.highest(in_service) {
            Some(s) if self.rank(s) <= self.rank(irq) => None,
            _ => Some(irq),
        }
    }

    /// Priority rank of input `irq` (0 is the highest).
    fn rank(&self, irq: u8) -> u8 {
        irq.wrapping_sub(self.priority_add) & 7
    }

    fn set_line(&mut self, irq: u8, high: bool) {
        let bit = 1 << irq;
        if self.elcr & bit != 0 {
            // Level-triggered: the request follows the line.
            if high {
                self.irr |= bit;
            } else {
                self.irr &= !bit;
            }
        } else if high && self.lines & bit == 0 {
            // Edge-triggered: a rising edge latches a request.
            self.irr |= bit;
        }
        if high {
            self.lines |= bit;
        } else {
            self.lines &= !bit;
        }
    }

    /// The acknowledge cycle for input `irq`: in service (unless
    /// auto-EOI), and an edge request is consumed.
    fn acknowledge(&mut self, irq: u8) {
        let bit = 1 << irq;
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.priority_add = (irq + 1) & 7;
            }
        } else {
            self.isr |= bit;
        }
        if self.elcr & bit == 0 {
            self.irr &= !bit;
        }
    }

    fn write(&mut self, a0: bool, v: u8) {
        if !a0 {
            if v & 0x10 != 0 {
                // ICW1: start initialization.
                *self = Chip {
                    elcr: self.elcr,
                    elcr_mask: self.elcr_mask,
                    lines: self.lines,
                    icw_step: 2,
                    icw4: v & 0x01 != 0,
                    single: v & 0x02 != 0,
                    ..Chip::default()
                };
            } else if v & 0x08 != 0 {
                // OCW3.
                if v & 0x04 != 0 {
                    self.poll = true;
                }
                if v & 0x02 != 0 {
                    self.read_isr = v & 0x01 != 0;
                }
                if v & 0x40 != 0 {
                    self.special_mask = v & 0x20 != 0;
                }
            } else {
                self.ocw2(v);
            }
            return;
        }
        match self.icw_step {
            2 => {
                self.base = v & 0xF8;
                self.icw_step = match (self.single, self.icw4) {
                    (false, _) => 3,
                    (true, true) => 4,
                    (true, false) => 0,
                };
            }
            3 => self.icw_step = if self.icw4 { 4 } else { 0 },
            4 => {
                self.auto_eoi = v & 0x02 != 0;
                self.special_fully_nested = v & 0x10 != 0;
                self.icw_step = 0;
            }
            _ => self.imr = v,
        }
    }

    /// OCW2: end of interrupt and rotation commands.
    fn ocw2(&mut self, v: u8) {
        let level = v & 7;
        match v >> 5 {
            // Non-specific EOI, and rotate on non-specific EOI: the
            // highest-priority input in service.
            cmd @ (1 | 5) => {
                if let Some(irq) = self.highest(self.isr) {
                    self.isr &= !(1 << irq);
                    if cmd == 5 {
                        self.priority_add = (irq + 1) & 7;
                    }
                }
            }
            // Specific EOI.
            3 => self.isr &= !(1 << level),
            // Rotate on specific EOI.
            7 => {
                self.isr &= !(1 << level);
                self.priority_add = (level + 1) & 7;
            }
            // Set priority: `level` becomes the lowest.
            6 => self.priority_add = (level + 1) & 7,
            // Rotate in automatic EOI mode: clear, set.
            0 => self.rotate_on_auto_eoi = false,
            4 => self.rotate_on_auto_eoi = true,
            _ => {}
        }
    }

    fn read(&mut self, a0: bool) -> u8 {
        if a0 {
            return self.imr;
        }
        if std::mem::take(&mut self.poll) {
            // Poll command: acknowledges like INTA, for a CPU that polls.
            return match self.pending() {
                Some(irq) => {
                    self.acknowledge(irq);
                    0x80 | irq
                }
                None => 0,
            };
        }
        if self.read_isr { self.isr } else { self.irr }
    }
}

/// The master and the slave.
#[derive(Clone, Debug)]
pub struct Pic {
    chips: [Chip; 2],
    /// Inputs whose devices raise requests on their own (timers, host
    /// input), not only in response to the guest.
    asynchronous: u16,
}

impl Default for Pic {
    fn default() -> Self {
        Self::new()
    }
}

impl Pic {
    pub fn new() -> Self {
        // IRQ 0, 1, 2, 8 and 13 are always edge-triggered on a PIIX.
        Pic {
            chips: [Chip::new(0xF8), Chip::new(0xDE)],
            asynchronous: 0,
        }
    }

    /// Whether an interrupt may still come: INTR is up, or an input with
    /// an asynchronous source is unmasked (on the slave, with the cascade
    /// unmasked too).
    pub fn may_interrupt(&self) -> bool {
        let [m, s] = &self.chips;
        let slave_on = m.imr & (1 << CASCADE) == 0;
        let open = !m.imr as u16 | if slave_on { (!s.imr as u16) << 8 } else { 0 };
        self.intr() || self.asynchronous & open != 0
    }

    /// As a PC BIOS leaves the pair: vectors 0x08-0x0F and 0x70-0x77,
    /// the slave on IR2, everything masked but the cascade.
    pub fn bios_setup(&mut self) {
        for (port, base, icw3, imr) in [(MASTER, 0x08, 0x04, 0xFB), (SLAVE, 0x70, 0x02, 0xFF)] {
            for (a0, v) in [(0, 0x11), (1, base), (1, icw3), (1, 0x01), (1, imr)] {
                self.write_port(port + a0, v);
            }
        }
    }

    /// Drives input line `irq` (0-15) to `high`.
    pub fn set_irq(&mut self, irq: u8, high: bool) {
        self.chips[usize::from(irq >= 8)].set_line(irq & 7, high);
        self.cascade();
    }

    /// The slave's INT output is the master's IR2, which follows it as a
    /// level (a slave request that goes away, masked or withdrawn, leaves
    /// no latched request behind to come out as a spurious IRQ 15).
    fn cascade(&mut self) {
        let bit = 1 << CASCADE;
        let slave = self.chips[1].pending().is_some();
        let master = &mut self.chips[0];
        if slave {
            master.irr |= bit;
            master.lines |= bit;
        } else {
            master.irr &= !bit;
            master.lines &= !bit;
        }
    }

    /// Whether INTR (the master's output) is up.
    pub fn intr(&self) -> bool {
        self.chips[0].pending().is_some()
    }

    /// The interrupt-acknowledge cycle: the vector to deliver. With no
    /// request left (it went away), the spurious IRQ 7 (or 15 from the
    /// slave), as the 8259A does.
    pub fn acknowledge(&mut self) -> u8 {
        let vector = match self.chips[0].pending() {
            Some(CASCADE) => {
                self.chips[0].acknowledge(CASCADE);
                match self.chips[1].pending() {
                    Some(irq) => {
                        self.chips[1].acknowledge(irq);
                        self.chips[1].base + irq
                    }
                    None => self.chips[1].base + 7,
                }
            }
            Some(irq) => {
                self.chips[0].acknowledge(irq);
                self.chips[0].base + irq
            }
            None => self.chips[0].base + 7,
        };
        self.cascade();
        vector
    }

    pub fn read_port(&mut self, port: u16) -> u8 {
        let v = match port {
            MASTER | 0x21 => self.chips[0].read(port & 1 != 0),
            SLAVE | 0xA1 => self.chips[1].read(port & 1 != 0),
            0x4D0 => self.chips[0].elcr,
            0x4D1 => self.chips[1].elcr,
            _ => 0xFF,
        };
        self.cascade();
        v
    }

    pub fn write_port(&mut self, port: u16, v: u8) {
        match port {
            MASTER | 0x21 => self.chips[0].write(port & 1 != 0, v),
            SLAVE | 0xA1 => self.chips[1].write(port & 1 != 0, v),
            0x4D0 | 0x4D1 => {
                let c = &mut self.chips[usize::from(port == 0x4D1)];
                c.elcr = v & c.elcr_mask;
            }
            _ => {}
        }
        self.cascade();
    }
}

/// The PIC shared by the port bus, the CPU and the devices' IRQ lines.
/// INTR is mirrored in an atomic, so the CPU's check takes no lock.
#[derive(Clone)]
pub struct PicHandle {
    pic: Arc<Mutex<Pic>>,
    intr: Arc<AtomicBool>,
    /// Called when INTR goes up (wakes a CPU in hlt, ends its TU).
    kick: Arc<dyn Fn() + Send + Sync>,
}

impl PicHandle {
    pub fn new(kick: Arc<dyn Fn() + Send + Sync>) -> Self {
        PicHandle {
            pic: Arc::new(Mutex::new(Pic::new())),
            intr: Arc::new(AtomicBool::new(false)),
            kick,
        }
    }

    /// Runs `f` on the PIC, then publishes INTR (kicking the CPU when it
    /// goes up).
    fn with<T>(&self, f: impl FnOnce(&mut Pic) -> T) -> T {
        let mut pic = self.pic.lock().unwrap_or_else(|e| e.into_inner());
        let r = f(&mut pic);
        let intr = pic.intr();
        drop(pic);
        if intr && !self.intr.swap(true, Ordering::AcqRel) {
            (self.kick)();
        } else if !intr {
            self.intr.store(false, Ordering::Release);
        }
        r
    }

    /// A machine reset: the power-on state, or (`bios`) as a PC BIOS
    /// leaves it for a guest loaded without one.
    pub fn reset(&self, bios: bool) {
        self.with(|p| {
            // The devices keep their lines and their levels.
            let lines = p.chips.each_ref().map(|c| c.lines);
            *p = Pic {
                asynchronous: p.asynchronous,
                ..Pic::new()
            };
            for (c, l) in p.chips.iter_mut().zip(lines) {
                c.lines = l;
            }
            if bios {
                p.bios_setup();
            }
        });
    }

    /// An IRQ line into input `irq` for a device that raises it only in
    /// response to the guest.
    pub fn line(&self, irq: u8) -> PicLine {
        PicLine {
            pic: self.clone(),
            irq,
        }
    }

    /// An IRQ line for a device that raises requests on its own (a timer,
    /// host input): `hlt` waits for it while it is unmasked.
    pub fn asynchronous_line(&self, irq: u8) -> PicLine {
        self.with(|p| p.asynchronous |= 1 << irq);
        self.line(irq)
    }
}

impl PortDevice for PicHandle {
    fn read(&mut self, port: Port, _size: u8) -> u32 {
        self.with(|p| p.read_port(port.0)) as u32
    }

    fn write(&mut self, port: Port, _size: u8, value: u32) -> IoAction {
        self.with(|p| p.write_port(port.0, value as u8));
        IoAction::None
    }
}

impl super::InterruptController for PicHandle {
    fn pending(&mut self) -> bool {
        self.intr.load(Ordering::Acquire)
    }

    fn may_interrupt(&mut self) -> bool {
        self.with(|p| p.may_interrupt())
    }

    fn acknowledge(&mut self) -> Option<u8> {
        Some(self.with(Pic::acknowledge))
    }
}

/// A device's interrupt output wired to one PIC input.
pub struct PicLine {
    pic: PicHandle,
    irq: u8,
}

impl IrqLine for PicLine {
    fn set_level(&mut self, high: bool) {
        let irq = self.irq;
        self.pic.with(|p| p.set_irq(irq, high));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The PC BIOS/Linux setup: master at 0x08 (here 0x20), slave at 0x28,
    /// cascade on IR2, 8086 mode.
    fn pc(auto_eoi: bool) -> Pic {
        let mut p = Pic::new();
        let icw4 = 0x01 | if auto_eoi { 0x02 } else { 0 };
        for (port, base, icw3) in [(MASTER, 0x20, 0x04), (SLAVE, 0x28, 0x02)] {
            p.write_port(port, 0x11);
            p.write_port(port + 1, base);
            p.write_port(port + 1, icw3);
            p.write_port(port + 1, icw4);
            p.write_port(port + 1, 0x00);
        }
        p
    }

    fn eoi(p: &mut Pic, irq: u8) {
        if irq >= 8 {
            p.write_port(SLAVE, 0x20);
        }
        p.write_port(MASTER, 0x20);
    }

    #[test]
    fn an_edge_is_delivered_once_with_its_vector() {
        let mut p = pc(false);
        assert!(!p.intr());
        p.set_irq(0, true);
        assert!(p.intr());
        assert_eq!(p.acknowledge(), 0x20);
        // In service, and the edge was consumed: nothing more, even with
        // the line still high.
        assert!(!p.intr());
        eoi(&mut p, 0);
        assert!(!p.intr());
        p.set_irq(0, false);
        p.set_irq(0, true);
        assert_eq!(p.acknowledge(), 0x20);
    }

    #[test]
    fn a_level_input_stays_requested_until_the_line_drops() {
        let mut p = pc(false);
        p.write_port(0x4D1, 0x08); // IRQ 11 level-triggered
        assert_eq!(p.read_port(0x4D1), 0x08);
        p.set_irq(11, true);
        assert_eq!(p.acknowledge(), 0x28 + 3);
        eoi(&mut p, 11);
        assert!(p.intr(), "the line is still high");
        p.set_irq(11, false);
        assert!(!p.intr(), "nothing is left latched on the cascade input");
        // IRQ 0, 1, 2, 8 and 13 cannot be level-triggered.
        p.write_port(0x4D0, 0xFF);
        assert_eq!(p.read_port(0x4D0), 0xF8);
    }

    #[test]
    fn priority_nesting_and_masks() {
        let mut p = pc(false);
        p.set_irq(3, true);
        assert_eq!(p.acknowledge(), 0x23);
        // A lower priority request waits for the EOI; a higher one nests.
        p.set_irq(5, true);
        assert!(!p.intr());
        p.set_irq(1, true);
        assert_eq!(p.acknowledge(), 0x21);
        eoi(&mut p, 1);
        assert!(!p.intr(), "3 is still in service");
        eoi(&mut p, 3);
        assert_eq!(p.acknowledge(), 0x25);
        eoi(&mut p, 5);
        // A masked request waits for the unmask.
        p.write_port(0x21, 1 << 4);
        p.set_irq(4, true);
        assert!(!p.intr());
        assert_eq!(p.read_port(0x21), 0x10);
        p.write_port(0x21, 0);
        assert_eq!(p.acknowledge(), 0x24);
    }

    #[test]
    fn the_slave_cascades_through_ir2() {
        let mut p = pc(false);
        p.set_irq(12, true);
        assert_eq!(p.acknowledge(), 0x2C);
        // Both chips hold it in service: the slave's IR4, the master's IR2.
        p.write_port(SLAVE, 0x0B);
        p.write_port(MASTER, 0x0B);
        assert_eq!(p.read_port(SLAVE), 0x10);
        assert_eq!(p.read_port(MASTER), 0x04);
        p.set_irq(1, true);
        assert_eq!(p.acknowledge(), 0x21, "IRQ 1 outranks the cascade");
        eoi(&mut p, 1);
        eoi(&mut p, 12);
        assert_eq!(p.read_port(MASTER), 0);
    }

    #[test]
    fn specific_eoi_rotation_and_auto_eoi() {
        let mut p = pc(false);
        p.set_irq(6, true);
        p.set_irq(7, true);
        assert_eq!(p.acknowledge(), 0x26);
        p.write_port(MASTER, 0x60 | 6); // specific EOI for 6
        assert_eq!(p.acknowledge(), 0x27);
        // Rotate on specific EOI: 7 becomes the lowest, 0 the highest.
        p.write_port(MASTER, 0xE0 | 7);
        p.set_irq(0, true);
        p.set_irq(3, true);
        assert_eq!(p.acknowledge(), 0x20);
        // Set priority: 2 lowest, so 3 is now the highest.
        p.write_port(MASTER, 0xC0 | 2);
        p.set_irq(4, true);
        assert_eq!(p.acknowledge(), 0x23);

        let mut p = pc(true);
        p.set_irq(3, true);
        assert_eq!(p.acknowledge(), 0x23);
        p.write_port(MASTER, 0x0B);
        assert_eq!(p.read_port(MASTER), 0, "auto-EOI leaves nothing in service");
    }

    #[test]
    fn poll_mode_and_spurious_interrupts() {
        let mut p = pc(false);
        p.write_port(MASTER, 0x0C); // poll
        assert_eq!(p.read_port(MASTER), 0, "nothing requested");
        p.set_irq(5, true);
        p.write_port(MASTER, 0x0C);
        assert_eq!(p.read_port(MASTER), 0x85);
        assert!(!p.intr(), "polling acknowledged it");
        eoi(&mut p, 5);
        // A request that goes away before the acknowledge: IRQ 7.
        p.write_port(0x4D0, 0x08); // IRQ 3 level-triggered
        p.set_irq(3, true);
        assert!(p.intr());
        p.set_irq(3, false);
        assert_eq!(p.acknowledge(), 0x27);
        p.write_port(MASTER, 0x0B);
        assert_eq!(p.read_port(MASTER), 0, "a spurious IRQ 7 is not in service");
    }

    #[test]
    fn special_mask_mode_lets_lower_priorities_in() {
        let mut p = pc(false);
        p.set_irq(2 + 1, true);
        assert_eq!(p.acknowledge(), 0x23);
        // The handler masks its own input and enables special mask mode.
        p.write_port(0x21, 1 << 3);
        p.write_port(MASTER, 0x68);
        p.set_irq(6, true);
        assert_eq!(p.acknowledge(), 0x26);
    }

    #[test]
    fn only_unmasked_asynchronous_inputs_may_interrupt_a_halted_cpu() {
        let h = PicHandle::new(Arc::new(|| {}));
        h.reset(true);
        let _uart = h.line(4);
        let _timer = h.asynchronous_line(0);
        let _slave_timer = h.asynchronous_line(8);
        let may = |h: &PicHandle| h.with(|p| p.may_interrupt());
        assert!(!may(&h), "the BIOS masks everything but the cascade");
        h.with(|p| p.write_port(0x21, !(1u8 << 4)));
        assert!(!may(&h), "the UART answers the guest only");
        h.with(|p| p.write_port(0x21, !(1u8 << 2)));
        h.with(|p| p.write_port(0xA1, 0xFE));
        assert!(may(&h), "IRQ 8 through the cascade");
        h.with(|p| p.write_port(0x21, 0xFF));
        assert!(!may(&h), "the cascade is masked");
        h.with(|p| p.write_port(0x21, 0xFE));
        assert!(may(&h));
    }

    #[test]
    fn the_handle_publishes_intr_and_kicks_the_cpu_once() {
        use super::super::InterruptController;
        use std::sync::atomic::AtomicU32;
        let kicks = Arc::new(AtomicU32::new(0));
        let k = kicks.clone();
        let mut h = PicHandle::new(Arc::new(move || {
            k.fetch_add(1, Ordering::Relaxed);
        }));
        for (port, v) in [
            (0x20, 0x11),
            (0x21, 0x30),
            (0x21, 0x04),
            (0x21, 0x01),
            (0x21, 0),
        ] {
            PortDevice::write(&mut h, Port(port), 1, v);
        }
        let mut line = h.line(1);
        line.set_level(true);
        line.set_level(false);
        line.set_level(true);
        assert!(h.pending());
        assert_eq!(kicks.load(Ordering::Relaxed), 1);
        assert_eq!(h.acknowledge(), Some(0x31));
        assert!(!h.pending());
    }
}
