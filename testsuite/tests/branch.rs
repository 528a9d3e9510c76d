//! Control flow (translator/src/lower/branch.rs): direct jumps, the 16
//! conditions, call/ret, indirect branches, the loop family, recursion.

use bt86_testsuite::*;

const S: u32 = STACK;

// ---- jmp ----

#[test]
fn jmp_rel8_skips_the_code_in_between() {
    let r = run_asm(|a| {
        let mut over = a.create_label();
        a.jmp(over)?;
        a.mov(eax, 1u32)?;
        a.set_label(&mut over)?;
        a.mov(ebx, 2u32)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0);
    assert_eq!(r.reg(ebx), 2);
}

#[test]
fn jmp_rel32_skips_the_code_in_between() {
    let r = run_asm(|a| {
        let mut over = a.create_label();
        a.jmp(over)?;
        for _ in 0..300 {
            a.inc(eax)?;
        }
        a.set_label(&mut over)?;
        a.mov(ebx, 2u32)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0);
    assert_eq!(r.reg(ebx), 2);
}

#[test]
fn jmp_rel8_backwards_forms_a_loop() {
    let r = run_asm(|a| {
        let mut top = a.create_label();
        let mut done = a.create_label();
        a.set_label(&mut top)?;
        a.inc(eax)?;
        a.cmp(eax, 10)?;
        a.je(done)?;
        a.jmp(top)?;
        a.set_label(&mut done)?;
        a.nop()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 10);
}

// ---- the 16 conditions ----

/// Runs `jcc` with the status flags set to `flags`; returns whether it
/// was taken, and checks that the flags are unchanged on both paths.
fn jcc_taken(flags: u32, jcc: fn(&mut CodeAssembler, CodeLabel) -> Result<(), IcedError>) -> bool {
    let r = run_asm(|a| {
        let mut taken = a.create_label();
        let mut done = a.create_label();
        a.push(flags | fl::FIXED1)?;
        a.popfd()?;
        jcc(a, taken)?;
        a.mov(eax, 1u32)?;
        a.jmp(done)?;
        a.set_label(&mut taken)?;
        a.mov(eax, 2u32)?;
        a.set_label(&mut done)?;
        a.nop()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.status(), flags, "flags changed");
    match r.reg(eax) {
        1 => false,
        2 => true,
        v => panic!("eax = {v}"),
    }
}

macro_rules! jcc_tests {
    ($($name:ident: $m:ident, $flags:expr, $taken:expr;)*) => {
        $(
            #[test]
            fn $name() {
                assert_eq!(jcc_taken($flags, |a, l| a.$m(l)), $taken);
            }
        )*
    };
}

jcc_tests! {
    jo_taken_when_of_set: jo, fl::OF, true;
    jo_not_taken_when_of_clear: jo, fl::STATUS & !fl::OF, false;
    jno_taken_when_of_clear: jno, fl::STATUS & !fl::OF, true;
    jno_not_taken_when_of_set: jno, fl::OF, false;
    jb_taken_when_cf_set: jb, fl::CF, true;
    jb_not_taken_when_cf_clear: jb, fl::STATUS & !fl::CF, false;
    jae_taken_when_cf_clear: jae, fl::STATUS & !fl::CF, true;
    jae_not_taken_when_cf_set: jae, fl::CF, false;
    je_taken_when_zf_set: je, fl::ZF, true;
    je_not_taken_when_zf_clear: je, fl::STATUS & !fl::ZF, false;
    jne_taken_when_zf_clear: jne, fl::STATUS & !fl::ZF, true;
    jne_not_taken_when_zf_set: jne, fl::ZF, false;
    jbe_taken_when_cf_set: jbe, fl::CF, true;
    jbe_taken_when_zf_set: jbe, fl::ZF, true;
    jbe_not_taken_when_cf_and_zf_clear: jbe, fl::STATUS & !(fl::CF | fl::ZF), false;
    ja_taken_when_cf_and_zf_clear: ja, fl::STATUS & !(fl::CF | fl::ZF), true;
    ja_not_taken_when_cf_set: ja, fl::CF, false;
    ja_not_taken_when_zf_set: ja, fl::ZF, false;
    js_taken_when_sf_set: js, fl::SF, true;
    js_not_taken_when_sf_clear: js, fl::STATUS & !fl::SF, false;
    jns_taken_when_sf_clear: jns, fl::STATUS & !fl::SF, true;
    jns_not_taken_when_sf_set: jns, fl::SF, false;
    jp_taken_when_pf_set: jp, fl::PF, true;
    jp_not_taken_when_pf_clear: jp, fl::STATUS & !fl::PF, false;
    jnp_taken_when_pf_clear: jnp, fl::STATUS & !fl::PF, true;
    jnp_not_taken_when_pf_set: jnp, fl::PF, false;
    jl_taken_when_sf_set_of_clear: jl, fl::SF, true;
    jl_taken_when_of_set_sf_clear: jl, fl::OF, true;
    jl_not_taken_when_sf_equals_of_clear: jl, 0, false;
    jl_not_taken_when_sf_equals_of_set: jl, fl::SF | fl::OF, false;
    jge_taken_when_sf_equals_of_clear: jge, 0, true;
    jge_taken_when_sf_equals_of_set: jge, fl::SF | fl::OF, true;
    jge_not_taken_when_sf_set_of_clear: jge, fl::SF, false;
    jge_not_taken_when_of_set_sf_clear: jge, fl::OF, false;
    jle_taken_when_zf_set: jle, fl::ZF | fl::SF | fl::OF, true;
    jle_taken_when_sf_differs_from_of: jle, fl::SF, true;
    jle_not_taken_when_zf_clear_and_sf_equals_of: jle, fl::SF | fl::OF, false;
    jle_not_taken_when_no_flags: jle, 0, false;
    jg_taken_when_zf_clear_and_sf_equals_of: jg, fl::SF | fl::OF, true;
    jg_taken_when_no_flags: jg, 0, true;
    jg_not_taken_when_zf_set: jg, fl::ZF, false;
    jg_not_taken_when_sf_differs_from_of: jg, fl::OF, false;
}

#[test]
fn jcc_rel32_forms_taken_and_not_taken() {
    let r = run_asm(|a| {
        let mut far1 = a.create_label();
        let mut far2 = a.create_label();
        a.xor(eax, eax)?; // ZF=1
        a.je(far1)?; // taken, rel32
        for _ in 0..200 {
            a.inc(ecx)?;
        }
        a.set_label(&mut far1)?;
        a.jne(far2)?; // not taken, rel32
        for _ in 0..200 {
            a.inc(esi)?;
        }
        a.set_label(&mut far2)?;
        a.nop()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ecx), 0);
    assert_eq!(r.reg(esi), 200);
}

#[test]
fn jcc_on_flags_from_a_compare() {
    let r = run_asm(|a| {
        let mut l1 = a.create_label();
        let mut l2 = a.create_label();
        a.mov(eax, 5u32)?;
        a.cmp(eax, 7)?;
        a.jl(l1)?; // 5 < 7 signed: taken
        a.mov(ebx, 0xBADu32)?;
        a.set_label(&mut l1)?;
        a.mov(eax, 0xFFFF_FFFFu32)?;
        a.cmp(eax, 1)?;
        a.jb(l2)?; // unsigned 0xFFFFFFFF < 1: not taken
        a.mov(ecx, 1u32)?;
        a.set_label(&mut l2)?;
        a.nop()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), 0);
    assert_eq!(r.reg(ecx), 1);
}

// ---- call / ret ----

#[test]
fn call_pushes_the_return_address_and_ret_pops_it() {
    let (r, addrs) = run_asm_fix(Options::default(), |a, _| {
        let mut f = a.create_label();
        let mut after = a.create_label();
        let mut done = a.create_label();
        a.call(f)?;
        a.set_label(&mut after)?;
        a.jmp(done)?;
        a.set_label(&mut f)?;
        a.mov(eax, dword_ptr(esp))?;
        a.mov(ecx, esp)?;
        a.ret()?;
        a.set_label(&mut done)?;
        a.nop()?;
        Ok(vec![after])
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), addrs[0]);
    assert_eq!(r.reg(ecx), S - 4);
    assert_eq!(r.reg(esp), S);
}

#[test]
fn ret_imm16_releases_the_arguments() {
    let r = run_asm(|a| {
        let mut f = a.create_label();
        let mut done = a.create_label();
        a.push(1u32)?;
        a.push(2u32)?;
        a.call(f)?;
        a.jmp(done)?;
        a.set_label(&mut f)?;
        a.mov(eax, dword_ptr(esp + 4))?;
        a.add(eax, dword_ptr(esp + 8))?;
        a.ret_1(8)?;
        a.set_label(&mut done)?;
        a.nop()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 3);
    assert_eq!(r.reg(esp), S);
}

#[test]
fn ret_to_a_pushed_address_jumps_there() {
    let (r, _) = run_asm_fix(Options::default(), |a, addrs| {
        let mut target = a.create_label();
        a.push(addrs[0])?;
        a.ret()?;
        a.mov(ebx, 0xBADu32)?;
        a.set_label(&mut target)?;
        a.mov(eax, 1u32)?;
        Ok(vec![target])
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 1);
    assert_eq!(r.reg(ebx), 0);
    assert_eq!(r.reg(esp), S);
}

#[test]
fn call_and_ret_keep_the_status_flags() {
    let r = run_asm(|a| {
        let mut f = a.create_label();
        let mut done = a.create_label();
        a.push(fl::CF | fl::ZF | fl::OF)?;
        a.popfd()?;
        a.call(f)?;
        a.jmp(done)?;
        a.set_label(&mut f)?;
        a.pushfd()?;
        a.pop(ebx)?;
        a.ret()?;
        a.set_label(&mut done)?;
        a.nop()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx) & fl::STATUS, fl::CF | fl::ZF | fl::OF);
    assert_eq!(r.status(), fl::CF | fl::ZF | fl::OF);
}

fn indirect_call(
    setup_and_call: impl Fn(&mut CodeAssembler, u32) -> Result<(), IcedError>,
) -> (Run, Vec<u32>) {
    run_asm_fix(Options::default(), move |a, addrs| {
        let mut f = a.create_label();
        let mut after = a.create_label();
        let mut done = a.create_label();
        setup_and_call(a, addrs[0])?;
        a.set_label(&mut after)?;
        a.jmp(done)?;
        a.set_label(&mut f)?;
        a.mov(edi, 0x600Du32)?;
        a.mov(ebp, dword_ptr(esp))?; // the return address
        a.ret()?;
        a.set_label(&mut done)?;
        a.nop()?;
        Ok(vec![f, after])
    })
}

#[test]
fn call_through_a_register() {
    let (r, addrs) = indirect_call(|a, f| {
        a.mov(eax, f)?;
        a.call(eax)
    });
    r.assert_halted();
    assert_eq!(r.reg(edi), 0x600D);
    assert_eq!(r.reg(ebp), addrs[1]);
    assert_eq!(r.reg(esp), S);
}

#[test]
fn call_through_memory() {
    let (r, addrs) = indirect_call(|a, f| {
        a.mov(dword_ptr(DATA), f)?;
        a.call(dword_ptr(DATA))
    });
    r.assert_halted();
    assert_eq!(r.reg(edi), 0x600D);
    assert_eq!(r.reg(ebp), addrs[1]);
    assert_eq!(r.reg(esp), S);
}

#[test]
fn call_through_esp_memory_reads_the_target_before_the_push() {
    let (r, addrs) = indirect_call(|a, f| {
        a.push(f)?;
        a.push(0xBAD0_BAD0u32)?;
        a.call(dword_ptr(esp + 4))?; // [esp+4] before the push: f
        a.add(esp, 8)
    });
    // (the add runs after the return: `after` is the add)
    r.assert_halted();
    assert_eq!(r.reg(edi), 0x600D);
    assert_eq!(r.reg(esp), S);
    let _ = addrs;
}

#[test]
fn call_through_esp_memory_pushes_the_right_return_address() {
    let (r, addrs) = run_asm_fix(Options::default(), |a, addrs| {
        let mut f = a.create_label();
        let mut after = a.create_label();
        let mut done = a.create_label();
        a.push(addrs[0])?;
        a.call(dword_ptr(esp))?;
        a.set_label(&mut after)?;
        a.jmp(done)?;
        a.set_label(&mut f)?;
        a.mov(eax, dword_ptr(esp))?;
        a.mov(ebx, dword_ptr(esp + 4))?;
        a.mov(ecx, esp)?;
        a.ret_1(4)?;
        a.set_label(&mut done)?;
        a.nop()?;
        Ok(vec![f, after])
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), addrs[1]);
    assert_eq!(r.reg(ebx), addrs[0]);
    assert_eq!(r.reg(ecx), S - 8);
    assert_eq!(r.reg(esp), S);
}

#[test]
fn call_through_esp_register_calls_the_address_in_esp() {
    // call esp is legal: it jumps to the stack pointer's value. Put a tiny
    // routine (mov eax, 0x5A; ret) on the stack area and point esp at it.
    let r = run_asm(|a| {
        a.mov(dword_ptr(DATA), 0x0000_5AB8u32)?; // B8 5A 00 00 | 00 C3
        a.mov(dword_ptr(DATA + 4), 0x0000_C300u32)?;
        a.mov(esi, esp)?;
        a.mov(esp, DATA)?;
        a.call(esp)?; // pushes the return address over the code start, at DATA-4
        a.mov(esp, esi)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x5A);
}

fn indirect_jump(setup_and_jump: impl Fn(&mut CodeAssembler, u32) -> Result<(), IcedError>) -> Run {
    run_asm_fix(Options::default(), move |a, addrs| {
        let mut target = a.create_label();
        setup_and_jump(a, addrs[0])?;
        a.mov(ebx, 0xBADu32)?;
        a.set_label(&mut target)?;
        a.mov(edi, 0x600Du32)?;
        Ok(vec![target])
    })
    .0
}

#[test]
fn jmp_through_a_register() {
    let r = indirect_jump(|a, t| {
        a.mov(ecx, t)?;
        a.jmp(ecx)
    });
    r.assert_halted();
    assert_eq!(r.reg(edi), 0x600D);
    assert_eq!(r.reg(ebx), 0);
}

#[test]
fn jmp_through_memory() {
    let r = indirect_jump(|a, t| {
        a.mov(dword_ptr(DATA + 0x20), t)?;
        a.mov(eax, 4u32)?;
        a.jmp(dword_ptr(eax * 8 + DATA))
    });
    r.assert_halted();
    assert_eq!(r.reg(edi), 0x600D);
    assert_eq!(r.reg(ebx), 0);
}

#[test]
fn jmp_through_esp_memory() {
    let r = indirect_jump(|a, t| {
        a.push(t)?;
        a.push(0u32)?;
        a.jmp(dword_ptr(esp + 4))
    });
    r.assert_halted();
    assert_eq!(r.reg(edi), 0x600D);
    assert_eq!(r.reg(ebx), 0);
    assert_eq!(r.reg(esp), S - 8);
}

#[test]
fn indirect_jump_keeps_the_status_flags() {
    let r = run_asm_fix(Options::default(), |a, addrs| {
        let mut target = a.create_label();
        a.mov(eax, addrs[0])?;
        a.push(fl::STATUS)?;
        a.popfd()?;
        a.jmp(eax)?;
        a.set_label(&mut target)?;
        a.pushfd()?;
        a.pop(ebx)?;
        Ok(vec![target])
    })
    .0;
    r.assert_halted();
    assert_eq!(r.reg(ebx) & fl::STATUS, fl::STATUS);
}

// ---- loop family ----

#[test]
fn loop_runs_ecx_times() {
    let r = run_asm(|a| {
        let mut top = a.create_label();
        a.mov(ecx, 5u32)?;
        a.set_label(&mut top)?;
        a.inc(eax)?;
        a.loop_(top)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 5);
    assert_eq!(r.reg(ecx), 0);
}

#[test]
fn loop_uses_all_32_bits_of_ecx() {
    let r = run_asm(|a| {
        let mut top = a.create_label();
        a.mov(ecx, 0x1_0000u32)?;
        a.set_label(&mut top)?;
        a.inc(eax)?;
        a.loop_(top)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x1_0000);
    assert_eq!(r.reg(ecx), 0);
}

#[test]
fn loop_keeps_the_status_flags() {
    let r = run_asm(|a| {
        let mut top = a.create_label();
        a.mov(ecx, 3u32)?;
        a.push(fl::CF | fl::ZF | fl::SF)?;
        a.popfd()?;
        a.set_label(&mut top)?;
        a.loop_(top)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.status(), fl::CF | fl::ZF | fl::SF);
    assert_eq!(r.reg(ecx), 0);
}

#[test]
fn loope_stops_when_zf_is_clear() {
    let r = run_asm(|a| {
        let mut top = a.create_label();
        a.mov(ecx, 10u32)?;
        a.set_label(&mut top)?;
        a.inc(eax)?;
        a.cmp(eax, 3)?; // ZF=0 until eax = 3
        a.loope(top)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 1);
    assert_eq!(r.reg(ecx), 9);
}

#[test]
fn loope_runs_while_zf_is_set() {
    let r = run_asm(|a| {
        let mut top = a.create_label();
        a.mov(ecx, 10u32)?;
        a.set_label(&mut top)?;
        a.inc(eax)?;
        a.cmp(eax, eax)?; // always ZF=1
        a.loope(top)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 10);
    assert_eq!(r.reg(ecx), 0);
}

#[test]
fn loopne_stops_when_zf_is_set() {
    let r = run_asm(|a| {
        let mut top = a.create_label();
        a.mov(ecx, 10u32)?;
        a.set_label(&mut top)?;
        a.inc(eax)?;
        a.cmp(eax, 4)?;
        a.loopne(top)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 4);
    assert_eq!(r.reg(ecx), 6);
}

#[test]
fn loopne_stops_when_ecx_reaches_zero() {
    let r = run_asm(|a| {
        let mut top = a.create_label();
        a.mov(ecx, 3u32)?;
        a.set_label(&mut top)?;
        a.inc(eax)?;
        a.cmp(eax, 100)?;
        a.loopne(top)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 3);
    assert_eq!(r.reg(ecx), 0);
}

#[test]
fn jecxz_taken_when_ecx_is_zero() {
    let r = run_asm(|a| {
        let mut skip = a.create_label();
        a.xor(ecx, ecx)?;
        a.jecxz(skip)?;
        a.mov(eax, 1u32)?;
        a.set_label(&mut skip)?;
        a.nop()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0);
}

#[test]
fn jecxz_not_taken_when_only_the_upper_half_of_ecx_is_set() {
    let r = run_asm(|a| {
        let mut skip = a.create_label();
        a.mov(ecx, 0x1_0000u32)?;
        a.jecxz(skip)?;
        a.mov(eax, 1u32)?;
        a.set_label(&mut skip)?;
        a.nop()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 1);
}

#[test]
fn jcxz_with_address_size_prefix_tests_only_cx() {
    let r = run_asm(|a| {
        a.mov(ecx, 0x1_0000u32)?;
        a.db(&[0x67, 0xE3, 0x05])?; // jcxz +5 (a16)
        a.mov(eax, 1u32)?; // 5 bytes, skipped
        a.mov(ebx, 2u32)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0);
    assert_eq!(r.reg(ebx), 2);
}

#[test]
fn jcxz_with_address_size_prefix_not_taken_when_cx_is_nonzero() {
    let r = run_asm(|a| {
        a.mov(ecx, 0x0001_0001u32)?;
        a.db(&[0x67, 0xE3, 0x05])?; // jcxz +5 (a16)
        a.mov(eax, 1u32)?;
        a.mov(ebx, 2u32)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 1);
    assert_eq!(r.reg(ebx), 2);
}

#[test]
fn loopw_decrements_only_cx() {
    let r = run_asm(|a| {
        a.mov(ecx, 0x1234_0003u32)?;
        a.db(&[0x40])?; // inc eax
        a.db(&[0x67, 0xE2, 0xFC])?; // loop (a16) back to the inc
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 3);
    assert_eq!(r.reg(ecx), 0x1234_0000);
}

#[test]
fn loopw_with_cx_zero_runs_65536_times_and_keeps_the_upper_half() {
    let r = run_asm(|a| {
        a.mov(ecx, 0x0005_0000u32)?;
        a.db(&[0x40])?; // inc eax
        a.db(&[0x67, 0xE2, 0xFC])?; // loop (a16) back to the inc
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x1_0000);
    assert_eq!(r.reg(ecx), 0x0005_0000);
}

#[test]
fn loopew_with_address_size_prefix_stops_on_zf_clear() {
    let r = run_asm(|a| {
        a.mov(ecx, 0xFFFF_0010u32)?;
        a.mov(ebx, 3u32)?;
        // top: dec ebx (4B); loope top (67 E1 rel8)
        a.db(&[0x4B])?;
        a.db(&[0x67, 0xE1, 0xFC])?;
        Ok(())
    });
    r.assert_halted();
    // dec ebx: 2 (ZF=0) -> stop after the first iteration
    assert_eq!(r.reg(ebx), 2);
    assert_eq!(r.reg(ecx), 0xFFFF_000F);
}

#[test]
fn loopw_keeps_the_status_flags() {
    let r = run_asm(|a| {
        a.mov(ecx, 0x1234_0003u32)?;
        a.push(fl::CF | fl::OF | fl::PF)?;
        a.popfd()?;
        a.db(&[0x90])?; // nop
        a.db(&[0x67, 0xE2, 0xFC])?; // loop (a16) back to the nop
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.status(), fl::CF | fl::OF | fl::PF);
    assert_eq!(r.reg(ecx), 0x1234_0000);
}

// ---- recursion ----

#[test]
fn recursive_fib_15() {
    let r = run_asm(|a| {
        let mut fib = a.create_label();
        let mut base = a.create_label();
        let mut done = a.create_label();
        a.push(15u32)?;
        a.call(fib)?;
        a.add(esp, 4)?;
        a.jmp(done)?;

        // fib(n) = n < 2 ? n : fib(n-1) + fib(n-2); edi counts calls.
        a.set_label(&mut fib)?;
        a.inc(edi)?;
        a.push(ebp)?;
        a.mov(ebp, esp)?;
        a.push(ebx)?;
        a.mov(eax, dword_ptr(ebp + 8))?;
        a.cmp(eax, 2)?;
        a.jb(base)?;
        a.dec(eax)?;
        a.push(eax)?;
        a.call(fib)?;
        a.add(esp, 4)?;
        a.mov(ebx, eax)?;
        a.mov(eax, dword_ptr(ebp + 8))?;
        a.sub(eax, 2)?;
        a.push(eax)?;
        a.call(fib)?;
        a.add(esp, 4)?;
        a.add(eax, ebx)?;
        a.set_label(&mut base)?;
        a.pop(ebx)?;
        a.pop(ebp)?;
        a.ret()?;

        a.set_label(&mut done)?;
        a.nop()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 610);
    assert_eq!(r.reg(edi), 2 * 987 - 1);
    assert_eq!(r.reg(esp), S);
}

#[test]
fn recursive_sum_with_callee_popped_arguments() {
    let r = run_asm(|a| {
        let mut sum = a.create_label();
        let mut base = a.create_label();
        let mut done = a.create_label();
        a.push(3000u32)?;
        a.call(sum)?;
        a.jmp(done)?;

        // sum(n) = n == 0 ? 0 : n + sum(n-1), stdcall.
        a.set_label(&mut sum)?;
        a.mov(ecx, dword_ptr(esp + 4))?;
        a.xor(eax, eax)?;
        a.test(ecx, ecx)?;
        a.jz(base)?;
        a.push(ecx)?;
        a.dec(ecx)?;
        a.push(ecx)?;
        a.call(sum)?;
        a.pop(ecx)?;
        a.add(eax, ecx)?;
        a.set_label(&mut base)?;
        a.ret_1(4)?;

        a.set_label(&mut done)?;
        a.nop()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 3000 * 3001 / 2);
    assert_eq!(r.reg(esp), S);
}

// ---- flags at the start of a block: instructions that may leave them alone ----

/// Sets CF SF OF (ZF clear), jumps to a new block that starts with
/// `first`, and returns the status flags seen right after it.
fn flags_after_block_start(first: fn(&mut CodeAssembler) -> Result<(), IcedError>) -> u32 {
    let r = run_asm(|a| {
        let mut next = a.create_label();
        a.mov(eax, 0x1234u32)?;
        a.xor(ecx, ecx)?;
        a.push(fl::CF | fl::SF | fl::OF | fl::FIXED1)?;
        a.popfd()?;
        a.jmp(next)?;
        a.set_label(&mut next)?;
        first(a)?;
        a.pushfd()?;
        a.pop(ebx)?;
        Ok(())
    });
    r.assert_halted();
    r.reg(ebx) & fl::STATUS
}

#[test]
fn shl_by_cl_zero_at_the_start_of_a_block_keeps_the_flags() {
    assert_eq!(
        flags_after_block_start(|a| a.shl(eax, cl)),
        fl::CF | fl::SF | fl::OF
    );
}

#[test]
fn sar_by_cl_32_at_the_start_of_a_block_keeps_the_flags() {
    // The count is masked to 5 bits: 32 is 0.
    assert_eq!(
        flags_after_block_start(|a| {
            a.mov(ecx, 32u32)?;
            a.sar(eax, cl)
        }),
        fl::CF | fl::SF | fl::OF
    );
}

#[test]
fn shl_by_immediate_zero_at_the_start_of_a_block_keeps_the_flags() {
    assert_eq!(
        flags_after_block_start(|a| a.db(&[0xC1, 0xE0, 0x00])),
        fl::CF | fl::SF | fl::OF
    );
}

#[test]
fn shld_by_cl_zero_at_the_start_of_a_block_keeps_the_flags() {
    assert_eq!(
        flags_after_block_start(|a| a.shld(eax, edx, cl)),
        fl::CF | fl::SF | fl::OF
    );
}

#[test]
fn flags_set_by_a_callee_survive_a_return_to_a_shift_by_zero() {
    let r = run_asm(|a| {
        let mut f = a.create_label();
        let mut done = a.create_label();
        a.mov(eax, 0x1234u32)?;
        a.xor(ecx, ecx)?;
        a.call(f)?;
        a.shl(eax, cl)?; // count 0: the callee's flags stay
        a.pushfd()?;
        a.pop(ebx)?;
        a.jmp(done)?;
        a.set_label(&mut f)?;
        a.push(fl::CF | fl::SF | fl::OF | fl::FIXED1)?;
        a.popfd()?;
        a.ret()?;
        a.set_label(&mut done)?;
        a.nop()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx) & fl::STATUS, fl::CF | fl::SF | fl::OF);
}

// ---- prefixes and encodings ----

#[test]
fn jcc_with_a_branch_hint_prefix() {
    let r = run_asm(|a| {
        a.xor(eax, eax)?; // ZF=1
        a.db(&[0x3E, 0x74, 0x05])?; // ds jz +5 (taken hint)
        a.mov(ebx, 1u32)?; // skipped
        a.db(&[0x2E, 0x75, 0x05])?; // cs jnz +5 (not-taken hint): not taken
        a.mov(ecx, 2u32)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), 0);
    assert_eq!(r.reg(ecx), 2);
}

#[test]
fn rep_ret_returns() {
    let r = run_asm(|a| {
        let mut f = a.create_label();
        let mut done = a.create_label();
        a.call(f)?;
        a.mov(ebx, 2u32)?;
        a.jmp(done)?;
        a.set_label(&mut f)?;
        a.mov(eax, 1u32)?;
        a.db(&[0xF3, 0xC3])?; // rep ret
        a.set_label(&mut done)?;
        a.nop()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 1);
    assert_eq!(r.reg(ebx), 2);
    assert_eq!(r.reg(esp), S);
}

#[test]
fn jump_into_the_middle_of_an_instruction() {
    // B9 41 42 90 90 is `mov ecx, 0x90904241`; from its second byte it is
    // `inc ecx; inc edx; nop; nop`.
    let (r, _) = run_asm_fix(Options::default(), |a, addrs| {
        let mut insn = a.create_label();
        a.mov(ecx, 10u32)?;
        a.mov(eax, addrs[0] + 1)?;
        a.jmp(eax)?;
        a.set_label(&mut insn)?;
        a.db(&[0xB9, 0x41, 0x42, 0x90, 0x90])?;
        a.mov(esi, ecx)?;
        Ok(vec![insn])
    });
    r.assert_halted();
    assert_eq!(r.reg(esi), 11);
    assert_eq!(r.reg(edx), 1);
}

#[test]
fn the_same_bytes_run_from_two_entry_points() {
    // As above, but the whole instruction runs first and then the inner one.
    let (r, _) = run_asm_fix(Options::default(), |a, addrs| {
        let mut insn = a.create_label();
        let mut done = a.create_label();
        a.xor(edi, edi)?;
        a.set_label(&mut insn)?;
        a.db(&[0xB9, 0x41, 0x42, 0x90, 0x90])?;
        a.inc(edi)?;
        a.cmp(edi, 2)?;
        a.je(done)?;
        a.mov(ebx, ecx)?;
        a.mov(eax, addrs[0] + 1)?;
        a.jmp(eax)?;
        a.set_label(&mut done)?;
        a.nop()?;
        Ok(vec![insn])
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), 0x9090_4241);
    assert_eq!(r.reg(ecx), 0x9090_4242);
}

// ---- 16-bit operand size branches (IP truncated to 16 bits): in low memory ----

const LOW: u32 = 0x3000;

/// Runs `low` assembled at LOW, entered by a jump from LOAD; `low` ends
/// with hlt itself.
fn run_low(low: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Run {
    let main = assemble_at(LOAD, |a| {
        a.mov(esp, STACK)?;
        a.mov(eax, LOW)?;
        a.jmp(eax)
    });
    let code = assemble_at(LOW, low);
    run_image_blocks(&[(LOW, code), (LOAD, main)], LOAD)
}

fn run_image_blocks(blocks: &[(u32, Vec<u8>)], entry: u32) -> Run {
    let end = blocks
        .iter()
        .map(|b| b.0 as usize + b.1.len())
        .max()
        .unwrap();
    let start = blocks.iter().map(|b| b.0).min().unwrap();
    let mut image = vec![0u8; end - start as usize];
    for (addr, bytes) in blocks {
        let off = (*addr - start) as usize;
        image[off..off + bytes.len()].copy_from_slice(bytes);
    }
    run_image(Options::default(), &image, start, entry)
}

#[test]
fn call_rel16_and_retw_push_and_pop_a_word() {
    // At LOW: 66 E8 rel16 (call), then hlt; the callee records esp and
    // the pushed word, then 66 C3 (retw).
    let r = run_low(|a| {
        a.db(&[0x66, 0xE8, 0x02, 0x00])?; // call +2 (to LOW+6)
        a.hlt()?; // LOW+4
        a.nop()?; // LOW+5
        a.mov(ebx, esp)?; // LOW+6
        a.movzx(ecx, word_ptr(esp))?;
        a.db(&[0x66, 0xC3]) // retw
    });
    assert_eq!(r.stop, Stop::Halted { eip: LOW + 5 });
    assert_eq!(r.reg(ebx), STACK - 2);
    assert_eq!(r.reg(ecx), LOW + 4);
    assert_eq!(r.reg(esp), STACK);
}

#[test]
fn retw_imm16_releases_the_arguments() {
    let r = run_low(|a| {
        a.db(&[0x66, 0x6A, 0x07])?; // push word 7
        a.db(&[0x66, 0xE8, 0x02, 0x00])?; // call +2 (to LOW+9)
        a.hlt()?; // LOW+7
        a.nop()?; // LOW+8
        a.movzx(eax, word_ptr(esp + 2))?; // LOW+9
        a.db(&[0x66, 0xC2, 0x02, 0x00]) // retw 2
    });
    assert_eq!(r.stop, Stop::Halted { eip: LOW + 8 });
    assert_eq!(r.reg(eax), 7);
    assert_eq!(r.reg(esp), STACK);
}

#[test]
fn jmp_rel16_truncates_the_target_to_16_bits() {
    // At 0x3000 in a 32-bit segment, `jmp rel16` lands on the 16-bit
    // target; the upper half of EIP is cleared (here already 0).
    let r = run_low(|a| {
        a.db(&[0x66, 0xE9, 0x05, 0x00])?; // jmp +5 (LOW+4+5 = LOW+9)
        a.mov(ebx, 1u32)?; // LOW+4..LOW+9, skipped
        a.mov(eax, 2u32)?; // LOW+9
        a.hlt()
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), 0);
    assert_eq!(r.reg(eax), 2);
}

#[test]
fn call_through_a_16_bit_register_pushes_a_word() {
    let r = run_low(|a| {
        a.mov(eax, 0xFFFF_0000u32 | (LOW + 9))?; // LOW: ax = the target
        a.db(&[0x66, 0xFF, 0xD0])?; // LOW+5: call ax
        a.hlt()?; // LOW+8
        a.mov(ebx, esp)?; // LOW+9
        a.movzx(ecx, word_ptr(esp))?;
        a.mov(esp, STACK)?;
        a.hlt()
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), STACK - 2);
    assert_eq!(r.reg(ecx), LOW + 8);
}
