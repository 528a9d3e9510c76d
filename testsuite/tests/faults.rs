//! Guest exceptions: #DE, #UD, #BP, software interrupts, #OF, #BR, #GP,
//! and #PF for accesses beyond RAM (which these tests leave unmapped: with
//! paging off it is the open bus), with the EIP they are reported at and
//! the guest state left exactly as before the faulting instruction (or
//! with the completed iterations of a string instruction).

use bt86_testsuite::*;

const S: u32 = STACK;
/// RAM is 16 MiB (Options::default): everything from here up is not RAM,
/// and with `Options::paged()` not mapped.
const RAM_END: u32 = 16 << 20;
const NOT_RAM: u32 = 0x0200_0000;

/// Runs `pre`, then `insn` between two labels; returns the run, the
/// address of `insn` and the address after it.
fn run_around(
    pre: impl Fn(&mut CodeAssembler) -> Result<(), IcedError>,
    insn: impl Fn(&mut CodeAssembler) -> Result<(), IcedError>,
) -> (Run, u32, u32) {
    run_around_with(Options::default(), pre, insn)
}

/// [`run_around`] with paging on and beyond RAM not mapped.
fn run_around_paged(
    pre: impl Fn(&mut CodeAssembler) -> Result<(), IcedError>,
    insn: impl Fn(&mut CodeAssembler) -> Result<(), IcedError>,
) -> (Run, u32, u32) {
    run_around_with(Options::paged(), pre, insn)
}

fn run_around_with(
    opts: Options,
    pre: impl Fn(&mut CodeAssembler) -> Result<(), IcedError>,
    insn: impl Fn(&mut CodeAssembler) -> Result<(), IcedError>,
) -> (Run, u32, u32) {
    let (r, addrs) = run_asm_fix(opts, |a, _| {
        let mut at = a.create_label();
        let mut after = a.create_label();
        pre(a)?;
        a.set_label(&mut at)?;
        insn(a)?;
        a.set_label(&mut after)?;
        a.nop()?;
        Ok(vec![at, after])
    });
    (r, addrs[0], addrs[1])
}

fn distinct(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(eax, 0xA0A1_A2A3u32)?;
    a.mov(ecx, 0xC0C1_C2C3u32)?;
    a.mov(edx, 0xD0D1_D2D3u32)?;
    a.mov(ebx, 0xB0B1_B2B3u32)?;
    a.mov(ebp, 0xE0E1_E2E3u32)?;
    a.mov(esi, 0x5051_5253u32)?;
    a.mov(edi, 0xF0F1_F2F3u32)?;
    Ok(())
}

fn distinct_regs(esp_v: u32) -> [u32; 8] {
    [
        0xA0A1_A2A3,
        0xC0C1_C2C3,
        0xD0D1_D2D3,
        0xB0B1_B2B3,
        esp_v,
        0xE0E1_E2E3,
        0x5051_5253,
        0xF0F1_F2F3,
    ]
}

fn soft(r: &Run) -> bool {
    match r.stop {
        Stop::Unhandled { soft, .. } => soft,
        _ => panic!("not an exception: {:?}", r.stop),
    }
}

// ---- #DE ----

#[test]
fn div_by_zero_raises_de_at_the_div_with_registers_unchanged() {
    let (r, at, _) = run_around(
        |a| {
            distinct(a)?;
            a.xor(ecx, ecx)?;
            a.mov(edx, 0u32)?;
            Ok(())
        },
        |a| a.div(ecx),
    );
    let exc = r.assert_exception(vec::DE, at);
    assert_eq!(exc.error, 0);
    assert!(!soft(&r));
    let mut want = distinct_regs(S);
    want[1] = 0;
    want[2] = 0;
    assert_eq!(r.regs(), want);
}

#[test]
fn idiv_overflow_raises_de() {
    let (r, at, _) = run_around(
        |a| {
            a.mov(eax, 0x8000_0000u32)?;
            a.mov(edx, 0xFFFF_FFFFu32)?;
            a.mov(ecx, 0xFFFF_FFFFu32)?;
            Ok(())
        },
        |a| a.idiv(ecx),
    );
    r.assert_exception(vec::DE, at);
    assert_eq!(r.reg(eax), 0x8000_0000);
    assert_eq!(r.reg(edx), 0xFFFF_FFFF);
    assert_eq!(r.reg(ecx), 0xFFFF_FFFF);
}

