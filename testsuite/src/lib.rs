//! Shared harness for bt86's integration tests: assemble a guest program
//! with iced's code_asm, run it as a flat 32-bit image, and look at the
//! final state.

use std::io::Write;
use std::sync::{Arc, Mutex};

pub use bt86_runtime::cpu::Stop;
use bt86_runtime::{DebugConSink, Machine, MachineConfig};
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
        let idx = [eax, ecx, edx, ebx, esp, ebp, esi, edi].iter().position(|x| *x == r).unwrap();
        self.machine.cpu().regs[idx]
    }
    pub fn eflags(&self) -> u32 {
        self.machine.cpu().eflags()
    }
    pub fn eip(&self) -> u32 {
        self.machine.cpu().eip
    }
    pub fn mem_u32(&self, addr: u32) -> u32 {
        self.machine.memory().read_u32(addr).unwrap()
    }
    pub fn output_str(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }
    /// Asserts the program ran to its final `hlt`.
    pub fn assert_halted(&self) -> &Self {
        assert!(matches!(self.stop, Stop::Halted { .. }), "guest did not halt: {:?}", self.stop);
        self
    }
}

pub struct Options {
    pub ram: usize,
    pub stats: bool,
    pub budget: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options { ram: 16 << 20, stats: false, budget: Some(50_000_000) }
    }
}

/// Assembles `body` (followed by `hlt`) at LOAD with esp = STACK and runs it.
pub fn run_asm(body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Run {
    run_asm_with(Options::default(), body)
}

pub fn run_asm_with(opts: Options, body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Run {
    let mut a = CodeAssembler::new(32).unwrap();
    a.mov(esp, STACK).unwrap();
    body(&mut a).unwrap();
    a.hlt().unwrap();
    let image = a.assemble(LOAD as u64).unwrap();
    run_image(opts, &image, LOAD, LOAD)
}

/// Runs raw bytes loaded at `load`, entered at `entry`.
pub fn run_image(opts: Options, image: &[u8], load: u32, entry: u32) -> Run {
    let cap = Capture::default();
    let config = MachineConfig {
        ram_size: opts.ram,
        debugcon: DebugConSink::Writer(Box::new(cap.clone())),
        stats: opts.stats,
        tu_budget: opts.budget,
        arena_size: 8 << 20,
        ..MachineConfig::default()
    };
    let mut machine = Machine::new(config).expect("machine");
    machine.load_flat(image, load, Some(entry)).expect("load");
    let outcome = machine.run();
    let output = cap.0.lock().unwrap().clone();
    Run { machine, stop: outcome.stop, output }
}
