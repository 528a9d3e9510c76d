//! A 16550A UART (National Semiconductor PC16550D data sheet): the
//! register file with the DLAB switch, 16-byte receive FIFO, interrupt
//! identification by priority, loopback, scratch register. Transmission
//! is instantaneous (the transmitter is always empty once written), so
//! THRE and TEMT read as set. The interrupt output goes to an injected
//! line, gated by OUT2 as on a PC.

use std::collections::VecDeque;
use std::io::Write;

use super::{IoAction, IrqLine, Port, PortDevice};

pub const COM1: u16 = 0x3F8;
/// COM1's interrupt request line on a PC.
pub const COM1_IRQ: u8 = 4;
/// COM1-COM4: base port and IRQ of each, as a PC BIOS assigns them.
pub const PORTS: [(u16, u8); 4] = [(0x3F8, 4), (0x2F8, 3), (0x3E8, 4), (0x2E8, 3)];
pub const PORT_COUNT: u16 = 8;

// Register offsets.
const RBR_THR_DLL: u16 = 0;
const IER_DLM: u16 = 1;
const IIR_FCR: u16 = 2;
const LCR: u16 = 3;
const MCR: u16 = 4;
const LSR: u16 = 5;
const MSR: u16 = 6;
const SCR: u16 = 7;

const IER_RX_DATA: u8 = 1 << 0;
const IER_THR_EMPTY: u8 = 1 << 1;
const IER_LINE_STATUS: u8 = 1 << 2;
const IER_MODEM_STATUS: u8 = 1 << 3;

const IIR_NONE: u8 = 0x01;
const IIR_LINE_STATUS: u8 = 0x06;
const IIR_RX_DATA: u8 = 0x04;
const IIR_THR_EMPTY: u8 = 0x02;
const IIR_MODEM_STATUS: u8 = 0x00;
const IIR_FIFO_ON: u8 = 0xC0;

const FCR_ENABLE: u8 = 1 << 0;
const FCR_CLEAR_RX: u8 = 1 << 1;

const LCR_DLAB: u8 = 1 << 7;

const MCR_DTR: u8 = 1 << 0;
const MCR_RTS: u8 = 1 << 1;
const MCR_OUT1: u8 = 1 << 2;
const MCR_OUT2: u8 = 1 << 3;
const MCR_LOOP: u8 = 1 << 4;

const LSR_DR: u8 = 1 << 0;
const LSR_OE: u8 = 1 << 1;
const LSR_THRE: u8 = 1 << 5;
const LSR_TEMT: u8 = 1 << 6;

const FIFO_SIZE: usize = 16;

pub struct Serial {
    out: Box<dyn Write + Send>,
    irq: Box<dyn IrqLine>,
    rx: VecDeque<u8>,
    /// The last byte read from RBR: what reading an empty RBR returns.
    rbr: u8,
    ier: u8,
    lcr: u8,
    mcr: u8,
    lsr_errors: u8,
    scr: u8,
    fifo: bool,
    divisor: u16,
    /// The THR-empty interrupt stays pending until IIR reports it or THR
    /// is written again.
    thre_pending: bool,
    /// Modem status deltas (MSR bits 0-3) and the last status lines.
    msr_delta: u8,
    irq_level: bool,
    /// Host input that did not fit in the receive buffer yet: it moves in
    /// as the guest reads (the host side never overruns the UART).
    backlog: VecDeque<u8>,
}

impl Serial {
    pub fn new(out: Box<dyn Write + Send>, irq: Box<dyn IrqLine>) -> Self {
        Serial {
            out,
            irq,
            rx: VecDeque::with_capacity(FIFO_SIZE),
            rbr: 0,
            ier: 0,
            lcr: 0,
            mcr: 0,
            lsr_errors: 0,
            scr: 0,
            fifo: false,
            divisor: 12, // 9600 baud
            thre_pending: false,
            msr_delta: 0,
            irq_level: false,
            backlog: VecDeque::new(),
        }
    }

    /// Input from the host (a terminal, a pipe): queued, and fed to the
    /// receive buffer as fast as the guest empties it.
    pub fn input(&mut self, bytes: &[u8]) {
        self.backlog.extend(bytes);
        self.refill();
    }

    fn refill(&mut self) {
        let cap = if self.fifo { FIFO_SIZE } else { 1 };
        let before = self.rx.len();
        while self.rx.len() < cap {
            match self.backlog.pop_front() {
                Some(b) => self.rx.push_back(b),
                None => break,
            }
        }
        if self.rx.len() != before {
            self.update_irq();
        }
    }

