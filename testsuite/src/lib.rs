//! Shared harness for bt86's integration tests: assemble a guest program
//! with iced's code_asm, run it as a flat 32-bit image, and look at the
//! final state.

use std::io::Write;
use std::sync::{Arc, Mutex};

pub use bt86_runtime::cpu::Stop;
use bt86_runtime::{Machine, MachineConfig, OutputSink};
pub use iced_x86::code_asm::*;

/// Where test programs are loaded and start.
pub const LOAD: u32 = 0x0010_0000;
/// The stack pointer test programs start with.
pub const STACK: u32 = 0x0008_0000;
/// A scratch data area test programs may use.
pub const DATA: u32 = 0x0020_0000;

/// Captures the debug console.
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub struct Run {
    pub machine: Machine,
    pub stop: Stop,
    pub output: Vec<u8>,
}

impl Run {
    pub fn regs(&self) -> [u32; 8] {
        self.machine.cpu().regs
    }
    pub fn reg(&self, r: AsmRegister32) -> u32 {
        let idx = [eax, ecx, edx, ebx, esp, ebp, esi, edi]
            .iter()
            .position(|x| *x == r)
            .unwrap();
        self.machine.cpu().regs[idx]
    }
    pub fn eflags(&self) -> u32 {
        self.machine.cpu().eflags()
    }
    pub fn eip(&self) -> u32 {
        self.machine.cpu().eip
    }
    /// Guest physical memory after the run.
    pub fn mem_u32(&self, addr: u32) -> u32 {
        u32::from_le_bytes(self.mem_bytes(addr, 4).try_into().unwrap())
    }
    pub fn output_str(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }
    /// Asserts the program ran to its final `hlt`.
    pub fn assert_halted(&self) -> &Self {
        assert!(
            matches!(self.stop, Stop::Halted { .. }),
            "guest did not halt: {:?}",
            self.stop
        );
        self
    }
}

pub struct Options {
    pub ram: usize,
    pub stats: bool,
    pub budget: Option<u64>,
    /// End the run at a triple fault instead of resetting (the default
    /// here: tests want to see it).
    pub no_reboot: bool,
    /// `MachineConfig::shadow_pages`.
    pub shadow_pages: usize,
    /// The guest starts with paging on ([`paged_ram_prologue`], emitted by
    /// [`run_asm_with`] and [`run_asm_fix`]): RAM identity-mapped with
    /// 4 MiB pages (CR4.PSE), the page directory at [`PAGE_DIR`], and
    /// everything above RAM not present. An access beyond RAM is then a
    /// true #PF (error code P=0, W/R as the access, U/S=0 at CPL 0; CR2
    /// the address), where without paging it reaches the open bus (reads
    /// all ones, writes lost) as on a PC. `ram` must be a multiple of
    /// 4 MiB.
    pub paged_ram: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ram: 16 << 20,
            stats: false,
            budget: Some(50_000_000),
            no_reboot: true,
            shadow_pages: bt86_runtime::shadow::DEFAULT_BUDGET,
            paged_ram: false,
        }
    }
}

impl Options {
    /// The defaults with [`Options::paged_ram`]: beyond RAM is not mapped,
    /// so an access there is a #PF.
    pub fn paged() -> Self {
        Options {
            paged_ram: true,
            ..Options::default()
        }
    }
}