#[test]
fn div_r8_quotient_overflow_raises_de() {
    let (r, at, _) = run_around(
        |a| {
            a.mov(eax, 0x1000u32)?;
            a.mov(ecx, 1u32)?;
            Ok(())
        },
        |a| a.div(cl),
    );
    r.assert_exception(vec::DE, at);
    assert_eq!(r.reg(eax), 0x1000);
}

#[test]
fn div_by_zero_in_esp_based_memory_raises_de() {
    let (r, at, _) = run_around(
        |a| {
            a.push(0u32)?;
            a.mov(eax, 7u32)?;
            a.xor(edx, edx)?;
            Ok(())
        },
        |a| a.div(dword_ptr(esp)),
    );
    r.assert_exception(vec::DE, at);
    assert_eq!(r.reg(esp), S - 4);
    assert_eq!(r.reg(eax), 7);
}

#[test]
fn de_keeps_the_flags() {
    let (r, at, _) = run_around(
        |a| {
            a.xor(ecx, ecx)?;
            a.push(fl::STATUS | fl::FIXED1)?;
            a.popfd()?;
            Ok(())
        },
        |a| a.div(ecx),
    );
    r.assert_exception(vec::DE, at);
    assert_eq!(r.status(), fl::STATUS);
}

#[test]
fn aam_0_raises_de() {
    let (r, at, _) = run_around(|a| a.mov(eax, 0x1234u32), |a| a.db(&[0xD4, 0x00]));
    r.assert_exception(vec::DE, at);
    assert_eq!(r.reg(eax), 0x1234);
}

// ---- #UD ----

#[test]
fn ud2_raises_ud_at_its_eip() {
    let (r, at, _) = run_around(|a| a.mov(eax, 5u32), |a| a.ud2());
    r.assert_exception(vec::UD, at);
    assert_eq!(r.reg(eax), 5);
}

#[test]
fn undecodable_bytes_raise_ud_at_their_eip() {
    let (r, at, _) = run_around(|a| a.mov(eax, 5u32), |a| a.db(&[0xFF, 0xFF]));
    r.assert_exception(vec::UD, at);
    assert_eq!(r.reg(eax), 5);
}

#[test]
fn undecodable_bytes_after_a_jump_raise_ud() {
    // The undecodable bytes start a TU of their own.
    let (r, at, _) = run_around(
        |a| {
            let mut next = a.create_label();
            a.mov(eax, 5u32)?;
            a.jmp(next)?;
            a.set_label(&mut next)?;
            a.mov(ebx, 6u32)
        },
        |a| a.db(&[0xFF, 0xFF]),
    );
    r.assert_exception(vec::UD, at);
    assert_eq!(r.reg(ebx), 6);
}

#[test]
fn lock_prefix_on_a_register_destination_raises_ud() {
    let (r, at, _) = run_around(|a| a.mov(eax, 5u32), |a| a.db(&[0xF0, 0x01, 0xC0]));
    r.assert_exception(vec::UD, at);
    assert_eq!(r.reg(eax), 5);
}

#[test]
fn sse_instruction_raises_ud() {
    let (r, at, _) = run_around(|a| a.mov(eax, 5u32), |a| a.db(&[0x0F, 0x58, 0xC0])); // addps xmm0, xmm0
    r.assert_exception(vec::UD, at);
}

// ---- #BP, int n, #OF ----

#[test]
fn int3_raises_bp_with_the_eip_after_it() {
    let (r, _, after) = run_around(|a| a.mov(eax, 5u32), |a| a.int3());
    r.assert_exception(vec::BP, after);
    assert!(!soft(&r), "int3 is not `int n`");
    assert_eq!(r.reg(eax), 5);
}

#[test]
fn int_0x80_is_a_software_interrupt_with_the_eip_after_it() {
    let (r, _, after) = run_around(
        |a| {
            distinct(a)?;
            a.push(fl::CF | fl::FIXED1)?;
            a.popfd()
        },
        |a| a.int(0x80),
    );
    r.assert_exception(0x80, after);
    assert!(soft(&r));
    assert_eq!(r.regs(), distinct_regs(S));
    assert_eq!(r.status(), fl::CF);
}

#[test]
fn int_3_long_form_is_a_software_interrupt() {
    let (r, _, after) = run_around(|_| Ok(()), |a| a.db(&[0xCD, 0x03]));
    r.assert_exception(vec::BP, after);
    assert!(soft(&r));
}

#[test]
fn into_with_of_set_raises_of_with_the_eip_after_it() {
    let (r, _, after) = run_around(
        |a| {
            a.mov(eax, 0x7FFF_FFFFu32)?;
            a.add(eax, 1)
        },
        |a| a.into(),
    );
    r.assert_exception(vec::OF, after);
    assert_eq!(r.reg(eax), 0x8000_0000);
}

