//! Privilege transitions in flat protected mode: iret to ring 3, int n
//! back to ring 0 on the TSS stack, sysenter/sysexit, faults from ring 3
//! with their frames, and the checks that keep ring 3 out of ring 0.

use bt86_testsuite::*;

use bt86_testsuite::pm::*;

#[test]
fn int_from_ring_3_switches_to_the_tss_stack_and_pushes_the_user_stack() {
    let user = assemble_at(USER, |a| {
        a.mov(esi, 0x1111u32)?;
        a.int(0x80) // at USER + 5
    });
    let r = run(
        &[(0x80, 0, 0xEE)],
        to_user(0x202, KDATA),
        user,
        vec![recorder(0, 5)],
    );
    r.assert_halted();
    assert_eq!(r.mem_u32(SEEN), USER + 7, "EIP after the int");
    assert_eq!(r.mem_u32(SEEN + 4), UCODE);
    assert_ne!(r.mem_u32(SEEN + 8) & fl::IF, 0);
    assert_eq!(r.mem_u32(SEEN + 12), USER_STACK, "user ESP");
    assert_eq!(r.mem_u32(SEEN + 16), UDATA, "user SS");
    assert_eq!(
        r.mem_u32(SEEN + 0x40),
        RING0_STACK - 20,
        "on the ring-0 stack from the TSS"
    );
    assert_eq!(r.mem_u32(SEEN + 0x44), KCODE);
    assert_eq!(r.sreg(ss), KDATA);
    assert_eq!(r.reg(esi), 0x1111);
    assert!(
        r.machine
            .report()
            .classes
            .iter()
            .any(|c| c.name == "user32" && c.translated.units > 0),
        "ring-3 code counts as user32"
    );
}

#[test]
fn iret_from_the_handler_returns_to_ring_3() {
    let user = assemble_at(USER, |a| {
        a.int(0x80)?;
        a.mov(eax, cs)?;
        a.mov(edi, eax)?;
        a.mov(eax, ss)?;
        a.mov(ebp, eax)?;
        a.int(0x81)
    });
    let service = assemble_at(handler_addr(1), |a| {
        a.mov(esi, 0x2222u32)?;
        a.iretd()
    });
    let r = run(
        &[(0x80, 1, 0xEE), (0x81, 2, 0xEE)],
        to_user(0x202, KDATA),
        user,
        vec![(handler_addr(1), service), recorder(2, 5)],
    );
    r.assert_halted();
    assert_eq!(r.reg(esi), 0x2222);
    assert_eq!(r.reg(edi), UCODE, "back in ring 3");
    assert_eq!(r.reg(ebp), UDATA);
    assert_eq!(
        r.mem_u32(SEEN + 12),
        USER_STACK,
        "user ESP restored by iret"
    );
}

#[test]
fn sysenter_and_sysexit_round_trip() {
    let user = assemble_at(USER, |a| {
        a.mov(ecx, esp)?;
        a.mov(edx, USER + 0x20)?;
        a.sysenter()
    });
    let after = assemble_at(USER + 0x20, |a| {
        a.mov(eax, cs)?;
        a.mov(edi, eax)?;
        a.int(0x81)
    });
    let kernel = assemble_at(handler_addr(7), |a| {
        a.mov(eax, cs)?;
        a.mov(dword_ptr(SEEN + 0x20), eax)?;
        a.mov(dword_ptr(SEEN + 0x24), esp)?;
        a.pushfd()?;
        a.pop(eax)?;
        a.mov(dword_ptr(SEEN + 0x28), eax)?;
        a.sysexit()
    });
    let mut blocks = vec![
        (LOAD, system(&[(0x81, 2, 0xEE)])),
        (BODY, to_user(0x202, KDATA)),
        (USER, user),
        (USER + 0x20, after),
    ];
    blocks.push((handler_addr(7), kernel));
    blocks.push(recorder(2, 5));
    let r = run_blocks(Options::default(), &blocks);
    r.assert_halted();
    assert_eq!(r.mem_u32(SEEN + 0x20), KCODE);
    assert_eq!(r.mem_u32(SEEN + 0x24), RING0_STACK - 0x1000);
    assert_eq!(r.mem_u32(SEEN + 0x28) & fl::IF, 0, "sysenter clears IF");
    assert_eq!(r.reg(edi), UCODE, "sysexit returns to ring 3");
    assert_eq!(r.mem_u32(SEEN + 12), USER_STACK, "ESP from ECX");
}

