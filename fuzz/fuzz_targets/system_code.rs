//! Any guest code, in any privilege level or mode, against descriptor
//! tables with random entries, must end in a guest exception, a normal
//! stop or the run budget: never a host crash, a hang or an internal
//! error. This reaches the system paths `guest_code` cannot: far
//! transfers through random gates and TSSes, task switches, segment
//! limits of every kind, v8086 and real mode, and paging: the code runs
//! on identity page tables whose entries (and the tables themselves,
//! which it can rewrite) have random flags.
//!
//! Input: a mode byte (bits 0-1: ring 0, ring 3, v8086, real mode; 2-3:
//! IOPL; 4: paging; 5: CR0.WP), 64 bytes of GDT descriptors (selectors
//! 0x20-0x58, and the flags of pages 0xA-0x49 under paging), 64 bytes of
//! IDT gates (vectors 0x20-0x27), then code.
//!
//!     RUSTC_BOOTSTRAP=1 cargo fuzz run -s none system_code
#![no_main]

use bt86_runtime::cpu::Stop;
use bt86_runtime::{Machine, MachineConfig, OutputSink};
use iced_x86::code_asm::*;
use libfuzzer_sys::fuzz_target;

const LOAD: u32 = 0x1000;
const GDT: u32 = 0x2000;
const IDT: u32 = 0x2800;
const TSS: u32 = 0x3000;
const HANDLER: u32 = 0x4000;
const CODE: u32 = 0x5000;
/// Under paging: the page directory and the one page table (the first
/// 4 MiB, identity-mapped).
const PD: u32 = 0xA000;
const PT: u32 = 0xB000;

/// The image at LOAD: a prologue that loads the tables and enters the
/// code in the chosen mode, then the tables, the handler and the code.
fn image(mode: u8, gdt_random: &[u8], idt_random: &[u8], code: &[u8]) -> Vec<u8> {
    let mut a = CodeAssembler::new(32).unwrap();
    let prologue = (|| -> Result<(), IcedError> {
        a.mov(esp, 0x9000u32)?;
        a.push(0x6Fu32)?; // lgdt operand: limit, base on the stack
        a.mov(dword_ptr(esp + 2), GDT)?;
        a.lgdt(ptr(esp))?;
        a.mov(word_ptr(esp), 0x7FFu32)?;
        a.mov(dword_ptr(esp + 2), IDT)?;
        a.lidt(ptr(esp))?;
        a.pop(eax)?;
        a.mov(eax, 0x18u32)?;
        a.ltr(ax)?;
        a.mov(eax, 0x10u32)?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.mov(ss, ax)?;
        if mode & 0x10 != 0 {
            a.mov(eax, PD)?;
            a.mov(cr3, eax)?;
            a.mov(eax, cr0)?;
            a.or(eax, 0x8000_0000u32 | if mode & 0x20 != 0 { 1 << 16 } else { 0 })?;
            a.mov(cr0, eax)?;
        }
        let iopl = ((mode >> 2) & 3) as u32;
        match mode & 3 {
            // Ring 3 at CODE.
            1 => {
                a.push(0x6Bu32)?;
                a.push(0x8000u32)?;
                a.push(0x202 | iopl << 12)?;
                a.push(0x63u32)?;
                a.push(CODE)?;
                a.iretd()
            }
            // v8086 mode at 0500:0000.
            2 => {
                for sel in [0u32, 0, 0x700, 0x600, 0x800, 0xFFFE] {
                    a.push(sel)?;
                }
                a.push(0x2_0002 | iopl << 12)?;
                a.push(0x500u32)?;
                a.push(0u32)?;
                a.iretd()
            }
            // Ring 0 at CODE.
            _ => {
                a.mov(eax, CODE)?;
                a.jmp(eax)
            }
        }
    })();
    prologue.unwrap();
    let prologue = a.assemble(LOAD as u64).unwrap();
    let mut image = vec![0u8; ((CODE - LOAD) as usize + code.len()).max((PT + 0x1000 - LOAD) as usize)];
    image[..prologue.len()].copy_from_slice(&prologue);
    let put = |image: &mut Vec<u8>, at: u32, bytes: &[u8]| {
        let off = (at - LOAD) as usize;
        image[off..off + bytes.len()].copy_from_slice(bytes);
    };
    let descriptor = |lo: u32, hi: u32| [lo.to_le_bytes(), hi.to_le_bytes()].concat();
    // Flat ring-0 code/data, the TSS, the random ones, ring-3 code/data.
    put(&mut image, GDT + 0x08, &descriptor(0xFFFF, 0x00CF_9A00));
    put(&mut image, GDT + 0x10, &descriptor(0xFFFF, 0x00CF_9200));
    put(&mut image, GDT + 0x18, &descriptor((TSS << 16) | 0x67, 0x0000_8900));
    put(&mut image, GDT + 0x20, gdt_random);
    put(&mut image, GDT + 0x60, &descriptor(0xFFFF, 0x00CF_FA00));
    put(&mut image, GDT + 0x68, &descriptor(0xFFFF, 0x00CF_F200));
    // Every vector to a handler that returns; 0x20-0x27 random.
    for v in 0..256u32 {
        let gate = descriptor((0x08 << 16) | (HANDLER & 0xFFFF), (HANDLER & 0xFFFF_0000) | 0xEE00);
        put(&mut image, IDT + 8 * v, &gate);
    }
    put(&mut image, IDT + 8 * 0x20, idt_random);
    // The ring-0 stack, and an I/O bitmap offset past the limit.
    put(&mut image, TSS + 4, &0x9000u32.to_le_bytes());
    put(&mut image, TSS + 8, &0x10u32.to_le_bytes());
    put(&mut image, TSS + 0x66, &0x68u16.to_le_bytes());
    // The handler skips nothing: it counts on the budget to end loops.
    put(&mut image, HANDLER, &[0xCF]); // iretd
    put(&mut image, CODE, code);
    if mode & 0x10 != 0 {
        // Pages 0xA-0x49 (the page tables among them) get P, R/W, U/S,
        // A, D and G at random; the others are present, writable, user.
        put(&mut image, PD, &(PT | 0x27).to_le_bytes());
        for page in 0..1024u32 {
            let flags = match page.checked_sub(0xA).and_then(|i| gdt_random.get(i as usize)) {
                Some(&r) => r as u32 & 0x167,
                None => 0x67,
            };
            put(&mut image, PT + 4 * page, &((page << 12) | flags).to_le_bytes());
        }
    }
    image
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 1 + 64 + 64 + 1 {
        return;
    }
    let (mode, rest) = (data[0], &data[1..]);
    let (gdt_random, rest) = rest.split_at(64);
    let (idt_random, code) = rest.split_at(64);
    let config = MachineConfig {
        ram_size: 2 << 20,
        debugcon: OutputSink::None,
        serial: OutputSink::None,
        tu_budget: Some(2_000),
        no_reboot: true,
        arena_size: 4 << 20,
        ..MachineConfig::default()
    };
    let mut m = Machine::new(config).expect("machine");
    let image = image(mode, gdt_random, idt_random, code);
    m.load_flat(&image, LOAD, None).expect("load");
    if mode & 3 == 3 {
        // Real mode at 0500:0000.
        m.reset_real(0x500, 0);
    }
    let outcome = m.run();
    assert!(!matches!(outcome.stop, Stop::Internal(_)), "{:?}", outcome.stop);
});