#[test]
fn into_with_of_clear_does_nothing() {
    let r = run_asm(|a| {
        a.xor(eax, eax)?;
        a.into()?;
        a.mov(ebx, 1u32)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), 1);
}

// ---- #BR ----

fn bounds(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(dword_ptr(DATA), 10u32)?;
    a.mov(dword_ptr(DATA + 4), 20u32)
}

#[test]
fn bound_above_the_upper_bound_raises_br_at_the_bound() {
    let (r, at, _) = run_around(
        |a| {
            bounds(a)?;
            a.mov(eax, 21u32)
        },
        |a| a.bound(eax, qword_ptr(DATA)),
    );
    r.assert_exception(vec::BR, at);
    assert_eq!(r.reg(eax), 21);
}

#[test]
fn bound_below_the_lower_bound_raises_br() {
    let (r, at, _) = run_around(
        |a| {
            bounds(a)?;
            a.mov(eax, (-1i32) as u32)
        },
        |a| a.bound(eax, qword_ptr(DATA)),
    );
    r.assert_exception(vec::BR, at);
}

#[test]
fn bound_within_range_continues() {
    let r = run_asm(|a| {
        bounds(a)?;
        a.mov(eax, 15u32)?;
        a.bound(eax, qword_ptr(DATA))?;
        a.mov(eax, 10u32)?;
        a.bound(eax, qword_ptr(DATA))?;
        a.mov(eax, 20u32)?;
        a.bound(eax, qword_ptr(DATA))?;
        a.mov(ebx, 1u32)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), 1);
}

#[test]
fn bound_with_esp_based_bounds() {
    let r = run_asm(|a| {
        a.push(100u32)?; // upper
        a.push(50u32)?; // lower
        a.mov(ecx, 75u32)?;
        a.bound(ecx, qword_ptr(esp))?;
        a.mov(ebx, 1u32)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), 1);
}

// ---- #PF: accesses beyond RAM, which is not mapped ----

#[test]
fn load_beyond_ram_raises_pf_with_the_address() {
    let (r, at, _) = run_around_paged(distinct, |a| a.mov(eax, dword_ptr(NOT_RAM)));
    let exc = r.assert_exception(vec::PF, at);
    assert_eq!(exc.addr, NOT_RAM);
    assert_eq!(exc.error, 0, "not present, a read, at CPL 0");
    assert_eq!(r.regs(), distinct_regs(S));
    assert_eq!(r.machine.cpu().cr2, NOT_RAM);
}

#[test]
fn store_beyond_ram_raises_pf_with_the_address() {
    let (r, at, _) = run_around_paged(distinct, |a| a.mov(dword_ptr(NOT_RAM + 0x10), ebx));
    let exc = r.assert_exception(vec::PF, at);
    assert_eq!(exc.addr, NOT_RAM + 0x10);
    assert_eq!(exc.error, 2, "not present, a write, at CPL 0");
    assert_eq!(r.regs(), distinct_regs(S));
}

#[test]
fn load_just_past_the_end_of_ram_faults() {
    let (r, at, _) = run_around_paged(|a| a.mov(ebx, RAM_END), |a| a.mov(al, byte_ptr(ebx)));
    let exc = r.assert_exception(vec::PF, at);
    assert_eq!(exc.addr, RAM_END);
}

#[test]
fn load_of_the_last_byte_of_ram_works() {
    let r = run_asm_with(Options::paged(), |a| {
        a.mov(ebx, RAM_END - 1)?;
        a.mov(al, byte_ptr(ebx))?;
        Ok(())
    });
    r.assert_halted();
}

#[test]
fn a_fault_keeps_the_effects_of_the_earlier_instructions_of_its_block() {
    let (r, at, _) = run_around_paged(
        |a| {
            a.mov(eax, 1u32)?;
            a.mov(ebx, 2u32)?;
            a.mov(dword_ptr(DATA), 3u32)?;
            a.mov(ecx, 0x77u32)
        },
        |a| a.mov(ecx, dword_ptr(NOT_RAM)),
    );
    r.assert_exception(vec::PF, at);
    assert_eq!(r.reg(eax), 1);
    assert_eq!(r.reg(ebx), 2);
    assert_eq!(r.reg(ecx), 0x77);
    assert_eq!(r.mem_u32(DATA), 3);
}

