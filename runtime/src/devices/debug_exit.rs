//! QEMU's isa-debug-exit: writing `v` ends the run with exit status
//! `(v << 1) | 1`, so a guest can report success or failure to a script.

use super::{IoAction, Port, PortDevice};

pub const DEFAULT_PORT: u16 = 0xF4;
pub const PORT_COUNT: u16 = 4;

#[derive(Default)]
pub struct DebugExit;

impl PortDevice for DebugExit {
    fn read(&mut self, _port: Port, _size: u8) -> u32 {
        0xFFFF_FFFF
    }

    fn write(&mut self, _port: Port, _size: u8, value: u32) -> IoAction {
        IoAction::Exit(((value << 1) | 1) as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_ends_the_run_with_shifted_status() {
        let mut d = DebugExit;
        assert_eq!(d.write(Port(0xF4), 1, 0), IoAction::Exit(1));
        assert_eq!(d.write(Port(0xF4), 1, 0x10), IoAction::Exit(0x21));
    }
}