#[test]
fn cli_in_ring_3_with_iopl_0_is_a_general_protection_fault() {
    let user = assemble_at(USER, |a| {
        a.nop()?;
        a.cli() // at USER + 1
    });
    let r = run(
        &[(13, 3, 0x8E)],
        to_user(0x202, KDATA),
        user,
        vec![recorder(3, 6)],
    );
    r.assert_halted();
    assert_eq!(r.mem_u32(SEEN), 0, "error code");
    assert_eq!(r.mem_u32(SEEN + 4), USER + 1, "EIP of the cli");
    assert_eq!(r.mem_u32(SEEN + 8), UCODE);
    assert_eq!(r.mem_u32(SEEN + 16), USER_STACK);
    assert_eq!(r.mem_u32(SEEN + 20), UDATA);
}

#[test]
fn cli_and_sti_in_ring_3_with_iopl_3_work() {
    let user = assemble_at(USER, |a| {
        a.cli()?;
        a.pushfd()?;
        a.pop(esi)?;
        a.sti()?;
        a.pushfd()?;
        a.pop(edi)?;
        a.int(0x81)
    });
    let r = run(
        &[(0x81, 2, 0xEE)],
        to_user(0x3202, KDATA),
        user,
        vec![recorder(2, 5)],
    );
    r.assert_halted();
    assert_eq!(r.reg(esi) & fl::IF, 0);
    assert_ne!(r.reg(edi) & fl::IF, 0);
}

#[test]
fn popf_in_ring_3_cannot_change_iopl_or_if() {
    let user = assemble_at(USER, |a| {
        a.push(0x3002u32)?; // IOPL 3, IF 0
        a.popfd()?;
        a.pushfd()?;
        a.pop(esi)?;
        a.int(0x81)
    });
    let r = run(
        &[(0x81, 2, 0xEE)],
        to_user(0x202, KDATA),
        user,
        vec![recorder(2, 5)],
    );
    r.assert_halted();
    assert_eq!(r.reg(esi) & fl::IOPL, 0, "IOPL unchanged");
    assert_ne!(r.reg(esi) & fl::IF, 0, "IF unchanged (CPL > IOPL)");
}

#[test]
fn hlt_and_privileged_instructions_fault_in_ring_3() {
    for (code, name) in [
        (vec![0xF4u8], "hlt"),
        (vec![0x0F, 0x20, 0xC0], "mov eax, cr0"),
        (vec![0xE6, 0x80], "out 0x80, al"),
    ] {
        let r = run(
            &[(13, 3, 0x8E)],
            to_user(0x202, KDATA),
            code,
            vec![recorder(3, 2)],
        );
        r.assert_halted();
        assert_eq!(r.mem_u32(SEEN + 4), USER, "{name} faults at its own EIP");
        assert_eq!(
            r.mem_u32(SEEN + 0x44),
            KCODE,
            "{name}: #GP handled in ring 0"
        );
    }
}

#[test]
fn int_through_a_ring_0_gate_from_ring_3_is_a_general_protection_fault() {
    let user = assemble_at(USER, |a| a.int(0x80));
    let r = run(
        &[(0x80, 0, 0x8E), (13, 3, 0x8E)],
        to_user(0x202, KDATA),
        user,
        vec![recorder(3, 2)],
    );
    r.assert_halted();
    assert_eq!(r.mem_u32(SEEN), 0x80 * 8 + 2, "error code names the gate");
    assert_eq!(r.mem_u32(SEEN + 4), USER, "EIP of the int");
}

#[test]
fn iret_to_ring_3_nulls_data_segments_only_ring_0_may_use() {
    let user = assemble_at(USER, |a| {
        a.mov(eax, ds)?;
        a.mov(esi, eax)?;
        a.mov(eax, es)?;
        a.mov(edi, eax)?;
        a.int(0x81)
    });
    let r = run(
        &[(0x81, 2, 0xEE)],
        to_user(0x202, KDATA),
        user,
        vec![recorder(2, 5)],
    );
    r.assert_halted();
    assert_eq!(r.reg(esi), 0, "DS held a DPL-0 selector");
    assert_eq!(r.reg(edi), 0, "ES too");
}

