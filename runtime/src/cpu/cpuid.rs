//! CPUID: one coherent P6-class CPU that reports exactly the features
//! bt86 implements.

/// Leaf 1 EDX feature bits (Intel SDM Vol. 2A, CPUID, table 3-11).
mod edx1 {
    pub const FPU: u32 = 1 << 0;
    pub const PSE: u32 = 1 << 3;
    pub const TSC: u32 = 1 << 4;
    pub const MSR: u32 = 1 << 5;
    pub const PAE: u32 = 1 << 6;
    pub const MCE: u32 = 1 << 7;
    pub const CX8: u32 = 1 << 8;
    pub const APIC: u32 = 1 << 9;
    pub const SEP: u32 = 1 << 11;
    pub const PGE: u32 = 1 << 13;
    pub const MCA: u32 = 1 << 14;
    pub const CMOV: u32 = 1 << 15;
    pub const MMX: u32 = 1 << 23;
    pub const FXSR: u32 = 1 << 24;
    pub const SSE: u32 = 1 << 25;
    pub const SSE2: u32 = 1 << 26;
}

/// Leaf 1 ECX: running under a hypervisor (as QEMU reports it): Linux
/// then says its PMU is not available rather than broken.
const ECX1_HYPERVISOR: u32 = 1 << 31;

/// Leaves up to 0x16, for the TSC and crystal frequencies of 0x15/0x16;
/// the leaves between report nothing (no caches described, no
/// structured features).
const MAX_BASIC_LEAF: u32 = 0x16;
/// The TSC's rate, in virtual time.
pub const TSC_HZ: u64 = 2_000_000_000;
/// The core crystal clock (leaf 0x15 ECX), which is also the local APIC
/// timer's input: Linux takes the one for the other.
pub const CRYSTAL_HZ: u64 = 100_000_000;
const MAX_EXTENDED_LEAF: u32 = 0x8000_0001;
/// Leaf 0x8000_0001 EDX: the execute-disable bit (IA32_EFER.NXE).
const EDX_EXT_NX: u32 = 1 << 20;
/// Family 6, model 13, stepping 8: a Pentium M (Dothan), the P6 with SSE2.
pub const SIGNATURE: u32 = (6 << 8) | (13 << 4) | 8;

/// (eax, ebx, ecx, edx) for `leaf`, `apic` saying whether the local APIC
/// is there and globally enabled. Leaves beyond the maximum return the
/// highest basic leaf, as Intel CPUs do.
pub fn cpuid(leaf: u32, apic: bool) -> (u32, u32, u32, u32) {
    match leaf {
        0x8000_0000 => (MAX_EXTENDED_LEAF, 0, 0, 0),
        0x8000_0001 => (0, 0, 0, EDX_EXT_NX),
        0 => {
            let v = b"GenuineIntel";
            let w = |i: usize| u32::from_le_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
            (MAX_BASIC_LEAF, w(0), w(8), w(4))
        }
        0x15 => (1, (TSC_HZ / CRYSTAL_HZ) as u32, CRYSTAL_HZ as u32, 0),
        0x16 => {
            let mhz = (TSC_HZ / 1_000_000) as u32;
            (mhz, mhz, (CRYSTAL_HZ / 1_000_000) as u32, 0)
        }
        2..=0x14 => (0, 0, 0, 0),
        1 => (
            SIGNATURE,
            0,
            ECX1_HYPERVISOR,
            edx1::FPU
                | edx1::PSE
                | edx1::TSC
                | edx1::MSR
                | edx1::PAE
                | edx1::MCE
                | edx1::CX8
                | edx1::SEP
                | edx1::PGE
                | edx1::MCA
                | edx1::CMOV
                | edx1::MMX
                | edx1::FXSR
                | edx1::SSE
                | edx1::SSE2
                | if apic { edx1::APIC } else { 0 },
        ),
        _ => cpuid(MAX_BASIC_LEAF, apic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_string_is_in_ebx_edx_ecx_order() {
        let (max, b, c, d) = cpuid(0, false);
        assert_eq!(max, MAX_BASIC_LEAF);
        let mut s = Vec::new();
        for r in [b, d, c] {
            s.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&s, b"GenuineIntel");
    }

    #[test]
    fn tsc_frequency_leaves_agree_and_out_of_range_leaves_repeat_the_last() {
        let (den, num, crystal, _) = cpuid(0x15, false);
        assert_eq!(crystal as u64 * num as u64 / den as u64, TSC_HZ);
        assert_eq!(cpuid(0x16, false).0 as u64, TSC_HZ / 1_000_000);
        assert_eq!(cpuid(0x17, false), cpuid(MAX_BASIC_LEAF, false));
        assert_eq!(cpuid(0x4000_0000, false), cpuid(MAX_BASIC_LEAF, false));
        assert_eq!(cpuid(4, false), (0, 0, 0, 0), "no cache leaves");
    }

    #[test]
    fn leaf_one_reports_only_implemented_features() {
        let (_, _, ecx, edx) = cpuid(1, false);
        assert_eq!(ecx, ECX1_HYPERVISOR);
        assert_ne!(edx & edx1::FPU, 0);
        assert_ne!(edx & edx1::SSE2, 0);
        assert_eq!(edx & (1 << 9), 0, "no APIC");
        assert_ne!(edx & edx1::CMOV, 0);
    }
}
