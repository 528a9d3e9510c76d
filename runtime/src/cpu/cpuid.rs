//! CPUID: one coherent P6-class CPU that reports exactly the features
//! bt86 implements (no FPU, MMX or SSE until the FPU work lands).

/// Leaf 1 EDX feature bits (Intel SDM Vol. 2A, CPUID, table 3-11).
mod edx1 {
    pub const TSC: u32 = 1 << 4;
    pub const MSR: u32 = 1 << 5;
    pub const CX8: u32 = 1 << 8;
    pub const SEP: u32 = 1 << 11;
    pub const CMOV: u32 = 1 << 15;
}

const MAX_BASIC_LEAF: u32 = 1;
/// Family 6, model 8, stepping 3: a Pentium III (Coppermine).
pub const SIGNATURE: u32 = (6 << 8) | (8 << 4) | 3;

/// (eax, ebx, ecx, edx) for `leaf`. Leaves beyond the maximum return the
/// highest basic leaf, as Intel CPUs do.
pub fn cpuid(leaf: u32) -> (u32, u32, u32, u32) {
    match leaf {
        0 => {
            let v = b"GenuineIntel";
            let w = |i: usize| u32::from_le_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
            (MAX_BASIC_LEAF, w(0), w(8), w(4))
        }
        _ => (
            SIGNATURE,
            0,
            0,
            edx1::TSC | edx1::MSR | edx1::CX8 | edx1::SEP | edx1::CMOV,
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
        assert_eq!(edx & 1, 0, "no FPU yet");
        assert_ne!(edx & edx1::CMOV, 0);
    }
}