    /// Host input for the guest to read. Returns false (and sets the
    /// overrun error) if the receive buffer was full.
    pub fn receive(&mut self, byte: u8) -> bool {
        let cap = if self.fifo { FIFO_SIZE } else { 1 };
        let ok = self.rx.len() < cap;
        if ok {
            self.rx.push_back(byte);
        } else {
            // A full FIFO drops the new byte; without FIFO the holding
            // register is overwritten. Both are overruns.
            if !self.fifo {
                self.rx.clear();
                self.rx.push_back(byte);
            }
            self.lsr_errors |= LSR_OE;
        }
        self.update_irq();
        ok
    }

    fn lsr(&self) -> u8 {
        let dr = if self.rx.is_empty() { 0 } else { LSR_DR };
        dr | self.lsr_errors | LSR_THRE | LSR_TEMT
    }

    /// Modem status: in loopback the outputs feed the inputs; otherwise
    /// nothing is connected (all inputs inactive).
    fn msr(&self) -> u8 {
        let lines = if self.mcr & MCR_LOOP != 0 {
            let m = self.mcr;
            (((m & MCR_RTS != 0) as u8) << 4)
                | (((m & MCR_DTR != 0) as u8) << 5)
                | (((m & MCR_OUT1 != 0) as u8) << 6)
                | (((m & MCR_OUT2 != 0) as u8) << 7)
        } else {
            0
        };
        lines | self.msr_delta
    }

    /// The highest-priority pending interrupt (data sheet table 4).
    fn iir_id(&self) -> u8 {
        if self.ier & IER_LINE_STATUS != 0 && self.lsr_errors != 0 {
            IIR_LINE_STATUS
        } else if self.ier & IER_RX_DATA != 0 && !self.rx.is_empty() {
            IIR_RX_DATA
        } else if self.ier & IER_THR_EMPTY != 0 && self.thre_pending {
            IIR_THR_EMPTY
        } else if self.ier & IER_MODEM_STATUS != 0 && self.msr_delta != 0 {
            IIR_MODEM_STATUS
        } else {
            IIR_NONE
        }
    }

    fn update_irq(&mut self) {
        let level = self.iir_id() != IIR_NONE && self.mcr & MCR_OUT2 != 0;
        if level != self.irq_level {
            self.irq_level = level;
            self.irq.set_level(level);
        }
    }

    fn transmit(&mut self, byte: u8) {
        if self.mcr & MCR_LOOP != 0 {
            self.receive(byte);
        } else {
            // A closed pipe must not stop the guest.
            let _ = self.out.write_all(&[byte]);
            if byte == b'\n' {
                let _ = self.out.flush();
            }
        }
        self.thre_pending = true;
    }
}

/// The UART's registers are bytes: a wider access is split into byte
/// accesses at consecutive ports, as the ISA bus does. Bytes past the
/// UART's eight ports read as all ones and are not written.
impl PortDevice for Serial {
    fn read(&mut self, port: Port, size: u8) -> u32 {
        (0..size as u16).fold(0, |acc, i| {
            let reg = (port.0 & 7) + i;
            let byte = if reg < PORT_COUNT {
                self.read_reg(reg)
            } else {
                0xFF
            };
            acc | (byte as u32) << (8 * i)
        })
    }

    fn write(&mut self, port: Port, size: u8, value: u32) -> IoAction {
        for i in 0..size as u16 {
            let reg = (port.0 & 7) + i;
            if reg < PORT_COUNT {
                self.write_reg(reg, (value >> (8 * i)) as u8);
            }
        }
        IoAction::None
    }
}

impl Serial {
    fn read_reg(&mut self, reg: u16) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        let v = match reg {
            RBR_THR_DLL if dlab => self.divisor as u8,
            RBR_THR_DLL => {
                if let Some(b) = self.rx.pop_front() {
                    self.rbr = b;
                }
                self.refill();
                self.rbr
            }
            IER_DLM if dlab => (self.divisor >> 8) as u8,
            IER_DLM => self.ier,
            IIR_FCR => {
                let id = self.iir_id();
                if id == IIR_THR_EMPTY {
                    self.thre_pending = false;
                }
                id | if self.fifo { IIR_FIFO_ON } else { 0 }
            }
            LCR => self.lcr,
            MCR => self.mcr,
            LSR => {
                let v = self.lsr();
                self.lsr_errors = 0;
                v
            }
            MSR => {
                let v = self.msr();
                self.msr_delta = 0;
                v
            }
            SCR => self.scr,
            _ => 0xFF, // registers are 0..8
        };
        self.update_irq();
        v
    }

    fn write_reg(&mut self, reg: u16, v: u8) {
        let dlab = self.lcr & LCR_DLAB != 0;
        match reg {
            RBR_THR_DLL if dlab => self.divisor = (self.divisor & 0xFF00) | v as u16,
            RBR_THR_DLL => self.transmit(v),
            IER_DLM if dlab => self.divisor = (self.divisor & 0x00FF) | ((v as u16) << 8),
            IER_DLM => {
                // Enabling the THRE interrupt while THR is empty raises it.
                if v & IER_THR_EMPTY != 0 && self.ier & IER_THR_EMPTY == 0 {
                    self.thre_pending = true;
                }
                self.ier = v & 0x0F;
            }
            IIR_FCR => {
                let enable = v & FCR_ENABLE != 0;
                if enable != self.fifo || v & FCR_CLEAR_RX != 0 {
                    self.rx.clear();
                }
                self.fifo = enable;
                self.refill();
            }
            LCR => self.lcr = v,
            MCR => {
                let old = self.msr();
                self.mcr = v & 0x1F;
                let new = self.msr();
                // Delta bits for CTS, DSR, DCD; trailing edge of RI.
                let changed = (old ^ new) >> 4;
                self.msr_delta |= (changed & 0b1011) | (changed & (old >> 4) & 0b0100);
            }
            SCR => self.scr = v,
            _ => {} // LSR and MSR are read-only
        }
        self.update_irq();
    }
}

