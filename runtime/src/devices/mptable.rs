//! The Intel MultiProcessor Specification 1.4 tables (MP spec chapter 4)
//! that tell a guest without ACPI where the APICs are and how the ISA
//! interrupts reach the I/O APIC: the MP floating pointer structure and,
//! right after it, the MP configuration table.
//!
//! Where the machine puts them: 16-byte aligned, where Linux scans
//! (`smp_scan_config`: the first KiB of memory, the last KiB of base
//! memory at 0x9FC00, the BIOS area 0xF0000-0xFFFFF, the first KiB of
//! the EBDA) and in memory the e820 map reserves. Without firmware,
//! 0x9FC00 (bt86's e820 map reserves 0x9FC00-0x9FFFF); the whole thing
//! is [`table_len`] bytes, well under the KiB. With firmware (SeaBIOS),
//! the firmware builds its own.
//!
//! The machine it describes: one processor (local APIC ID 0, the BSP),
//! an ISA bus (no PCI bus entry: ISA devices need none, and PCI
//! interrupts without entries fall back to the PCI configuration's
//! interrupt line), one I/O APIC, ISA IRQs 0-15 on its pins with
//! IRQ 0 on pin 2 and IRQ 2 absent (the cascade), as QEMU and SeaBIOS,
//! and virtual wire mode (LINT0 ExtINT, LINT1 NMI; no IMCR).

use super::apic;
use super::ioapic;

/// "_MP_": the floating pointer structure.
const FLOATING_SIGNATURE: &[u8; 4] = b"_MP_";
/// "PCMP": the configuration table.
const TABLE_SIGNATURE: &[u8; 4] = b"PCMP";
/// MP spec revision 1.4.
const SPEC_REV: u8 = 4;
const FLOATING_LEN: usize = 16;
const HEADER_LEN: usize = 44;
const OEM_ID: &[u8; 8] = b"BT86    ";
const PRODUCT_ID: &[u8; 12] = b"BT86 PC     ";

/// Entry types and lengths (MP spec 4.3, table 4-3).
const PROCESSOR: u8 = 0;
const BUS: u8 = 1;
const IO_APIC: u8 = 2;
const IO_INTERRUPT: u8 = 3;
const LOCAL_INTERRUPT: u8 = 4;
const PROCESSOR_LEN: usize = 20;
const ENTRY_LEN: usize = 8;

/// Processor entry CPU flags: enabled, bootstrap processor.
const CPU_ENABLED: u8 = 1 << 0;
const CPU_BSP: u8 = 1 << 1;
/// I/O APIC entry flags: usable.
const IO_APIC_USABLE: u8 = 1 << 0;
/// Interrupt types (MP spec table 4-8).
const INT: u8 = 0;
const NMI: u8 = 1;
const EXTINT: u8 = 3;
/// Polarity and trigger mode conform to the bus (ISA: active high, edge).
const CONFORMING: u16 = 0;
/// Local interrupt destination: every local APIC.
const ALL_APICS: u8 = 0xFF;
const ISA_BUS: u8 = 0;

/// ISA IRQs on the I/O APIC: (IRQ, pin).
fn isa_irqs() -> impl Iterator<Item = (u8, u8)> {
    (0..16u8)
        .filter(|&irq| irq != 2)
        .map(|irq| (irq, if irq == 0 { 2 } else { irq }))
}

/// The number of bytes [`build`] returns.
pub fn table_len() -> usize {
    FLOATING_LEN + HEADER_LEN + PROCESSOR_LEN + ENTRY_LEN * (2 + isa_irqs().count() + 2)
}

/// The byte that makes `bytes` sum to 0.
fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |s, &b| s.wrapping_add(b))
        .wrapping_neg()
}

