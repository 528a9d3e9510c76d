//! Starting from a firmware ROM (`--bios`): the reset vector F000:FFF0
//! with CS base 0xFFFF0000, the ROM at the top of the 4 GiB space and its
//! last 128 KiB below 1 MiB, writes to it dropped (by the runtime) or
//! reported (by translated code), and a reset that starts it again.

use bt86_runtime::{Machine, MachineConfig};
use bt86_testsuite::*;

const ROM_SIZE: usize = 64 << 10;

/// A 64 KiB ROM: `reset` at offset 0xFFF0 (the reset vector), `main` at
/// 0xE000 (F000:E000), and `data` at 0xFF00.
fn rom(
    reset: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
    main: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
    data: &[u8],
) -> Vec<u8> {
    let asm16 = |ip: u64, body: &mut dyn FnMut(&mut CodeAssembler) -> Result<(), IcedError>| {
        let mut a = CodeAssembler::new(16).unwrap();
        body(&mut a).unwrap();
        a.assemble(ip).unwrap()
    };
    let mut image = vec![0xF4u8; ROM_SIZE];
    let mut reset = Some(reset);
    let reset = asm16(0xFFF0, &mut |a| reset.take().unwrap()(a));
    assert!(reset.len() <= 16);
    let mut main = Some(main);
    let main = asm16(0xE000, &mut |a| main.take().unwrap()(a));
    image[0xFFF0..0xFFF0 + reset.len()].copy_from_slice(&reset);
    image[0xE000..0xE000 + main.len()].copy_from_slice(&main);
    image[0xFF00..0xFF00 + data.len()].copy_from_slice(data);
    image
}

/// `jmp far F000:E000`.
fn to_main(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.db(&[0xEA, 0x00, 0xE0, 0x00, 0xF0])
}

#[test]
fn the_cpu_starts_at_the_reset_vector_at_the_top_of_the_rom() {
    let image = rom(
        |a| {
            // CS base is 0xFFFF0000 here: cs:[0xFF01] is the top copy.
            a.mov(al, byte_ptr(0xFF01).cs())?;
            a.out(0xE9, al)?;
            to_main(a)
        },
        |a| {
            // F000:FF00 is the copy below 1 MiB.
            a.mov(ax, 0xF000u32)?;
            a.mov(ds, ax)?;
            a.mov(al, byte_ptr(0xFF00))?;
            a.out(0xE9, al)?;
            a.hlt()
        },
        b"LT",
    );
    let r = run_bios(Options::default(), &image);
    r.assert_halted();
    assert_eq!(r.output_str(), "TL");
    assert_eq!(r.sreg(cs), 0xF000);
    assert_eq!(
        r.reg(edx),
        bt86_runtime::cpu::CPUID_SIGNATURE,
        "EDX holds the CPUID signature at reset"
    );
    assert_eq!(r.machine.cpu().cr0, 0x6000_0010);
}

#[test]
fn the_runtime_drops_writes_to_rom() {
    // smsw to memory is emulated by the runtime: its write to the ROM
    // below 1 MiB is dropped, and the byte reads back unchanged.
    let image = rom(
        to_main,
        |a| {
            a.mov(ax, 0xF000u32)?;
            a.mov(ds, ax)?;
            a.smsw(word_ptr(0xFF00))?;
            a.mov(al, byte_ptr(0xFF00))?;
            a.out(0xE9, al)?;
            a.hlt()
        },
        b"=",
    );
    let r = run_bios(Options::default(), &image);
    r.assert_halted();
    assert_eq!(r.output_str(), "=");
}

/// Translated code that writes to ROM (a store, a read-modify-write)
/// runs on, and the ROM keeps its bytes.
#[test]
fn a_translated_write_to_rom_is_dropped() {
    let image = rom(
        to_main,
        |a| {
            a.mov(ax, 0xF000u32)?; // B8 00 F0 at F000:E000
            a.mov(ds, ax)?;
            a.mov(byte_ptr(0xE002), 0x12u32)?;
            a.inc(byte_ptr(0xE002))?;
            a.mov(al, byte_ptr(0xE002))?;
            a.sub(al, 0xF0 - b'=' as u32)?;
            a.out(0xE9, al)?;
            a.hlt()
        },
        b"=",
    );
    let r = run_bios(
        Options {
            stats: true,
            ..Options::default()
        },
        &image,
    );
    r.assert_halted();
    assert_eq!(r.output_str(), "=", "the ROM byte is still 0xF0");
    assert_eq!(r.counter("mmio_emulations"), 2);
}

#[test]
fn a_triple_fault_resets_to_the_reset_vector() {
    // Each start prints B, then shuts down (an IVT limit of 0: int3 is
    // #GP, #DF, shutdown); the reset starts the ROM again.
    let image = rom(
        to_main,
        |a| {
            a.mov(al, b'B' as u32)?;
            a.out(0xE9, al)?;
            a.lidt(ptr(0xFF00).cs())?;
            a.int3()
        },
        &[0; 6],
    );
    assert_restarts(&image);
}

/// `image` prints B at each start and resets the machine: with resets
/// allowed it starts again and again until the run budget ends it.
fn assert_restarts(image: &[u8]) {
    let r = run_bios(
        Options {
            no_reboot: false,
            budget: Some(40),
            ..Options::default()
        },
        image,
    );
    assert_eq!(r.stop, Stop::Budget);
    assert!(r.output_str().starts_with("BBB"), "{}", r.output_str());
    assert!(r.counter("exits.reset") >= 2);
}

#[test]
fn rom_images_of_a_bad_size_are_refused_with_a_clear_error() {
    for size in [0, 1000, 17 << 20] {
        let mut m = Machine::new(MachineConfig {
            ram_size: 16 << 20,
            ..MachineConfig::default()
        })
        .unwrap();
        let e = m.load_bios(&vec![0; size]).unwrap_err().to_string();
        assert!(e.contains("multiple of 64 KiB"), "{size}: {e}");
    }
}

/// Port 0x92's fast reset restarts the machine at the reset vector (each
/// start prints B), or ends the run with `--no-reboot`.
#[test]
fn port_92_resets_the_machine() {
    let image = rom(
        to_main,
        |a| {
            a.mov(al, b'B' as u32)?;
            a.out(0xE9, al)?;
            a.in_(al, 0x92)?;
            a.or(al, 1)?;
            a.out(0x92, al)?;
            a.hlt()
        },
        &[0; 6],
    );
    assert_restarts(&image);
    let r = run_bios(Options::default(), &image);
    assert_eq!(r.stop, Stop::Reset);
    assert_eq!(r.output_str(), "B");
}
