//! System control port A (0x92) of a PC: bit 0 pulses the CPU's reset
//! line (a "fast reset" on its rising edge), bit 1 is the fast A20 gate.
//! The A20 line is open when this gate or the keyboard controller's
//! opens it (the machine combines the two); bit 1 starts clear, as a
//! BIOS that opened A20 through the keyboard controller leaves it.

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
        self.value as u32
    }

    fn write(&mut self, _port: Port, _size: u8, value: u32) -> IoAction {
        let old = std::mem::replace(&mut self.value, value as u8);
        if value as u8 & RESET != 0 && old & RESET == 0 {
            // The reset clears the bit again.
            self.value &= !RESET;
            IoAction::Reset
        } else if (old ^ self.value) & A20 != 0 {
            IoAction::FastA20(self.value & A20 != 0)
        } else {
            IoAction::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rising_reset_bit_resets_and_bit_1_drives_the_fast_a20_gate() {
        let mut p = SystemControlA::default();
        assert_eq!(p.read(Port(PORT), 1), 0);
        assert_eq!(p.write(Port(PORT), 1, 0x02), IoAction::FastA20(true));
        assert_eq!(p.read(Port(PORT), 1), 0x02);
        assert_eq!(p.write(Port(PORT), 1, 0x02), IoAction::None);
        assert_eq!(p.write(Port(PORT), 1, 0x03), IoAction::Reset);
        assert_eq!(p.read(Port(PORT), 1), 0x02, "the reset bit clears");
        assert_eq!(p.write(Port(PORT), 1, 0x00), IoAction::FastA20(false));
    }
}
