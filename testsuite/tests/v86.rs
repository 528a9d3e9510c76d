//! Virtual-8086 mode (Intel SDM Vol. 3A, chapter 20): iret into it from
//! ring 0, paragraph-based segments, interrupts and exceptions to the
//! ring-0 handler with the v8086 frame, the IOPL-sensitive instructions,
//! I/O through the TSS bitmap alone, and a monitor returning with iret.

use bt86_testsuite::pm::*;
use bt86_testsuite::*;

/// The v8086 code runs at FFFF:C010, which is linear USER.
const V86_CS: u32 = 0xFFFF;
const V86_IP: u32 = USER - (V86_CS << 4);
const V86_SS: u32 = 0x5000;
const V86_SP: u32 = 0xFFFE;
const VM: u32 = 1 << 17;

/// 16-bit code for FFFF:C010.
fn v86_code(body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(16).unwrap();
    body(&mut a).unwrap();
    a.assemble(V86_IP as u64).unwrap()
}

/// Ring-0 body: iret into v8086 mode with `eflags` (VM added) and the
/// data segments ES, DS, FS, GS = `data`.
fn to_v86(eflags: u32, data: [u32; 4]) -> Vec<u8> {
    assemble_at(BODY, move |a| {
        for sel in data.iter().rev() {
            a.push(*sel)?; // GS, FS, DS, ES
        }
        a.push(V86_SS)?;
        a.push(V86_SP)?;
        a.push(eflags | VM)?;
        a.push(V86_CS)?;
        a.push(V86_IP)?;
        a.iretd()
    })
}

/// A ring-0 handler that stores `words` of its frame at SEEN, its DS at
/// SEEN + 0x48, and halts.
fn v86_recorder(k: u32, words: u32) -> (u32, Vec<u8>) {
    (
        handler_addr(k),
        assemble_at(handler_addr(k), move |a| {
            for i in 0..words {
                a.mov(eax, dword_ptr(esp + 4 * i))?;
                a.mov(dword_ptr(SEEN + 4 * i), eax)?;
            }
            a.mov(eax, ds)?;
            a.mov(dword_ptr(SEEN + 0x48), eax)?;
            a.hlt()
        }),
    )
}

#[test]
fn int_in_v86_mode_with_iopl_3_pushes_the_v86_frame_on_the_ring_0_stack() {
    let code = v86_code(|a| {
        a.mov(si, ds)?;
        a.mov(bx, ss)?;
        a.int(0x21)
    });
    let after_int = V86_IP + code.len() as u32;
    let r = run_with_iomap(
        &[(0x21, 1, 0xEE)],
        None,
        to_v86(0x3002, [0x1234, 0x2345, 0x3456, 0x4567]),
        code,
        vec![v86_recorder(1, 9)],
    );
    r.assert_halted();
    let frame: Vec<u32> = (0..9).map(|i| r.mem_u32(SEEN + 4 * i)).collect();
    assert_eq!(
        [frame[0], frame[1], frame[3], frame[4]],
        [after_int, V86_CS, V86_SP, V86_SS],
        "EIP, CS, ESP, SS"
    );
    assert_ne!(frame[2] & VM, 0, "EFLAGS image has VM");
    assert_eq!(
        &frame[5..],
        [0x1234, 0x2345, 0x3456, 0x4567],
        "ES, DS, FS, GS"
    );
    assert_eq!(r.mem_u32(SEEN + 0x48), 0, "the handler's DS is null");
    assert_eq!(r.reg(esi) & 0xFFFF, 0x2345);
    assert_eq!(r.reg(ebx) & 0xFFFF, V86_SS);
    assert_eq!(r.eflags() & VM, 0, "the handler runs without VM");
    assert!(
        r.machine
            .report()
            .classes
            .iter()
            .any(|c| c.name == "v86" && c.translated.units > 0),
        "v8086 code has its own statistics class"
    );
}