#[test]
fn retf_imm_to_an_outer_16_bit_stack_moves_only_sp() {
    // UDATA becomes a 16-bit (B = 0) stack segment; retf 8 to ring 3 with
    // SP 0xFFFC adds the 8 parameter bytes to SP alone, which wraps.
    let body = assemble_at(BODY, |a| {
        a.mov(dword_ptr(GDT + 0x20 + 4), 0x008F_F200u32)?;
        a.push(UDATA)?;
        a.push(0x0005_FFFCu32)?;
        a.push(0u32)?;
        a.push(0u32)?;
        a.push(UCODE)?;
        a.push(USER)?;
        a.db(&[0xCA, 0x08, 0x00]) // retf 8
    });
    let user = assemble_at(USER, |a| {
        a.mov(ebx, esp)?;
        a.int(0x81)
    });
    let r = run(&[(0x81, 2, 0xEE)], body, user, vec![recorder(2, 5)]);
    r.assert_halted();
    assert_eq!(r.mem_u32(SEEN + 4), UCODE, "from ring 3");
    assert_eq!(r.reg(ebx), 0x0005_0004);
}

#[test]
fn rf_from_iret_is_cleared_as_the_next_instruction_starts_and_faults_push_it() {
    // iret with RF set, then int 0x82 at once: a software interrupt pushes
    // RF = 0. Then ud2: a fault pushes RF = 1; the handler skips the ud2
    // and its iret sets RF again, which the next int 0x83 clears.
    let after = handler_addr(9);
    let ring0 = assemble_at(BODY, |a| {
        a.pushfd()?;
        a.or(dword_ptr(esp), fl::RF)?;
        a.push(KCODE)?;
        a.push(after)?;
        a.iretd()
    });
    let ring0_after = assemble_at(after, |a| {
        a.int(0x82)?;
        a.ud2()?;
        a.int(0x83)?;
        a.hlt()
    });
    // Records the frame's EFLAGS in slot `slot`, adds `skip` to EIP.
    let saver = |k: u32, slot: u32, skip: u32| {
        (
            handler_addr(k),
            assemble_at(handler_addr(k), move |a| {
                a.mov(eax, dword_ptr(esp + 8))?;
                a.mov(dword_ptr(SEEN + 0x20 + 4 * slot), eax)?;
                a.add(dword_ptr(esp), skip)?;
                a.iretd()
            }),
        )
    };
    let r = run(
        &[(0x82, 3, 0x8E), (6, 4, 0x8E), (0x83, 5, 0x8E)],
        ring0,
        Vec::new(),
        vec![
            saver(3, 0, 0),
            saver(4, 1, 2),
            saver(5, 2, 0),
            (after, ring0_after),
        ],
    );
    r.assert_halted();
    assert_eq!(r.mem_u32(SEEN + 0x20) & fl::RF, 0, "int n right after iret");
    assert_ne!(r.mem_u32(SEEN + 0x24) & fl::RF, 0, "a fault");
    assert_eq!(
        r.mem_u32(SEEN + 0x28) & fl::RF,
        0,
        "after the iret from the fault"
    );
}

/// Measurement, not a check: ns per `int 0x80` from ring 3 and back, and
/// per #DE round trip in ring 0 (run with --ignored --nocapture).
#[test]
#[ignore = "measurement"]
fn measure_int_and_fault_round_trips() {
    const N: u32 = 200_000;
    let user = assemble_at(USER, |a| {
        let mut top = a.create_label();
        a.rdtsc()?;
        a.mov(ebp, eax)?;
        a.mov(ebx, N)?;
        a.set_label(&mut top)?;
        a.int(0x80)?;
        a.dec(ebx)?;
        a.jnz(top)?;
        a.rdtsc()?;
        a.sub(eax, ebp)?;
        a.mov(dword_ptr(SEEN + 0x60), eax)?;
        // #DE round trips: the handler skips the 2-byte div.
        a.int(0x82)
    });
    let service = assemble_at(handler_addr(1), |a| a.iretd());
    let de_loop = assemble_at(handler_addr(4), |a| {
        let mut top = a.create_label();
        a.rdtsc()?;
        a.mov(ebp, eax)?;
        a.mov(ebx, N)?;
        a.xor(ecx, ecx)?;
        a.set_label(&mut top)?;
        a.div(ecx)?;
        a.dec(ebx)?;
        a.jnz(top)?;
        a.rdtsc()?;
        a.sub(eax, ebp)?;
        a.mov(dword_ptr(SEEN + 0x64), eax)?;
        a.hlt()
    });
    let de = assemble_at(handler_addr(5), |a| {
        a.add(dword_ptr(esp), 2)?;
        a.iretd()
    });
    let r = run(
        &[(0x80, 1, 0xEE), (0x82, 4, 0xEE), (0, 5, 0x8E)],
        to_user(0x202, KDATA),
        user,
        vec![
            (handler_addr(1), service),
            (handler_addr(4), de_loop),
            (handler_addr(5), de),
        ],
    );
    r.assert_halted();
    let tsc_ghz = tsc_ghz();
    let int_ns = r.mem_u32(SEEN + 0x60) as f64 / tsc_ghz / N as f64;
    let de_ns = r.mem_u32(SEEN + 0x64) as f64 / tsc_ghz / N as f64;
    eprintln!("int 0x80 ring 3 -> 0 -> 3: {int_ns:.0} ns; #DE round trip: {de_ns:.0} ns");
}