#[test]
fn a_fault_keeps_the_flags() {
    let (r, at, _) = run_around_paged(
        |a| {
            a.push(fl::CF | fl::SF | fl::OF | fl::FIXED1)?;
            a.popfd()
        },
        |a| a.add(dword_ptr(NOT_RAM), 1),
    );
    r.assert_exception(vec::PF, at);
    assert_eq!(r.status(), fl::CF | fl::SF | fl::OF);
}

#[test]
fn address_computation_wraps_at_4_gib() {
    // 0x10 - 0x20 wraps to 0xFFFFFFF0, which is not mapped.
    let (r, at, _) = run_around_paged(
        |a| {
            a.mov(ebx, 0x10u32)?;
            a.mov(ecx, (-0x20i32) as u32)
        },
        |a| a.mov(eax, dword_ptr(ebx + ecx)),
    );
    let exc = r.assert_exception(vec::PF, at);
    assert_eq!(exc.addr, 0xFFFF_FFF0);
}

#[test]
fn bit_offset_below_address_zero_wraps_to_the_top_of_the_address_space() {
    // bts [0x10] with bit offset -0x400: the dword at 0x10 - 0x80, which
    // wraps to 0xFFFFFF90 (not mapped).
    let (r, at, _) = run_around_paged(
        |a| {
            a.mov(ebx, 0x10u32)?;
            a.mov(ecx, (-0x400i32) as u32)
        },
        |a| a.bts(dword_ptr(ebx), ecx),
    );
    let exc = r.assert_exception(vec::PF, at);
    assert_eq!(exc.addr, 0xFFFF_FF90);
}

#[test]
fn execute_beyond_ram_raises_pf_on_the_fetch() {
    let r = run_asm_with(Options::paged(), |a| {
        a.mov(eax, NOT_RAM)?;
        a.jmp(eax)?;
        Ok(())
    });
    let exc = r.assert_exception(vec::PF, NOT_RAM);
    assert_eq!(exc.addr, NOT_RAM);
    // A fetch is reported as a read: the I/D bit is only set with PAE and
    // EFER.NXE (Intel SDM Vol. 3A, 4.7), which a P6 does not have.
    assert_eq!(exc.error, 0, "not present, a read, at CPL 0");
}

#[test]
fn cmov_not_taken_with_a_source_beyond_ram_still_faults() {
    let (r, at, _) = run_around_paged(
        |a| {
            a.mov(eax, 1u32)?;
            a.xor(ecx, ecx) // ZF=1: cmovne not taken
        },
        |a| a.cmovne(eax, dword_ptr(NOT_RAM)),
    );
    r.assert_exception(vec::PF, at);
    assert_eq!(r.reg(eax), 1);
}

#[test]
fn cmpxchg8b_beyond_ram_faults_with_registers_intact() {
    let (r, at, _) = run_around_paged(distinct, |a| a.cmpxchg8b(qword_ptr(NOT_RAM)));
    r.assert_exception(vec::PF, at);
    assert_eq!(r.regs(), distinct_regs(S));
}

#[test]
fn xlat_beyond_ram_faults() {
    let (r, at, _) = run_around_paged(
        |a| {
            a.mov(ebx, RAM_END)?;
            a.mov(eax, 0x1234_5605u32)
        },
        |a| a.xlatb(),
    );
    let exc = r.assert_exception(vec::PF, at);
    assert_eq!(exc.addr, RAM_END + 5);
    assert_eq!(r.reg(eax), 0x1234_5605);
}

// ---- faults in the AH-BH register-borrowing path ----

#[test]
fn ah_load_from_esp_based_memory_beyond_ram_keeps_every_register() {
    let esp_v = RAM_END - 0x10;
    let (r, at, _) = run_around_paged(
        |a| {
            distinct(a)?;
            a.mov(esp, esp_v)
        },
        |a| a.mov(ah, byte_ptr(esp + 0x100)),
    );
    let exc = r.assert_exception(vec::PF, at);
    assert_eq!(exc.addr, esp_v + 0x100);
    assert_eq!(r.regs(), distinct_regs(esp_v));
}

#[test]
fn bh_store_to_esp_based_memory_beyond_ram_keeps_every_register() {
    let esp_v = RAM_END - 0x10;
    let (r, at, _) = run_around_paged(
        |a| {
            distinct(a)?;
            a.mov(esp, esp_v)
        },
        |a| a.add(byte_ptr(esp + 0x20), bh),
    );
    let exc = r.assert_exception(vec::PF, at);
    assert_eq!(exc.addr, esp_v + 0x20);
    assert_eq!(r.regs(), distinct_regs(esp_v));
}