#[test]
fn iopl_sensitive_instructions_fault_in_v86_mode_below_iopl_3() {
    for (bytes, name) in [
        (vec![0xFA], "cli"),
        (vec![0xFB], "sti"),
        (vec![0x9C], "pushf"),
        (vec![0x9D], "popf"),
        (vec![0x66, 0x9C], "pushfd"),
        (vec![0xCD, 0x21], "int 0x21"),
        (vec![0xCF], "iret"),
        (vec![0xF4], "hlt (privileged)"),
        (vec![0x0F, 0x20, 0xC0], "mov eax, cr0 (privileged)"),
    ] {
        let r = run_with_iomap(
            &[(13, 1, 0x8E), (0x21, 2, 0xEE)],
            None,
            to_v86(0x0002, [0; 4]),
            bytes,
            vec![v86_recorder(1, 3), v86_recorder(2, 2)],
        );
        r.assert_halted();
        assert_eq!(r.mem_u32(SEEN), 0, "{name}: #GP(0)");
        assert_eq!(r.mem_u32(SEEN + 4), V86_IP, "{name}: at its own IP");
        assert_eq!(r.mem_u32(SEEN + 8), V86_CS, "{name}");
    }
}

#[test]
fn int3_and_protected_mode_only_instructions_in_v86_mode() {
    // int3 is not IOPL-sensitive: it reaches its own handler.
    let r = run_with_iomap(
        &[(3, 1, 0xEE), (13, 2, 0x8E)],
        None,
        to_v86(0x0002, [0; 4]),
        vec![0xCC],
        vec![v86_recorder(1, 2), v86_recorder(2, 2)],
    );
    r.assert_halted();
    assert_eq!(r.mem_u32(SEEN), V86_IP + 1, "#BP after the int3");
    // lar/lsl/verr/arpl/str... are #UD outside protected mode proper.
    let r = run_with_iomap(
        &[(6, 1, 0x8E)],
        None,
        to_v86(0x3002, [0; 4]),
        vec![0x0F, 0x00, 0xC8], // str ax
        vec![v86_recorder(1, 2)],
    );
    r.assert_halted();
    assert_eq!(r.mem_u32(SEEN), V86_IP, "#UD at the str");
}

#[test]
fn v86_io_is_decided_by_the_io_bitmap_whatever_the_iopl() {
    // Port 0xE9 is allowed, 0x80 is not: with IOPL 0 and with IOPL 3.
    for iopl in [0, 0x3000] {
        let code = v86_code(|a| {
            a.mov(al, b'v' as u32)?;
            a.out(0xE9, al)?;
            a.out(0x80, al) // at V86_IP + 4
        });
        let r = run_with_iomap(
            &[(13, 1, 0x8E)],
            Some(&[0xE9]),
            to_v86(0x0002 | iopl, [0; 4]),
            code,
            vec![v86_recorder(1, 2)],
        );
        r.assert_halted();
        assert_eq!(r.output, b"v", "IOPL {}", iopl >> 12);
        assert_eq!(r.mem_u32(SEEN + 4), V86_IP + 4, "IOPL {}", iopl >> 12);
    }
}

#[test]
fn a_v86_monitor_emulates_cli_and_returns_with_iret() {
    // The #GP handler counts, skips the one-byte instruction and irets
    // back into v8086 mode, where ES loads as a paragraph.
    let monitor = assemble_at(handler_addr(1), |a| {
        a.inc(dword_ptr(SEEN + 0x80))?;
        a.add(esp, 4)?; // the error code
        a.inc(dword_ptr(esp))?;
        a.iretd()
    });
    let code = v86_code(|a| {
        a.cli()?;
        a.mov(dx, 0x77u32)?;
        a.mov(es, dx)?;
        a.mov(byte_ptr(0x10).es(), 0x99u32)?;
        a.int3()
    });
    let r = run_with_iomap(
        &[(13, 1, 0x8E), (3, 2, 0xEE)],
        None,
        to_v86(0x0202, [0; 4]),
        code,
        vec![(handler_addr(1), monitor), v86_recorder(2, 2)],
    );
    r.assert_halted();
    assert_eq!(r.mem_u32(SEEN + 0x80), 1, "one #GP");
    assert_eq!(r.mem_u8(0x780), 0x99, "ES = 0x77 is linear 0x770");
    assert_eq!(r.reg(edx) & 0xFFFF, 0x77);
}
