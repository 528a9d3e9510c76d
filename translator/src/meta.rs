//! Per-TU fault metadata: from a host code offset back to the guest
//! instruction it belongs to, and what must be undone to make the guest
//! state exact there (DESIGN.md section 5).
//!
//! The signal handler reads this table without locks or allocation. That
//! is sound because the table only changes in the run loop, on the thread
//! that would take the fault, never while generated code runs.

/// A host register the fault handler may have to repair, in the hardware
/// encoding (0 = rax ... 15 = r15).
pub type HostReg = u8;

/// How to turn the host registers at a fault into the guest registers
/// before the faulting guest instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Fixup {
    #[default]
    None,
    /// The instruction ran with a legacy register borrowed to stand in for
    /// r12 or r11 (AH-class operands cannot take a REX prefix); its guest
    /// value is in r10.
    Borrowed(HostReg),
    /// A string instruction runs with rsi and/or rdi biased by the GS base
    /// plus their segment's base (host pointers); subtract both back.
    /// `si` is rsi's segment register (es cs ss ds fs gs), `di` says rdi
    /// is biased too (its segment is always ES). A base the translation
    /// skipped (flat mode) is 0, so subtracting it is always right.
    StringBias { si: Option<u8>, di: bool },
    /// A run of stack instructions moves r12 once at its end: here the
    /// guest esp is r12 plus this.
    EspDelta(i32),
    /// The same with a 16-bit stack: only SP (r12w) lags, wrapping at 64 KiB.
    SpDelta(i32),
}

/// One guest instruction's code: from `host_off` up to the next site.
#[derive(Clone, Copy, Debug)]
pub struct Site {
    pub host_off: u32,
    pub guest_eip: u32,
    pub fixup: Fixup,
}

#[derive(Clone, Copy, Debug)]
struct TuRange {
    start: u32,
    end: u32,
    first_site: u32,
    site_count: u32,
}

/// Every TU in the arena, sorted by host offset (the arena only grows
/// until it is flushed, so appending keeps the order).
#[derive(Debug, Default)]
pub struct FaultMap {
    /// Host address of arena offset 0 (the executable view).
    pub base: u64,
    tus: Vec<TuRange>,
    sites: Vec<Site>,
}

impl FaultMap {
    pub fn new(base: u64) -> Self {
        FaultMap {
            base,
            tus: Vec::new(),
            sites: Vec::new(),
        }
    }

    pub fn clear(&mut self) {
        self.tus.clear();
        self.sites.clear();
    }

    /// Records a TU at arena offsets `start..end` with its sites (offsets
    /// relative to the arena, ascending).
    pub fn push_tu(&mut self, start: u32, end: u32, sites: &[Site]) {
        debug_assert!(self.tus.last().is_none_or(|t| t.end <= start));
        self.tus.push(TuRange {
            start,
            end,
            first_site: self.sites.len() as u32,
            site_count: sites.len() as u32,
        });
        self.sites.extend_from_slice(sites);
    }

    /// The guest instruction whose code contains arena offset `off`.
    /// Allocation-free and lock-free: callable from a signal handler.
    pub fn lookup(&self, off: u32) -> Option<Site> {
        let i = self
            .tus
            .partition_point(|t| t.start <= off)
            .checked_sub(1)?;
        let tu = self.tus.get(i)?;
        if off >= tu.end {
            return None;
        }
        let sites = self
            .sites
            .get(tu.first_site as usize..(tu.first_site + tu.site_count) as usize)?;
        let j = sites
            .partition_point(|s| s.host_off <= off)
            .checked_sub(1)?;
        sites.get(j).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(host_off: u32, guest_eip: u32) -> Site {
        Site {
            host_off,
            guest_eip,
            fixup: Fixup::None,
        }
    }

    #[test]
    fn lookup_finds_the_instruction_containing_an_offset() {
        let mut m = FaultMap::new(0);
        m.push_tu(0, 40, &[site(10, 0x100), site(20, 0x102)]);
        m.push_tu(64, 100, &[site(70, 0x200)]);
        assert_eq!(m.lookup(15).unwrap().guest_eip, 0x100);
        assert_eq!(m.lookup(20).unwrap().guest_eip, 0x102);
        assert_eq!(m.lookup(39).unwrap().guest_eip, 0x102);
        assert_eq!(m.lookup(80).unwrap().guest_eip, 0x200);
    }

    #[test]
    fn lookup_misses_outside_any_instruction() {
        let mut m = FaultMap::new(0);
        m.push_tu(0, 40, &[site(10, 0x100)]);
        m.push_tu(64, 100, &[site(70, 0x200)]);
        assert!(m.lookup(5).is_none());
        assert!(m.lookup(50).is_none());
        assert!(m.lookup(66).is_none());
        assert!(m.lookup(100).is_none());
    }
}
