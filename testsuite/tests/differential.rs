//! Differential test of the integer instruction set: every form runs over
//! edge-case and random operands both natively on the host CPU (the oracle,
//! `bt86_testsuite::native32`, in 32-bit compatibility mode) and inside bt86,
//! and the registers, the memory operand's neighbourhood and every defined
//! flag must agree.
//!
//! bt86 runs one guest program per family: for each form a loop over a
//! table of input records (registers, EFLAGS, an 8-dword memory window)
//! that loads the window and registers, popfd, runs the instruction, pushfd
//! and stores registers, flags and window to an output table. Inputs that
//! fault natively (#DE) are not run on the host: they are predicted here
//! and bt86 must stop with an unhandled #DE at the instruction, with the
//! guest state untouched.

#![allow(clippy::vec_init_then_push)]

use std::fmt::Write as _;
use std::time::Instant;

use bt86_testsuite::native32::{Native32, State, WINDOW_DWORDS};
use bt86_testsuite::*;
use iced_x86::{
    BlockEncoderOptions, Decoder, DecoderOptions, Formatter, IntelFormatter, RflagsBits,
};

// EFLAGS bits.
const CF: u32 = 0x001;
const PF: u32 = 0x004;
const AF: u32 = 0x010;
const ZF: u32 = 0x040;
const SF: u32 = 0x080;
const DF: u32 = 0x400;
const OF: u32 = 0x800;
const STATUS: u32 = CF | PF | AF | ZF | SF | OF;
/// The flags the test sets and compares.
const COMPARED: u32 = STATUS | DF;

// Register indices.
const EAX: usize = 0;
const ECX: usize = 1;
const EDX: usize = 2;
const EBX: usize = 3;
const ESP: usize = 4;
const EBP: usize = 5;
const ESI: usize = 6;
const EDI: usize = 7;
const REG_NAMES: [&str; 8] = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"];

// Guest layout.
/// The memory window (WINDOW_DWORDS dwords).
const WIN: u32 = DATA;
/// The memory operand of every form is at window + MEM_OFF (window dword 2).
const MEM_OFF: u32 = 8;
const MEM_DWORD: usize = (MEM_OFF / 4) as usize;
const VAR_PTR: u32 = DATA + 0x100;
const VAR_EAX: u32 = DATA + 0x104;
const IN_TAB: u32 = 0x0040_0000;
const OUT_TAB: u32 = 0x00A0_0000;
const RAM: usize = 16 << 20;
const REC_DWORDS: usize = 9 + WINDOW_DWORDS;
const REC: u32 = 4 * REC_DWORDS as u32;
const MAX_RECS: usize = ((OUT_TAB - IN_TAB) / REC) as usize;
/// Predicted faults actually run in bt86, per form (each needs a machine).
const MAX_FAULT_RUNS: usize = 3;
/// Mismatches printed per form.
const MAX_PRINTED: usize = 6;

const EDGES: [u32; 11] = [
    0,
    1,
    0x7F,
    0x80,
    0xFF,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFF,
];

// ---------------------------------------------------------------------------
// Random inputs

struct Rng(u64);

impl Rng {
    fn new(family: &str) -> Self {
        // FNV-1a of the family name: fixed seeds, independent families.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in family.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        Rng(h | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn u32(&mut self) -> u32 {
        (self.next() >> 32) as u32
    }
    fn below(&mut self, n: u32) -> u32 {
        ((self.next() >> 32) % n as u64) as u32
    }
    fn pct(&mut self, p: u32) -> bool {
        self.below(100) < p
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u32) as usize]
    }
    /// An operand value: often an edge value (whole, or in the low byte or
    /// word of a random value), sometimes small, otherwise random.
    fn val(&mut self) -> u32 {
        match self.below(20) {
            0..=6 => self.pick(&EDGES),
            7..=8 => {
                let e = self.pick(&EDGES);
                let r = self.u32();
                if self.pct(50) {
                    (r & !0xFF) | (e & 0xFF)
                } else {
                    (r & !0xFFFF) | (e & 0xFFFF)
                }
            }
            9..=10 => {
                let s = self.below(16);
                if self.pct(50) { s } else { s.wrapping_neg() }
            }
            _ => self.u32(),
        }
    }
    fn flags(&mut self) -> u32 {
        self.u32() & COMPARED
    }
    fn state(&mut self) -> State {
        let mut s = State::default();
        for (i, r) in s.regs.iter_mut().enumerate() {
            *r = if i == ESP { STACK } else { self.val() };
        }
        s.eflags = self.flags();
        for m in s.mem.iter_mut() {
            *m = self.val();
        }
        s
    }
}

/// Where an operand lives.
#[derive(Clone, Copy, Debug)]
enum Slot {
    /// Low byte of a register (al, cl, ...).
    L(usize),
    /// High byte (ah, ch, ...).
    H(usize),
    W(usize),
    D(usize),
    M8,
    M16,
    M32,
}
use Slot::*;

impl Slot {
    /// (register index or None for the memory operand, shift, mask).
    fn loc(self) -> (Option<usize>, u32, u32) {
        match self {
            L(r) => (Some(r), 0, 0xFF),
            H(r) => (Some(r), 8, 0xFF),
            W(r) => (Some(r), 0, 0xFFFF),
            D(r) => (Some(r), 0, 0xFFFF_FFFF),
            M8 => (None, 0, 0xFF),
            M16 => (None, 0, 0xFFFF),
            M32 => (None, 0, 0xFFFF_FFFF),
        }
    }
    fn width(self) -> u32 {
        self.loc().2.count_ones()
    }
    fn set(self, s: &mut State, v: u32) {
        let (r, sh, m) = self.loc();
        let d = match r {
            Some(r) => &mut s.regs[r],
            None => &mut s.mem[MEM_DWORD],
        };
        *d = (*d & !(m << sh)) | ((v & m) << sh);
    }
    fn get(self, s: &State) -> u32 {
        let (r, sh, m) = self.loc();
        let d = match r {
            Some(r) => s.regs[r],
            None => s.mem[MEM_DWORD],
        };
        (d >> sh) & m
    }
}

// ---------------------------------------------------------------------------
// Forms

type Emit = Box<dyn Fn(&mut CodeAssembler, u32) -> Result<(), IcedError>>;
type UndefFn = Box<dyn Fn(&State) -> Undef>;
type FaultFn = Box<dyn Fn(&State) -> bool>;

/// What not to compare for one input, beyond what iced says is undefined.
#[derive(Clone, Debug, Default)]
struct Undef {
    /// Replaces iced's undefined flags when set.
    flags: Option<u32>,
    regs: [u32; 8],
    mem: [u32; WINDOW_DWORDS],
}

impl Undef {
    fn flags(f: u32) -> Self {
        Undef {
            flags: Some(f),
            ..Undef::default()
        }
    }
    fn ignore(mut self, slot: Slot) -> Self {
        let (r, sh, m) = slot.loc();
        match r {
            Some(r) => self.regs[r] |= m << sh,
            None => self.mem[MEM_DWORD] |= m << sh,
        }
        self
    }
}

/// One instruction form and its inputs.
struct Form {
    /// Emits the instruction, given the address of its memory operand.
    emit: Emit,
    vectors: Vec<State>,
    undef: Option<UndefFn>,
    /// Predicts a #DE.
    fault: Option<FaultFn>,
}

fn form(emit: impl Fn(&mut CodeAssembler, u32) -> Result<(), IcedError> + 'static) -> Form {
    Form {
        emit: Box::new(emit),
        vectors: Vec::new(),
        undef: None,
        fault: None,
    }
}