#[test]
fn dh_with_esp_and_index_beyond_ram_keeps_every_register() {
    let esp_v = RAM_END - 0x10;
    let (r, at, _) = run_around_paged(
        |a| {
            distinct(a)?;
            a.mov(ebx, 0x40u32)?;
            a.mov(esp, esp_v)
        },
        |a| a.xchg(byte_ptr(esp + ebx), dh),
    );
    let exc = r.assert_exception(vec::PF, at);
    assert_eq!(exc.addr, esp_v + 0x40);
    let mut want = distinct_regs(esp_v);
    want[3] = 0x40;
    assert_eq!(r.regs(), want);
}

// ---- faults in stack instructions ----

#[test]
fn push_beyond_ram_faults_with_esp_unchanged() {
    let (r, at, _) = run_around_paged(
        |a| {
            a.mov(eax, 0x1234u32)?;
            a.mov(esp, RAM_END + 4)
        },
        |a| a.push(eax),
    );
    let exc = r.assert_exception(vec::PF, at);
    assert_eq!(exc.addr, RAM_END);
    assert_eq!(exc.error, 2);
    assert_eq!(r.reg(esp), RAM_END + 4);
}

#[test]
fn pop_beyond_ram_faults_with_esp_and_the_destination_unchanged() {
    let (r, at, _) = run_around_paged(
        |a| {
            a.mov(ebx, 0x1234u32)?;
            a.mov(esp, RAM_END)
        },
        |a| a.pop(ebx),
    );
    let exc = r.assert_exception(vec::PF, at);
    assert_eq!(exc.addr, RAM_END);
    assert_eq!(r.reg(esp), RAM_END);
    assert_eq!(r.reg(ebx), 0x1234);
}

#[test]
fn pop_into_memory_beyond_ram_faults_with_esp_unchanged() {
    let (r, at, _) = run_around_paged(|a| a.push(0x55u32), |a| a.pop(dword_ptr(NOT_RAM)));
    let exc = r.assert_exception(vec::PF, at);
    assert_eq!(exc.addr, NOT_RAM);
    assert_eq!(r.reg(esp), S - 4);
}

#[test]
fn push_of_memory_beyond_ram_faults_with_esp_unchanged() {
    let (r, at, _) = run_around_paged(|_| Ok(()), |a| a.push(dword_ptr(NOT_RAM)));
    r.assert_exception(vec::PF, at);
    assert_eq!(r.reg(esp), S);
}

#[test]
fn popad_beyond_ram_faults_with_every_register_unchanged() {
    let esp_v = RAM_END - 16; // the upper half of the 32 bytes is not RAM
    let (r, at, _) = run_around_paged(
        |a| {
            distinct(a)?;
            a.mov(esp, esp_v)
        },
        |a| a.popad(),
    );
    r.assert_exception(vec::PF, at);
    assert_eq!(r.regs(), distinct_regs(esp_v));
}

#[test]
fn pushad_beyond_ram_faults_with_esp_unchanged() {
    let esp_v = RAM_END + 16; // the upper half of the 32 bytes is not RAM
    let (r, at, _) = run_around_paged(
        |a| {
            distinct(a)?;
            a.mov(esp, esp_v)
        },
        |a| a.pushad(),
    );
    r.assert_exception(vec::PF, at);
    assert_eq!(r.regs(), distinct_regs(esp_v));
}

#[test]
fn call_with_esp_beyond_ram_faults_at_the_call() {
    let (r, at, _) = run_around_paged(
        |a| a.mov(esp, NOT_RAM),
        |a| {
            let mut f = a.create_label();
            a.call(f)?;
            a.set_label(&mut f)?;
            a.nop()
        },
    );
    r.assert_exception(vec::PF, at);
    assert_eq!(r.reg(esp), NOT_RAM);
}

#[test]
fn call_through_memory_beyond_ram_faults_with_esp_unchanged() {
    let (r, at, _) = run_around_paged(|_| Ok(()), |a| a.call(dword_ptr(NOT_RAM)));
    r.assert_exception(vec::PF, at);
    assert_eq!(r.reg(esp), S);
}

#[test]
fn ret_with_esp_beyond_ram_faults_at_the_ret() {
    let (r, at, _) = run_around_paged(|a| a.mov(esp, NOT_RAM), |a| a.ret());
    r.assert_exception(vec::PF, at);
    assert_eq!(r.reg(esp), NOT_RAM);
}

