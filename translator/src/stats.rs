//! Translation statistics: one row per code class, in the classic form
//! (DESIGN.md section 9).

use crate::abi::ModeKey;

/// How many code classes there are.
pub const CLASSES: usize = CodeClass::ALL.len();

// `CodeClass::index` is the discriminant: `ALL` must list them in order.
const _: () = {
    let mut i = 0;
    while i < CLASSES {
        assert!(CodeClass::ALL[i] as usize == i);
        i += 1;
    }
};

/// Classes of guest code, by the mode it was translated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeClass {
    Real16,
    Pm16,
    V86,
    Kernel32,
    User32,
}

impl CodeClass {
    pub const ALL: [CodeClass; 5] = [
        CodeClass::Real16,
        CodeClass::Pm16,
        CodeClass::V86,
        CodeClass::Kernel32,
        CodeClass::User32,
    ];

    pub fn of(mode: ModeKey) -> Self {
        if mode.0 & ModeKey::VM86 != 0 {
            CodeClass::V86
        } else if mode.0 & ModeKey::PE == 0 {
            CodeClass::Real16
        } else if mode.0 & ModeKey::CODE32 == 0 {
            CodeClass::Pm16
        } else if mode.cpl() == 0 {
            CodeClass::Kernel32
        } else {
            CodeClass::User32
        }
    }

    /// Its index in [`CodeClass::ALL`] and in the per-class arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            CodeClass::Real16 => "real16",
            CodeClass::Pm16 => "pm16",
            CodeClass::V86 => "v86",
            CodeClass::Kernel32 => "kernel32",
            CodeClass::User32 => "user32",
        }
    }
}

/// Input and output of the translator for one code class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassRow {
    pub units: u64,
    pub in_bytes: u64,
    pub instrs: u64,
    pub cycles: u64,
    pub out_bytes: u64,
}

impl ClassRow {
    pub fn add(&mut self, o: &ClassRow) {
        self.units += o.units;
        self.in_bytes += o.in_bytes;
        self.instrs += o.instrs;
        self.cycles += o.cycles;
        self.out_bytes += o.out_bytes;
    }
}

#[derive(Clone, Debug, Default)]
pub struct TranslationStats {
    pub rows: [ClassRow; CLASSES],
}

impl TranslationStats {
    pub fn record(
        &mut self,
        mode: ModeKey,
        in_bytes: u32,
        instrs: u32,
        out_bytes: u32,
        cycles: u64,
    ) {
        let r = &mut self.rows[CodeClass::of(mode).index()];
        r.units += 1;
        r.in_bytes += in_bytes as u64;
        r.instrs += instrs as u64;
        r.out_bytes += out_bytes as u64;
        r.cycles += cycles;
    }

    pub fn total(&self) -> ClassRow {
        let mut t = ClassRow::default();
        for r in &self.rows {
            t.add(r);
        }
        t
    }
}

/// The host's time-stamp counter, for translator cycle counts.
pub fn cycles() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86-64.
    unsafe { core::arch::x86_64::_rdtsc() }
}
