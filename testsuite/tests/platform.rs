//! The PC platform as a guest sees it through its ports and MMIO: each
//! device answers at its address, and the timers interrupt the CPU
//! through the 8259 and through the APICs on one virtual clock while the
//! CPU waits in hlt without spinning. (Each device's own behaviour is
//! unit-tested in `runtime/src/devices`.)

use bt86_testsuite::pm::{self, handler_addr};
use bt86_testsuite::*;

const OUT: u32 = pm::SEEN + 0x100;
const TICKS: u32 = pm::SEEN + 0x80;

/// Stores the dword in eax at OUT + 4 * `slot`.
fn store(a: &mut CodeAssembler, slot: u32) -> Result<(), IcedError> {
    a.mov(dword_ptr(OUT + 4 * slot), eax)
}

#[test]
fn each_device_answers_at_its_port() {
    let r = run_asm(|a| {
        // fw_cfg: the "QEMU" signature, then the RAM size.
        a.mov(dx, 0x510u32)?;
        a.xor(eax, eax)?;
        a.out(dx, ax)?;
        a.mov(dx, 0x511u32)?;
        for i in 0..4 {
            a.in_(al, dx)?;
            a.mov(byte_ptr(OUT + i), al)?;
        }
        a.mov(dx, 0x510u32)?;
        a.mov(eax, 3u32)?;
        a.out(dx, ax)?;
        a.mov(dx, 0x511u32)?;
        for i in 0..4 {
            a.in_(al, dx)?;
            a.mov(byte_ptr(OUT + 4 + i), al)?;
        }
        // PCI: vendor/device of 00.0 and the class of 01.0.
        a.mov(dx, 0xCF8u32)?;
        a.mov(eax, 0x8000_0000u32)?;
        a.out(dx, eax)?;
        a.mov(dx, 0xCFCu32)?;
        a.in_(eax, dx)?;
        store(a, 2)?;
        a.mov(dx, 0xCF8u32)?;
        a.mov(eax, 0x8000_0808u32)?;
        a.out(dx, eax)?;
        a.mov(dx, 0xCFCu32)?;
        a.in_(eax, dx)?;
        store(a, 3)?;
        // i8042 self-test.
        a.mov(al, 0xAA)?;
        a.out(0x64, al)?;
        a.in_(al, 0x60)?;
        a.movzx(eax, al)?;
        store(a, 4)?;
        // CMOS: extended memory above 16 MiB in 64 KiB units (0x34/0x35)
        // and the RTC's status register D (valid RAM and time).
        a.mov(al, 0x34)?;
        a.out(0x70, al)?;
        a.in_(al, 0x71)?;
        a.mov(byte_ptr(OUT + 20), al)?;
        a.mov(al, 0x35)?;
        a.out(0x70, al)?;
        a.in_(al, 0x71)?;
        a.mov(byte_ptr(OUT + 21), al)?;
        a.mov(al, 0x0D)?;
        a.out(0x70, al)?;
        a.in_(al, 0x71)?;
        a.mov(byte_ptr(OUT + 22), al)?;
        // POST port: the last code written reads back.
        a.mov(al, 0x5A)?;
        a.out(0x80, al)?;
        a.in_(al, 0x80)?;
        a.mov(byte_ptr(OUT + 23), al)?;
        // The local APIC's version register (MMIO).
        a.mov(eax, dword_ptr(0xFEE0_0030u32))?;
        store(a, 6)?;
        // The I/O APIC's version through IOREGSEL/IOWIN.
        a.mov(dword_ptr(0xFEC0_0000u32), 1u32)?;
        a.mov(eax, dword_ptr(0xFEC0_0010u32))?;
        store(a, 7)
    });
    r.assert_halted();
    assert_eq!(r.mem_bytes(OUT, 4), b"QEMU");
    assert_eq!(r.mem_u32(OUT + 4), 16 << 20, "fw_cfg RAM size (16 MiB)");
    assert_eq!(r.mem_u32(OUT + 8), 0x1237_8086, "i440FX at 00.0");
    assert_eq!(r.mem_u32(OUT + 12) >> 16, 0x0601, "PIIX3 is an ISA bridge");
    assert_eq!(r.mem_u32(OUT + 16), 0x55, "i8042 self-test passed");
    assert_eq!(r.mem_u16(OUT + 20), 0, "no memory above 16 MiB");
    assert_eq!(r.mem_u8(OUT + 22), 0x80, "RTC register D: VRT");
    assert_eq!(r.mem_u8(OUT + 23), 0x5A, "POST code");
    assert_eq!(r.mem_u32(OUT + 24), 0x0005_0014, "local APIC version");
    assert_eq!(r.mem_u32(OUT + 28), 0x0017_0011, "I/O APIC version");
}

