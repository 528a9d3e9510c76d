//! bt86's benchmarks: criterion benches of the translator (`benches/`),
//! the guest programs (`guests/`, run by the scripts), and the OS suite's
//! runner (`src/bin/suite.rs`) with its chart.

pub mod chart;
