//! MMIO: guest physical pages that a device answers are never mapped, so
//! translated code faults on them and the run loop runs the instruction
//! against the device (reads filled in from it, stores sent to it); a mov
//! that keeps doing so is retranslated to call the runtime for it.

use std::sync::{Arc, Mutex};

use bt86_runtime::devices::mmio::MmioDevice;
use bt86_testsuite::*;

/// Where the test device sits: two pages just below the top gigabyte.
const DEV: u32 = 0xC000_0000;

/// One device access: offset, size, and the value for a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Read(u32, u8),
    Write(u32, u8, u64),
}

/// A device whose byte at offset `o` reads as `pattern(o)` until written,
/// and that logs every access.
#[derive(Clone, Default)]
struct Recorder {
    log: Arc<Mutex<Vec<Access>>>,
    written: Arc<Mutex<std::collections::HashMap<u32, u8>>>,
}

fn pattern(offset: u32) -> u8 {
    (offset as u8).wrapping_mul(7) ^ 0xA5
}

impl MmioDevice for Recorder {
    fn read(&mut self, offset: u32, size: u8) -> u64 {
        self.log.lock().unwrap().push(Access::Read(offset, size));
        let written = self.written.lock().unwrap();
        let mut v = [0u8; 8];
        for (i, b) in v.iter_mut().enumerate().take(size as usize) {
            let o = offset + i as u32;
            *b = written.get(&o).copied().unwrap_or_else(|| pattern(o));
        }
        u64::from_le_bytes(v)
    }

    fn write(&mut self, offset: u32, size: u8, value: u64) {
        self.log
            .lock()
            .unwrap()
            .push(Access::Write(offset, size, value));
        let mut written = self.written.lock().unwrap();
        for i in 0..size as u32 {
            written.insert(offset + i, (value >> (8 * i)) as u8);
        }
    }
}

/// What the device reads as at `offset`, `size` bytes.
fn value(offset: u32, size: u32) -> u32 {
    (0..size).fold(0, |v, i| v | (pattern(offset + i) as u32) << (8 * i))
}

