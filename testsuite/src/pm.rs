//! A protected-mode test kernel kit: a flat GDT (ring 0 and ring 3 code
//! and data, a TSS with the ring-0 stack), an IDT with the gates a test
//! names, the SYSENTER MSRs, and ring-0 handlers that record their frames.
//! The GDT has room after the fixed entries (from `GDT_FREE`) for the
//! descriptors a test writes itself.

use iced_x86::code_asm::*;

use crate::{LOAD, Options, Run, STACK, assemble_at, run_blocks};

/// The GDT's limit: 32 entries.
pub const GDT_LIMIT: u32 = 0xFF;
/// The first selector after the fixed ones.
pub const GDT_FREE: u32 = 0x30;

/// A segment descriptor (low and high dword): base, limit (in bytes, or
/// in 4 KiB pages with G in `flags`), access byte, flags (G, D/B).
pub fn segment(base: u32, limit: u32, access: u32, flags: u32) -> (u32, u32) {
    let lo = (base << 16) | (limit & 0xFFFF);
    let hi = (base & 0xFF00_0000)
        | ((flags & 0xF) << 20)
        | (limit & 0xF_0000)
        | ((access & 0xFF) << 8)
        | ((base >> 16) & 0xFF);
    (lo, hi)
}

/// A gate descriptor: selector, offset, access byte (P, DPL, type), and
/// the parameter count of a call gate.
pub fn gate(sel: u32, offset: u32, access: u8, params: u32) -> (u32, u32) {
    (
        (sel << 16) | (offset & 0xFFFF),
        (offset & 0xFFFF_0000) | ((access as u32) << 8) | (params & 0x1F),
    )
}

/// Writes descriptor `d` into the GDT at selector `sel`.
pub fn set_descriptor(a: &mut CodeAssembler, sel: u32, d: (u32, u32)) -> Result<(), IcedError> {
    a.mov(dword_ptr(GDT + (sel & !7)), d.0)?;
    a.mov(dword_ptr(GDT + (sel & !7) + 4), d.1)
}

pub const GDT: u32 = 0x1000;
pub const GDTR: u32 = 0x1800;
pub const IDTR: u32 = 0x1810;
pub const IDT: u32 = 0x2000;
pub const TSS: u32 = 0x4000;
pub const SEEN: u32 = 0x3000;
pub const BODY: u32 = 0x10_4000;
pub const USER: u32 = 0x10_C000;
pub const HANDLERS: u32 = 0x10_8000;
pub const RING0_STACK: u32 = 0x7_0000;
pub const USER_STACK: u32 = 0x6_0000;

pub const KCODE: u32 = 0x08;
pub const KDATA: u32 = 0x10;
pub const UCODE: u32 = 0x18 | 3;
pub const UDATA: u32 = 0x20 | 3;
pub const TSS_SEL: u32 = 0x28;

pub fn handler_addr(k: u32) -> u32 {
    HANDLERS + k * 0x100
}

/// GDT, TSS (ring-0 stack), IDT with `gates` (vector, handler, type/DPL
/// byte), the SYSENTER MSRs, then `body` at BODY with CS = KCODE.
pub fn system(gates: &[(u32, u32, u32)]) -> Vec<u8> {
    system_with_iomap(gates, None)
}