/// Programs the 8259 pair (vectors 0x20/0x28) with only IRQ `irq` of the
/// master unmasked (0 for the PIT), or the slave's IRQ 8 (RTC) through the
/// cascade.
fn program_pic(a: &mut CodeAssembler, master_imr: u32, slave_imr: u32) -> Result<(), IcedError> {
    for (port, v) in [
        (0x20, 0x11),
        (0x21, 0x20),
        (0x21, 0x04),
        (0x21, 0x01),
        (0x21, master_imr),
        (0xA0, 0x11),
        (0xA1, 0x28),
        (0xA1, 0x02),
        (0xA1, 0x01),
        (0xA1, slave_imr),
    ] {
        a.mov(al, v)?;
        a.out(port, al)?;
    }
    Ok(())
}

/// A handler that counts in TICKS, acknowledges the RTC if `rtc` (reads
/// register C), sends EOI to the PIC (both chips if `slave`) or to the
/// local APIC, and returns.
fn tick_handler(k: u32, eoi: Eoi) -> (u32, Vec<u8>) {
    let at = handler_addr(k);
    let code = assemble_at(at, |a| {
        a.push(eax)?;
        a.inc(dword_ptr(TICKS))?;
        match eoi {
            Eoi::Pic => {
                a.mov(al, 0x20)?;
                a.out(0x20, al)?;
            }
            Eoi::PicSlaveRtc => {
                a.mov(al, 0x0C)?;
                a.out(0x70, al)?;
                a.in_(al, 0x71)?;
                a.mov(al, 0x20)?;
                a.out(0xA0, al)?;
                a.out(0x20, al)?;
            }
            Eoi::Apic => a.mov(dword_ptr(0xFEE0_00B0u32), 0u32)?,
        }
        a.pop(eax)?;
        a.iretd()
    });
    (at, code)
}

#[derive(Clone, Copy)]
enum Eoi {
    Pic,
    PicSlaveRtc,
    Apic,
}

/// Waits in hlt until TICKS reaches `n`, then halts with interrupts off.
fn wait_ticks(a: &mut CodeAssembler, n: u32) -> Result<(), IcedError> {
    let mut wait = a.create_label();
    a.sti()?;
    a.set_label(&mut wait)?;
    a.hlt()?;
    a.cmp(dword_ptr(TICKS), n)?;
    a.jb(wait)?;
    a.cli()?;
    // The TSC after the wait, for the caller.
    a.rdtsc()?;
    a.mov(dword_ptr(OUT), eax)?;
    a.mov(dword_ptr(OUT + 4), edx)?;
    a.hlt()
}

/// Thread CPU time, to check that waiting in hlt does not spin.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime with a valid clock id and timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Runs `body` with `gates`, timing it in wall and CPU time; returns the
/// run and (wall ns, cpu ns).
fn timed(gates: &[(u32, u32, u32)], body: Vec<u8>, handler: (u32, Vec<u8>)) -> (Run, u64, u64) {
    let wall = std::time::Instant::now();
    let cpu = thread_cpu_ns();
    let r = pm::run(gates, body, vec![], vec![handler]);
    let cpu = thread_cpu_ns() - cpu;
    (r, wall.elapsed().as_nanos() as u64, cpu)
}