#[test]
fn the_tss_io_bitmap_decides_port_access_in_ring_3() {
    // Ports 0xE9 and 0x3F8-0x3F9 are allowed; a word access to 0x3F9
    // touches 0x3FA too and is denied.
    let user = assemble_at(USER, |a| {
        a.mov(al, b'x' as u32)?;
        a.out(0xE9, al)?; // allowed
        a.mov(dx, 0x3F8u32)?;
        a.out(dx, ax)?; // 0x3F8-0x3F9: allowed
        a.mov(dx, 0x3F9u32)?;
        a.out(dx, ax)?; // at USER + 14: 0x3FA denied
        a.hlt()
    });
    let mut blocks = vec![
        (
            LOAD,
            system_with_iomap(&[(13, 3, 0x8E)], Some(&[0xE9, 0x3F8, 0x3F9])),
        ),
        (BODY, to_user(0x202, KDATA)),
        (USER, user),
    ];
    blocks.push(recorder(3, 2));
    let r = run_blocks(Options::default(), &blocks);
    r.assert_halted();
    assert_eq!(
        r.output, b"xx",
        "one byte to the debug console, one to COM1"
    );
    assert_eq!(
        r.mem_u32(SEEN + 4),
        USER + 14,
        "the word access that reaches port 0x3FA faults"
    );
}

const GATE: u32 = GDT_FREE;

/// `call far sel:0` (the offset is ignored through a gate).
fn call_far(a: &mut CodeAssembler, sel: u32) -> Result<(), IcedError> {
    a.db(&[0x9A, 0, 0, 0, 0])?;
    a.dw(&[sel as u16])
}

/// `jmp far sel:0`.
fn jmp_far(a: &mut CodeAssembler, sel: u32) -> Result<(), IcedError> {
    a.db(&[0xEA, 0, 0, 0, 0])?;
    a.dw(&[sel as u16])
}

#[test]
fn call_gate_from_ring_3_copies_parameters_to_the_ring_0_stack_and_retf_returns() {
    // Two dword parameters; the ring-0 procedure records its frame and
    // returns with retf 8, which pops them off both stacks.
    let proc_addr = handler_addr(1);
    let procedure = assemble_at(proc_addr, |a| {
        for i in 0..6 {
            a.mov(eax, dword_ptr(esp + 4 * i))?;
            a.mov(dword_ptr(SEEN + 4 * i), eax)?;
        }
        a.mov(dword_ptr(SEEN + 0x40), esp)?;
        a.mov(eax, cs)?;
        a.mov(dword_ptr(SEEN + 0x44), eax)?;
        a.db(&[0xCA, 0x08, 0x00]) // retf 8
    });
    let user = assemble_at(USER, |a| {
        a.push(0x2222u32)?;
        a.push(0x1111u32)?;
        call_far(a, GATE | 3)?; // at USER + 10, 7 bytes
        a.mov(ebx, esp)?;
        a.mov(eax, cs)?;
        a.mov(edi, eax)?;
        a.int(0x81)
    });
    let body = to_user_with(0x202, KDATA, &[(GATE, gate(KCODE, proc_addr, 0xEC, 2))]);
    let r = run(
        &[(0x81, 2, 0xEE)],
        body,
        user,
        vec![(proc_addr, procedure), recorder(2, 5)],
    );
    r.assert_halted();
    assert_eq!(r.reg(ebx), USER_STACK, "retf 8 popped the parameters");
    assert_eq!(r.reg(edi), UCODE, "back in ring 3");
}

