//! bt86's runtime: the CPU state outside the translator's ABI, guest RAM
//! and its shadow mapping, the fault handler, the helpers generated code
//! calls, devices behind the port bus, boot loaders, and the machine with
//! its run loop.
//!
//! Unsafe code is fenced into `memory` (guest RAM mappings), `signals`
//! (the fault handler and GS base) and the helper entry points of `cpu`.

extern crate bt86_translator as translator;

pub mod cpu;
pub mod devices;
pub mod loader;
pub mod machine;
pub mod memory;
pub mod paging;
pub mod pc;
pub mod report;
pub mod shadow;
pub mod signals;

pub use machine::{Machine, MachineConfig, MachineError, OutputSink, RunOutcome};
