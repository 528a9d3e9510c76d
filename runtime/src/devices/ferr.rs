//! The x87 error line of a PC: with CR0.NE clear, an unmasked x87
//! exception asserts FERR#, which the board routes to IRQ 13; the
//! handler clears it by writing port 0xF0 (any value), then clears the
//! exception itself (fnclex/fninit).

use std::sync::{Arc, Mutex};

use super::{IoAction, IrqLine, Port, PortDevice};

pub const PORT: u16 = 0xF0;
pub const IRQ: u8 = 13;

/// FERR# and the port that clears it, shared by the port bus and the
/// CPU (clones are the same line).
#[derive(Clone)]
pub struct Ferr(Arc<Mutex<State>>);

struct State {
    line: Box<dyn IrqLine>,
    asserted: bool,
}

impl Ferr {
    pub fn new(line: Box<dyn IrqLine>) -> Self {
        Ferr(Arc::new(Mutex::new(State {
            line,
            asserted: false,
        })))
    }

    fn set(&self, asserted: bool) -> bool {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        s.line.set_level(asserted);
        std::mem::replace(&mut s.asserted, asserted)
    }

    /// An unmasked x87 exception (CR0.NE clear): asserts FERR#. Returns
    /// whether it already was (the exception came back without the
    /// handler having cleared it).
    pub fn assert(&self) -> bool {
        self.set(true)
    }
}

impl PortDevice for Ferr {
    fn read(&mut self, _port: Port, _size: u8) -> u32 {
        0xFF
    }

    fn write(&mut self, _port: Port, _size: u8, _value: u32) -> IoAction {
        self.set(false);
        IoAction::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Level(Arc<Mutex<bool>>);
    impl IrqLine for Level {
        fn set_level(&mut self, high: bool) {
            *self.0.lock().unwrap() = high;
        }
    }

    #[test]
    fn a_port_write_clears_ferr() {
        let level = Arc::new(Mutex::new(false));
        let f = Ferr::new(Box::new(Level(level.clone())));
        assert!(!f.assert());
        assert!(*level.lock().unwrap());
        assert!(f.assert(), "still asserted");
        f.clone().write(Port(PORT), 1, 0);
        assert!(!*level.lock().unwrap());
        assert!(!f.assert());
    }
}
