//! The debug console (QEMU's isa-debugcon): every byte written to its port
//! goes to a sink; a read returns the readback value 0xE9, which guests
//! use to detect it.

use std::io::Write;

use super::{IoAction, Port, PortDevice};

pub const DEFAULT_PORT: u16 = 0xE9;
const READBACK: u32 = 0xE9;

pub struct DebugCon {
    out: Box<dyn Write + Send>,
}

impl DebugCon {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        DebugCon { out }
    }
}

impl PortDevice for DebugCon {
    fn read(&mut self, _port: Port, _size: u8) -> u32 {
        READBACK
    }

    fn write(&mut self, _port: Port, _size: u8, value: u32) -> IoAction {
        // Only the low byte is a character, whatever the access width.
        // Output errors (a closed pipe) must not stop the guest.
        let _ = self.out.write_all(&[value as u8]);
        if value as u8 == b'\n' {
            let _ = self.out.flush();
        }
        IoAction::None
    }
}

impl Drop for DebugCon {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_go_to_the_sink_low_byte_only() {
        let sink = Shared::default();
        let mut d = DebugCon::new(Box::new(sink.clone()));
        d.write(Port(0xE9), 1, b'h' as u32);
        d.write(Port(0xE9), 4, 0x1234_5669);
        assert_eq!(&*sink.0.lock().unwrap(), b"hi");
    }

    #[test]
    fn reads_return_the_readback_value() {
        let mut d = DebugCon::new(Box::new(std::io::sink()));
        assert_eq!(d.read(Port(0xE9), 1), 0xE9);
    }
}
