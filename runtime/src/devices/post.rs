//! The POST diagnostic port (0x80): firmware writes its progress codes
//! here, and operating systems write to it for a short I/O delay. It
//! keeps the last code (reads return it, as on many chipsets) and logs
//! each one (`RUST_LOG=bt86::post=debug`). `--debugcon-port 0x80` prints
//! the codes instead.

use super::{IoAction, Port, PortDevice};

pub const PORT: u16 = 0x80;

#[derive(Default)]
pub struct Post {
    last: u8,
}

impl Post {
    pub fn last(&self) -> u8 {
        self.last
    }
}

impl PortDevice for Post {
    fn read(&mut self, _port: Port, _size: u8) -> u32 {
        self.last as u32
    }

    fn write(&mut self, _port: Port, _size: u8, value: u32) -> IoAction {
        let code = value as u8;
        if code != self.last {
            log::debug!(target: "bt86::post", "POST code {code:#04x}");
        }
        self.last = code;
        IoAction::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_and_returns_the_last_code() {
        let mut p = Post::default();
        assert_eq!(p.read(Port(PORT), 1), 0);
        p.write(Port(PORT), 1, 0x1234_5655);
        assert_eq!(p.last(), 0x55);
        assert_eq!(p.read(Port(PORT), 1), 0x55);
    }
}