#[test]
fn call_gate_frame_holds_return_address_parameters_and_the_outer_stack() {
    let proc_addr = handler_addr(1);
    let procedure = assemble_at(proc_addr, |a| {
        for i in 0..6 {
            a.mov(eax, dword_ptr(esp + 4 * i))?;
            a.mov(dword_ptr(SEEN + 0x80 + 4 * i), eax)?;
        }
        a.mov(dword_ptr(SEEN + 0xA0), esp)?;
        a.mov(eax, cs)?;
        a.mov(dword_ptr(SEEN + 0xA4), eax)?;
        a.hlt()
    });
    let user = assemble_at(USER, |a| {
        a.push(0x2222u32)?;
        a.push(0x1111u32)?;
        call_far(a, GATE | 3) // at USER + 10
    });
    let body = to_user_with(0x202, KDATA, &[(GATE, gate(KCODE, proc_addr, 0xEC, 2))]);
    let r = run(&[], body, user, vec![(proc_addr, procedure)]);
    r.assert_halted();
    let frame: Vec<u32> = (0..6).map(|i| r.mem_u32(SEEN + 0x80 + 4 * i)).collect();
    assert_eq!(
        frame,
        [USER + 17, UCODE, 0x1111, 0x2222, USER_STACK - 8, UDATA],
        "EIP, CS, the parameters in order, ESP, SS"
    );
    assert_eq!(r.mem_u32(SEEN + 0xA0), RING0_STACK - 24);
    assert_eq!(r.mem_u32(SEEN + 0xA4), KCODE, "CPL 0");
}

#[test]
fn a_16_bit_call_gate_pushes_words() {
    // One word parameter: SS, SP, the word, CS, IP, 2 bytes each. The
    // 16-bit gate's offset is 16 bits: the procedure's code segment
    // starts at 1 MiB.
    let proc_addr = handler_addr(1);
    let kcode_1m = GATE + 8;
    let procedure = assemble_at(proc_addr, |a| {
        for i in 0..5 {
            a.movzx(eax, word_ptr(esp + 2 * i))?;
            a.mov(dword_ptr(SEEN + 0x80 + 4 * i), eax)?;
        }
        a.mov(dword_ptr(SEEN + 0xA0), esp)?;
        a.hlt()
    });
    let user = assemble_at(USER, |a| {
        a.push(0x5555u32)?; // a dword push; the gate copies its low word
        call_far(a, GATE | 3) // at USER + 5
    });
    let body = to_user_with(
        0x202,
        KDATA,
        &[
            (GATE, gate(kcode_1m, proc_addr - LOAD, 0xE4, 1)),
            (kcode_1m, segment(LOAD, 0xFFFFF, 0x9A, 0x4)),
        ],
    );
    let r = run(&[], body, user, vec![(proc_addr, procedure)]);
    r.assert_halted();
    let frame: Vec<u32> = (0..5).map(|i| r.mem_u32(SEEN + 0x80 + 4 * i)).collect();
    assert_eq!(
        frame,
        [
            (USER + 12) & 0xFFFF,
            UCODE,
            0x5555,
            (USER_STACK - 4) & 0xFFFF,
            UDATA
        ]
    );
    assert_eq!(r.sreg(cs), kcode_1m);
    assert_eq!(r.mem_u32(SEEN + 0xA0), RING0_STACK - 10);
}

#[test]
fn jmp_through_a_call_gate_stays_at_the_same_level() {
    // A ring-0 gate to ring-0 code: jmp works; a DPL-3 gate to ring-0
    // code jumped to from ring 3 is #GP(code selector).
    let target = handler_addr(1);
    let ring0 = assemble_at(BODY, |a| {
        set_descriptor(a, GATE, gate(KCODE, target, 0x8C, 0))?;
        set_descriptor(a, GATE + 8, gate(KCODE, target, 0xEC, 0))?;
        jmp_far(a, GATE)
    });
    let at_target = assemble_at(target, |a| {
        a.mov(esi, 0x600Du32)?;
        // Now from ring 3.
        a.push(UDATA)?;
        a.push(USER_STACK)?;
        a.push(0x202u32)?;
        a.push(UCODE)?;
        a.push(USER)?;
        a.iretd()
    });
    let user = assemble_at(USER, |a| jmp_far(a, (GATE + 8) | 3));
    let r = run(
        &[(13, 3, 0x8E)],
        ring0,
        user,
        vec![(target, at_target), recorder(3, 2)],
    );
    r.assert_halted();
    assert_eq!(r.reg(esi), 0x600D);
    assert_eq!(r.mem_u32(SEEN), KCODE, "#GP(code selector)");
    assert_eq!(r.mem_u32(SEEN + 4), USER);
}

