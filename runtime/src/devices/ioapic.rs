//! The I/O APIC (Intel 82093AA data sheet, as QEMU's version 0x11): 24
//! interrupt pins, each with a redirection entry that turns its signal
//! into a message to the local APIC, behind an index/data register pair
//! in the 4 KiB page at 0xFEC00000.
//!
//! [`IoApic`] is the state machine: device lines go in (`set_irq`),
//! MMIO accesses program it, EOIs of level-triggered vectors come back
//! from the local APIC (`eoi`), and messages go out to an injected
//! [`InterruptTarget`]. [`IoApicHandle`] shares it between the MMIO bus,
//! the devices' lines ([`IoApicLine`]) and the local APIC's EOI
//! broadcast. [`SplitLine`] wires one device output to both the 8259 and
//! the I/O APIC, as on a PC board.
//!
//! Version 0x11 has no EOI register (0x20 added one at offset 0x40):
//! Linux then clears a stuck remote IRR by switching the entry to edge
//! and back, which is honored here.

use std::sync::{Arc, Mutex, MutexGuard};

use super::IrqLine;
use super::apic::{DeliveryMode, InterruptTarget, Message};
use super::mmio::MmioDevice;

/// Where the I/O APIC is on a PC (and in the MP table).
pub const DEFAULT_BASE: u32 = 0xFEC0_0000;
pub const MMIO_SIZE: u32 = 0x1000;
pub const PINS: usize = 24;
/// Version 0x11, maximum redirection entry 23 (data sheet 3.2.2).
pub const VERSION: u32 = 0x0011 | ((PINS as u32 - 1) << 16);

/// The register select and data window (data sheet 3.1).
const IOREGSEL: u32 = 0x00;
const IOWIN: u32 = 0x10;

/// Register indexes (data sheet 3.2).
const REG_ID: u8 = 0x00;
const REG_VERSION: u8 = 0x01;
const REG_ARBITRATION: u8 = 0x02;
const REG_REDIRECTION: u8 = 0x10;
/// The ID is 4 bits, at bit 24.
const ID_MASK: u8 = 0x0F;

/// Redirection entry bits (data sheet 3.2.4).
const RTE_VECTOR: u64 = 0xFF;
const RTE_LOGICAL: u64 = 1 << 11;
const RTE_POLARITY_LOW: u64 = 1 << 13;
const RTE_REMOTE_IRR: u64 = 1 << 14;
const RTE_LEVEL: u64 = 1 << 15;
const RTE_MASKED: u64 = 1 << 16;
const RTE_DEST_SHIFT: u32 = 56;
/// Vector, delivery mode, destination mode, polarity, trigger mode, mask
/// and destination. The delivery status (bit 12, always idle here: a
/// message is delivered at once) and remote IRR are read-only; bits
/// 17-55 are reserved.
const RTE_WRITABLE: u64 = 0xFF00_0000_0001_AFFF;

/// The I/O APIC state machine.
pub struct IoApic {
    id: u8,
    /// The ID it comes out of reset with (the one the MP table gives).
    reset_id: u8,
    regsel: u8,
    rte: [u64; PINS],
    /// The pins' electrical levels (wires: kept across resets).
    lines: u32,
    /// Pins whose devices raise requests on their own (timers).
    asynchronous: u32,
    target: Arc<dyn InterruptTarget>,
}

impl IoApic {
    /// An I/O APIC with ID `id` delivering to `target`, every pin masked.
    pub fn new(id: u8, target: Arc<dyn InterruptTarget>) -> Self {
        let mut io = IoApic {
            id: 0,
            reset_id: id & ID_MASK,
            regsel: 0,
            rte: [RTE_MASKED; PINS],
            lines: 0,
            asynchronous: 0,
            target,
        };
        io.reset();
        io
    }

    /// A machine reset: every entry masked (data sheet 3.2.4), the ID the
    /// machine gave it (a BIOS programs it; the 82093AA resets it to 0).
    pub fn reset(&mut self) {
        self.id = self.reset_id;
        self.regsel = 0;
        self.rte = [RTE_MASKED; PINS];
    }

