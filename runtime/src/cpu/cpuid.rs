//! CPUID: one coherent P6-class CPU that reports exactly the features
//! bt86 implements.

/// Leaf 1 EDX feature bits (Intel SDM Vol. 2A, CPUID, table 3-11).
mod edx1 {
    pub const FPU: u32 = 1 << 0;
    pub const PSE: u32 = 1 << 3;
    pub const TSC: u32 = 1 << 4;
    pub const MSR: u32 = 1 << 5;
    pub const PAE: u32 = 1 << 6;
    pub const CX8: u32 = 1 << 8;
    pub const SEP: u32 = 1 << 11;
    pub const PGE: u32 = 1 << 13;
    pub const CMOV: u32 = 1 << 15;
    pub const MMX: u32 = 1 << 23;
    pub const FXSR: u32 = 1 << 24;
    pub const SSE: u32 = 1 << 25;
    pub const SSE2: u32 = 1 << 26;
}

const MAX_BASIC_LEAF: u32 = 1;
const MAX_EXTENDED_LEAF: u32 = 0x8000_0001;
/// Leaf 0x8000_0001 EDX: the execute-disable bit (IA32_EFER.NXE).
const EDX_EXT_NX: u32 = 1 << 20;
/// Family 6, model 13, stepping 8: a Pentium M (Dothan), the P6 with SSE2.
pub const SIGNATURE: u32 = (6 << 8) | (13 << 4) | 8;

/// (eax, ebx, ecx, edx) for `leaf`. Leaves beyond the maximum return the
/// highest basic leaf, as Intel CPUs do.
pub fn cpuid(leaf: u32) -> (u32, u32, u32, u32) {
    match leaf {
        0x8000_0000 => (MAX_EXTENDED_LEAF, 0, 0, 0),
        0x8000_0001 => (0, 0, 0, EDX_EXT_NX),
        0 => {
            let v = b"GenuineIntel";
            let w = |i: usize| u32::from_le_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
            (MAX_BASIC_LEAF, w(0), w(8), w(4))
        }
        _ => (
            SIGNATURE,
            0,
            0,
            edx1::FPU
                | edx1::PSE
                | edx1::TSC
                | edx1::MSR
                | edx1::PAE
                | edx1::CX8
                | edx1::SEP
                | edx1::PGE
                | edx1::CMOV
                | edx1::MMX
                | edx1::FXSR
                | edx1::SSE
                | edx1::SSE2,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_string_is_in_ebx_edx_ecx_order() {
        let (max, b, c, d) = cpuid(0);
        assert_eq!(max, MAX_BASIC_LEAF);
        let mut s = Vec::new();
        for r in [b, d, c] {
            s.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&s, b"GenuineIntel");
    }

    #[test]
    fn leaf_one_reports_only_implemented_features() {
        let (_, _, ecx, edx) = cpuid(1);
        assert_eq!(ecx, 0);
        assert_ne!(edx & edx1::FPU, 0);
        assert_ne!(edx & edx1::SSE2, 0);
        assert_eq!(edx & (1 << 9), 0, "no APIC");
        assert_ne!(edx & edx1::CMOV, 0);
    }
}