#[test]
fn leave_with_ebp_beyond_ram_faults_with_esp_and_ebp_unchanged() {
    let (r, at, _) = run_around_paged(|a| a.mov(ebp, NOT_RAM), |a| a.leave());
    r.assert_exception(vec::PF, at);
    assert_eq!(r.reg(esp), S);
    assert_eq!(r.reg(ebp), NOT_RAM);
}

#[test]
fn nested_enter_beyond_ram_faults_with_registers_unchanged() {
    let (r, at, _) = run_around_paged(
        |a| {
            a.mov(ebp, 0x1111u32)?;
            a.mov(esp, RAM_END + 8)
        },
        |a| a.enter(0u32, 2u32),
    );
    r.assert_exception(vec::PF, at);
    assert_eq!(r.reg(esp), RAM_END + 8);
    assert_eq!(r.reg(ebp), 0x1111);
}

// ---- exceptions right after stack instructions in the same block ----

#[test]
fn pf_after_pushes_in_the_same_block_reports_the_pushed_esp() {
    let (r, at, _) = run_around_paged(
        |a| {
            a.push(1u32)?;
            a.push(2u32)
        },
        |a| a.mov(eax, dword_ptr(NOT_RAM)),
    );
    r.assert_exception(vec::PF, at);
    assert_eq!(r.reg(esp), S - 8);
    assert_eq!(r.mem_u32(S - 8), 2);
}

#[test]
fn de_after_a_push_reports_the_pushed_esp() {
    let (r, at, _) = run_around(
        |a| {
            a.xor(ecx, ecx)?;
            a.push(1u32)
        },
        |a| a.div(ecx),
    );
    r.assert_exception(vec::DE, at);
    assert_eq!(r.reg(esp), S - 4);
}

#[test]
fn ud2_after_a_push_reports_the_pushed_esp() {
    let (r, at, _) = run_around(|a| a.push(1u32), |a| a.ud2());
    r.assert_exception(vec::UD, at);
    assert_eq!(r.reg(esp), S - 4);
}

#[test]
fn int3_after_pops_reports_the_popped_esp() {
    let (r, _, after) = run_around(
        |a| {
            a.push(1u32)?;
            a.push(2u32)?;
            a.pop(eax)?;
            a.pop(ebx)?;
            a.push(3u32)
        },
        |a| a.int3(),
    );
    r.assert_exception(vec::BP, after);
    assert_eq!(r.reg(esp), S - 4);
    assert_eq!(r.reg(eax), 2);
    assert_eq!(r.reg(ebx), 1);
}

#[test]
fn int_0x80_after_a_push_reports_the_pushed_esp() {
    let (r, _, after) = run_around(|a| a.push(1u32), |a| a.int(0x80));
    r.assert_exception(0x80, after);
    assert_eq!(r.reg(esp), S - 4);
}

#[test]
fn into_after_a_push_reports_the_pushed_esp() {
    let (r, _, after) = run_around(
        |a| {
            a.mov(eax, 0x7FFF_FFFFu32)?;
            a.add(eax, 1)?;
            a.push(1u32)
        },
        |a| a.into(),
    );
    r.assert_exception(vec::OF, after);
    assert_eq!(r.reg(esp), S - 4);
}

#[test]
fn a_faulting_push_after_a_successful_one_reports_the_esp_between_them() {
    // esp = 4: the first push writes at 0, the second wraps to 0xFFFFFFFC.
    let (r, at, _) = run_around_paged(
        |a| {
            a.mov(esp, 4u32)?;
            a.push(0x11u32)
        },
        |a| a.push(0x22u32),
    );
    let exc = r.assert_exception(vec::PF, at);
    assert_eq!(exc.addr, 0xFFFF_FFFC);
    assert_eq!(r.reg(esp), 0);
    assert_eq!(r.mem_u32(0), 0x11);
}

#[test]
fn a_faulting_pop_after_a_successful_one_reports_the_esp_between_them() {
    let (r, at, _) = run_around_paged(
        |a| {
            a.mov(esp, RAM_END - 4)?;
            a.pop(eax) // reads RAM_END-4: fine
        },
        |a| a.pop(ebx), // reads RAM_END: faults
    );
    let exc = r.assert_exception(vec::PF, at);
    assert_eq!(exc.addr, RAM_END);
    assert_eq!(r.reg(esp), RAM_END);
}

// ---- faults in string instructions ----