    /// Whether pin `pin` is asserted: its level through the entry's
    /// polarity.
    fn asserted(&self, pin: usize) -> bool {
        let high = self.lines & (1 << pin) != 0;
        high != (self.rte[pin] & RTE_POLARITY_LOW != 0)
    }

    /// Drives pin `pin` (0-23) to electrical level `level`. An edge pin
    /// sends its message on the edge that asserts it, unless masked (then
    /// the edge is lost, data sheet 3.2.4); a level pin sends it while
    /// asserted and not awaiting an EOI.
    pub fn set_irq(&mut self, pin: u8, level: bool) {
        let pin = usize::from(pin);
        if pin >= PINS {
            return;
        }
        let was = self.asserted(pin);
        if level {
            self.lines |= 1 << pin;
        } else {
            self.lines &= !(1 << pin);
        }
        let rte = self.rte[pin];
        if rte & RTE_LEVEL != 0 {
            self.service_level(pin);
        } else if self.asserted(pin) && !was && rte & RTE_MASKED == 0 {
            self.send(pin);
        }
    }

    /// A level pin that is asserted, unmasked and not awaiting an EOI
    /// sends its message; remote IRR then waits for the EOI.
    fn service_level(&mut self, pin: usize) {
        let rte = self.rte[pin];
        if rte & RTE_LEVEL != 0
            && rte & (RTE_MASKED | RTE_REMOTE_IRR) == 0
            && self.asserted(pin)
            && self.send(pin)
            && matches!(
                Self::mode(rte),
                DeliveryMode::Fixed | DeliveryMode::LowestPriority
            )
        {
            self.rte[pin] |= RTE_REMOTE_IRR;
        }
    }

    fn mode(rte: u64) -> DeliveryMode {
        DeliveryMode::from_field((rte >> 8) as u32)
    }

    /// Sends pin `pin`'s message; true if a local APIC accepted it.
    fn send(&self, pin: usize) -> bool {
        let rte = self.rte[pin];
        self.target.deliver(&Message {
            vector: (rte & RTE_VECTOR) as u8,
            mode: Self::mode(rte),
            logical: rte & RTE_LOGICAL != 0,
            dest: (rte >> RTE_DEST_SHIFT) as u8,
            level: rte & RTE_LEVEL != 0,
        })
    }

    /// An EOI for `vector` from the local APIC: the level entries with
    /// that vector are done, and send again if still asserted.
    pub fn eoi(&mut self, vector: u8) {
        for pin in 0..PINS {
            let rte = self.rte[pin];
            if rte & RTE_LEVEL != 0
                && rte & RTE_REMOTE_IRR != 0
                && (rte & RTE_VECTOR) as u8 == vector
            {
                self.rte[pin] &= !RTE_REMOTE_IRR;
                self.service_level(pin);
            }
        }
    }

    /// Whether an interrupt may still come from a pin with an
    /// asynchronous source that is not masked (for `hlt`).
    pub fn may_interrupt(&self) -> bool {
        (0..PINS).any(|p| self.asynchronous & (1 << p) != 0 && self.rte[p] & RTE_MASKED == 0)
    }

    /// Reads the register at index `index` (data sheet 3.2). Indexes past
    /// the redirection table read 0.
    pub fn read_register(&self, index: u8) -> u32 {
        match index {
            REG_ID => u32::from(self.id) << 24,
            REG_VERSION => VERSION,
            // The arbitration ID is loaded from the ID (data sheet 3.2.3).
            REG_ARBITRATION => u32::from(self.id) << 24,
            i => match Self::entry(i) {
                Some((pin, true)) => (self.rte[pin] >> 32) as u32,
                Some((pin, false)) => self.rte[pin] as u32,
                None => 0,
            },
        }
    }