/// The MP floating pointer structure at guest physical `base` (16-byte
/// aligned), followed by the configuration table at `base + 16`,
/// describing an I/O APIC with ID `ioapic_id` at `ioapic_addr` and the
/// local APIC at `lapic_addr`.
pub fn build(base: u32, ioapic_id: u8, ioapic_addr: u32, lapic_addr: u32) -> Vec<u8> {
    assert!(
        base.is_multiple_of(16),
        "the MP floating pointer must be 16-byte aligned"
    );
    let mut t = Vec::with_capacity(table_len());

    // The configuration table (MP spec 4.2), checksummed below.
    t.extend_from_slice(TABLE_SIGNATURE);
    t.extend_from_slice(&[0, 0]); // base table length
    t.push(SPEC_REV);
    t.push(0); // checksum
    t.extend_from_slice(OEM_ID);
    t.extend_from_slice(PRODUCT_ID);
    t.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    t.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    t.extend_from_slice(&[0, 0]); // entry count
    t.extend_from_slice(&lapic_addr.to_le_bytes());
    t.extend_from_slice(&0u16.to_le_bytes()); // extended table length
    t.extend_from_slice(&[0, 0]); // extended checksum, reserved
    debug_assert_eq!(t.len(), HEADER_LEN);

    let mut entries = 0u16;
    // Processor (MP spec 4.3.1).
    t.extend_from_slice(&[PROCESSOR, 0, apic::VERSION as u8, CPU_ENABLED | CPU_BSP]);
    // The processor's signature and CPUID.1:EDX features (with the APIC),
    // as CPUID reports them. Informational: Linux reads neither.
    let (signature, _, _, features) = crate::cpu::cpuid::cpuid(1, true);
    t.extend_from_slice(&signature.to_le_bytes());
    t.extend_from_slice(&features.to_le_bytes());
    t.extend_from_slice(&[0; 8]);
    entries += 1;
    // The ISA bus (4.3.2): its type is six bytes, blank-padded.
    t.extend_from_slice(&[BUS, ISA_BUS]);
    t.extend_from_slice(b"ISA   ");
    entries += 1;
    // The I/O APIC (4.3.3).
    t.extend_from_slice(&[IO_APIC, ioapic_id, ioapic::VERSION as u8, IO_APIC_USABLE]);
    t.extend_from_slice(&ioapic_addr.to_le_bytes());
    entries += 1;
    // I/O interrupt assignments (4.3.4).
    for (irq, pin) in isa_irqs() {
        t.extend_from_slice(&[IO_INTERRUPT, INT]);
        t.extend_from_slice(&CONFORMING.to_le_bytes());
        t.extend_from_slice(&[ISA_BUS, irq, ioapic_id, pin]);
        entries += 1;
    }
    // Local interrupt assignments (4.3.5): virtual wire mode.
    for (kind, lint) in [(EXTINT, 0), (NMI, 1)] {
        t.extend_from_slice(&[LOCAL_INTERRUPT, kind]);
        t.extend_from_slice(&CONFORMING.to_le_bytes());
        t.extend_from_slice(&[ISA_BUS, 0, ALL_APICS, lint]);
        entries += 1;
    }
    let len = t.len() as u16;
    t[4..6].copy_from_slice(&len.to_le_bytes());
    t[34..36].copy_from_slice(&entries.to_le_bytes());
    t[7] = checksum(&t);

    // The floating pointer (4.1): one 16-byte paragraph, the
    // configuration table right after it, no default configuration, and
    // IMCR absent (virtual wire mode).
    let mut f = Vec::with_capacity(table_len());
    f.extend_from_slice(FLOATING_SIGNATURE);
    f.extend_from_slice(&(base + FLOATING_LEN as u32).to_le_bytes());
    f.extend_from_slice(&[1, SPEC_REV, 0, 0, 0, 0, 0, 0]);
    f[10] = checksum(&f);
    f.extend_from_slice(&t);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u32 = 0x9_FC00;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |s, &x| s.wrapping_add(x))
    }

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    /// What Linux's mpparse takes from the tables.
    #[derive(Debug, Default)]
    struct Parsed {
        lapic: u32,
        cpus: Vec<(u8, u8, u8)>,
        buses: Vec<(u8, [u8; 6])>,
        io_apics: Vec<(u8, u8, u8, u32)>,
        /// (type, flags, bus, IRQ, I/O APIC, pin)
        irqs: Vec<(u8, u16, u8, u8, u8, u8)>,
        lints: Vec<(u8, u16, u8, u8, u8, u8)>,
    }

    /// Finds and checks the tables in `mem` (at guest physical `at`) as
    /// Linux's smp_scan_config, smp_check_mpc and smp_read_mpc do.
    fn parse(mem: &[u8], at: u32) -> Result<Parsed, String> {
        // smp_scan_config: a 16-byte aligned "_MP_" with length 1, spec
        // 1 or 4, summing to 0.
        let off = (0..mem.len())
            .step_by(16)
            .find(|&o| mem[o..].starts_with(FLOATING_SIGNATURE))
            .ok_or("no floating pointer")?;
        let mpf = &mem[off..off + 16];
        if mpf[8] != 1 || !(mpf[9] == 1 || mpf[9] == 4) || sum(mpf) != 0 {
            return Err("bad floating pointer".into());
        }
        if mpf[11] != 0 {
            return Err("a default configuration".into());
        }
        if mpf[12] & 0x80 != 0 {
            return Err("IMCR present: PIC mode".into());
        }
        let physptr = u32_at(mpf, 4);
        let mpc = &mem[(physptr - at) as usize..];
        // smp_check_mpc.
        if &mpc[..4] != TABLE_SIGNATURE {
            return Err("bad signature".into());
        }
        let len = usize::from(u16_at(mpc, 4));
        if sum(&mpc[..len]) != 0 {
            return Err("checksum error".into());
        }
        if mpc[6] != 1 && mpc[6] != 4 {
            return Err("bad table version".into());
        }
        let mut p = Parsed {
            lapic: u32_at(mpc, 36),
            ..Parsed::default()
        };
        if p.lapic == 0 {
            return Err("null local APIC address".into());
        }
        // smp_read_mpc: every entry a known type, ending exactly at the
        // table's length; the entry count and the extended table agree.
        let (mut count, mut entries, mut last_type) = (HEADER_LEN, 0, 0);
        while count < len {
            let e = &mpc[count..];
            if e[0] < last_type {
                return Err("entries out of order".into());
            }
            last_type = e[0];
            let size = match e[0] {
                PROCESSOR => {
                    p.cpus.push((e[1], e[2], e[3]));
                    PROCESSOR_LEN
                }
                BUS => {
                    p.buses.push((e[1], e[2..8].try_into().unwrap()));
                    ENTRY_LEN
                }
                IO_APIC => {
                    p.io_apics.push((e[1], e[2], e[3], u32_at(e, 4)));
                    ENTRY_LEN
                }
                IO_INTERRUPT | LOCAL_INTERRUPT => {
                    let v = (e[1], u16_at(e, 2), e[4], e[5], e[6], e[7]);
                    if e[0] == IO_INTERRUPT {
                        // mp_save_irq: no duplicates.
                        if p.irqs.contains(&v) {
                            return Err("duplicate interrupt entry".into());
                        }
                        p.irqs.push(v);
                    } else {
                        p.lints.push(v);
                    }
                    ENTRY_LEN
                }
                t => return Err(format!("unknown entry type {t}")),
            };
            count += size;
            entries += 1;
        }
        if count != len {
            return Err("an entry runs past the table".into());
        }
        if u16_at(mpc, 34) != entries {
            return Err("entry count".into());
        }
        if u16_at(mpc, 40) != 0 || mpc[42] != 0 {
            return Err("an extended table".into());
        }
        Ok(p)
    }

    fn table() -> Vec<u8> {
        build(BASE, 1, 0xFEC0_0000, 0xFEE0_0000)
    }

    #[test]
    fn both_structures_sum_to_zero() {
        let t = table();
        assert_eq!(t.len(), table_len());
        assert_eq!(sum(&t[..16]), 0);
        assert_eq!(sum(&t[16..]), 0);
        assert_eq!(&t[..4], b"_MP_");
        assert_eq!(u32_at(&t, 4), BASE + 16, "the table follows at base + 16");
        assert_eq!((t[8], t[9]), (1, 4), "one paragraph, spec 1.4");
        assert_eq!(&t[16..20], b"PCMP");
        assert_eq!(usize::from(u16_at(&t, 16 + 4)), t.len() - 16);
        assert!(t.len() <= 1024, "fits the last KiB of base memory");
    }

    #[test]
    fn linux_accepts_it_as_found_in_the_last_kib_of_base_memory() {
        let mut kib = vec![0u8; 1024];
        let t = table();
        kib[..t.len()].copy_from_slice(&t);
        let p = parse(&kib, BASE).unwrap();
        assert_eq!(p.lapic, 0xFEE0_0000);
        assert_eq!(p.cpus, vec![(0, 0x14, CPU_ENABLED | CPU_BSP)]);
        assert_eq!(p.buses, vec![(0, *b"ISA   ")]);
        assert_eq!(p.io_apics, vec![(1, 0x11, IO_APIC_USABLE, 0xFEC0_0000)]);
        assert_eq!(p.lints, vec![(3, 0, 0, 0, 0xFF, 0), (1, 0, 0, 0, 0xFF, 1)]);
    }

    #[test]
    fn isa_irqs_are_identity_mapped_but_irq0_on_pin2_and_no_irq2() {
        let mut t = table();
        t.resize(1024, 0);
        let p = parse(&t, BASE).unwrap();
        assert_eq!(p.irqs.len(), 15);
        for &(kind, flags, bus, irq, ioapic, pin) in &p.irqs {
            assert_eq!((kind, flags, bus, ioapic), (0, 0, 0, 1), "IRQ {irq}");
            assert_ne!(irq, 2, "the cascade is not an interrupt");
            assert_eq!(pin, if irq == 0 { 2 } else { irq });
        }
    }

    #[test]
    fn processor_entry_carries_the_cpu_signature_and_features() {
        let t = table();
        let cpu = &t[16 + HEADER_LEN..];
        assert_eq!(u32_at(cpu, 4) >> 8 & 0xF, 6, "family 6");
        assert_ne!(u32_at(cpu, 8) & (1 << 9), 0, "the APIC feature");
    }

    #[test]
    fn a_corrupted_table_is_refused() {
        let mut t = table();
        t[16 + 50] ^= 1;
        t.resize(1024, 0);
        assert_eq!(parse(&t, BASE).unwrap_err(), "checksum error");
    }
}