#[test]
fn rep_movsd_faulting_in_the_middle_keeps_the_completed_iterations() {
    let (r, at, _) = run_around_paged(
        |a| {
            for i in 0..4u32 {
                a.mov(dword_ptr(RAM_END - 16 + 4 * i), 0x1111_1111 * (i + 1))?;
            }
            a.mov(esi, RAM_END - 16)?;
            a.mov(edi, DATA)?;
            a.mov(ecx, 8u32)
        },
        |a| a.rep().movsd(),
    );
    let exc = r.assert_exception(vec::PF, at);
    assert_eq!(exc.addr, RAM_END);
    assert_eq!(r.reg(esi), RAM_END);
    assert_eq!(r.reg(edi), DATA + 16);
    assert_eq!(r.reg(ecx), 4);
    assert_eq!(r.mem_u32(DATA + 12), 0x4444_4444);
}

#[test]
fn rep_stosd_faulting_in_the_middle_keeps_the_completed_iterations() {
    let (r, at, _) = run_around_paged(
        |a| {
            a.mov(eax, 0x5A5A_5A5Au32)?;
            a.mov(edi, RAM_END - 8)?;
            a.mov(ecx, 4u32)
        },
        |a| a.rep().stosd(),
    );
    let exc = r.assert_exception(vec::PF, at);
    assert_eq!(exc.addr, RAM_END);
    assert_eq!(exc.error, 2);
    assert_eq!(r.reg(edi), RAM_END);
    assert_eq!(r.reg(ecx), 2);
    assert_eq!(r.mem_u32(RAM_END - 4), 0x5A5A_5A5A);
}

#[test]
fn rep_movsb_with_df_set_faulting_below_address_zero() {
    // Downwards from esi = 1: bytes 1 and 0 are copied, then esi wraps
    // to 0xFFFFFFFF, which is not mapped.
    let (r, at, _) = run_around_paged(
        |a| {
            a.mov(esi, 1u32)?;
            a.mov(edi, DATA + 0x10)?;
            a.mov(ecx, 4u32)?;
            a.std()
        },
        |a| a.rep().movsb(),
    );
    let exc = r.assert_exception(vec::PF, at);
    assert_eq!(exc.addr, 0xFFFF_FFFF);
    assert_eq!(r.reg(esi), 0xFFFF_FFFF);
    assert_eq!(r.reg(edi), DATA + 0x0E);
    assert_eq!(r.reg(ecx), 2);
    assert_eq!(r.eflags() & fl::DF, fl::DF);
}

#[test]
fn string_fault_on_the_first_iteration_changes_nothing() {
    let (r, at, _) = run_around_paged(
        |a| {
            a.mov(esi, NOT_RAM)?;
            a.mov(edi, DATA)?;
            a.mov(ecx, 3u32)
        },
        |a| a.rep().movsb(),
    );
    r.assert_exception(vec::PF, at);
    assert_eq!(r.reg(esi), NOT_RAM);
    assert_eq!(r.reg(edi), DATA);
    assert_eq!(r.reg(ecx), 3);
}

#[test]
fn repe_cmpsb_faulting_keeps_the_completed_iterations() {
    let (r, at, _) = run_around_paged(
        |a| {
            a.mov(dword_ptr(RAM_END - 4), 0u32)?;
            a.mov(dword_ptr(DATA), 0u32)?;
            a.mov(esi, DATA)?;
            a.mov(edi, RAM_END - 2)?;
            a.mov(ecx, 10u32)
        },
        |a| a.repe().cmpsb(),
    );
    let exc = r.assert_exception(vec::PF, at);
    assert_eq!(exc.addr, RAM_END);
    assert_eq!(r.reg(esi), DATA + 2);
    assert_eq!(r.reg(edi), RAM_END);
    assert_eq!(r.reg(ecx), 8);
}

#[test]
fn fault_in_a_chained_loop_reports_the_iteration_that_faulted() {
    let (r, at, _) = run_around_paged(
        |a| {
            a.mov(edi, RAM_END - 0x100)?;
            a.xor(ecx, ecx)?;
            a.mov(eax, 7u32)
        },
        |a| {
            // nop; top: mov [edi], eax; add edi, 4; inc ecx; jmp top
            let mut top = a.create_label();
            a.nop()?;
            a.set_label(&mut top)?;
            a.mov(dword_ptr(edi), eax)?;
            a.add(edi, 4)?;
            a.inc(ecx)?;
            a.jmp(top)
        },
    );
    let exc = r.assert_exception(vec::PF, at + 1);
    assert_eq!(exc.addr, RAM_END);
    assert_eq!(r.reg(edi), RAM_END);
    assert_eq!(r.reg(ecx), 0x40);
}

