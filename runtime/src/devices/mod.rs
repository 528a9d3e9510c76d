//! Devices and the port bus. A device is a state machine behind
//! [`PortDevice`]: it never sees the CPU, and anything it wants from the
//! machine (end the run, reset) it says through the [`IoAction`] it returns.

pub mod apic;
pub mod clock;
pub mod debug_exit;
pub mod debugcon;
pub mod ferr;
pub mod fw_cfg;
pub mod i8042;
pub mod ioapic;
pub mod mmio;
pub mod mptable;
pub mod pci;
pub mod pic;
pub mod pit;
pub mod port92;
pub mod post;
pub mod rtc;
pub mod serial;

/// A guest I/O port number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port(pub u16);

/// What a port write asks of the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoAction {
    None,
    /// End the run with this process exit status.
    Exit(i32),
    /// Reset the machine (its reset line was pulsed).
    Reset,
    /// The keyboard controller's A20 gate opens (true) or closes.
    A20(bool),
    /// Port 0x92's fast A20 gate opens or closes. Address bit 20 passes
    /// while either gate is open.
    FastA20(bool),
}

/// The CPU's view of an interrupt controller (the INTR line and the
/// interrupt-acknowledge cycle). A controller shared with device threads
/// synchronizes itself; those threads wake the CPU with the machine's
/// `ExitHandle::interrupt`.
pub trait InterruptController: Send {
    /// Whether INTR is asserted.
    fn pending(&mut self) -> bool;
    /// The acknowledge cycle: the vector to deliver, or None if the
    /// request went away (a spurious interrupt is the controller's call).
    fn acknowledge(&mut self) -> Option<u8>;
    /// Whether an interrupt may still come, so that `hlt` with interrupts
    /// on should wait for it: INTR is up, or a source that raises
    /// requests on its own (a timer, host input) is not masked off.
    fn may_interrupt(&mut self) -> bool {
        true
    }
}

/// A device's interrupt output (an interrupt controller input).
pub trait IrqLine: Send {
    fn set_level(&mut self, high: bool);
}

/// A line connected to nothing.
pub struct NoIrq;

impl IrqLine for NoIrq {
    fn set_level(&mut self, _high: bool) {}
}

pub trait PortDevice {
    /// Reads `size` bytes (1, 2 or 4) at `port`, which is inside the range
    /// the device was registered for.
    fn read(&mut self, port: Port, size: u8) -> u32;
    fn write(&mut self, port: Port, size: u8, value: u32) -> IoAction;
}

/// A device shared with another owner (a device thread, a second port
/// range): each access locks it.
impl<D: PortDevice + Send> PortDevice for std::sync::Arc<std::sync::Mutex<D>> {
    fn read(&mut self, port: Port, size: u8) -> u32 {
        self.lock()
            .unwrap_or_else(|e| e.into_inner())
            .read(port, size)
    }

    fn write(&mut self, port: Port, size: u8, value: u32) -> IoAction {
        self.lock()
            .unwrap_or_else(|e| e.into_inner())
            .write(port, size, value)
    }
}

struct Mapping {
    base: u16,
    len: u16,
    dev: Box<dyn PortDevice + Send>,
}

/// Routes port accesses to devices. Ports no device claims read as all
/// ones and ignore writes, as on a PC's ISA bus.
#[derive(Default)]
pub struct PortBus {
    maps: Vec<Mapping>,
}

impl PortBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives ports `base..base+len` to `dev`. Later registrations win
    /// where ranges overlap.
    pub fn register(&mut self, base: Port, len: u16, dev: Box<dyn PortDevice + Send>) {
        self.maps.insert(
            0,
            Mapping {
                base: base.0,
                len,
                dev,
            },
        );
    }

    fn find(&mut self, port: u16) -> Option<&mut Mapping> {
        self.maps
            .iter_mut()
            .find(|m| port.wrapping_sub(m.base) < m.len)
    }

    pub fn read(&mut self, port: Port, size: u8) -> u32 {
        match self.find(port.0) {
            Some(m) => m.dev.read(port, size) & mask(size),
            None => mask(size),
        }
    }

    pub fn write(&mut self, port: Port, size: u8, value: u32) -> IoAction {
        match self.find(port.0) {
            Some(m) => m.dev.write(port, size, value & mask(size)),
            None => IoAction::None,
        }
    }
}

pub fn mask(size: u8) -> u32 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        _ => 0xFFFF_FFFF,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(u32);
    impl PortDevice for Echo {
        fn read(&mut self, _: Port, _: u8) -> u32 {
            self.0
        }
        fn write(&mut self, _: Port, _: u8, v: u32) -> IoAction {
            self.0 = v;
            IoAction::None
        }
    }

    #[test]
    fn unclaimed_ports_read_all_ones() {
        let mut bus = PortBus::new();
        assert_eq!(bus.read(Port(0x1234), 1), 0xFF);
        assert_eq!(bus.read(Port(0x1234), 2), 0xFFFF);
        assert_eq!(bus.read(Port(0x1234), 4), 0xFFFF_FFFF);
        assert_eq!(bus.write(Port(0x1234), 4, 7), IoAction::None);
    }

    #[test]
    fn accesses_reach_the_device_owning_the_port() {
        let mut bus = PortBus::new();
        bus.register(Port(0x100), 4, Box::new(Echo(0)));
        bus.write(Port(0x102), 2, 0x1_2345);
        assert_eq!(bus.read(Port(0x103), 4), 0x2345);
        assert_eq!(bus.read(Port(0x104), 1), 0xFF);
    }
}