impl Form {
    /// Adds the edge-value cross product over the first two `slots`, then
    /// random vectors up to `n` in all; every vector goes through `tweak`.
    fn make(
        mut self,
        rng: &mut Rng,
        n: usize,
        slots: &[Slot],
        tweak: impl Fn(&mut State, &mut Rng),
    ) -> Self {
        let mut combos: Vec<Vec<u32>> = vec![vec![]];
        for _ in slots.iter().take(2) {
            combos = combos
                .iter()
                .flat_map(|c| EDGES.iter().map(move |&e| [c.clone(), vec![e]].concat()))
                .collect();
        }
        if slots.is_empty() {
            combos.clear();
        }
        for c in combos {
            let mut s = rng.state();
            for (slot, v) in slots.iter().zip(c) {
                slot.set(&mut s, v);
            }
            tweak(&mut s, rng);
            self.vectors.push(s);
        }
        while self.vectors.len() < n {
            let mut s = rng.state();
            tweak(&mut s, rng);
            self.vectors.push(s);
        }
        self
    }
    fn vecs(self, rng: &mut Rng, n: usize, slots: &[Slot]) -> Self {
        self.make(rng, n, slots, |_, _| {})
    }
    fn with(mut self, v: impl IntoIterator<Item = State>) -> Self {
        self.vectors.extend(v);
        self
    }
    fn undef(mut self, f: impl Fn(&State) -> Undef + 'static) -> Self {
        self.undef = Some(Box::new(f));
        self
    }
    fn fault(mut self, f: impl Fn(&State) -> bool + 'static) -> Self {
        self.fault = Some(Box::new(f));
        self
    }
}

// ---------------------------------------------------------------------------
// The runner

fn iced_to_eflags(r: u32) -> u32 {
    let mut f = 0;
    for (i, e) in [
        (RflagsBits::OF, OF),
        (RflagsBits::SF, SF),
        (RflagsBits::ZF, ZF),
        (RflagsBits::AF, AF),
        (RflagsBits::CF, CF),
        (RflagsBits::PF, PF),
        (RflagsBits::DF, DF),
    ] {
        if r & i != 0 {
            f |= e;
        }
    }
    f
}