#[test]
fn call_gate_checks_raise_gp_and_np_with_the_gate_selector() {
    // (gate access byte, expected vector, expected error code)
    for (access, v, error) in [
        (0x8C, vec::GP, GATE), // DPL 0 < CPL 3
        (0x6C, vec::NP, GATE), // not present
    ] {
        let user = assemble_at(USER, |a| call_far(a, GATE | 3));
        let body = to_user_with(0x202, KDATA, &[(GATE, gate(KCODE, 0, access, 0))]);
        let r = run(&[(v, 3, 0x8E)], body, user, vec![recorder(3, 2)]);
        r.assert_halted();
        assert_eq!(r.mem_u32(SEEN), error, "gate access {access:#x}");
        assert_eq!(r.mem_u32(SEEN + 4), USER);
    }
}

#[test]
fn a_call_gate_copies_up_to_31_parameters() {
    let proc_addr = handler_addr(1);
    let procedure = assemble_at(proc_addr, |a| {
        a.mov(dword_ptr(SEEN + 0xA0), esp)?;
        a.mov(eax, dword_ptr(esp + 8))?; // the last one pushed: 1
        a.mov(dword_ptr(SEEN + 0xA4), eax)?;
        a.mov(eax, dword_ptr(esp + 8 + 30 * 4))?; // the first one: 31
        a.mov(dword_ptr(SEEN + 0xA8), eax)?;
        a.hlt()
    });
    let user = assemble_at(USER, |a| {
        for i in (1..=31u32).rev() {
            a.push(i)?;
        }
        call_far(a, GATE | 3)
    });
    let body = to_user_with(0x202, KDATA, &[(GATE, gate(KCODE, proc_addr, 0xEC, 31))]);
    let r = run(&[], body, user, vec![(proc_addr, procedure)]);
    r.assert_halted();
    assert_eq!(r.mem_u32(SEEN + 0xA0), RING0_STACK - 35 * 4);
    assert_eq!(r.mem_u32(SEEN + 0xA4), 1);
    assert_eq!(r.mem_u32(SEEN + 0xA8), 31);
}

#[test]
fn lar_lsl_verr_verw_answer_by_type_and_privilege() {
    // From ring 3: each query's ZF goes into a byte of SEEN + 0x80.., and
    // the lar/lsl results into registers.
    let user = assemble_at(USER, |a| {
        let queries: [(&str, u32); 8] = [
            ("lar", UCODE),
            ("lar", KCODE),
            ("lsl", UDATA),
            ("lsl", TSS_SEL),
            ("verr", UCODE),
            ("verw", UCODE),
            ("verw", UDATA),
            ("verr", 0x7F8), // beyond the GDT limit
        ];
        for (i, (op, sel)) in queries.iter().enumerate() {
            a.mov(edx, *sel)?;
            match *op {
                "lar" => a.lar(esi, edx)?,
                "lsl" => a.lsl(edi, edx)?,
                "verr" => a.verr(dx)?,
                _ => a.verw(dx)?,
            }
            a.setz(byte_ptr(SEEN + 0x80 + i as u32))?;
            if i == 0 {
                a.mov(dword_ptr(SEEN + 0x90), esi)?;
            }
            if i == 2 {
                a.mov(dword_ptr(SEEN + 0x94), edi)?;
            }
        }
        a.int(0x81)
    });
    let body = to_user(0x202, UDATA);
    let r = run(&[(0x81, 2, 0xEE)], body, user, vec![recorder(2, 1)]);
    r.assert_halted();
    let zf: Vec<u8> = (0..8).map(|i| r.mem_u8(SEEN + 0x80 + i)).collect();
    assert_eq!(zf, [1, 0, 1, 0, 1, 0, 1, 0]);
    // Type, DPL, P (accessed, as loading CS left it), G and D/B.
    assert_eq!(r.mem_u32(SEEN + 0x90), 0x00C0_FB00, "UCODE's access rights");
    assert_eq!(r.mem_u32(SEEN + 0x94), 0xFFFF_FFFF, "UDATA's limit, scaled");
    assert_eq!(
        r.mem_u8(GDT + 0x20 + 5),
        0xF3,
        "loading SS set UDATA's accessed bit"
    );
}