impl Drop for Serial {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[derive(Clone, Default)]
    struct Line(Arc<AtomicBool>);
    impl IrqLine for Line {
        fn set_level(&mut self, high: bool) {
            self.0.store(high, Ordering::SeqCst);
        }
    }

    fn uart() -> (Serial, Sink, Line) {
        let (sink, line) = (Sink::default(), Line::default());
        (
            Serial::new(Box::new(sink.clone()), Box::new(line.clone())),
            sink,
            line,
        )
    }

    fn rd(u: &mut Serial, reg: u16) -> u8 {
        u.read(Port(COM1 + reg), 1) as u8
    }

    fn wr(u: &mut Serial, reg: u16, v: u8) {
        u.write(Port(COM1 + reg), 1, v as u32);
    }

    #[test]
    fn wide_accesses_are_split_into_byte_registers() {
        let (mut u, sink, _) = uart();
        // A word to LCR/MCR sets both; DLAB on, a word sets DLL and DLM.
        u.write(Port(COM1 + LCR), 2, 0x0B83);
        assert_eq!(u.read(Port(COM1 + LCR), 2), 0x0B83);
        u.write(Port(COM1 + RBR_THR_DLL), 2, 0x1234);
        assert_eq!(u.divisor, 0x1234);
        assert_eq!(u.read(Port(COM1 + RBR_THR_DLL), 2), 0x1234);
        // DLAB off: a dword from THR sends its low byte and writes IER,
        // FCR and LCR with the others.
        wr(&mut u, LCR, 0x03);
        u.write(Port(COM1 + RBR_THR_DLL), 4, 0x03_00_00_41);
        assert_eq!(&*sink.0.lock().unwrap(), b"A");
        assert_eq!((u.ier, u.fifo, u.lcr), (0, false, 0x03));
        // Past the eighth port nothing is written and all ones read.
        u.write(Port(COM1 + SCR), 2, 0x5A5A);
        assert_eq!(u.read(Port(COM1 + SCR), 2), 0xFF5A);
        assert_eq!(u.read(Port(COM1 + SCR), 4), 0xFFFF_FF5A);
    }

    #[test]
    fn written_bytes_are_transmitted_and_thr_reads_empty() {
        let (mut u, sink, _) = uart();
        for &b in b"ok\n" {
            assert_ne!(rd(&mut u, LSR) & LSR_THRE, 0);
            wr(&mut u, RBR_THR_DLL, b);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"ok\n");
    }

    #[test]
    fn dlab_switches_the_first_two_registers_to_the_divisor() {
        let (mut u, sink, _) = uart();
        wr(&mut u, LCR, LCR_DLAB | 0x03);
        wr(&mut u, RBR_THR_DLL, 0x01);
        wr(&mut u, IER_DLM, 0x00);
        assert_eq!(rd(&mut u, RBR_THR_DLL), 0x01);
        wr(&mut u, LCR, 0x03);
        assert!(
            sink.0.lock().unwrap().is_empty(),
            "divisor writes are not data"
        );
        assert_eq!(rd(&mut u, IER_DLM), 0);
    }

    #[test]
    fn loopback_feeds_transmitted_bytes_to_the_receiver() {
        let (mut u, sink, _) = uart();
        wr(&mut u, MCR, MCR_LOOP);
        wr(&mut u, RBR_THR_DLL, 0x5A);
        assert_ne!(rd(&mut u, LSR) & LSR_DR, 0);
        assert_eq!(rd(&mut u, RBR_THR_DLL), 0x5A);
        assert_eq!(rd(&mut u, LSR) & LSR_DR, 0);
        assert!(sink.0.lock().unwrap().is_empty());
    }