    /// Writes the register at index `index`; a redirection entry is
    /// written one 32-bit half at a time.
    pub fn write_register(&mut self, index: u8, v: u32) {
        match index {
            REG_ID => self.id = (v >> 24) as u8 & ID_MASK,
            i => {
                let Some((pin, high)) = Self::entry(i) else {
                    return;
                };
                let (shift, half) = if high {
                    (32, 0xFFFF_FFFF_0000_0000)
                } else {
                    (0, 0xFFFF_FFFF)
                };
                let writable = RTE_WRITABLE & half;
                let old = self.rte[pin];
                let mut new = (old & !writable) | ((u64::from(v) << shift) & writable);
                // Remote IRR belongs to level entries: switching to edge
                // clears it (what Linux relies on without an EOI
                // register).
                if new & RTE_LEVEL == 0 {
                    new &= !RTE_REMOTE_IRR;
                }
                self.rte[pin] = new;
                // An unmasked level pin that is asserted interrupts now.
                self.service_level(pin);
            }
        }
    }

    /// The pin and half (high: true) of redirection register `index`.
    fn entry(index: u8) -> Option<(usize, bool)> {
        let i = usize::from(index.checked_sub(REG_REDIRECTION)?);
        (i / 2 < PINS).then_some((i / 2, i % 2 == 1))
    }
}

impl MmioDevice for IoApic {
    /// IOREGSEL at 0x00, IOWIN (32-bit accesses only) at 0x10; the rest
    /// of the page reads 0.
    fn read(&mut self, offset: u32, size: u8) -> u64 {
        match offset {
            IOREGSEL => u64::from(self.regsel),
            IOWIN if size == 4 => u64::from(self.read_register(self.regsel)),
            _ => 0,
        }
    }

