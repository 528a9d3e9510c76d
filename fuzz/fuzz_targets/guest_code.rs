//! Any byte sequence as guest code must end in a guest exception, a normal
//! stop or the run budget: never a host crash, a hang or an internal error.
//!
//!     RUSTC_BOOTSTRAP=1 cargo fuzz run guest_code
#![no_main]

use bt86_runtime::cpu::Stop;
use bt86_runtime::{OutputSink, Machine, MachineConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let config = MachineConfig {
        ram_size: 2 << 20,
        debugcon: OutputSink::None,
        tu_budget: Some(1_000),
        arena_size: 4 << 20,
        ..MachineConfig::default()
    };
    let mut m = Machine::new(config).expect("machine");
    m.load_flat(data, 0x1000, None).expect("load");
    let outcome = m.run();
    assert!(!matches!(outcome.stop, Stop::Internal(_)), "{:?}", outcome.stop);
});