fn flag_names(f: u32) -> String {
    let mut v = vec![];
    for (b, n) in [
        (CF, "CF"),
        (PF, "PF"),
        (AF, "AF"),
        (ZF, "ZF"),
        (SF, "SF"),
        (DF, "DF"),
        (OF, "OF"),
    ] {
        if f & b != 0 {
            v.push(n);
        }
    }
    format!("[{}]", v.join(" "))
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A form with its code decoded and its inputs run on the host.
struct Prepared {
    form: Form,
    /// Disassembly of the guest code.
    name: String,
    /// Guest code bytes.
    bytes: Vec<u8>,
    uses_mem: bool,
    /// EFLAGS bits iced calls undefined.
    iced_undef: u32,
    /// Non-faulting inputs and the host's results.
    inputs: Vec<State>,
    expected: Vec<State>,
    /// Inputs predicted to raise #DE.
    faults: Vec<State>,
}

fn assemble_snippet(emit: &Emit, ip: u32, mem: u32) -> Vec<u8> {
    let mut a = CodeAssembler::new(32).unwrap();
    emit(&mut a, mem).unwrap();
    a.assemble(ip as u64).unwrap()
}

fn prepare(native: &mut Native32, form: Form) -> Prepared {
    let guest_bytes = assemble_snippet(&form.emit, LOAD, WIN + MEM_OFF);
    let native_bytes = assemble_snippet(
        &form.emit,
        native.code_addr(),
        native.window_addr() + MEM_OFF,
    );
    let mut names = vec![];
    let mut iced_undef = 0;
    let mut uses_mem = false;
    let mut fmt = IntelFormatter::new();
    fmt.options_mut().set_uppercase_hex(true);
    let mut d = Decoder::with_ip(32, &guest_bytes, LOAD as u64, DecoderOptions::NONE);
    for insn in &mut d {
        let mut s = String::new();
        fmt.format(&insn, &mut s);
        names.push(s);
        iced_undef |= iced_to_eflags(insn.rflags_undefined());
        uses_mem |= (0..insn.op_count()).any(|i| insn.op_kind(i) == iced_x86::OpKind::Memory);
    }
    native.set_code(&native_bytes).unwrap();
    let mut inputs = vec![];
    let mut expected = vec![];
    let mut faults = vec![];
    for v in &form.vectors {
        if form.fault.as_ref().is_some_and(|f| f(v)) {
            faults.push(*v);
        } else {
            inputs.push(*v);
            expected.push(native.run(v));
        }
    }
    Prepared {
        name: names.join("; "),
        bytes: guest_bytes,
        uses_mem,
        iced_undef,
        form,
        inputs,
        expected,
        faults,
    }
}

fn describe_state(s: &State, mem: bool) -> String {
    let mut o = String::new();
    for (i, name) in REG_NAMES.iter().enumerate() {
        if i != ESP {
            let _ = write!(o, "{}={:08X} ", name, s.regs[i]);
        }
    }
    let _ = write!(o, "flags={}", flag_names(s.eflags & COMPARED));
    if mem {
        let _ = write!(o, " mem[-8..+24]=");
        for m in s.mem {
            let _ = write!(o, "{m:08X} ");
        }
    }
    o.trim_end().to_string()
}

/// The differences that matter between the host's and bt86's results.
fn compare(p: &Prepared, input: &State, exp: &State, got: &State) -> Vec<String> {
    let u = p.form.undef.as_ref().map(|f| f(input)).unwrap_or_default();
    let undef_flags = u.flags.unwrap_or(p.iced_undef);
    let fmask = COMPARED & !undef_flags;
    let mut d = vec![];
    for (i, name) in REG_NAMES.iter().enumerate() {
        if (exp.regs[i] ^ got.regs[i]) & !u.regs[i] != 0 {
            d.push(format!(
                "{}: expected {:08X} got {:08X}",
                name, exp.regs[i], got.regs[i]
            ));
        }
    }
    if (exp.eflags ^ got.eflags) & fmask != 0 {
        d.push(format!(
            "flags: expected {} got {} (differ in {}; undefined {})",
            flag_names(exp.eflags & fmask),
            flag_names(got.eflags & fmask),
            flag_names((exp.eflags ^ got.eflags) & fmask),
            flag_names(undef_flags & COMPARED)
        ));
    }
    for i in 0..WINDOW_DWORDS {
        if (exp.mem[i] ^ got.mem[i]) & !u.mem[i] != 0 {
            d.push(format!(
                "mem[{:+}]: expected {:08X} got {:08X}",
                4 * i as i32 - MEM_OFF as i32,
                exp.mem[i],
                got.mem[i]
            ));
        }
    }
    d
}

/// A guest program: per form, a loop over its records; returns the image
/// and the address of each form's instruction.
fn build_program(forms: &[(&Emit, usize, usize)], table: &[State]) -> (Vec<u8>, Vec<u32>) {
    let mut a = CodeAssembler::new(32).unwrap();
    let mut labels = vec![];
    (|| -> Result<(), IcedError> {
        a.mov(esp, STACK)?;
        for &(emit, first, count) in forms {
            let start = IN_TAB + first as u32 * REC;
            let end = start + count as u32 * REC;
            a.mov(dword_ptr(VAR_PTR), start)?;
            let mut top = a.create_label();
            a.set_label(&mut top)?;
            a.mov(eax, dword_ptr(VAR_PTR))?;
            for k in 0..WINDOW_DWORDS as u32 {
                a.mov(ecx, dword_ptr(eax + (36 + 4 * k)))?;
                a.mov(dword_ptr(WIN + 4 * k), ecx)?;
            }
            a.push(dword_ptr(eax + 32))?;
            for (i, r) in [
                (1u32, ecx),
                (2, edx),
                (3, ebx),
                (5, ebp),
                (6, esi),
                (7, edi),
            ] {
                a.mov(r, dword_ptr(eax + 4 * i))?;
            }
            a.mov(eax, dword_ptr(eax))?;
            a.popfd()?;
            let mut insn = a.create_label();
            a.set_label(&mut insn)?;
            emit(&mut a, WIN + MEM_OFF)?;
            a.pushfd()?;
            a.mov(dword_ptr(VAR_EAX), eax)?;
            a.mov(eax, dword_ptr(VAR_PTR))?;
            a.add(eax, OUT_TAB - IN_TAB)?;
            for (i, r) in [
                (1u32, ecx),
                (2, edx),
                (3, ebx),
                (4, esp),
                (5, ebp),
                (6, esi),
                (7, edi),
            ] {
                a.mov(dword_ptr(eax + 4 * i), r)?;
            }
            a.mov(ecx, dword_ptr(VAR_EAX))?;
            a.mov(dword_ptr(eax), ecx)?;
            a.pop(dword_ptr(eax + 32))?;
            for k in 0..WINDOW_DWORDS as u32 {
                a.mov(ecx, dword_ptr(WIN + 4 * k))?;
                a.mov(dword_ptr(eax + (36 + 4 * k)), ecx)?;
            }
            a.add(dword_ptr(VAR_PTR), REC)?;
            a.cmp(dword_ptr(VAR_PTR), end)?;
            a.jb(top)?;
            labels.push(insn);
        }
        a.hlt()?;
        Ok(())
    })()
    .unwrap();
    let res = a
        .assemble_options(
            LOAD as u64,
            BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
        )
        .unwrap();
    let eips = labels
        .iter()
        .map(|l| res.label_ip(l).unwrap() as u32)
        .collect();
    let code = res.inner.code_buffer;
    assert!(
        code.len() <= (IN_TAB - LOAD) as usize,
        "guest program too large"
    );
    let mut image = code;
    image.resize((IN_TAB - LOAD) as usize, 0);
    for s in table {
        for r in s.regs {
            image.extend_from_slice(&r.to_le_bytes());
        }
        image.extend_from_slice(&s.eflags.to_le_bytes());
        for m in s.mem {
            image.extend_from_slice(&m.to_le_bytes());
        }
    }
    (image, eips)
}

fn read_record(run: &Run, addr: u32) -> State {
    let mut buf = [0u8; REC as usize];
    run.machine.memory().read(addr, &mut buf).unwrap();
    let w = |i: usize| u32::from_le_bytes(buf[4 * i..4 * i + 4].try_into().unwrap());
    let mut s = State::default();
    for i in 0..8 {
        s.regs[i] = w(i);
    }
    s.eflags = w(8);
    for i in 0..WINDOW_DWORDS {
        s.mem[i] = w(9 + i);
    }
    s
}

fn run_guest(image: &[u8]) -> Run {
    run_image(
        Options {
            ram: RAM,
            stats: false,
            budget: Some(1 << 32),
            ..Options::default()
        },
        image,
        LOAD,
        LOAD,
    )
}

fn stop_eip(stop: &Stop) -> Option<u32> {
    match stop {
        Stop::Halted { eip } | Stop::Unhandled { eip, .. } | Stop::Unsupported { eip, .. } => {
            Some(*eip)
        }
        _ => None,
    }
}

struct Report {
    family: String,
    lines: Vec<String>,
    /// Failing vectors per form name.
    failing: Vec<(String, usize, usize)>,
    vectors: usize,
    fault_runs: usize,
}

impl Report {
    fn fail(&mut self, line: String, count: &mut usize) {
        if *count < MAX_PRINTED {
            self.lines.push(line);
        }
        *count += 1;
    }
}

/// Runs a batch of prepared forms in one bt86 machine and compares; forms
/// that stop the guest are reported and dropped, and the rest rerun.
fn run_batch(rep: &mut Report, batch: &[&Prepared], bad: &mut [usize]) {
    let mut live: Vec<usize> = (0..batch.len())
        .filter(|&i| !batch[i].inputs.is_empty())
        .collect();
    loop {
        let mut table = vec![];
        let mut spans = vec![];
        for &i in &live {
            spans.push((&batch[i].form.emit, table.len(), batch[i].inputs.len()));
            table.extend_from_slice(&batch[i].inputs);
        }
        let (image, eips) = build_program(&spans, &table);
        let run = run_guest(&image);
        if matches!(run.stop, Stop::Halted { .. }) {
            for (k, &i) in live.iter().enumerate() {
                let p = batch[i];
                let first = spans[k].1;
                let mut failures = 0;
                for (j, (input, exp)) in p.inputs.iter().zip(&p.expected).enumerate() {
                    let mut got = read_record(&run, OUT_TAB + (first + j) as u32 * REC);
                    // esp was stored after the pushfd; report it like the oracle.
                    got.regs[ESP] = input.regs[ESP]
                        .wrapping_add(got.regs[ESP].wrapping_add(4).wrapping_sub(STACK));
                    let d = compare(p, input, exp, &got);
                    if !d.is_empty() {
                        let line = format!(
                            "  {} ({}):\n    in:   {}\n    host: {}\n    bt86: {}\n    => {}",
                            p.name,
                            hex(&p.bytes),
                            describe_state(input, p.uses_mem),
                            describe_state(exp, p.uses_mem),
                            describe_state(&got, p.uses_mem),
                            d.join("; ")
                        );
                        rep.fail(line, &mut failures);
                    }
                }
                bad[i] += failures;
            }
            return;
        }
        // Find the form that stopped the guest.
        let eip = stop_eip(&run.stop);
        let culprit = eip.and_then(|e| {
            // The last form whose instruction starts at or before eip.
            live.iter()
                .enumerate()
                .filter(|&(k, _)| eips[k] <= e)
                .map(|(k, _)| k)
                .next_back()
        });
        let Some(k) = culprit else {
            rep.lines
                .push(format!("  guest stopped outside any form: {:?}", run.stop));
            bad[live[0]] += 1;
            return;
        };
        let p = batch[live[k]];
        let ptr = run.machine.memory().read_u32(VAR_PTR).unwrap();
        let idx = ((ptr - IN_TAB) / REC) as usize - spans[k].1;
        let input = p.inputs.get(idx).copied().unwrap_or_default();
        rep.lines.push(format!(
            "  {} ({}): bt86 stopped with {:?} (host ran it fine)\n    in:   {}",
            p.name,
            hex(&p.bytes),
            run.stop,
            describe_state(&input, p.uses_mem)
        ));
        bad[live[k]] += 1;
        live.remove(k);
    }
}

/// Runs predicted #DE cases: bt86 must stop with #DE at the instruction,
/// the guest state as before it.
fn run_faults(rep: &mut Report, p: &Prepared) -> usize {
    let mut failures = 0;
    for input in p.faults.iter().take(MAX_FAULT_RUNS) {
        rep.fault_runs += 1;
        let (image, eips) = build_program(&[(&p.form.emit, 0, 1)], std::slice::from_ref(input));
        let run = run_guest(&image);
        let mut problems = vec![];
        match &run.stop {
            Stop::Unhandled { exc, eip, soft } if exc.vector == 0 && *eip == eips[0] && !soft => {
                let cpu = run.machine.cpu();
                for (i, name) in REG_NAMES.iter().enumerate() {
                    let want = if i == ESP { STACK } else { input.regs[i] };
                    if cpu.regs[i] != want {
                        problems.push(format!(
                            "{} at the fault: expected {:08X} got {:08X}",
                            name, want, cpu.regs[i]
                        ));
                    }
                }
                let ef = run.eflags();
                if (ef ^ input.eflags) & COMPARED != 0 {
                    problems.push(format!(
                        "flags at the fault: expected {} got {}",
                        flag_names(input.eflags & COMPARED),
                        flag_names(ef & COMPARED)
                    ));
                }
                for k in 0..WINDOW_DWORDS {
                    let m = run.machine.memory().read_u32(WIN + 4 * k as u32).unwrap();
                    if m != input.mem[k] {
                        problems.push(format!(
                            "mem[{:+}] changed at the fault",
                            4 * k as i32 - MEM_OFF as i32
                        ));
                    }
                }
            }
            other => problems.push(format!("expected #DE at {:#X}, got {:?}", eips[0], other)),
        }
        if !problems.is_empty() {
            let line = format!(
                "  {} ({}): predicted #DE\n    in:   {}\n    => {}",
                p.name,
                hex(&p.bytes),
                describe_state(input, p.uses_mem),
                problems.join("; ")
            );
            rep.fail(line, &mut failures);
        }
    }
    failures
}

/// Runs a family on both sides and compares.
fn run_family(family: &str, forms: Vec<Form>) -> Report {
    let t0 = Instant::now();
    let mut native = Native32::new().expect("native 32-bit oracle");
    let prepared: Vec<Prepared> = forms.into_iter().map(|f| prepare(&mut native, f)).collect();
    let t_native = t0.elapsed();
    let mut rep = Report {
        family: family.to_string(),
        lines: vec![],
        failing: vec![],
        vectors: 0,
        fault_runs: 0,
    };
    let mut bad = vec![0usize; prepared.len()];
    // Batches of at most MAX_RECS records.
    let mut start = 0;
    while start < prepared.len() {
        let mut end = start;
        let mut recs = 0;
        while end < prepared.len()
            && (end == start || recs + prepared[end].inputs.len() <= MAX_RECS)
        {
            recs += prepared[end].inputs.len();
            end += 1;
        }
        assert!(recs <= MAX_RECS, "one form has too many vectors");
        let batch: Vec<&Prepared> = prepared[start..end].iter().collect();
        run_batch(&mut rep, &batch, &mut bad[start..end]);
        start = end;
    }
    for (i, p) in prepared.iter().enumerate() {
        bad[i] += run_faults(&mut rep, p);
        rep.vectors += p.form.vectors.len();
        if bad[i] != 0 {
            rep.failing
                .push((p.name.clone(), bad[i], p.form.vectors.len()));
        }
    }
    println!(
        "{}: {} forms, {} vectors ({} predicted #DE, {} run in bt86), host {:?}, total {:?}",
        rep.family,
        prepared.len(),
        rep.vectors,
        prepared.iter().map(|p| p.faults.len()).sum::<usize>(),
        rep.fault_runs,
        t_native,
        t0.elapsed()
    );
    rep
}

/// Runs a family and fails the test on any difference.
fn check(family: &str, forms: Vec<Form>) {
    let rep = run_family(family, forms);
    if !rep.failing.is_empty() {
        let mut msg = format!(
            "{}: {} form(s) differ from the host:\n",
            rep.family,
            rep.failing.len()
        );
        for (name, n, total) in &rep.failing {
            let _ = writeln!(msg, "  {name}: {n} of {total} vectors");
        }
        msg.push_str("details (first few per form):\n");
        for l in &rep.lines {
            msg.push_str(l);
            msg.push('\n');
        }
        panic!("{msg}");
    }
}

/// The harness itself: differences in registers and flags, and wrong #DE
/// predictions, must be reported.
#[test]
fn harness_detects_differences() {
    let rng = &mut Rng::new("self check");
    // The memory operand's address differs between host and guest, so
    // both eax and (mostly) the flags differ.
    let forms = vec![
        form(|a, m| a.add(eax, m)).vecs(rng, 50, &[D(EAX)]),
        // eax = the guest's operand address: ZF only in bt86.
        form(|a, m| a.cmp(eax, m)).make(rng, 10, &[], |s, _| s.regs[EAX] = WIN + MEM_OFF),
        form(|a, _| a.div(ebx)).vecs(rng, 5, &[]).fault(|_| true),
    ];
    let rep = run_family("self check", forms);
    let text = rep.lines.join("\n");
    assert_eq!(rep.failing.len(), 3, "{text}");
    assert_eq!(rep.failing[0].1, 50, "{text}");
    assert_eq!(rep.failing[1].1, 10, "{text}");
    assert!(
        text.contains("eax: expected") && text.contains("flags: expected"),
        "{text}"
    );
    assert!(text.contains("expected #DE"), "{text}");
}

// ---------------------------------------------------------------------------
// Families

/// Vectors for forms with two variable operands and one.
const N2: usize = 1000;
const N1: usize = 200;
const NIMM: usize = 100;

macro_rules! alu_rr {
    ($v:ident, $rng:ident, $op:ident) => {{
        $v.push(form(|a, _| a.$op(cl, dh)).vecs($rng, N2, &[L(ECX), H(EDX)]));
        $v.push(form(|a, _| a.$op(ah, al)).vecs($rng, N2, &[H(EAX), L(EAX)]));
        $v.push(form(|a, _| a.$op(cx, dx)).vecs($rng, N2, &[W(ECX), W(EDX)]));
        $v.push(form(|a, _| a.$op(ecx, edx)).vecs($rng, N2, &[D(ECX), D(EDX)]));
        $v.push(form(|a, _| a.$op(esi, esi)).vecs($rng, N1, &[D(ESI)]));
        $v.push(form(|a, m| a.$op(byte_ptr(m), bl)).vecs($rng, N2, &[M8, L(EBX)]));
        $v.push(form(|a, m| a.$op(word_ptr(m), si)).vecs($rng, N2, &[M16, W(ESI)]));
        $v.push(form(|a, m| a.$op(dword_ptr(m), edi)).vecs($rng, N2, &[M32, D(EDI)]));
    }};
}

macro_rules! alu_lock {
    ($v:ident, $rng:ident, $op:ident) => {{
        $v.push(form(|a, m| a.lock().$op(byte_ptr(m), ch)).vecs($rng, N1, &[M8, H(ECX)]));
        $v.push(form(|a, m| a.lock().$op(dword_ptr(m), edi)).vecs($rng, N1, &[M32, D(EDI)]));
        $v.push(form(|a, m| a.lock().$op(word_ptr(m), 0x8001u32)).vecs($rng, N1, &[M16]));
    }};
}

macro_rules! alu_rm {
    ($v:ident, $rng:ident, $op:ident) => {{
        $v.push(form(|a, m| a.$op(bh, byte_ptr(m))).vecs($rng, N2, &[H(EBX), M8]));
        $v.push(form(|a, m| a.$op(bp, word_ptr(m))).vecs($rng, N2, &[W(EBP), M16]));
        $v.push(form(|a, m| a.$op(ebp, dword_ptr(m))).vecs($rng, N2, &[D(EBP), M32]));
    }};
}

macro_rules! alu_imm {
    ($v:ident, $rng:ident, $op:ident) => {{
        let r = $rng.u32();
        for i in [0u32, 1, 0x7F, 0x80, 0xFF, r & 0xFF] {
            $v.push(form(move |a, _| a.$op(al, i)).vecs($rng, NIMM, &[L(EAX)]));
            $v.push(form(move |a, _| a.$op(dl, i)).vecs($rng, NIMM, &[L(EDX)]));
            $v.push(form(move |a, m| a.$op(byte_ptr(m), i)).vecs($rng, NIMM, &[M8]));
        }
        for i in [0u32, 1, 0x7F, 0xFF80, 0x8000, 0xFFFF, r & 0xFFFF] {
            $v.push(form(move |a, _| a.$op(ax, i)).vecs($rng, NIMM, &[W(EAX)]));
            $v.push(form(move |a, _| a.$op(si, i)).vecs($rng, NIMM, &[W(ESI)]));
            $v.push(form(move |a, m| a.$op(word_ptr(m), i)).vecs($rng, NIMM, &[M16]));
        }
        for i in [
            0u32,
            1,
            0x7F,
            0xFFFF_FF80,
            0x7FFF_FFFF,
            0x8000_0000,
            0xFFFF_FFFF,
            r,
        ] {
            $v.push(form(move |a, _| a.$op(eax, i)).vecs($rng, NIMM, &[D(EAX)]));
            $v.push(form(move |a, _| a.$op(ebx, i)).vecs($rng, NIMM, &[D(EBX)]));
            $v.push(form(move |a, m| a.$op(dword_ptr(m), i)).vecs($rng, NIMM, &[M32]));
        }
    }};
}

#[test]
fn arith_add_adc_sub_sbb_cmp() {
    let rng = &mut Rng::new("arith");
    let mut v = vec![];
    macro_rules! all {
        ($($op:ident)*) => {$( alu_rr!(v, rng, $op); alu_rm!(v, rng, $op); alu_imm!(v, rng, $op); )*};
    }
    all!(add adc sub sbb cmp);
    alu_lock!(v, rng, add);
    alu_lock!(v, rng, adc);
    alu_lock!(v, rng, sub);
    alu_lock!(v, rng, sbb);
    check("add adc sub sbb cmp", v);
}

#[test]
fn logic_and_or_xor_test() {
    let rng = &mut Rng::new("logic");
    let mut v = vec![];
    macro_rules! all {
        ($($op:ident)*) => {$( alu_rr!(v, rng, $op); alu_rm!(v, rng, $op); alu_imm!(v, rng, $op); )*};
    }
    all!(and or xor);
    alu_lock!(v, rng, and);
    alu_lock!(v, rng, or);
    alu_lock!(v, rng, xor);
    // test has no r, r/m form.
    alu_rr!(v, rng, test);
    alu_imm!(v, rng, test);
    check("and or xor test", v);
}

#[test]
fn unary_inc_dec_neg_not() {
    let rng = &mut Rng::new("unary");
    let mut v = vec![];
    macro_rules! all {
        ($($op:ident)*) => {$(
            v.push(form(|a, _| a.$op(cl)).vecs(rng, N1 * 2, &[L(ECX)]));
            v.push(form(|a, _| a.$op(ah)).vecs(rng, N1 * 2, &[H(EAX)]));
            v.push(form(|a, _| a.$op(dx)).vecs(rng, N1 * 2, &[W(EDX)]));
            v.push(form(|a, _| a.$op(ebx)).vecs(rng, N1 * 2, &[D(EBX)]));
            v.push(form(|a, _| a.$op(eax)).vecs(rng, N1 * 2, &[D(EAX)]));
            v.push(form(|a, m| a.$op(byte_ptr(m))).vecs(rng, N1 * 2, &[M8]));
            v.push(form(|a, m| a.$op(word_ptr(m))).vecs(rng, N1 * 2, &[M16]));
            v.push(form(|a, m| a.$op(dword_ptr(m))).vecs(rng, N1 * 2, &[M32]));
            v.push(form(|a, m| a.lock().$op(word_ptr(m))).vecs(rng, N1, &[M16]));
        )*};
    }
    all!(inc dec neg not);
    check("inc dec neg not", v);
}

#[derive(Clone, Copy, PartialEq)]
enum Sh {
    Rol,
    Ror,
    Rcl,
    Rcr,
    Shl,
    Shr,
    Sar,
}

impl Sh {
    fn digit(self) -> u8 {
        match self {
            Sh::Rol => 0,
            Sh::Ror => 1,
            Sh::Rcl => 2,
            Sh::Rcr => 3,
            Sh::Shl => 4,
            Sh::Shr => 5,
            Sh::Sar => 7,
        }
    }
}

/// What a shift or rotate leaves undefined (SDM vol. 2: SAL/SAR/SHL/SHR,
/// RCL/RCR/ROL/ROR): a masked count of 0 changes nothing; OF is defined
/// only for a count of 1; AF is undefined for shifts; CF is undefined for
/// SHL/SHR by at least the operand width.
fn shift_undef(op: Sh, width: u32, count: u32) -> Undef {
    let c = count & 31;
    if c == 0 {
        return Undef::flags(0);
    }
    let mut f = if c != 1 { OF } else { 0 };
    match op {
        Sh::Shl | Sh::Shr => {
            f |= AF;
            if c >= width {
                f |= CF;
            }
        }
        Sh::Sar => f |= AF,
        _ => {}
    }
    Undef::flags(f)
}

fn shift_counts(width: u32, rng: &mut Rng) -> Vec<u32> {
    vec![
        0,
        1,
        2,
        width - 1,
        width,
        width + 1,
        31,
        32,
        33,
        rng.below(256),
    ]
}

fn shift_family(name: &str, ops: &[(Sh, ShiftEmit)]) {
    let rng = &mut Rng::new(name);
    let mut v = vec![];
    for &(op, e) in ops {
        // By cl.
        for (slot, w) in [
            (L(EDX), 8),
            (H(EAX), 8),
            (W(ESI), 16),
            (D(EDI), 32),
            (M8, 8),
            (M16, 16),
            (M32, 32),
        ] {
            let counts = shift_counts(w, rng);
            v.push(
                form(move |a, m| e.by_cl(a, slot, m))
                    .make(rng, N2, &[slot], move |s, r| {
                        let c = if r.pct(70) {
                            r.pick(&counts)
                        } else {
                            r.below(256)
                        };
                        s.regs[ECX] = (s.regs[ECX] & !0xFF) | c;
                    })
                    .undef(move |s| shift_undef(op, w, s.regs[ECX])),
            );
        }
        // By immediate (1 through the D0/D1 encoding).
        for (slot, w) in [(L(EBX), 8), (W(EBX), 16), (D(EBX), 32)] {
            for c in shift_counts(w, rng) {
                v.push(
                    form(move |a, m| e.by_imm(a, slot, m, c))
                        .vecs(rng, NIMM, &[slot])
                        .undef(move |_| shift_undef(op, w, c)),
                );
            }
        }
        for (slot, w, c) in [
            (M8, 8, 3),
            (M16, 16, 9),
            (M32, 32, 1),
            (M32, 32, 5),
            (M32, 32, 31),
        ] {
            v.push(
                form(move |a, m| e.by_imm(a, slot, m, c))
                    .vecs(rng, NIMM, &[slot])
                    .undef(move |_| shift_undef(op, w, c)),
            );
        }
        // C0/C1 with an immediate 1 (the other encoding of count 1).
        for (prefix, opc, w) in [
            (None, 0xC0u8, 8),
            (Some(0x66u8), 0xC1, 16),
            (None, 0xC1, 32),
        ] {
            let modrm = 0xC0 | (op.digit() << 3) | 3; // ebx
            let mut bytes: Vec<u8> = prefix.into_iter().collect();
            bytes.extend_from_slice(&[opc, modrm, 1]);
            let slot = match w {
                8 => L(EBX),
                16 => W(EBX),
                _ => D(EBX),
            };
            v.push(
                form(move |a, _| a.db(&bytes))
                    .vecs(rng, N1, &[slot])
                    .undef(move |_| shift_undef(op, w, 1)),
            );
        }
    }
    check(name, v);
}

/// Emits one shift/rotate mnemonic for any operand slot.
#[derive(Clone, Copy)]
struct ShiftEmit {
    by_cl: fn(&mut CodeAssembler, Slot, u32) -> Result<(), IcedError>,
    by_imm: fn(&mut CodeAssembler, Slot, u32, u32) -> Result<(), IcedError>,
}

impl ShiftEmit {
    fn by_cl(self, a: &mut CodeAssembler, s: Slot, m: u32) -> Result<(), IcedError> {
        (self.by_cl)(a, s, m)
    }
    fn by_imm(self, a: &mut CodeAssembler, s: Slot, m: u32, c: u32) -> Result<(), IcedError> {
        (self.by_imm)(a, s, m, c)
    }
}

fn r8(s: Slot) -> AsmRegister8 {
    match s {
        L(r) => [al, cl, dl, bl][r],
        H(r) => [ah, ch, dh, bh][r],
        _ => unreachable!(),
    }
}
fn r16(r: usize) -> AsmRegister16 {
    [ax, cx, dx, bx, sp, bp, si, di][r]
}
fn r32(r: usize) -> AsmRegister32 {
    [eax, ecx, edx, ebx, esp, ebp, esi, edi][r]
}

macro_rules! shift_emit {
    ($op:ident) => {
        ShiftEmit {
            by_cl: |a, s, m| match s {
                L(_) | H(_) => a.$op(r8(s), cl),
                W(r) => a.$op(r16(r), cl),
                D(r) => a.$op(r32(r), cl),
                M8 => a.$op(byte_ptr(m), cl),
                M16 => a.$op(word_ptr(m), cl),
                M32 => a.$op(dword_ptr(m), cl),
            },
            by_imm: |a, s, m, c| match s {
                L(_) | H(_) => a.$op(r8(s), c),
                W(r) => a.$op(r16(r), c),
                D(r) => a.$op(r32(r), c),
                M8 => a.$op(byte_ptr(m), c),
                M16 => a.$op(word_ptr(m), c),
                M32 => a.$op(dword_ptr(m), c),
            },
        }
    };
}

#[test]
fn shifts_shl_shr_sar() {
    shift_family(
        "shl shr sar",
        &[
            (Sh::Shl, shift_emit!(shl)),
            (Sh::Shr, shift_emit!(shr)),
            (Sh::Sar, shift_emit!(sar)),
        ],
    );
}

#[test]
fn rotates_rol_ror_rcl_rcr() {
    shift_family(
        "rol ror rcl rcr",
        &[
            (Sh::Rol, shift_emit!(rol)),
            (Sh::Ror, shift_emit!(ror)),
            (Sh::Rcl, shift_emit!(rcl)),
            (Sh::Rcr, shift_emit!(rcr)),
        ],
    );
}

/// SHLD/SHRD: count 0 changes nothing; OF only defined for count 1; AF
/// undefined; a count above the operand size leaves result and flags
/// undefined.
fn dshift_undef(width: u32, count: u32, dest: Slot) -> Undef {
    let c = count & 31;
    if c == 0 {
        return Undef::flags(0);
    }
    if c > width {
        return Undef::flags(STATUS).ignore(dest);
    }
    Undef::flags(AF | if c != 1 { OF } else { 0 })
}

#[test]
fn double_shifts_shld_shrd() {
    let rng = &mut Rng::new("shld shrd");
    let mut v = vec![];
    macro_rules! all {
        ($($op:ident)*) => {$(
            for (dest, w) in [(D(EBX), 32), (W(EBX), 16), (M32, 32), (M16, 16)] {
                let counts = [0u32, 1, 2, 15, 16, 17, 31, 32, 33, rng.below(256)];
                v.push(
                    form(move |a, m| match dest {
                        D(_) => a.$op(ebx, edx, cl),
                        W(_) => a.$op(bx, dx, cl),
                        M32 => a.$op(dword_ptr(m), edx, cl),
                        _ => a.$op(word_ptr(m), dx, cl),
                    })
                    .make(rng, N2, &[dest, D(EDX)], move |s, r| {
                        let c = if r.pct(70) { r.pick(&counts) } else { r.below(256) };
                        s.regs[ECX] = (s.regs[ECX] & !0xFF) | c;
                    })
                    .undef(move |s| dshift_undef(w, s.regs[ECX], dest)),
                );
            }
            for c in [0u32, 1, 2, 15, 16, 17, 31, 32] {
                v.push(form(move |a, _| a.$op(ebx, edx, c)).vecs(rng, N1, &[D(EBX), D(EDX)])
                    .undef(move |_| dshift_undef(32, c, D(EBX))));
                v.push(form(move |a, _| a.$op(bx, dx, c)).vecs(rng, N1, &[W(EBX), W(EDX)])
                    .undef(move |_| dshift_undef(16, c, W(EBX))));
            }
            for c in [1u32, 7] {
                v.push(form(move |a, m| a.$op(dword_ptr(m), esi, c)).vecs(rng, N1, &[M32, D(ESI)])
                    .undef(move |_| dshift_undef(32, c, M32)));
            }
            for c in [1u32, 9, 17] {
                v.push(form(move |a, m| a.$op(word_ptr(m), si, c)).vecs(rng, N1, &[M16, W(ESI)])
                    .undef(move |_| dshift_undef(16, c, M16)));
            }
        )*};
    }
    all!(shld shrd);
    check("shld shrd", v);
}

#[test]
fn multiply_mul_imul() {
    let rng = &mut Rng::new("mul imul");
    let mut v = vec![];
    macro_rules! one_op {
        ($($op:ident)*) => {$(
            v.push(form(|a, _| a.$op(bl)).vecs(rng, N2, &[L(EAX), L(EBX)]));
            v.push(form(|a, _| a.$op(ah)).vecs(rng, N2, &[L(EAX), H(EAX)]));
            v.push(form(|a, _| a.$op(cx)).vecs(rng, N2, &[W(EAX), W(ECX)]));
            v.push(form(|a, _| a.$op(esi)).vecs(rng, N2, &[D(EAX), D(ESI)]));
            v.push(form(|a, _| a.$op(eax)).vecs(rng, N1, &[D(EAX)]));
            v.push(form(|a, m| a.$op(byte_ptr(m))).vecs(rng, N2, &[L(EAX), M8]));
            v.push(form(|a, m| a.$op(word_ptr(m))).vecs(rng, N2, &[W(EAX), M16]));
            v.push(form(|a, m| a.$op(dword_ptr(m))).vecs(rng, N2, &[D(EAX), M32]));
        )*};
    }
    one_op!(mul imul);
    v.push(form(|a, _| a.imul_2(cx, dx)).vecs(rng, N2, &[W(ECX), W(EDX)]));
    v.push(form(|a, _| a.imul_2(ecx, edx)).vecs(rng, N2, &[D(ECX), D(EDX)]));
    v.push(form(|a, _| a.imul_2(ebx, ebx)).vecs(rng, N1, &[D(EBX)]));
    v.push(form(|a, m| a.imul_2(si, word_ptr(m))).vecs(rng, N2, &[W(ESI), M16]));
    v.push(form(|a, m| a.imul_2(edi, dword_ptr(m))).vecs(rng, N2, &[D(EDI), M32]));
    let r = rng.u32();
    for i in [
        0u32,
        1,
        0xFFFF_FFFF,
        2,
        0x7F,
        0xFFFF_FF80,
        0x7FFF,
        0x1_0000,
        0x7FFF_FFFF,
        0x8000_0000,
        r,
    ] {
        v.push(form(move |a, _| a.imul_3(ecx, edx, i)).vecs(rng, N1, &[D(EDX)]));
    }
    for i in [0u32, 1, 0xFFFF, 0x7F, 0xFF80, 0x7FFF, 0x8000, r & 0xFFFF] {
        v.push(form(move |a, _| a.imul_3(cx, dx, i)).vecs(rng, N1, &[W(EDX)]));
    }
    for i in [3u32, 0xFFFF_FFF9, 0x12345] {
        v.push(form(move |a, m| a.imul_3(esi, dword_ptr(m), i)).vecs(rng, N1, &[M32]));
    }
    for i in [3u32, 0xFFF9, 0x1234] {
        v.push(form(move |a, m| a.imul_3(si, word_ptr(m), i)).vecs(rng, N1, &[M16]));
    }
    check("mul imul", v);
}

/// Whether DIV/IDIV of the width's dividend (ax, dx:ax, edx:eax) by `d`
/// raises #DE.
fn div_faults(width: u32, signed: bool, s: &State, d: u32) -> bool {
    let (lo, hi) = (s.regs[EAX] as u64, s.regs[EDX] as u64);
    let (n, d) = match width {
        8 => (lo & 0xFFFF, d as u64 & 0xFF),
        16 => (((hi & 0xFFFF) << 16) | (lo & 0xFFFF), d as u64 & 0xFFFF),
        _ => ((hi << 32) | lo, d as u64),
    };
    if d == 0 {
        return true;
    }
    if signed {
        let sx = |v: u64, bits: u32| ((v << (64 - bits)) as i64 >> (64 - bits)) as i128;
        let q = sx(n, 2 * width) / sx(d, width);
        let lim = 1i128 << (width - 1);
        !(-lim..lim).contains(&q)
    } else {
        n / d > (1u64 << width) - 1
    }
}

/// Sets the dividend of a width to `n` (ax, dx:ax or edx:eax).
fn set_dividend(s: &mut State, width: u32, n: u64) {
    match width {
        8 => W(EAX).set(s, n as u32),
        16 => {
            W(EAX).set(s, n as u32);
            W(EDX).set(s, (n >> 16) as u32);
        }
        _ => {
            s.regs[EAX] = n as u32;
            s.regs[EDX] = (n >> 32) as u32;
        }
    }
}

/// Mostly dividends built as q*d + r so the quotient fits (with random
/// magnitudes), otherwise left random (most of those fault).
fn div_tweak(width: u32, signed: bool, divisor: Slot) -> impl Fn(&mut State, &mut Rng) {
    move |s, r| {
        if r.pct(25) {
            return;
        }
        let m = if width == 32 {
            u32::MAX as u64
        } else {
            (1u64 << width) - 1
        };
        let mag = |r: &mut Rng| {
            let v = r.val() as u64 & m;
            v >> r.below(width)
        };
        let mut d = mag(r);
        if d == 0 {
            d = 1 + r.below(7) as u64;
        }
        divisor.set(s, d as u32);
        if !signed {
            let q = mag(r);
            let rem = r.next() % d;
            set_dividend(s, width, q * d + rem);
        } else {
            let sx = |v: u64| ((v << (64 - width)) as i64) >> (64 - width);
            let mut d = sx(d);
            if r.pct(50) {
                d = sx(d.wrapping_neg() as u64);
            }
            divisor.set(s, d as u32);
            let q = mag(r) as i128;
            let q = if r.pct(50) { -q } else { q };
            let q = q.clamp(-(1i128 << (width - 1)), (1i128 << (width - 1)) - 1);
            let prod = q * d as i128;
            let mut rem = (r.next() % d.unsigned_abs()) as i128;
            if prod < 0 || (prod == 0 && r.pct(50)) {
                rem = -rem;
            }
            set_dividend(s, width, (prod + rem) as i64 as u64);
        }
    }
}

#[test]
fn divide_div_idiv() {
    let rng = &mut Rng::new("div idiv");
    let mut v = vec![];
    macro_rules! all {
        ($($op:ident $signed:expr;)*) => {$(
            for (slot, w) in [(L(EBX), 8), (H(ECX), 8), (W(ECX), 16), (D(EBX), 32), (M8, 8), (M16, 16), (M32, 32)] {
                let lo = match w { 8 => W(EAX), 16 => W(EAX), _ => D(EAX) };
                v.push(
                    form(move |a, m| match slot {
                        L(_) | H(_) => a.$op(r8(slot)),
                        W(r) => a.$op(r16(r)),
                        D(r) => a.$op(r32(r)),
                        M8 => a.$op(byte_ptr(m)),
                        M16 => a.$op(word_ptr(m)),
                        M32 => a.$op(dword_ptr(m)),
                    })
                    .make(rng, 0, &[lo, slot], move |s, r| {
                        // Edge dividends, mostly with a zero- or
                        // sign-extended upper half (dx, edx).
                        if w > 8 && r.pct(75) {
                            let neg = lo.get(s) >> (w - 1) & 1 == 1;
                            let hi = if neg && r.pct(50) { u32::MAX } else { 0 };
                            if w == 16 { W(EDX).set(s, hi) } else { s.regs[EDX] = hi }
                        }
                    })
                    .make(rng, 121 + 2 * N2, &[], div_tweak(w, $signed, slot))
                    .fault(move |s| div_faults(w, $signed, s, slot.get(s))),
                );
            }
        )*};
    }
    all!(div false; idiv true;);
    check("div idiv", v);
}

#[test]
fn bcd_adjust() {
    let rng = &mut Rng::new("bcd");
    let mut v = vec![];
    // AL exhaustively, with every combination of AF and CF.
    let exhaustive = |rng: &mut Rng| -> Vec<State> {
        let mut out = vec![];
        for al_ in 0..=255u32 {
            for fl in [0, AF, CF, AF | CF] {
                let mut s = rng.state();
                L(EAX).set(&mut s, al_);
                s.eflags = (s.eflags & !(AF | CF)) | fl;
                out.push(s);
            }
        }
        out
    };
    v.push(form(|a, _| a.daa()).with(exhaustive(rng)));
    v.push(form(|a, _| a.das()).with(exhaustive(rng)));
    v.push(form(|a, _| a.aaa()).with(exhaustive(rng)));
    v.push(form(|a, _| a.aas()).with(exhaustive(rng)));
    // salc (D6, undocumented: al = CF ? 0xFF : 0), also emulated by bt86.
    v.push(form(|a, _| a.db(&[0xD6])).vecs(rng, N1, &[L(EAX)]));
    for imm in [10u32, 16, 7, 1, 255, 0] {
        let mut f = form(move |a, _| a.aam(imm)).fault(move |_| imm == 0);
        for al_ in 0..=255u32 {
            let mut s = rng.state();
            L(EAX).set(&mut s, al_);
            f.vectors.push(s);
        }
        v.push(f);
    }
    for imm in [10u32, 16, 7, 0, 1, 255] {
        v.push(form(move |a, _| a.aad(imm)).vecs(rng, 2 * N2, &[L(EAX), H(EAX)]));
    }
    check("daa das aaa aas aam aad salc", v);
}

#[test]
fn bit_test_bt_bts_btr_btc() {
    let rng = &mut Rng::new("bt");
    let mut v = vec![];
    // Memory forms with a register offset: keep the addressed unit inside
    // the window (offset -64..191 bits from the operand).
    let mem_off = |bits: u32| {
        move |s: &mut State, r: &mut Rng| {
            let o = (r.below(256) as i32 - 64) as u32;
            if bits == 16 {
                W(EDX).set(s, o)
            } else {
                s.regs[EDX] = o
            }
        }
    };
    macro_rules! all {
        ($($op:ident)*) => {$(
            v.push(form(|a, _| a.$op(ecx, edx)).vecs(rng, N2, &[D(ECX), D(EDX)]));
            v.push(form(|a, _| a.$op(cx, dx)).vecs(rng, N2, &[W(ECX), W(EDX)]));
            v.push(form(|a, m| a.$op(dword_ptr(m), edx)).make(rng, N2, &[], mem_off(32)));
            v.push(form(|a, m| a.$op(word_ptr(m), dx)).make(rng, N2, &[], mem_off(16)));
            for i in [0u32, 7, 31, 32, 45, 255] {
                v.push(form(move |a, _| a.$op(ecx, i)).vecs(rng, NIMM, &[D(ECX)]));
            }
            for i in [0u32, 15, 16, 200] {
                v.push(form(move |a, _| a.$op(cx, i)).vecs(rng, NIMM, &[W(ECX)]));
            }
            for i in [0u32, 31, 33, 255] {
                v.push(form(move |a, m| a.$op(dword_ptr(m), i)).vecs(rng, NIMM, &[M32]));
            }
            for i in [3u32, 15, 17] {
                v.push(form(move |a, m| a.$op(word_ptr(m), i)).vecs(rng, NIMM, &[M16]));
            }
        )*};
    }
    all!(bt bts btr btc);
    macro_rules! locked {
        ($($op:ident)*) => {$(
            v.push(form(|a, m| a.lock().$op(dword_ptr(m), edx)).make(rng, N1, &[], mem_off(32)));
        )*};
    }
    locked!(bts btr btc);
    check("bt bts btr btc", v);
}

#[test]
fn bit_scan_bsf_bsr_bswap() {
    let rng = &mut Rng::new("bsf bsr");
    let mut v = vec![];
    let src_tweak = |src: Slot| {
        move |s: &mut State, r: &mut Rng| {
            if r.pct(15) {
                src.set(s, 0);
            } else if r.pct(25) {
                let b = r.below(src.width());
                src.set(s, 1 << b);
            }
        }
    };
    // With a zero source the destination is undefined (Intel) or unchanged
    // (AMD): not compared.
    let zero_undef = |src: Slot, dest: Slot| {
        move |s: &State| {
            if src.get(s) == 0 {
                Undef::default().ignore(dest)
            } else {
                Undef::default()
            }
        }
    };
    macro_rules! all {
        ($($op:ident)*) => {$(
            v.push(form(|a, _| a.$op(ecx, edx)).make(rng, N2, &[D(EDX)], src_tweak(D(EDX))).undef(zero_undef(D(EDX), D(ECX))));
            v.push(form(|a, _| a.$op(cx, dx)).make(rng, N2, &[W(EDX)], src_tweak(W(EDX))).undef(zero_undef(W(EDX), W(ECX))));
            v.push(form(|a, m| a.$op(esi, dword_ptr(m))).make(rng, N2, &[M32], src_tweak(M32)).undef(zero_undef(M32, D(ESI))));
            v.push(form(|a, m| a.$op(si, word_ptr(m))).make(rng, N2, &[M16], src_tweak(M16)).undef(zero_undef(M16, W(ESI))));
        )*};
    }
    all!(bsf bsr);
    for r in [EAX, ECX, EDX, EBX, EBP, ESI, EDI] {
        v.push(form(move |a, _| a.bswap(r32(r))).vecs(rng, N1, &[D(r)]));
    }
    check("bsf bsr bswap", v);
}

#[test]
fn exchange_xadd_cmpxchg_cmpxchg8b() {
    let rng = &mut Rng::new("xadd cmpxchg");
    let mut v = vec![];
    v.push(form(|a, _| a.xadd(cl, dl)).vecs(rng, N2, &[L(ECX), L(EDX)]));
    v.push(form(|a, _| a.xadd(ah, bh)).vecs(rng, N2, &[H(EAX), H(EBX)]));
    v.push(form(|a, _| a.xadd(cx, dx)).vecs(rng, N2, &[W(ECX), W(EDX)]));
    v.push(form(|a, _| a.xadd(ecx, edx)).vecs(rng, N2, &[D(ECX), D(EDX)]));
    v.push(form(|a, _| a.xadd(eax, eax)).vecs(rng, N1, &[D(EAX)]));
    v.push(form(|a, m| a.xadd(byte_ptr(m), bl)).vecs(rng, N2, &[M8, L(EBX)]));
    v.push(form(|a, m| a.xadd(word_ptr(m), si)).vecs(rng, N2, &[M16, W(ESI)]));
    v.push(form(|a, m| a.xadd(dword_ptr(m), edi)).vecs(rng, N2, &[M32, D(EDI)]));
    v.push(form(|a, m| a.lock().xadd(dword_ptr(m), edi)).vecs(rng, N1, &[M32, D(EDI)]));
    v.push(form(|a, _| a.xchg(cl, dh)).vecs(rng, N1, &[L(ECX), H(EDX)]));
    v.push(form(|a, _| a.xchg(cx, dx)).vecs(rng, N1, &[W(ECX), W(EDX)]));
    v.push(form(|a, _| a.xchg(eax, esi)).vecs(rng, N1, &[D(EAX), D(ESI)]));
    v.push(form(|a, m| a.xchg(byte_ptr(m), bl)).vecs(rng, N1, &[M8, L(EBX)]));
    v.push(form(|a, m| a.xchg(word_ptr(m), si)).vecs(rng, N1, &[M16, W(ESI)]));
    v.push(form(|a, m| a.xchg(dword_ptr(m), edi)).vecs(rng, N1, &[M32, D(EDI)]));

    // Half of the inputs have the accumulator equal to the destination.
    let eq = |acc: Slot, dest: Slot| {
        move |s: &mut State, r: &mut Rng| {
            if r.pct(50) {
                acc.set(s, dest.get(s));
            }
        }
    };
    v.push(form(|a, _| a.cmpxchg(cl, dl)).make(rng, N2, &[L(ECX), L(EDX)], eq(L(EAX), L(ECX))));
    v.push(form(|a, _| a.cmpxchg(ah, bl)).make(rng, N2, &[H(EAX), L(EBX)], eq(L(EAX), H(EAX))));
    v.push(form(|a, _| a.cmpxchg(cx, dx)).make(rng, N2, &[W(ECX), W(EDX)], eq(W(EAX), W(ECX))));
    v.push(form(|a, _| a.cmpxchg(ecx, edx)).make(rng, N2, &[D(ECX), D(EDX)], eq(D(EAX), D(ECX))));
    v.push(form(|a, _| a.cmpxchg(eax, ecx)).vecs(rng, N1, &[D(EAX), D(ECX)]));
    v.push(form(|a, m| a.cmpxchg(byte_ptr(m), bl)).make(rng, N2, &[M8, L(EBX)], eq(L(EAX), M8)));
    v.push(form(|a, m| a.cmpxchg(word_ptr(m), si)).make(rng, N2, &[M16, W(ESI)], eq(W(EAX), M16)));
    v.push(form(|a, m| a.cmpxchg(dword_ptr(m), edi)).make(
        rng,
        N2,
        &[M32, D(EDI)],
        eq(D(EAX), M32),
    ));
    v.push(form(|a, m| a.lock().cmpxchg(dword_ptr(m), edi)).make(
        rng,
        N1,
        &[M32, D(EDI)],
        eq(D(EAX), M32),
    ));

    let eq8b = |s: &mut State, r: &mut Rng| match r.below(4) {
        0 | 1 => {
            s.regs[EAX] = s.mem[MEM_DWORD];
            s.regs[EDX] = s.mem[MEM_DWORD + 1];
        }
        2 => {
            if r.pct(50) {
                s.regs[EAX] = s.mem[MEM_DWORD]
            } else {
                s.regs[EDX] = s.mem[MEM_DWORD + 1]
            }
        }
        _ => {}
    };
    v.push(form(|a, m| a.cmpxchg8b(qword_ptr(m))).make(rng, N2, &[M32], eq8b));
    v.push(form(|a, m| a.lock().cmpxchg8b(qword_ptr(m))).make(rng, N1, &[M32], eq8b));
    check("xadd xchg cmpxchg cmpxchg8b", v);
}

#[test]
fn conditional_cmovcc_setcc() {
    let rng = &mut Rng::new("cmovcc setcc");
    let mut v = vec![];
    macro_rules! cmov {
        ($($op:ident)*) => {$(
            v.push(form(|a, _| a.$op(ecx, edx)).vecs(rng, N1, &[]));
            v.push(form(|a, _| a.$op(cx, dx)).vecs(rng, N1, &[]));
            v.push(form(|a, m| a.$op(esi, dword_ptr(m))).vecs(rng, N1, &[]));
            v.push(form(|a, m| a.$op(di, word_ptr(m))).vecs(rng, N1, &[]));
        )*};
    }
    cmov!(cmovo cmovno cmovb cmovae cmove cmovne cmovbe cmova cmovs cmovns cmovp cmovnp cmovl cmovge cmovle cmovg);
    macro_rules! setcc {
        ($($op:ident)*) => {$(
            v.push(form(|a, _| a.$op(cl)).vecs(rng, N1, &[]));
            v.push(form(|a, _| a.$op(ah)).vecs(rng, N1, &[]));
            v.push(form(|a, m| a.$op(byte_ptr(m))).vecs(rng, N1, &[]));
        )*};
    }
    setcc!(seto setno setb setae sete setne setbe seta sets setns setp setnp setl setge setle setg);
    check("cmovcc setcc", v);
}

#[test]
fn misc_lahf_sahf_convert_movzx_movsx() {
    let rng = &mut Rng::new("misc");
    let mut v = vec![];
    v.push(form(|a, _| a.lahf()).vecs(rng, N2, &[]));
    v.push(form(|a, _| a.sahf()).vecs(rng, N2, &[H(EAX)]));
    v.push(form(|a, _| a.cbw()).vecs(rng, N1, &[L(EAX)]));
    v.push(form(|a, _| a.cwde()).vecs(rng, N1, &[W(EAX)]));
    v.push(form(|a, _| a.cwd()).vecs(rng, N1, &[W(EAX)]));
    v.push(form(|a, _| a.cdq()).vecs(rng, N1, &[D(EAX)]));
    macro_rules! ext {
        ($($op:ident)*) => {$(
            v.push(form(|a, _| a.$op(ecx, dl)).vecs(rng, N1, &[L(EDX)]));
            v.push(form(|a, _| a.$op(ecx, ah)).vecs(rng, N1, &[H(EAX)]));
            v.push(form(|a, _| a.$op(ecx, dx)).vecs(rng, N1, &[W(EDX)]));
            v.push(form(|a, _| a.$op(cx, bl)).vecs(rng, N1, &[L(EBX)]));
            v.push(form(|a, _| a.$op(ecx, cl)).vecs(rng, N1, &[L(ECX)]));
            v.push(form(|a, m| a.$op(eax, byte_ptr(m))).vecs(rng, N1, &[M8]));
            v.push(form(|a, m| a.$op(eax, word_ptr(m))).vecs(rng, N1, &[M16]));
            v.push(form(|a, m| a.$op(si, byte_ptr(m))).vecs(rng, N1, &[M8]));
        )*};
    }
    ext!(movzx movsx);
    check("lahf sahf cbw cwde cwd cdq movzx movsx", v);
}