/// Runs `body` (at LOAD, esp = STACK, then hlt) with the device attached.
fn run_with_device(
    body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> (Run, Vec<Access>) {
    let dev = Recorder::default();
    let log = dev.log.clone();
    let mut a = CodeAssembler::new(32).unwrap();
    a.mov(esp, STACK).unwrap();
    body(&mut a).unwrap();
    a.hlt().unwrap();
    let image = a.assemble(LOAD as u64).unwrap();
    let opts = Options {
        stats: true,
        ..Options::default()
    };
    let r = run_image_with(opts, &image, LOAD, LOAD, |m| {
        m.register_mmio(DEV, 0x2000, Box::new(dev)).unwrap();
    });
    let log = log.lock().unwrap().clone();
    (r, log)
}

#[test]
fn loads_of_every_width_read_the_device_once() {
    let (r, log) = run_with_device(|a| {
        a.mov(al, byte_ptr(DEV + 1))?;
        a.mov(bx, word_ptr(DEV + 0x10))?;
        a.mov(ecx, dword_ptr(DEV + 0x20))?;
        a.movzx(edx, byte_ptr(DEV + 0x30))?;
        a.movsx(esi, word_ptr(DEV + 0x40))?;
        a.movq(mm0, qword_ptr(DEV + 0x50))?;
        a.movd(edi, mm0)?;
        a.psrlq(mm0, 32)?;
        a.movd(ebp, mm0)
    });
    r.assert_halted();
    assert_eq!(r.reg(eax) & 0xFF, value(1, 1));
    assert_eq!(r.reg(ebx) & 0xFFFF, value(0x10, 2));
    assert_eq!(r.reg(ecx), value(0x20, 4));
    assert_eq!(r.reg(edx), value(0x30, 1));
    assert_eq!(r.reg(esi), value(0x40, 2) as u16 as i16 as i32 as u32);
    assert_eq!(r.reg(edi), value(0x50, 4));
    assert_eq!(r.reg(ebp), value(0x54, 4));
    assert_eq!(
        log,
        [
            Access::Read(1, 1),
            Access::Read(0x10, 2),
            Access::Read(0x20, 4),
            Access::Read(0x30, 1),
            Access::Read(0x40, 2),
            Access::Read(0x50, 8),
        ]
    );
    assert_eq!(r.counter("mmio_emulations"), 6);
}

#[test]
fn stores_of_every_width_write_the_device_once() {
    let (r, log) = run_with_device(|a| {
        a.mov(eax, 0x1122_3344u32)?;
        a.mov(byte_ptr(DEV + 2), al)?;
        a.mov(word_ptr(DEV + 0x12), 0xBEEFu32)?;
        a.mov(dword_ptr(DEV + 0x24), eax)?;
        a.movd(mm1, eax)?;
        a.movq(qword_ptr(DEV + 0x58), mm1)
    });
    r.assert_halted();
    assert_eq!(
        log,
        [
            Access::Write(2, 1, 0x44),
            Access::Write(0x12, 2, 0xBEEF),
            Access::Write(0x24, 4, 0x1122_3344),
            Access::Write(0x58, 8, 0x1122_3344),
        ]
    );
}

#[test]
fn read_modify_write_reads_then_writes_with_the_flags_of_the_operation() {
    let (r, log) = run_with_device(|a| {
        a.mov(ecx, 0xFFFF_FFFFu32)?;
        a.mov(dword_ptr(DEV + 0x100), ecx)?;
        a.add(dword_ptr(DEV + 0x100), 1)?;
        a.pushfd()?;
        a.pop(ebx)?;
        a.xor(byte_ptr(DEV + 0x104), 0xFF)?;
        a.inc(word_ptr(DEV + 0x106))
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx) & (fl::CF | fl::ZF), fl::CF | fl::ZF);
    assert_eq!(
        log,
        [
            Access::Write(0x100, 4, 0xFFFF_FFFF),
            Access::Read(0x100, 4),
            Access::Write(0x100, 4, 0),
            Access::Read(0x104, 1),
            Access::Write(0x104, 1, (value(0x104, 1) ^ 0xFF) as u64),
            Access::Read(0x106, 2),
            Access::Write(0x106, 2, (value(0x106, 2) + 1) as u64 & 0xFFFF),
        ]
    );
}

#[test]
fn movs_copies_between_ram_and_the_device() {
    const BUF: u32 = 0x20_0000;
    let (r, log) = run_with_device(|a| {
        a.mov(esi, DEV + 0x200)?;
        a.mov(edi, BUF)?;
        a.movsd()?;
        a.mov(dword_ptr(BUF + 8), 0xCAFE_F00Du32)?;
        a.mov(esi, BUF + 8)?;
        a.mov(edi, DEV + 0x300)?;
        a.movsd()
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(BUF), value(0x200, 4));
    assert_eq!(r.reg(esi), BUF + 12);
    assert_eq!(r.reg(edi), DEV + 0x304);
    assert_eq!(
        log,
        [Access::Read(0x200, 4), Access::Write(0x300, 4, 0xCAFE_F00D)]
    );
}

#[test]
fn an_access_across_two_device_pages_reaches_both() {
    let (r, log) = run_with_device(|a| {
        a.mov(eax, dword_ptr(DEV + 0xFFE))?;
        a.mov(dword_ptr(DEV + 0xFFD), 0x0102_0304u32)
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), value(0xFFE, 4));
    assert_eq!(
        log,
        [
            Access::Read(0xFFE, 2),
            Access::Read(0x1000, 2),
            Access::Write(0xFFD, 2, 0x0304),
            Access::Write(0xFFF, 1, 0x02),
            Access::Write(0x1000, 1, 0x01),
        ]
    );
}

#[test]
fn a_mov_that_keeps_touching_the_device_calls_the_runtime_instead() {
    let (r, log) = run_with_device(|a| {
        let mut again = a.create_label();
        a.xor(ebx, ebx)?;
        a.mov(ecx, 20u32)?;
        a.set_label(&mut again)?;
        a.mov(eax, dword_ptr(DEV + 0x400))?;
        a.add(ebx, eax)?;
        a.mov(dword_ptr(DEV + 0x400), ecx)?;
        a.dec(ecx)?;
        a.jnz(again)
    });
    r.assert_halted();
    // Each load reads what the previous iteration stored.
    let expected = value(0x400, 4).wrapping_add((2..=20).sum::<u32>());
    assert_eq!(r.reg(ebx), expected);
    assert_eq!(log.len(), 40, "one read and one write per iteration");
    assert!(
        r.counter("mmio_emulations") <= 8,
        "after a few host faults each mov goes to the runtime directly"
    );
    assert!(r.counter("helper_calls.device") >= 32);
}

#[test]
fn device_pages_reached_through_paging() {
    const PD: u32 = 0x30_0000;
    const LIN: u32 = 0x4000_0000;
    let (r, log) = run_with_device(|a| {
        // 4 MiB pages: the first 4 MiB identity, LIN -> the device.
        a.mov(dword_ptr(PD), 0x87u32)?;
        a.mov(dword_ptr(PD + (LIN >> 22) * 4), DEV | 0x87)?;
        a.mov(eax, PD)?;
        a.mov(cr3, eax)?;
        a.mov(eax, cr4)?;
        a.or(eax, 0x10)?;
        a.mov(cr4, eax)?;
        a.mov(eax, cr0)?;
        a.or(eax, 0x8000_0000u32)?;
        a.mov(cr0, eax)?;
        a.mov(eax, dword_ptr(LIN + 0x10))?;
        a.mov(ebx, 0x5566_7788u32)?;
        a.mov(dword_ptr(LIN + 0x1004), ebx)?;
        a.add(word_ptr(LIN + 0x1004), 1)
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), value(0x10, 4));
    assert_eq!(
        log,
        [
            Access::Read(0x10, 4),
            Access::Write(0x1004, 4, 0x5566_7788),
            Access::Read(0x1004, 2),
            Access::Write(0x1004, 2, 0x7789),
        ]
    );
}
