//! Any byte sequence as guest code, and any guest address, must end in a
//! guest exception, a normal stop or the run budget: never a host crash,
//! a hang, or an access outside the guest's own memory.

use bt86_testsuite::*;

/// xorshift64*: a fixed-seed generator so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn small() -> Options {
    Options {
        ram: 2 << 20,
        stats: false,
        budget: Some(20_000),
        ..Options::default()
    }
}

fn assert_clean(stop: &Stop, what: &str) {
    assert!(
        !matches!(stop, Stop::Internal(_)),
        "{what}: internal error {stop:?}"
    );
}

/// 1,000 programs by default (about 100 ms each here, most of it in
/// accesses to the open bus that random addresses hit: each is an MMIO
/// step until the instruction is emulated); BT86_FUZZ_RUNS for more, and
/// `fuzz/` for real fuzzing.
#[test]
fn random_byte_sequences_never_crash_the_host() {
    let runs: u64 = std::env::var("BT86_FUZZ_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let seed = std::env::var("BT86_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x9E37_79B9_7F4A_7C15);
    let mut rng = Rng(seed);
    let mut outcomes = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..runs {
        let len = 1 + (rng.next() % 96) as usize;
        let mut code: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Start with random registers so addresses and counts vary.
        let mut prologue = Vec::new();
        for op in 0xB8u8..=0xBF {
            if op == 0xBC {
                continue; // keep esp inside RAM so pushes work at first
            }
            prologue.push(op);
            let v = if rng.next().is_multiple_of(2) {
                rng.next() as u32 % (2 << 20)
            } else {
                rng.next() as u32
            };
            prologue.extend_from_slice(&v.to_le_bytes());
        }
        prologue.extend_from_slice(&[0xBC, 0x00, 0x00, 0x10, 0x00]); // mov esp, 0x100000
        prologue.append(&mut code);
        let run = run_image(small(), &prologue, 0x1000, 0x1000);
        assert_clean(&run.stop, &format!("run {i}: {:02x?}", prologue));
        let kind = format!("{:?}", run.stop)
            .split([' ', '(', '{'])
            .next()
            .unwrap_or("")
            .to_string();
        *outcomes.entry(kind).or_default() += 1;
    }
    eprintln!("outcomes of {runs} random programs: {outcomes:?}");
}

#[test]
fn bit_offsets_wrap_inside_the_guest_space() {
    // bt [eax], ecx with a negative bit offset addresses below linear 0:
    // it must wrap to the top of the 32-bit space (not mapped here) and
    // fault there, not reach host memory below the shadow region.
    let r = run_asm_with(Options::paged(), |a| {
        a.xor(eax, eax)?;
        a.mov(ecx, 0xFFFF_FFF8u32)?;
        a.bt(dword_ptr(eax), ecx)?;
        Ok(())
    });
    match r.stop {
        Stop::Unhandled { exc, .. } => {
            assert_eq!(exc.vector, 14);
            assert!(exc.addr >= 0xFFFF_FFF0, "fault at {:#x}", exc.addr);
        }
        s => panic!("expected a fault at the top of the space, got {s:?}"),
    }
}

#[test]
fn accesses_across_the_top_of_the_space_wrap_to_address_zero() {
    // A dword at 0xFFFFFFFE straddles the wrap: its low half is the open
    // bus (not RAM: reads all ones, writes lost), its high half RAM at 0.
    // Nothing outside the guest is touched, nor the end of RAM.
    let r = run_asm(|a| {
        a.mov(dword_ptr(0u32), 0x4433_2211u32)?;
        a.mov(eax, 0xFFFF_FFFEu32)?;
        a.mov(ebx, dword_ptr(eax))?;
        a.mov(dword_ptr(eax), 0xAABB_CCDDu32)?;
        a.mov(ecx, dword_ptr(eax))?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), 0x2211_FFFF, "read across the wrap");
    assert_eq!(r.mem_u32(0), 0x4433_AABB, "the high half written at 0");
    assert_eq!(r.reg(ecx), 0xAABB_FFFF, "the low half lost");
    assert_eq!(r.mem_u32((16 << 20) - 4), 0, "the end of RAM untouched");
}

#[test]
fn string_copies_stop_at_the_end_of_ram() {
    // Beyond RAM is not mapped: the copy faults there instead of running
    // on past the guest's memory.
    let r = run_asm_with(Options::paged(), |a| {
        a.mov(esi, 0u32)?;
        a.mov(edi, (16 << 20) - 64)?;
        a.mov(ecx, 0x4000_0000u32)?;
        a.rep().movsd()?;
        Ok(())
    });
    match r.stop {
        Stop::Unhandled { exc, .. } => {
            assert_eq!(exc.vector, 14);
            assert_eq!(exc.addr, 16 << 20);
            // The copy completed 16 dwords before faulting and says so.
            assert_eq!(r.reg(edi), 16 << 20);
            assert_eq!(r.reg(esi), 64);
            assert_eq!(r.reg(ecx), 0x4000_0000 - 16);
        }
        s => panic!("expected #PF, got {s:?}"),
    }
}

#[test]
#[ignore = "measurement, not a check"]
fn machine_setup_cost() {
    let t = std::time::Instant::now();
    for _ in 0..200 {
        let r = run_image(small(), &[0xF4], 0x1000, 0x1000);
        assert!(matches!(r.stop, Stop::Halted { .. }));
    }
    eprintln!("{:?} per machine", t.elapsed() / 200);
}

#[test]
fn another_thread_can_stop_a_guest_spinning_forever() {
    use bt86_runtime::{Machine, MachineConfig, OutputSink};
    let mut m = Machine::new(MachineConfig {
        ram_size: 2 << 20,
        debugcon: OutputSink::None,
        ..Default::default()
    })
    .unwrap();
    // jmp $ : one TU chained to itself, never leaving generated code.
    m.load_flat(&[0xEB, 0xFE], 0x1000, None).unwrap();
    let handle = m.exit_handle();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        handle.stop();
    });
    let outcome = m.run();
    stopper.join().unwrap();
    assert_eq!(outcome.stop, Stop::Stopped);
    assert_eq!(m.cpu().eip, 0x1000);
}
