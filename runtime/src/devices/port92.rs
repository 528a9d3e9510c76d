//! System control port A (0x92) of a PC: bit 0 pulses the CPU's reset
//! line (a "fast reset" on its rising edge), bit 1 is the A20 gate. bt86's
//! A20 line is always on, as on chipsets without the gate: bit 1 reads
//! as 1 whatever was written.

use super::{IoAction, Port, PortDevice};

pub const PORT: u16 = 0x92;
const RESET: u8 = 1 << 0;
const A20: u8 = 1 << 1;

#[derive(Default)]
pub struct SystemControlA {
    value: u8,
}

impl PortDevice for SystemControlA {
    fn read(&mut self, _port: Port, _size: u8) -> u32 {
        (self.value | A20) as u32
    }

    fn write(&mut self, _port: Port, _size: u8, value: u32) -> IoAction {
        let old = std::mem::replace(&mut self.value, value as u8);
        if value as u8 & RESET != 0 && old & RESET == 0 {
            // The reset clears the bit again.
            self.value &= !RESET;
            IoAction::Reset
        } else {
            IoAction::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rising_reset_bit_resets_and_a20_reads_on() {
        let mut p = SystemControlA::default();
        assert_eq!(p.read(Port(PORT), 1), 0x02);
        assert_eq!(p.write(Port(PORT), 1, 0x00), IoAction::None);
        assert_eq!(p.read(Port(PORT), 1), 0x02, "A20 stays on");
        assert_eq!(p.write(Port(PORT), 1, 0x01), IoAction::Reset);
        assert_eq!(p.read(Port(PORT), 1), 0x02, "the reset cleared bit 0");
        assert_eq!(p.write(Port(PORT), 1, 0x03), IoAction::Reset);
    }
}