/// The guest's TSC at the end, in ns of its 2 GHz rate.
fn guest_tsc_ns(r: &Run) -> u64 {
    (r.mem_u32(OUT) as u64 | (r.mem_u32(OUT + 4) as u64) << 32) / 2
}

#[test]
fn the_pit_ticks_through_the_8259_while_the_cpu_idles_in_hlt() {
    // Channel 0, mode 2, 100 Hz (divisor 11932): 20 ticks are 200 ms.
    let body = assemble_at(pm::BODY, |a| {
        program_pic(a, 0xFE, 0xFF)?;
        a.mov(al, 0x34)?;
        a.out(0x43, al)?;
        a.mov(al, (11932 & 0xFF) as u32)?;
        a.out(0x40, al)?;
        a.mov(al, (11932 >> 8) as u32)?;
        a.out(0x40, al)?;
        wait_ticks(a, 20)
    });
    let (r, wall, cpu) = timed(&[(0x20, 1, 0x8E)], body, tick_handler(1, Eoi::Pic));
    r.assert_halted();
    assert_eq!(r.mem_u32(TICKS), 20);
    // 20 periods of 10 ms (the first starts at the count's load): at
    // least 190 ms of virtual time, which the TSC shows too (it counts
    // the same clock).
    let tsc = guest_tsc_ns(&r);
    assert!(tsc >= 190_000_000, "the TSC says only {tsc} ns went by");
    assert!(
        wall >= 190_000_000,
        "done in {wall} ns: the ticks came too fast"
    );
    assert!(
        cpu < wall / 2,
        "the CPU thread used {cpu} ns of CPU in {wall} ns: hlt spins"
    );
}

#[test]
fn the_rtc_periodic_interrupt_comes_through_the_slave() {
    // Register A rate 10: 64 Hz; register B PIE. 8 interrupts: 125 ms.
    let body = assemble_at(pm::BODY, |a| {
        program_pic(a, 0xFB, 0xFE)?;
        a.mov(al, 0x0A)?;
        a.out(0x70, al)?;
        a.mov(al, 0x2A)?;
        a.out(0x71, al)?;
        a.mov(al, 0x0B)?;
        a.out(0x70, al)?;
        a.mov(al, 0x42)?;
        a.out(0x71, al)?;
        wait_ticks(a, 8)
    });
    let (r, wall, _) = timed(&[(0x28, 1, 0x8E)], body, tick_handler(1, Eoi::PicSlaveRtc));
    r.assert_halted();
    assert_eq!(r.mem_u32(TICKS), 8);
    // The first may come at once (PF was already set when PIE went on,
    // or the period was under way): at least 6 periods of 15.6 ms.
    assert!(guest_tsc_ns(&r) >= 90_000_000);
    assert!(wall >= 90_000_000);
}

#[test]
fn the_local_apic_timer_interrupts_periodically() {
    // Divide by 1 at the 100 MHz crystal: 1,000,000 counts are 10 ms.
    let body = assemble_at(pm::BODY, |a| {
        // Everything masked at the 8259: only the APIC timer can wake.
        program_pic(a, 0xFF, 0xFF)?;
        a.mov(dword_ptr(0xFEE0_03E0u32), 0x0Bu32)?; // divide by 1
        a.mov(dword_ptr(0xFEE0_0320u32), 0x2_0040u32)?; // periodic, vector 0x40
        a.mov(dword_ptr(0xFEE0_0380u32), 1_000_000u32)?;
        wait_ticks(a, 10)?;
        Ok(())
    });
    let (r, wall, cpu) = timed(&[(0x40, 1, 0x8E)], body, tick_handler(1, Eoi::Apic));
    r.assert_halted();
    assert_eq!(r.mem_u32(TICKS), 10);
    assert!(guest_tsc_ns(&r) >= 95_000_000);
    assert!(wall >= 95_000_000);
    assert!(cpu < wall / 2, "hlt spins: {cpu} ns of CPU in {wall} ns");
}