    #[test]
    fn loopback_maps_modem_control_to_modem_status() {
        let (mut u, _, _) = uart();
        wr(&mut u, MCR, MCR_LOOP | MCR_DTR | MCR_OUT2);
        assert_eq!(rd(&mut u, MSR) & 0xF0, 0x20 | 0x80);
    }

    #[test]
    fn the_fifo_holds_sixteen_bytes_then_overruns() {
        let (mut u, _, _) = uart();
        wr(&mut u, IIR_FCR, FCR_ENABLE);
        for i in 0..16 {
            assert!(u.receive(i));
        }
        assert!(!u.receive(99));
        assert_ne!(rd(&mut u, LSR) & LSR_OE, 0);
        assert_eq!(rd(&mut u, LSR) & LSR_OE, 0, "reading LSR clears errors");
        let got: Vec<u8> = (0..16).map(|_| rd(&mut u, RBR_THR_DLL)).collect();
        assert_eq!(got, (0..16).collect::<Vec<u8>>());
        assert_eq!(rd(&mut u, IIR_FCR) & 0xC0, 0xC0, "IIR shows FIFOs on");
    }

    #[test]
    fn host_input_waits_for_room_instead_of_overrunning() {
        let (mut u, _, line) = uart();
        wr(&mut u, MCR, MCR_OUT2);
        wr(&mut u, IER_DLM, IER_RX_DATA);
        // Without FIFO one byte is held; the rest waits in the backlog.
        u.input(b"hello");
        assert!(line.0.load(Ordering::SeqCst));
        let mut got = Vec::new();
        while rd(&mut u, LSR) & LSR_DR != 0 {
            got.push(rd(&mut u, RBR_THR_DLL));
        }
        assert_eq!(got, b"hello");
        assert_eq!(rd(&mut u, LSR) & LSR_OE, 0, "no overrun");
        assert!(!line.0.load(Ordering::SeqCst));
        // With the FIFO on, 16 at a time, 40 in all.
        wr(&mut u, IIR_FCR, FCR_ENABLE);
        let text: Vec<u8> = (0..40).collect();
        u.input(&text);
        let mut got = Vec::new();
        while rd(&mut u, LSR) & LSR_DR != 0 {
            got.push(rd(&mut u, RBR_THR_DLL));
        }
        assert_eq!(got, text);
    }

    #[test]
    fn interrupts_follow_priority_and_out2_gates_the_line() {
        let (mut u, _, line) = uart();
        wr(&mut u, IER_DLM, IER_RX_DATA | IER_THR_EMPTY);
        assert_eq!(
            rd(&mut u, IIR_FCR) & 0x0F,
            IIR_THR_EMPTY,
            "THRE raised on enable"
        );
        assert_eq!(
            rd(&mut u, IIR_FCR) & 0x0F,
            IIR_NONE,
            "reading IIR cleared it"
        );
        u.receive(1);
        assert!(
            !line.0.load(Ordering::SeqCst),
            "OUT2 off: the line stays low"
        );
        wr(&mut u, MCR, MCR_OUT2);
        assert!(line.0.load(Ordering::SeqCst));
        wr(&mut u, RBR_THR_DLL, b'x');
        assert_eq!(
            rd(&mut u, IIR_FCR) & 0x0F,
            IIR_RX_DATA,
            "received data outranks THRE"
        );
        rd(&mut u, RBR_THR_DLL);
        assert_eq!(rd(&mut u, IIR_FCR) & 0x0F, IIR_THR_EMPTY);
        assert!(
            !line.0.load(Ordering::SeqCst),
            "nothing pending after IIR reported THRE"
        );
    }

    #[test]
    fn scratch_register_keeps_its_value() {
        let (mut u, _, _) = uart();
        wr(&mut u, SCR, 0xA5);
        assert_eq!(rd(&mut u, SCR), 0xA5);
    }
}

#[cfg(test)]
mod receive_tests {
    use super::*;

    #[test]
    fn reading_an_empty_rbr_returns_the_last_byte_and_non_fifo_overruns_overwrite() {
        let mut u = Serial::new(Box::new(std::io::sink()), Box::new(crate::devices::NoIrq));
        u.receive(7);
        assert!(!u.receive(8), "no FIFO: one byte of room");
        assert_eq!(
            u.read(Port(COM1), 1),
            8,
            "the newer byte overwrote the holding register"
        );
        assert_eq!(u.read(Port(COM1), 1), 8, "empty: the last byte again");
        assert_ne!(u.read(Port(COM1 + LSR), 1) as u8 & LSR_OE, 0);
    }
}