/// Assembles `body` (followed by `hlt`) at LOAD with esp = STACK and runs it.
pub fn run_asm(body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Run {
    run_asm_with(Options::default(), body)
}

pub fn run_asm_with(
    opts: Options,
    body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Run {
    let mut a = CodeAssembler::new(32).unwrap();
    if opts.paged_ram {
        paged_ram_prologue(&mut a, opts.ram).unwrap();
    }
    a.mov(esp, STACK).unwrap();
    body(&mut a).unwrap();
    a.hlt().unwrap();
    let image = a.assemble(LOAD as u64).unwrap();
    run_image(opts, &image, LOAD, LOAD)
}

/// Where [`Options::paged_ram`] puts its page directory: a low page that
/// no test run with it uses (below the code, data and stack areas).
pub const PAGE_DIR: u32 = 0x9000;

/// The guest code that turns [`Options::paged_ram`]'s paging on, for
/// images that do not start with [`run_asm_with`] or [`run_asm_fix`]:
/// one 4 MiB PDE (present, writable, user) per 4 MiB of `ram`, CR3, CR4.PSE
/// and CR0.PG. The rest of the directory is left as it was, so it must be
/// zero (fresh RAM). Run from the flat entry state (paging off, CR4 = 0,
/// eax = 0): it leaves EFLAGS alone (lea, not or) and eax at 0, so the
/// program after it starts as it would without it.
pub fn paged_ram_prologue(a: &mut CodeAssembler, ram: usize) -> Result<(), IcedError> {
    use paging::{CR0_PG, CR4_PSE, pte};
    const LARGE: usize = 4 << 20;
    assert!(
        ram.is_multiple_of(LARGE),
        "paged_ram maps RAM in 4 MiB pages: {ram:#x} bytes is not a multiple"
    );
    for i in 0..ram / LARGE {
        let pde = (i * LARGE) as u32 | (pte::P | pte::RW | pte::US | pte::PS) as u32;
        a.mov(dword_ptr(PAGE_DIR + 4 * i as u32), pde)?;
    }
    a.mov(eax, PAGE_DIR)?;
    a.mov(cr3, eax)?;
    a.mov(eax, cr4)?;
    a.lea(eax, ptr(eax + CR4_PSE))?;
    a.mov(cr4, eax)?;
    a.mov(eax, cr0)?;
    a.lea(eax, ptr(eax + CR0_PG))?;
    a.mov(cr0, eax)?;
    a.mov(eax, 0u32)
}

/// Runs raw bytes loaded at `load`, entered at `entry`.
pub fn run_image(opts: Options, image: &[u8], load: u32, entry: u32) -> Run {
    run_image_with(opts, image, load, entry, |_| {})
}

/// Like [`run_image`], with a chance to configure the machine (attach an
/// interrupt controller, start threads with its exit handle) before it runs.
pub fn run_image_with(
    opts: Options,
    image: &[u8],
    load: u32,
    entry: u32,
    prepare: impl FnOnce(&mut Machine),
) -> Run {
    run_machine(opts, |m| {
        m.load_flat(image, load, Some(entry)).expect("load");
        prepare(m);
    })
}

/// Runs a machine with firmware ROM `rom` (`--bios`) from its reset vector.
pub fn run_bios(opts: Options, rom: &[u8]) -> Run {
    run_machine(opts, |m| m.load_bios(rom).expect("load the ROM"))
}

/// Builds a machine from `opts` with the output captured, lets `load`
/// put a guest in it, and runs it.
fn run_machine(opts: Options, load: impl FnOnce(&mut Machine)) -> Run {
    let cap = Capture::default();
    let config = MachineConfig {
        ram_size: opts.ram,
        debugcon: OutputSink::Writer(Box::new(cap.clone())),
        serial: OutputSink::Writer(Box::new(cap.clone())),
        stats: opts.stats,
        tu_budget: opts.budget,
        no_reboot: opts.no_reboot,
        arena_size: 8 << 20,
        shadow_pages: opts.shadow_pages,
        ..MachineConfig::default()
    };
    let mut machine = Machine::new(config).expect("machine");
    load(&mut machine);
    let outcome = machine.run();
    let output = cap.0.lock().unwrap().clone();
    Run {
        machine,
        stop: outcome.stop,
        output,
    }
}
pub mod native32;

/// The host TSC frequency in GHz, measured over 100 ms (for measurement
/// tests that time guest loops with rdtsc).
pub fn tsc_ghz() -> f64 {
    let t0 = std::time::Instant::now();
    // SAFETY: rdtsc has no preconditions on x86-64.
    let c0 = unsafe { core::arch::x86_64::_rdtsc() };
    std::thread::sleep(std::time::Duration::from_millis(100));
    // SAFETY: as above.
    let c1 = unsafe { core::arch::x86_64::_rdtsc() };
    (c1 - c0) as f64 / t0.elapsed().as_nanos() as f64
}
pub mod paging;
pub mod pm;

// ---------------------------------------------------------------------
// Helpers for the instruction-family tests (stack, branch, string, alu,
// system, faults, chaining).

pub use bt86_runtime::cpu::Exception;

/// EFLAGS bits, for building and checking guest flag images.
pub use bt86_translator::abi::flags as fl;
/// Guest exception vectors.
pub use bt86_translator::abi::vector as vec;

impl Run {
    pub fn mem_u8(&self, addr: u32) -> u8 {
        self.mem_bytes(addr, 1)[0]
    }
    pub fn mem_u16(&self, addr: u32) -> u16 {
        u16::from_le_bytes(self.mem_bytes(addr, 2).try_into().unwrap())
    }
    pub fn mem_bytes(&self, addr: u32, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.machine.memory().read_phys(addr, &mut v).unwrap();
        v
    }
    /// The status flags (CF PF AF ZF SF OF) of the final EFLAGS.
    pub fn status(&self) -> u32 {
        self.eflags() & fl::STATUS
    }
    /// A segment selector (es cs ss ds fs gs).
    pub fn sreg(&self, r: AsmRegisterSegment) -> u32 {
        let idx = [es, cs, ss, ds, fs, gs]
            .iter()
            .position(|x| *x == r)
            .unwrap();
        self.machine.cpu().sregs[idx]
    }
    /// A counter of the statistics report; 0 for an exit kind that never
    /// happened. Panics if the counter was not kept (stats off).
    pub fn counter(&self, name: &str) -> u64 {
        let report = self.machine.report();
        match report.counters.iter().find(|(k, _)| k == name) {
            Some((_, Some(v))) => *v,
            Some((_, None)) => panic!("counter {name} was not kept (run with stats: true)"),
            None if name.starts_with("exits.") || name.starts_with("helper_calls.") => 0,
            None => panic!("no counter {name} in the report:\n{}", report.text()),
        }
    }
    /// (executed, IDENT) guest instructions of code class `class`
    /// ("real16", "kernel32", "user32", ...). Panics if not counted.
    pub fn executed(&self, class: &str) -> (u64, u64) {
        executed(&self.machine.report(), class)
    }
    /// Asserts the run ended with an unhandled guest exception `vector` at
    /// `eip` and returns it.
    pub fn assert_exception(&self, vector: u32, eip: u32) -> Exception {
        match &self.stop {
            Stop::Unhandled { exc, eip: at, .. } if exc.vector == vector && *at == eip => *exc,
            other => panic!("expected exception {vector} at {eip:#x}, got {other:?}"),
        }
    }
}

/// The address every label gets in the first pass of [`run_asm_fix`]: big
/// enough that immediates and displacements get their 32-bit encodings,
/// as the real addresses (all above LOAD) do.
pub const PLACEHOLDER: u32 = LOAD + 0x7_0000;

/// Like [`run_asm_with`], for programs that need the addresses of their
/// own labels as data (jump tables, far pointers, expected EIPs). `body`
/// gets the addresses of the labels it returned (in that order), runs
/// twice: first with placeholders to lay the code out, then with the real
/// addresses. Returns the run and the addresses.
pub fn run_asm_fix(
    opts: Options,
    body: impl Fn(&mut CodeAssembler, &[u32]) -> Result<Vec<CodeLabel>, IcedError>,
) -> (Run, Vec<u32>) {
    let pass = |addrs: &[u32]| {
        assemble_labeled(LOAD, |a| {
            if opts.paged_ram {
                paged_ram_prologue(a, opts.ram)?;
            }
            a.mov(esp, STACK)?;
            let labels = body(a, addrs)?;
            a.hlt()?;
            Ok(labels)
        })
    };
    let (_, ips) = pass(&[PLACEHOLDER; 64]);
    let mut real = ips.clone();
    real.resize(64, PLACEHOLDER);
    let (image, ips2) = pass(&real);
    assert_eq!(ips, ips2, "the code layout changed between the passes");
    (run_image(opts, &image, LOAD, LOAD), ips)
}

/// Assembles `body` at `addr` as it is (no esp setup, no trailing hlt).
/// Assembles at `addr`; returns the bytes and the addresses of the
/// labels `f` returns.
pub fn assemble_labeled(
    addr: u32,
    f: impl FnOnce(&mut CodeAssembler) -> Result<Vec<CodeLabel>, IcedError>,
) -> (Vec<u8>, Vec<u32>) {
    let mut a = CodeAssembler::new(32).unwrap();
    let labels = f(&mut a).unwrap();
    let res = a
        .assemble_options(
            addr as u64,
            iced_x86::BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
        )
        .unwrap();
    let ips = labels
        .iter()
        .map(|l| res.label_ip(l).unwrap() as u32)
        .collect();
    (res.inner.code_buffer, ips)
}

pub fn assemble_at(
    addr: u32,
    body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Vec<u8> {
    let mut a = CodeAssembler::new(32).unwrap();
    body(&mut a).unwrap();
    a.assemble(addr as u64).unwrap()
}

/// Runs blocks of bytes placed at their addresses (gaps are zero), entered
/// at the lowest address.
pub fn run_blocks(opts: Options, blocks: &[(u32, Vec<u8>)]) -> Run {
    let (image, start) = blocks_image(blocks);
    run_image(opts, &image, start, start)
}

/// Blocks of bytes at their addresses as one image (gaps are zero), and
/// the lowest address.
pub fn blocks_image(blocks: &[(u32, Vec<u8>)]) -> (Vec<u8>, u32) {
    let start = blocks
        .iter()
        .map(|b| b.0)
        .min()
        .expect("at least one block");
    let end = blocks
        .iter()
        .map(|b| b.0 as usize + b.1.len())
        .max()
        .unwrap();
    let mut image = vec![0u8; end - start as usize];
    for (addr, bytes) in blocks {
        let off = (*addr - start) as usize;
        assert!(
            image[off..off + bytes.len()].iter().all(|&b| b == 0),
            "blocks overlap"
        );
        image[off..off + bytes.len()].copy_from_slice(bytes);
    }
    (image, start)
}

/// Builds a multiboot v1 ELF32 kernel around `code`, which is assembled
/// for (and loaded at) `load` and entered at its first byte. The multiboot
/// header is placed in front of the code, inside the loaded segment.
pub fn multiboot_elf(
    load: u32,
    build: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Vec<u8> {
    const HDR: u32 = 12;
    let mut a = CodeAssembler::new(32).unwrap();
    build(&mut a).unwrap();
    let code = a.assemble((load + HDR) as u64).unwrap();
    let mut seg = Vec::new();
    let flags: u32 = 0x0000_0003;
    for w in [
        0x1BAD_B002u32,
        flags,
        0u32.wrapping_sub(0x1BAD_B002).wrapping_sub(flags),
    ] {
        seg.extend_from_slice(&w.to_le_bytes());
    }
    seg.extend_from_slice(&code);
    elf32(load, load + HDR, &seg)
}

/// A minimal ELF32 executable with one PT_LOAD segment.
pub fn elf32(load: u32, entry: u32, seg: &[u8]) -> Vec<u8> {
    let mut e = vec![0u8; 0x54];
    e[..4].copy_from_slice(b"\x7fELF");
    e[4] = 1; // ELFCLASS32
    e[5] = 1; // little-endian
    e[6] = 1; // version
    e[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e[18..20].copy_from_slice(&3u16.to_le_bytes()); // EM_386
    e[20..24].copy_from_slice(&1u32.to_le_bytes());
    e[24..28].copy_from_slice(&entry.to_le_bytes());
    e[28..32].copy_from_slice(&0x34u32.to_le_bytes()); // phoff
    e[40..42].copy_from_slice(&0x34u16.to_le_bytes()); // ehsize
    e[42..44].copy_from_slice(&0x20u16.to_le_bytes()); // phentsize
    e[44..46].copy_from_slice(&1u16.to_le_bytes()); // phnum
    let ph = 0x34;
    let w = |e: &mut Vec<u8>, at: usize, v: u32| e[at..at + 4].copy_from_slice(&v.to_le_bytes());
    w(&mut e, ph, 1); // PT_LOAD
    w(&mut e, ph + 4, 0x54); // offset
    w(&mut e, ph + 8, load); // vaddr
    w(&mut e, ph + 12, load); // paddr
    w(&mut e, ph + 16, seg.len() as u32);
    w(&mut e, ph + 20, seg.len() as u32 + 0x1000); // memsz: some bss
    w(&mut e, ph + 24, 7);
    e.extend_from_slice(seg);
    e
}

/// (executed, IDENT) guest instructions of code class `class` in `report`;
/// (0, 0) for a class the report leaves out. Panics if not counted.
pub fn executed(report: &bt86_runtime::report::Report, class: &str) -> (u64, u64) {
    report
        .classes
        .iter()
        .find(|c| c.name == class)
        .map_or((0, 0), |c| {
            let e = c
                .executed
                .unwrap_or_else(|| panic!("executed instructions not counted (stats off)"));
            (e.insns, e.ident)
        })
}