/// Closes (`open` false) or opens the keyboard controller's A20 gate:
/// command 0xD1 writes its output port (bit 0 keeps the CPU out of reset).
fn kbc_a20(a: &mut CodeAssembler, open: bool) -> Result<(), IcedError> {
    a.mov(al, 0xD1)?;
    a.out(0x64, al)?;
    a.mov(al, if open { 0x03 } else { 0x01 })?;
    a.out(0x60, al)
}

#[test]
fn a20_closed_wraps_data_and_code_at_one_megabyte() {
    // A routine at 0x700 returning its immediate: `mov eax, imm32; ret`.
    const LOW: u32 = 0x700;
    // The test runs below 1 MiB: its own code must not wrap.
    const CODE: u32 = 0x8000;
    let image = assemble_at(CODE, |a| {
        a.mov(esp, STACK)?;
        a.mov(byte_ptr(0x0500u32), 0x11u32)?;
        a.mov(byte_ptr(0x10_0500u32), 0x22u32)?;
        a.mov(byte_ptr(LOW), 0xB8u32)?;
        a.mov(dword_ptr(LOW + 1), 1u32)?;
        a.mov(byte_ptr(LOW + 5), 0xC3u32)?;
        kbc_a20(a, false)?;
        // Data: 0x100500 is 0x500 now, and a store there lands low.
        a.movzx(eax, byte_ptr(0x10_0500u32))?;
        store(a, 0)?;
        a.mov(byte_ptr(0x10_0600u32), 0x33u32)?;
        a.movzx(eax, byte_ptr(0x0600u32))?;
        store(a, 1)?;
        // Code: the routine runs at its alias, and patching it through
        // the low address is seen there.
        a.mov(eax, 0x10_0000 + LOW)?;
        a.call(eax)?;
        store(a, 2)?;
        a.mov(dword_ptr(LOW + 1), 2u32)?;
        a.mov(eax, 0x10_0000 + LOW)?;
        a.call(eax)?;
        store(a, 3)?;
        // And the other way: run it low, patch it through the alias.
        a.mov(eax, LOW)?;
        a.call(eax)?;
        a.mov(dword_ptr(0x10_0000 + LOW + 1), 3u32)?;
        a.mov(eax, LOW)?;
        a.call(eax)?;
        store(a, 7)?;
        // Port 0x92's gate opens it again, whatever the controller says.
        a.in_(al, 0x92)?;
        a.or(al, 2)?;
        a.out(0x92, al)?;
        a.movzx(eax, byte_ptr(0x10_0500u32))?;
        store(a, 4)?;
        // Closing the fast gate leaves it closed, opening the
        // controller's opens it.
        a.in_(al, 0x92)?;
        a.and(al, 0xFD)?;
        a.out(0x92, al)?;
        a.movzx(eax, byte_ptr(0x10_0500u32))?;
        store(a, 5)?;
        kbc_a20(a, true)?;
        a.movzx(eax, byte_ptr(0x10_0500u32))?;
        store(a, 6)?;
        a.hlt()
    });
    let r = run_image(Options::default(), &image, CODE, CODE);
    r.assert_halted();
    assert_eq!(r.mem_u32(OUT), 0x11, "0x100500 reads 0x500 with A20 closed");
    assert_eq!(
        r.mem_u32(OUT + 4),
        0x33,
        "a store to 0x100600 lands at 0x600"
    );
    assert_eq!(r.mem_u32(OUT + 8), 1, "code runs at its alias");
    assert_eq!(
        r.mem_u32(OUT + 12),
        2,
        "patching the low copy reaches the alias"
    );
    assert_eq!(
        r.mem_u32(OUT + 28),
        3,
        "patching through the alias reaches the low copy"
    );
    assert_eq!(r.mem_u32(OUT + 16), 0x22, "the fast gate opens A20");
    assert_eq!(r.mem_u32(OUT + 20), 0x11, "both gates closed");
    assert_eq!(r.mem_u32(OUT + 24), 0x22, "the controller's gate opens A20");
    assert_eq!(r.mem_u8(0x10_0600), 0, "nothing was stored above 1 MiB");
}