    fn write(&mut self, offset: u32, size: u8, value: u64) {
        match offset {
            IOREGSEL => self.regsel = value as u8,
            IOWIN if size == 4 => self.write_register(self.regsel, value as u32),
            _ => {}
        }
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The I/O APIC shared by the MMIO bus, the devices' lines and the local
/// APIC's EOI broadcast. Messages are delivered while its lock is held:
/// the target must not call back into it (the local APIC handle passes
/// EOIs on only after releasing its own lock).
#[derive(Clone)]
pub struct IoApicHandle(Arc<Mutex<IoApic>>);

impl IoApicHandle {
    pub fn new(id: u8, target: Arc<dyn InterruptTarget>) -> Self {
        IoApicHandle(Arc::new(Mutex::new(IoApic::new(id, target))))
    }

    pub fn reset(&self) {
        lock(&self.0).reset();
    }

    pub fn set_irq(&self, pin: u8, level: bool) {
        lock(&self.0).set_irq(pin, level);
    }

    /// The local APIC's EOI broadcast (connect it with
    /// `LocalApicHandle::connect_eoi`).
    pub fn eoi(&self, vector: u8) {
        lock(&self.0).eoi(vector);
    }

    pub fn may_interrupt(&self) -> bool {
        lock(&self.0).may_interrupt()
    }

    /// An IRQ line into pin `pin` for a device that raises it only in
    /// response to the guest. The device's "high" is the pin's high.
    pub fn line(&self, pin: u8) -> IoApicLine {
        IoApicLine {
            io: self.clone(),
            pin,
            inverted: false,
        }
    }

    /// An IRQ line for a device that raises requests on its own (a
    /// timer): `hlt` waits for it while its entry is unmasked.
    pub fn asynchronous_line(&self, pin: u8) -> IoApicLine {
        if usize::from(pin) < PINS {
            lock(&self.0).asynchronous |= 1 << pin;
        }
        self.line(pin)
    }

    /// An active-low wire (a PCI INTx#): the device's "high" (asserted)
    /// pulls the pin low; idle, it is high. The guest programs the entry
    /// active low.
    pub fn active_low_line(&self, pin: u8) -> IoApicLine {
        self.set_irq(pin, true);
        IoApicLine {
            io: self.clone(),
            pin,
            inverted: true,
        }
    }
}

impl MmioDevice for IoApicHandle {
    fn read(&mut self, offset: u32, size: u8) -> u64 {
        lock(&self.0).read(offset, size)
    }

    fn write(&mut self, offset: u32, size: u8, value: u64) {
        lock(&self.0).write(offset, size, value);
    }
}

/// A device's interrupt output wired to one I/O APIC pin.
pub struct IoApicLine {
    io: IoApicHandle,
    pin: u8,
    inverted: bool,
}

impl IrqLine for IoApicLine {
    fn set_level(&mut self, high: bool) {
        self.io.set_irq(self.pin, high != self.inverted);
    }
}

/// One device output driving several controller inputs: on a PC an ISA
/// IRQ reaches both the 8259 and an I/O APIC pin (IRQ 0 on pin 2, the
/// others on their own number, as the MP table says).
pub struct SplitLine(pub Vec<Box<dyn IrqLine>>);

impl IrqLine for SplitLine {
    fn set_level(&mut self, high: bool) {
        for l in &mut self.0 {
            l.set_level(high);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::apic::{Ack, LocalApicHandle};
    use super::super::clock::Clock;
    use super::*;

    /// Records the messages; accepts them unless told to refuse.
    #[derive(Default)]
    struct Recorder {
        sent: Mutex<Vec<Message>>,
        refuse: std::sync::atomic::AtomicBool,
    }

    impl InterruptTarget for Recorder {
        fn deliver(&self, msg: &Message) -> bool {
            lock(&self.sent).push(*msg);
            !self.refuse.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    impl Recorder {
        fn take(&self) -> Vec<Message> {
            std::mem::take(&mut lock(&self.sent))
        }
    }

    fn io() -> (IoApic, Arc<Recorder>) {
        let rec = Arc::new(Recorder::default());
        (IoApic::new(1, rec.clone()), rec)
    }

    fn rd(io: &mut IoApic, index: u8) -> u32 {
        io.write(IOREGSEL, 4, u64::from(index));
        io.read(IOWIN, 4) as u32
    }

    fn wr(io: &mut IoApic, index: u8, v: u32) {
        io.write(IOREGSEL, 4, u64::from(index));
        io.write(IOWIN, 4, u64::from(v));
    }

    /// Programs pin `pin`: low half `low`, destination `dest`.
    fn program(io: &mut IoApic, pin: u8, low: u32, dest: u8) {
        wr(io, 0x11 + 2 * pin, u32::from(dest) << 24);
        wr(io, 0x10 + 2 * pin, low);
    }

    fn fixed(vector: u8, level: bool) -> Message {
        Message {
            vector,
            mode: DeliveryMode::Fixed,
            logical: false,
            dest: 0,
            level,
        }
    }

    #[test]
    fn id_version_and_arbitration_registers() {
        let (mut io, _) = io();
        assert_eq!(rd(&mut io, 0), 0x0100_0000, "the ID the MP table gives");
        assert_eq!(rd(&mut io, 1), 0x0017_0011, "24 pins, version 0x11");
        assert_eq!(rd(&mut io, 2), 0x0100_0000);
        wr(&mut io, 0, 0xFF00_0000);
        assert_eq!(rd(&mut io, 0), 0x0F00_0000, "4-bit ID");
        assert_eq!(rd(&mut io, 2), 0x0F00_0000, "arbitration ID follows");
        wr(&mut io, 1, 0);
        assert_eq!(rd(&mut io, 1), 0x0017_0011, "read-only");
        assert_eq!(rd(&mut io, 0x40), 0, "past the table");
        assert_eq!(io.read(IOREGSEL, 4), 0x40, "IOREGSEL reads back");
    }

    #[test]
    fn entries_are_masked_at_reset_and_keep_only_writable_bits() {
        let (mut io, _) = io();
        for pin in 0..24 {
            assert_eq!(rd(&mut io, 0x10 + 2 * pin), 0x1_0000);
            assert_eq!(rd(&mut io, 0x11 + 2 * pin), 0);
        }
        wr(&mut io, 0x10, 0xFFFF_FFFF);
        assert_eq!(
            rd(&mut io, 0x10),
            0x1_AFFF,
            "no delivery status, remote IRR or reserved bits"
        );
        wr(&mut io, 0x11, 0xFFFF_FFFF);
        assert_eq!(rd(&mut io, 0x11), 0xFF00_0000);
        // A half write leaves the other half.
        wr(&mut io, 0x10, 0x1_0031);
        assert_eq!(rd(&mut io, 0x11), 0xFF00_0000);
        io.reset();
        assert_eq!(rd(&mut io, 0x10), 0x1_0000);
        // Only 32-bit accesses reach the window.
        io.write(IOREGSEL, 1, 0x10);
        io.write(IOWIN, 2, 0x31);
        assert_eq!(io.read(IOWIN, 2), 0);
        assert_eq!(rd(&mut io, 0x10), 0x1_0000);
    }

    #[test]
    fn an_edge_pin_sends_once_per_rising_edge() {
        let (mut io, rec) = io();
        program(&mut io, 4, 0x34, 0);
        io.set_irq(4, true);
        assert_eq!(rec.take(), vec![fixed(0x34, false)]);
        io.set_irq(4, true);
        io.set_irq(4, false);
        assert!(rec.take().is_empty());
        io.set_irq(4, true);
        assert_eq!(rec.take().len(), 1);
    }

    #[test]
    fn an_edge_on_a_masked_pin_is_lost() {
        let (mut io, rec) = io();
        program(&mut io, 4, 0x1_0034, 0);
        io.set_irq(4, true);
        program(&mut io, 4, 0x34, 0);
        assert!(rec.take().is_empty());
    }

    #[test]
    fn a_level_pin_waits_for_the_eoi_and_sends_again_while_asserted() {
        let (mut io, rec) = io();
        program(&mut io, 10, 0x8000 | 0x3A, 0);
        io.set_irq(10, true);
        assert_eq!(rec.take(), vec![fixed(0x3A, true)]);
        assert_eq!(rd(&mut io, 0x10 + 20) & 0x4000, 0x4000, "remote IRR");
        io.set_irq(10, false);
        io.set_irq(10, true);
        assert!(rec.take().is_empty(), "awaiting the EOI");
        io.eoi(0x3B);
        assert!(rec.take().is_empty(), "another vector");
        io.eoi(0x3A);
        assert_eq!(rec.take().len(), 1, "still asserted");
        io.set_irq(10, false);
        io.eoi(0x3A);
        assert!(rec.take().is_empty());
        assert_eq!(rd(&mut io, 0x10 + 20) & 0x4000, 0);
    }

    #[test]
    fn an_asserted_level_pin_sends_when_unmasked() {
        let (mut io, rec) = io();
        program(&mut io, 11, 0x1_8000 | 0x3B, 0);
        io.set_irq(11, true);
        assert!(rec.take().is_empty());
        program(&mut io, 11, 0x8000 | 0x3B, 0);
        assert_eq!(rec.take(), vec![fixed(0x3B, true)]);
    }

    #[test]
    fn a_refused_level_message_leaves_remote_irr_clear() {
        let (mut io, rec) = io();
        rec.refuse.store(true, std::sync::atomic::Ordering::SeqCst);
        program(&mut io, 9, 0x8000 | 0x39, 0);
        io.set_irq(9, true);
        assert_eq!(rd(&mut io, 0x10 + 18) & 0x4000, 0);
    }

    #[test]
    fn switching_to_edge_clears_remote_irr() {
        let (mut io, rec) = io();
        program(&mut io, 10, 0x8000 | 0x3A, 0);
        io.set_irq(10, true);
        rec.take();
        // Linux's EOI without an EOI register: mask, edge, level, unmask.
        wr(&mut io, 0x10 + 20, 0x1_0000 | 0x3A);
        assert_eq!(rd(&mut io, 0x10 + 20) & 0x4000, 0);
        wr(&mut io, 0x10 + 20, 0x1_8000 | 0x3A);
        assert!(rec.take().is_empty(), "masked");
        wr(&mut io, 0x10 + 20, 0x8000 | 0x3A);
        assert_eq!(rec.take().len(), 1, "the line is still high");
    }

    #[test]
    fn an_active_low_pin_is_asserted_by_a_low_level() {
        let (mut io, rec) = io();
        io.set_irq(16, true); // idle
        program(&mut io, 16, 0xA000 | 0x50, 0);
        assert!(rec.take().is_empty());
        io.set_irq(16, false);
        assert_eq!(rec.take(), vec![fixed(0x50, true)]);
        // Edge, active low: the falling edge.
        program(&mut io, 17, 0x2000 | 0x51, 0);
        io.set_irq(17, true);
        assert!(rec.take().is_empty());
        io.set_irq(17, false);
        assert_eq!(rec.take(), vec![fixed(0x51, false)]);
    }

    #[test]
    fn messages_carry_mode_and_destination() {
        let (mut io, rec) = io();
        program(&mut io, 1, 0x0900 | 0x41, 0x03); // lowest priority, logical
        program(&mut io, 2, 0x0400, 0xFF); // NMI, broadcast
        program(&mut io, 3, 0x0700, 0x00); // ExtINT
        for pin in 1..=3 {
            io.set_irq(pin, true);
        }
        let msgs = rec.take();
        assert_eq!(
            msgs[0],
            Message {
                vector: 0x41,
                mode: DeliveryMode::LowestPriority,
                logical: true,
                dest: 0x03,
                level: false,
            }
        );
        assert_eq!((msgs[1].mode, msgs[1].dest), (DeliveryMode::Nmi, 0xFF));
        assert_eq!(msgs[2].mode, DeliveryMode::ExtInt);
    }

    #[test]
    fn only_unmasked_asynchronous_pins_may_interrupt() {
        let rec = Arc::new(Recorder::default());
        let h = IoApicHandle::new(1, rec);
        let _timer = h.asynchronous_line(2);
        let _uart = h.line(4);
        assert!(!h.may_interrupt());
        let mut m = h.clone();
        for (pin, low) in [(4u32, 0x34u64), (2, 0x30)] {
            m.write(IOREGSEL, 4, u64::from(0x10 + 2 * pin));
            m.write(IOWIN, 4, low);
            assert_eq!(h.may_interrupt(), pin == 2);
        }
    }

    #[test]
    fn a_split_line_reaches_every_input() {
        let rec = Arc::new(Recorder::default());
        let h = IoApicHandle::new(1, rec.clone());
        let mut m = h.clone();
        for pin in [2u64, 5] {
            m.write(IOREGSEL, 4, 0x10 + 2 * pin);
            m.write(IOWIN, 4, 0x30 + pin);
        }
        let mut line = SplitLine(vec![Box::new(h.line(2)), Box::new(h.line(5))]);
        line.set_level(true);
        let v: Vec<u8> = rec.take().iter().map(|m| m.vector).collect();
        assert_eq!(v, vec![0x32, 0x35]);
        // An active-low wire idles high and asserts low.
        let mut pci = h.active_low_line(20);
        m.write(IOREGSEL, 4, 0x10 + 40);
        m.write(IOWIN, 4, 0xA000 | 0x60);
        assert!(rec.take().is_empty());
        pci.set_level(true);
        assert_eq!(rec.take()[0].vector, 0x60);
    }

    #[test]
    fn a_level_interrupt_round_trip_through_the_local_apic() {
        let lapic = LocalApicHandle::new(Clock::manual(), Arc::new(|| {}));
        let io = IoApicHandle::new(1, Arc::new(lapic.clone()));
        let io2 = io.clone();
        lapic.connect_eoi(Arc::new(move |v| io2.eoi(v)));
        let (mut l, mut m) = (lapic.clone(), io.clone());
        l.write(0xF0, 4, 0x1FF);
        // Linux's flat logical destination: LDR bit 0, destination 1.
        l.write(0xD0, 4, 0x0100_0000);
        m.write(IOREGSEL, 4, 0x10 + 2 * 11 + 1);
        m.write(IOWIN, 4, 0x0100_0000);
        m.write(IOREGSEL, 4, 0x10 + 2 * 11);
        m.write(IOWIN, 4, 0x8800 | 0x3B);
        let mut line = io.line(11);
        line.set_level(true);
        assert_eq!(lapic.acknowledge(), Some(Ack::Vector(0x3B)));
        assert_eq!(m.read(IOWIN, 4) & 0x4000, 0x4000);
        // The handler quiets the device, then EOIs.
        line.set_level(false);
        l.write(0xB0, 4, 0);
        assert_eq!(m.read(IOWIN, 4) & 0x4000, 0, "the EOI reached the I/O APIC");
        assert!(!lapic.pending());
        // A device still asserting at the EOI interrupts again.
        line.set_level(true);
        lapic.acknowledge();
        l.write(0xB0, 4, 0);
        assert!(lapic.pending());
        assert_eq!(lapic.acknowledge(), Some(Ack::Vector(0x3B)));
    }
}
