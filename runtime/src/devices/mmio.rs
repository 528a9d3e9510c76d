//! The memory-mapped I/O bus: guest physical ranges that devices answer
//! instead of RAM. They are never mapped in a shadow, so generated code
//! that touches one faults and the run loop emulates the instruction
//! against the device (`Machine`'s MMIO step), or, once an instruction is
//! known to touch devices, the `Emulate` helper does it directly.

/// A device behind a range of guest physical addresses.
pub trait MmioDevice {
    /// Reads `size` bytes (1, 2, 4 or 8) at `offset` into the device's
    /// range, little-endian in the low bytes of the result.
    fn read(&mut self, offset: u32, size: u8) -> u64;
    fn write(&mut self, offset: u32, size: u8, value: u64);
}

struct Region {
    base: u32,
    len: u32,
    dev: Box<dyn MmioDevice + Send>,
}

/// Granule of MMIO ranges: the shadow maps whole pages.
pub const MMIO_GRANULE: u32 = 4096;

#[derive(Debug, PartialEq, Eq)]
pub struct BadRange {
    pub base: u32,
    pub len: u32,
    pub why: &'static str,
}

impl std::fmt::Display for BadRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot give {:#x} bytes at {:#010x} to a device: {}",
            self.len, self.base, self.why
        )
    }
}

#[derive(Default)]
pub struct MmioBus {
    regions: Vec<Region>,
}

impl MmioBus {
    /// Gives guest physical `base..base+len` (whole pages) to `dev`.
    /// Later registrations win where ranges overlap.
    pub fn register(
        &mut self,
        base: u32,
        len: u32,
        dev: Box<dyn MmioDevice + Send>,
    ) -> Result<(), BadRange> {
        let aligned = base.is_multiple_of(MMIO_GRANULE) && len.is_multiple_of(MMIO_GRANULE);
        if !aligned || len == 0 || base.checked_add(len - 1).is_none() {
            return Err(BadRange {
                base,
                len,
                why: "an MMIO range must be whole 4 KiB pages inside the 4 GiB space",
            });
        }
        self.regions.insert(0, Region { base, len, dev });
        Ok(())
    }

    /// Whether a device answers at guest physical `addr`.
    pub fn claims(&self, addr: u32) -> bool {
        self.regions
            .iter()
            .any(|r| addr.wrapping_sub(r.base) < r.len)
    }

    fn find(&mut self, addr: u32) -> Option<&mut Region> {
        self.regions
            .iter_mut()
            .find(|r| addr.wrapping_sub(r.base) < r.len)
    }

    /// Reads `buf.len()` bytes at `addr`: one device access if the size
    /// is 1, 2, 4 or 8, else 8 bytes (then fewer) at a time. Bytes no
    /// device answers read as all ones.
    pub fn read(&mut self, addr: u32, buf: &mut [u8]) {
        let mut done = 0;
        while done < buf.len() {
            let size = chunk(buf.len() - done);
            let at = addr.wrapping_add(done as u32);
            let v = match self.find(at) {
                Some(r) => r.dev.read(at - r.base, size as u8),
                None => u64::MAX,
            };
            buf[done..done + size].copy_from_slice(&v.to_le_bytes()[..size]);
            done += size;
        }
    }

    /// Writes `data` at `addr`, in pieces as [`MmioBus::read`] does.
    pub fn write(&mut self, addr: u32, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let size = chunk(data.len() - done);
            let at = addr.wrapping_add(done as u32);
            let mut v = [0u8; 8];
            v[..size].copy_from_slice(&data[done..done + size]);
            if let Some(r) = self.find(at) {
                r.dev.write(at - r.base, size as u8, u64::from_le_bytes(v));
            }
            done += size;
        }
    }
}

/// The largest access size of 1, 2, 4 or 8 bytes that fits `left`.
fn chunk(left: usize) -> usize {
    match left {
        8.. => 8,
        4..=7 => 4,
        2..=3 => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Eight bytes of registers; remembers the last access's size.
    #[derive(Default)]
    struct Regs {
        bytes: [u8; 8],
        last: u8,
    }

    impl MmioDevice for Regs {
        fn read(&mut self, offset: u32, size: u8) -> u64 {
            self.last = size;
            let mut v = [0u8; 8];
            let o = offset as usize % 8;
            let n = (size as usize).min(8 - o);
            v[..n].copy_from_slice(&self.bytes[o..o + n]);
            u64::from_le_bytes(v)
        }
        fn write(&mut self, offset: u32, size: u8, value: u64) {
            self.last = size;
            let o = offset as usize % 8;
            let n = (size as usize).min(8 - o);
            self.bytes[o..o + n].copy_from_slice(&value.to_le_bytes()[..n]);
        }
    }

    #[test]
    fn ranges_are_whole_pages() {
        let mut bus = MmioBus::default();
        assert!(
            bus.register(0x1000, 0x800, Box::new(Regs::default()))
                .is_err()
        );
        assert!(
            bus.register(0x800, 0x1000, Box::new(Regs::default()))
                .is_err()
        );
        assert!(
            bus.register(0xFFFF_F000, 0x2000, Box::new(Regs::default()))
                .is_err()
        );
        assert!(
            bus.register(0xFEE0_0000, 0x1000, Box::new(Regs::default()))
                .is_ok()
        );
        assert!(bus.claims(0xFEE0_0FFF));
        assert!(!bus.claims(0xFEE0_1000));
    }

    #[test]
    fn accesses_reach_the_device_whole_and_unclaimed_bytes_read_ones() {
        let mut bus = MmioBus::default();
        bus.register(0x10_0000, 0x1000, Box::new(Regs::default()))
            .unwrap();
        bus.write(0x10_0000, &0x1122_3344u32.to_le_bytes());
        let mut b = [0u8; 2];
        bus.read(0x10_0001, &mut b);
        assert_eq!(u16::from_le_bytes(b), 0x2233);
        let mut b = [0u8; 4];
        bus.read(0x20_0000, &mut b);
        assert_eq!(b, [0xFF; 4]);
    }
}