/// Like `system`, with an I/O permission bitmap in the TSS that allows
/// only `allowed` ports (all ports denied but those).
pub fn system_with_iomap(gates: &[(u32, u32, u32)], allowed: Option<&[u16]>) -> Vec<u8> {
    let gates = gates.to_vec();
    let allowed: Option<Vec<u16>> = allowed.map(|a| a.to_vec());
    let tss_limit: u32 = if allowed.is_some() {
        0x68 + 0x2000
    } else {
        0x67
    };
    assemble_at(LOAD, move |a| {
        a.mov(esp, STACK)?;
        let gdt: [(u32, u32); 5] = [
            (0x0000_FFFF, 0x00CF_9A00),
            (0x0000_FFFF, 0x00CF_9200),
            (0x0000_FFFF, 0x00CF_FA00),
            (0x0000_FFFF, 0x00CF_F200),
            (
                (TSS << 16) | (tss_limit & 0xFFFF),
                0x0000_8900 | (tss_limit & 0xF_0000),
            ),
        ];
        for (i, (lo, hi)) in gdt.iter().enumerate() {
            a.mov(dword_ptr(GDT + 8 * (i as u32 + 1)), *lo)?;
            a.mov(dword_ptr(GDT + 8 * (i as u32 + 1) + 4), *hi)?;
        }
        a.mov(word_ptr(GDTR), GDT_LIMIT)?;
        a.mov(dword_ptr(GDTR + 2), GDT)?;
        a.lgdt(ptr(GDTR))?;
        a.mov(dword_ptr(TSS + 4), RING0_STACK)?;
        a.mov(dword_ptr(TSS + 8), KDATA)?;
        // The I/O bitmap starts right after the TSS: beyond its limit (no
        // bitmap, every port denied) unless `allowed` asks for one.
        a.mov(word_ptr(TSS + 0x66), 0x68u32)?;
        if let Some(ports) = &allowed {
            a.mov(edi, TSS + 0x68)?;
            a.mov(ecx, 0x800u32)?;
            a.mov(eax, 0xFFFF_FFFFu32)?;
            a.cld()?;
            a.rep().stosd()?;
            for p in ports {
                a.mov(eax, *p as u32)?;
                a.btr(dword_ptr(TSS + 0x68), eax)?;
            }
        }
        a.mov(eax, TSS_SEL)?;
        a.ltr(ax)?;
        for (v, k, kind) in &gates {
            let off = handler_addr(*k);
            a.mov(dword_ptr(IDT + v * 8), (KCODE << 16) | (off & 0xFFFF))?;
            a.mov(
                dword_ptr(IDT + v * 8 + 4),
                (off & 0xFFFF_0000) | (kind << 8),
            )?;
        }
        a.mov(word_ptr(IDTR), 0x7FFu32)?;
        a.mov(dword_ptr(IDTR + 2), IDT)?;
        a.lidt(ptr(IDTR))?;
        for (msr, v) in [
            (0x174u32, KCODE),
            (0x175, RING0_STACK - 0x1000),
            (0x176, handler_addr(7)),
        ] {
            a.mov(ecx, msr)?;
            a.mov(eax, v)?;
            a.xor(edx, edx)?;
            a.wrmsr()?;
        }
        a.mov(eax, KDATA)?;
        a.mov(ds, ax)?;
        a.mov(ss, ax)?;
        a.mov(es, ax)?;
        a.db(&[0xEA])?;
        a.dd(&[BODY])?;
        a.dw(&[KCODE as u16])
    })
}

/// Ring-0 body: iret to USER in ring 3 with `eflags`, DS left at `data_sel`.
pub fn to_user(eflags: u32, data_sel: u32) -> Vec<u8> {
    to_user_with(eflags, data_sel, &[])
}

/// Like `to_user`, after writing `descriptors` (selector, descriptor)
/// into the GDT.
pub fn to_user_with(eflags: u32, data_sel: u32, descriptors: &[(u32, (u32, u32))]) -> Vec<u8> {
    let descriptors = descriptors.to_vec();
    assemble_at(BODY, move |a| {
        for (sel, d) in &descriptors {
            set_descriptor(a, *sel, *d)?;
        }
        a.mov(eax, data_sel)?;
        a.mov(ds, ax)?;
        a.push(UDATA)?;
        a.push(USER_STACK)?;
        a.push(eflags)?;
        a.push(UCODE)?;
        a.push(USER)?;
        a.iretd()
    })
}

/// A ring-0 handler that copies `words` of its frame to SEEN, stores its
/// own esp at SEEN + 0x40 and CS at SEEN + 0x44, then halts.
pub fn recorder(k: u32, words: u32) -> (u32, Vec<u8>) {
    (
        handler_addr(k),
        assemble_at(handler_addr(k), move |a| {
            for i in 0..words {
                a.mov(eax, dword_ptr(esp + 4 * i))?;
                a.mov(dword_ptr(SEEN + 4 * i), eax)?;
            }
            a.mov(dword_ptr(SEEN + 0x40), esp)?;
            a.mov(eax, cs)?;
            a.mov(dword_ptr(SEEN + 0x44), eax)?;
            a.hlt()
        }),
    )
}

/// Runs the kit's system with `gates`, `body` at BODY, `user` at USER and
/// the `handlers` blocks, with statistics on.
pub fn run(
    gates: &[(u32, u32, u32)],
    body: Vec<u8>,
    user: Vec<u8>,
    handlers: Vec<(u32, Vec<u8>)>,
) -> Run {
    run_with_iomap(gates, None, body, user, handlers)
}

/// Like `run`, with the I/O bitmap of `system_with_iomap`.
pub fn run_with_iomap(
    gates: &[(u32, u32, u32)],
    allowed_ports: Option<&[u16]>,
    body: Vec<u8>,
    user: Vec<u8>,
    handlers: Vec<(u32, Vec<u8>)>,
) -> Run {
    let mut blocks = vec![
        (LOAD, system_with_iomap(gates, allowed_ports)),
        (BODY, body),
        (USER, user),
    ];
    blocks.extend(handlers);
    run_blocks(
        Options {
            stats: true,
            ..Options::default()
        },
        &blocks,
    )
}