// ---- #GP ----

#[test]
fn mov_ss_with_the_null_selector_raises_gp() {
    let (r, at, _) = run_around(|a| a.xor(eax, eax), |a| a.mov(ss, ax));
    let exc = r.assert_exception(vec::GP, at);
    assert_eq!(exc.error, 0);
    assert_ne!(r.sreg(ss), 0);
}

#[test]
fn mov_ds_with_a_selector_beyond_the_gdt_limit_raises_gp() {
    // No GDT loaded: its limit is 0.
    let (r, at, _) = run_around(|a| a.mov(eax, 0x28u32), |a| a.mov(ds, ax));
    let exc = r.assert_exception(vec::GP, at);
    assert_eq!(exc.error, 0x28);
}

#[test]
fn rdmsr_of_an_unknown_msr_raises_gp() {
    let (r, at, _) = run_around(
        |a| {
            a.mov(ecx, 0xDEADu32)?;
            a.mov(eax, 1u32)
        },
        |a| a.rdmsr(),
    );
    r.assert_exception(vec::GP, at);
    assert_eq!(r.reg(eax), 1);
}

#[test]
fn mov_to_cr4_with_reserved_bits_raises_gp() {
    let (r, at, _) = run_around(|a| a.mov(eax, 0x8000_0000u32), |a| a.mov(cr4, eax));
    r.assert_exception(vec::GP, at);
}

#[test]
fn cr4_bits_of_features_cpuid_does_not_report_raise_gp() {
    // VME (bit 0) is a P6 feature this CPU does not report; TSD is.
    let (r, at, _) = run_around(|a| a.mov(eax, 1u32), |a| a.mov(cr4, eax));
    r.assert_exception(vec::GP, at);
    let r = run_asm(|a| {
        a.mov(eax, 4u32)?;
        a.mov(cr4, eax)?;
        a.mov(ebx, cr4)
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), 4);
}

#[test]
fn exceptions_are_counted() {
    let (r, at, _) = run_around(|_| Ok(()), |a| a.ud2());
    r.assert_exception(vec::UD, at);
    assert_eq!(r.counter("guest_exceptions"), 1);
}

// ---- more #UD / #DB forms, and fetches at the end of RAM (beyond it not mapped) ----

#[test]
fn ud1_raises_ud() {
    let (r, at, _) = run_around(|_| Ok(()), |a| a.db(&[0x0F, 0xB9, 0xC0]));
    r.assert_exception(vec::UD, at);
}

#[test]
fn icebp_raises_db_with_the_eip_after_it() {
    let (r, _, after) = run_around(|_| Ok(()), |a| a.db(&[0xF1]));
    r.assert_exception(vec::DB, after);
}

#[test]
fn an_instruction_straddling_the_end_of_ram_faults_on_the_fetch() {
    // B8 at RAM_END-2 and one immediate byte: the rest is not mapped.
    let r = run_asm_with(Options::paged(), |a| {
        a.mov(byte_ptr(RAM_END - 2), 0xB8u32)?;
        a.mov(byte_ptr(RAM_END - 1), 0x11u32)?;
        a.mov(eax, RAM_END - 2)?;
        a.jmp(eax)?;
        Ok(())
    });
    let exc = r.assert_exception(vec::PF, RAM_END - 2);
    assert_eq!(exc.addr, RAM_END);
}

#[test]
fn an_instruction_ending_at_the_end_of_ram_runs() {
    let r = run_asm_with(Options::paged(), |a| {
        a.mov(byte_ptr(RAM_END - 2), 0x40u32)?; // inc eax
        a.mov(byte_ptr(RAM_END - 1), 0xF4u32)?; // hlt
        a.mov(ebx, RAM_END - 2)?;
        a.xor(eax, eax)?;
        a.jmp(ebx)?;
        Ok(())
    });
    assert_eq!(r.stop, Stop::Halted { eip: RAM_END });
    assert_eq!(r.reg(eax), 1);
}

#[test]
fn running_off_the_end_of_ram_faults_at_ram_end() {
    let r = run_asm_with(Options::paged(), |a| {
        a.mov(byte_ptr(RAM_END - 1), 0x40u32)?; // inc eax, then nothing
        a.mov(ebx, RAM_END - 1)?;
        a.xor(eax, eax)?;
        a.jmp(ebx)?;
        Ok(())
    });
    let exc = r.assert_exception(vec::PF, RAM_END);
    assert_eq!(exc.addr, RAM_END);
    assert_eq!(r.reg(eax), 1);
}
