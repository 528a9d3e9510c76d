//! Integer instructions the host runs as they are (translator/src/lower/
//! ident.rs) and the ones the runtime emulates (BCD): cmov, bswap,
//! cmpxchg(8b), xadd, bit tests, bit scans, double shifts, multiply and
//! divide, xlat, lahf/sahf, setcc, movzx/movsx, lea (32- and 16-bit
//! addressing), nop forms, and AH-BH with esp-based memory (the
//! register-borrowing path).

use bt86_testsuite::*;

const S: u32 = STACK;

/// Loads distinct values into every register but esp.
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

const DISTINCT: [u32; 8] = [
    0xA0A1_A2A3,
    0xC0C1_C2C3,
    0xD0D1_D2D3,
    0xB0B1_B2B3,
    0,
    0xE0E1_E2E3,
    0x5051_5253,
    0xF0F1_F2F3,
];

/// DISTINCT with esp and some registers replaced.
fn distinct_with(esp_v: u32, changes: &[(usize, u32)]) -> [u32; 8] {
    let mut v = DISTINCT;
    v[4] = esp_v;
    for &(i, x) in changes {
        v[i] = x;
    }
    v
}

fn set_flags(a: &mut CodeAssembler, flags: u32) -> Result<(), IcedError> {
    a.push(flags | fl::FIXED1)?;
    a.popfd()
}

// ---- cmov ----

#[test]
fn cmove_moves_when_zf_is_set() {
    let r = run_asm(|a| {
        a.mov(eax, 1u32)?;
        a.mov(ebx, 5u32)?;
        set_flags(a, fl::ZF)?;
        a.cmove(eax, ebx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 5);
}

#[test]
fn cmovne_keeps_the_destination_when_zf_is_set() {
    let r = run_asm(|a| {
        a.mov(eax, 1u32)?;
        a.mov(ebx, 5u32)?;
        set_flags(a, fl::ZF)?;
        a.cmovne(eax, ebx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 1);
}

#[test]
fn cmovl_16_bit_keeps_the_upper_half() {
    let r = run_asm(|a| {
        a.mov(eax, 0x1234_0000u32)?;
        a.mov(ebx, 0xFFFF_5678u32)?;
        set_flags(a, fl::SF)?;
        a.cmovl(ax, bx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x1234_5678);
}

#[test]
fn cmovg_from_esp_based_memory() {
    let r = run_asm(|a| {
        a.push(0x77u32)?;
        a.push(0x66u32)?;
        set_flags(a, 0)?;
        a.cmovg(eax, dword_ptr(esp + 4))?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x77);
}

// ---- bswap ----

#[test]
fn bswap_reverses_the_bytes() {
    let r = run_asm(|a| {
        a.mov(eax, 0x1122_3344u32)?;
        a.bswap(eax)?;
        a.mov(edi, 0x0102_0304u32)?;
        a.bswap(edi)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x4433_2211);
    assert_eq!(r.reg(edi), 0x0403_0201);
}

#[test]
fn bswap_esp_twice_restores_it() {
    let r = run_asm(|a| {
        a.bswap(esp)?;
        a.mov(eax, esp)?;
        a.bswap(esp)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), S.swap_bytes());
    assert_eq!(r.reg(esp), S);
}

// ---- cmpxchg / cmpxchg8b / xadd ----

#[test]
fn cmpxchg_stores_the_source_when_eax_matches() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(DATA), 5u32)?;
        a.mov(eax, 5u32)?;
        a.mov(ecx, 9u32)?;
        a.lock().cmpxchg(dword_ptr(DATA), ecx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(DATA), 9);
    assert_eq!(r.reg(eax), 5);
    assert_eq!(r.status() & fl::ZF, fl::ZF);
}

#[test]
fn cmpxchg_loads_eax_when_it_does_not_match() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(DATA), 6u32)?;
        a.mov(eax, 5u32)?;
        a.mov(ecx, 9u32)?;
        a.cmpxchg(dword_ptr(DATA), ecx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(DATA), 6);
    assert_eq!(r.reg(eax), 6);
    assert_eq!(r.status() & fl::ZF, 0);
}

#[test]
fn cmpxchg_with_register_destination() {
    let r = run_asm(|a| {
        a.mov(eax, 7u32)?;
        a.mov(ebx, 7u32)?;
        a.mov(ecx, 0x42u32)?;
        a.cmpxchg(ebx, ecx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), 0x42);
    assert_eq!(r.status() & fl::ZF, fl::ZF);
}

#[test]
fn cmpxchg8b_stores_ecx_ebx_when_edx_eax_matches() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(DATA), 0x1111_1111u32)?;
        a.mov(dword_ptr(DATA + 4), 0x2222_2222u32)?;
        a.mov(eax, 0x1111_1111u32)?;
        a.mov(edx, 0x2222_2222u32)?;
        a.mov(ebx, 0x3333_3333u32)?;
        a.mov(ecx, 0x4444_4444u32)?;
        a.lock().cmpxchg8b(qword_ptr(DATA))?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(DATA), 0x3333_3333);
    assert_eq!(r.mem_u32(DATA + 4), 0x4444_4444);
    assert_eq!(r.reg(eax), 0x1111_1111);
    assert_eq!(r.reg(edx), 0x2222_2222);
    assert_eq!(r.status() & fl::ZF, fl::ZF);
}

#[test]
fn cmpxchg8b_loads_edx_eax_when_it_does_not_match() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(DATA), 0x1111_1111u32)?;
        a.mov(dword_ptr(DATA + 4), 0x2222_2222u32)?;
        a.mov(eax, 0x1111_1111u32)?;
        a.mov(edx, 0x2222_2223u32)?;
        a.mov(ebx, 0x3333_3333u32)?;
        a.mov(ecx, 0x4444_4444u32)?;
        a.cmpxchg8b(qword_ptr(DATA))?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(DATA), 0x1111_1111);
    assert_eq!(r.mem_u32(DATA + 4), 0x2222_2222);
    assert_eq!(r.reg(eax), 0x1111_1111);
    assert_eq!(r.reg(edx), 0x2222_2222);
    assert_eq!(r.status() & fl::ZF, 0);
}

#[test]
fn cmpxchg8b_on_esp_based_memory() {
    let r = run_asm(|a| {
        a.push(0xBBBB_BBBBu32)?; // high
        a.push(0xAAAA_AAAAu32)?; // low
        a.mov(eax, 0xAAAA_AAAAu32)?;
        a.mov(edx, 0xBBBB_BBBBu32)?;
        a.mov(ebx, 1u32)?;
        a.mov(ecx, 2u32)?;
        a.cmpxchg8b(qword_ptr(esp))?;
        a.pop(esi)?;
        a.pop(edi)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esi), 1);
    assert_eq!(r.reg(edi), 2);
    assert_eq!(r.status() & fl::ZF, fl::ZF);
}

#[test]
fn xadd_memory_exchanges_and_adds() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(DATA), 10u32)?;
        a.mov(eax, 3u32)?;
        a.lock().xadd(dword_ptr(DATA), eax)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(DATA), 13);
    assert_eq!(r.reg(eax), 10);
}

#[test]
fn xadd_registers_sets_the_flags_of_the_sum() {
    let r = run_asm(|a| {
        a.mov(ebx, 0xFFFF_FFFFu32)?;
        a.mov(ecx, 1u32)?;
        a.xadd(ebx, ecx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), 0);
    assert_eq!(r.reg(ecx), 0xFFFF_FFFF);
    assert_eq!(r.status(), fl::ZF | fl::CF | fl::PF | fl::AF);
}

// ---- bit tests ----

#[test]
fn bt_memory_with_register_offset_reaches_the_next_dword() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(DATA), 0u32)?;
        a.mov(dword_ptr(DATA + 4), 8u32)?;
        a.mov(ecx, 35u32)?;
        a.bt(dword_ptr(DATA), ecx)?;
        a.setc(al)?;
        a.mov(ecx, 3u32)?;
        a.bt(dword_ptr(DATA), ecx)?;
        a.setc(bl)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax) & 0xFF, 1);
    assert_eq!(r.reg(ebx) & 0xFF, 0);
}

#[test]
fn bts_memory_with_negative_offset_sets_a_bit_below_the_base() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(DATA - 4), 0u32)?;
        a.mov(dword_ptr(DATA), 0u32)?;
        a.mov(ecx, 0xFFFF_FFFFu32)?; // -1: bit 31 of the dword at DATA-4
        a.bts(dword_ptr(DATA), ecx)?;
        a.setc(al)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(DATA - 4), 0x8000_0000);
    assert_eq!(r.mem_u32(DATA), 0);
    assert_eq!(r.reg(eax) & 0xFF, 0);
}

#[test]
fn btr_memory_with_negative_offset_clears_a_bit_two_dwords_below() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(DATA - 8), 0xFFFF_FFFFu32)?;
        a.mov(dword_ptr(DATA - 4), 0xFFFF_FFFFu32)?;
        a.mov(ebx, DATA)?;
        a.mov(ecx, (-33i32) as u32)?; // bit 31 of the dword at DATA-8
        a.btr(dword_ptr(ebx), ecx)?;
        a.setc(al)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(DATA - 8), 0x7FFF_FFFF);
    assert_eq!(r.mem_u32(DATA - 4), 0xFFFF_FFFF);
    assert_eq!(r.reg(eax) & 0xFF, 1);
}

#[test]
fn btc_memory_with_large_register_offset() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(DATA + 0x1000), 0x20u32)?;
        a.mov(ecx, 0x1000 * 8 + 5u32)?;
        a.btc(dword_ptr(DATA), ecx)?;
        a.setc(al)?;
        a.btc(dword_ptr(DATA), ecx)?;
        a.btc(dword_ptr(DATA), ecx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(DATA + 0x1000), 0);
    assert_eq!(r.reg(eax) & 0xFF, 1);
}

#[test]
fn bt_word_memory_with_negative_register_offset() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(DATA - 4), 0x8000_0000u32)?; // bit 15 of the word at DATA-2
        a.mov(ecx, 0xFFFFu32)?; // cx = -1
        a.bt(word_ptr(DATA), cx)?;
        a.setc(al)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax) & 0xFF, 1);
}

#[test]
fn bts_with_esp_base_and_register_offset() {
    let r = run_asm(|a| {
        a.push(0u32)?;
        a.push(0u32)?;
        a.mov(eax, 40u32)?; // bit 8 of [esp+4]
        a.bts(dword_ptr(esp), eax)?;
        a.pop(ebx)?;
        a.pop(ecx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), 0);
    assert_eq!(r.reg(ecx), 0x100);
}

#[test]
fn bt_memory_with_immediate_offset_is_taken_modulo_32() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(DATA), 2u32)?;
        a.mov(dword_ptr(DATA + 4), 0u32)?;
        a.bt(dword_ptr(DATA), 33)?; // bit 1 of DATA, not of DATA+4
        a.setc(al)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax) & 0xFF, 1);
}

#[test]
fn bt_register_with_register_offset_is_taken_modulo_32() {
    let r = run_asm(|a| {
        a.mov(ebx, 8u32)?;
        a.mov(ecx, 35u32)?;
        a.bt(ebx, ecx)?;
        a.setc(al)?;
        a.bts(ebx, ecx)?; // no-op on bit 3
        a.btr(ebx, 3)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax) & 0xFF, 1);
    assert_eq!(r.reg(ebx), 0);
}

// ---- bit scans ----

#[test]
fn bsf_and_bsr_find_the_lowest_and_highest_set_bit() {
    let r = run_asm(|a| {
        a.mov(ecx, 0x00F0_0000u32)?;
        a.bsf(eax, ecx)?;
        a.bsr(ebx, ecx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 20);
    assert_eq!(r.reg(ebx), 23);
    assert_eq!(r.status() & fl::ZF, 0);
}

#[test]
fn bsf_of_zero_sets_zf() {
    let r = run_asm(|a| {
        a.xor(ecx, ecx)?;
        a.inc(ecx)?; // ZF=0
        a.dec(ecx)?; // ZF=1 ... make it 0 again
        a.or(eax, 1)?; // ZF=0
        a.bsf(eax, ecx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.status() & fl::ZF, fl::ZF);
}

#[test]
fn bsr_from_esp_based_memory() {
    let r = run_asm(|a| {
        a.push(0x0000_1000u32)?;
        a.bsr(edx, dword_ptr(esp))?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(edx), 12);
}

// ---- double shifts ----

#[test]
fn shld_by_immediate_shifts_in_the_high_bits_of_the_source() {
    let r = run_asm(|a| {
        a.mov(eax, 0x1122_3344u32)?;
        a.mov(ebx, 0xAABB_CCDDu32)?;
        a.shld(eax, ebx, 8)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x2233_44AA);
    assert_eq!(r.status() & fl::CF, fl::CF);
}

#[test]
fn shrd_by_cl_shifts_in_the_low_bits_of_the_source() {
    let r = run_asm(|a| {
        a.mov(eax, 0x1122_3344u32)?;
        a.mov(ebx, 0xAABB_CCDDu32)?;
        a.mov(ecx, 4u32)?;
        a.shrd(eax, ebx, cl)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0xD112_2334);
    assert_eq!(r.status() & fl::CF, 0);
}

#[test]
fn shld_on_esp_based_memory() {
    let r = run_asm(|a| {
        a.push(0x1234_5678u32)?;
        a.mov(ebx, 0xF000_0000u32)?;
        a.shld(dword_ptr(esp), ebx, 4)?;
        a.pop(eax)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x2345_678F);
}

#[test]
fn shld_by_zero_changes_nothing() {
    let r = run_asm(|a| {
        a.mov(eax, 0x1122_3344u32)?;
        a.mov(ebx, 0xAABB_CCDDu32)?;
        a.xor(ecx, ecx)?;
        set_flags(a, fl::CF | fl::OF | fl::SF)?;
        a.shld(eax, ebx, cl)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x1122_3344);
    assert_eq!(r.status(), fl::CF | fl::OF | fl::SF);
}

#[test]
fn shrd_16_bit_by_immediate() {
    let r = run_asm(|a| {
        a.mov(eax, 0xFFFF_1234u32)?;
        a.mov(ebx, 0x0000_ABCDu32)?;
        a.shrd(ax, bx, 4)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0xFFFF_D123);
}

// ---- multiply / divide ----

#[test]
fn mul_r32_produces_edx_eax_and_sets_cf_of_on_a_high_half() {
    let r = run_asm(|a| {
        a.mov(eax, 0x8000_0000u32)?;
        a.mov(ecx, 4u32)?;
        a.mul(ecx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0);
    assert_eq!(r.reg(edx), 2);
    assert_eq!(r.status() & (fl::CF | fl::OF), fl::CF | fl::OF);
}

#[test]
fn mul_r32_clears_cf_of_when_the_high_half_is_zero() {
    let r = run_asm(|a| {
        a.mov(eax, 3u32)?;
        a.mov(ecx, 5u32)?;
        a.mov(edx, 0xFFFFu32)?;
        a.mul(ecx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 15);
    assert_eq!(r.reg(edx), 0);
    assert_eq!(r.status() & (fl::CF | fl::OF), 0);
}

#[test]
fn mul_r8_writes_ax() {
    let r = run_asm(|a| {
        a.mov(eax, 0x1234_5680u32)?;
        a.mov(ebx, 2u32)?;
        a.mul(bl)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x1234_0100);
    assert_eq!(r.status() & fl::CF, fl::CF);
}

#[test]
fn imul_one_operand_sign_extends_into_edx() {
    let r = run_asm(|a| {
        a.mov(eax, (-3i32) as u32)?;
        a.mov(ecx, 5u32)?;
        a.imul(ecx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), (-15i32) as u32);
    assert_eq!(r.reg(edx), 0xFFFF_FFFF);
    assert_eq!(r.status() & (fl::CF | fl::OF), 0);
}

#[test]
fn imul_two_operand_sets_cf_of_on_overflow() {
    let r = run_asm(|a| {
        a.mov(eax, 0x1_0000u32)?;
        a.mov(ecx, 0x1_0000u32)?;
        a.imul_2(eax, ecx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0);
    assert_eq!(r.status() & (fl::CF | fl::OF), fl::CF | fl::OF);
}

#[test]
fn imul_three_operand_with_esp_based_memory() {
    let r = run_asm(|a| {
        a.push(6u32)?;
        a.imul_3(ebx, dword_ptr(esp), -7)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), (-42i32) as u32);
}

#[test]
fn div_r32_divides_edx_eax() {
    let r = run_asm(|a| {
        a.mov(edx, 1u32)?;
        a.mov(eax, 5u32)?;
        a.mov(ecx, 0x10u32)?;
        a.div(ecx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x1000_0000);
    assert_eq!(r.reg(edx), 5);
}

#[test]
fn div_r8_divides_ax_into_al_and_ah() {
    let r = run_asm(|a| {
        a.mov(eax, 0xFFFF_0000u32 + 1000)?;
        a.mov(ecx, 7u32)?;
        a.div(cl)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0xFFFF_068E);
}

#[test]
fn div_r16_divides_dx_ax() {
    let r = run_asm(|a| {
        a.mov(edx, 0xAAAA_0001u32)?;
        a.mov(eax, 0xBBBB_0000u32)?;
        a.mov(ecx, 3u32)?;
        a.div(cx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0xBBBB_5555);
    assert_eq!(r.reg(edx), 0xAAAA_0001);
}

#[test]
fn idiv_r32_rounds_toward_zero() {
    let r = run_asm(|a| {
        a.mov(eax, (-100i32) as u32)?;
        a.cdq()?;
        a.mov(ecx, 7u32)?;
        a.idiv(ecx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), (-14i32) as u32);
    assert_eq!(r.reg(edx), (-2i32) as u32);
}

#[test]
fn idiv_r8_from_memory() {
    let r = run_asm(|a| {
        a.mov(byte_ptr(DATA), 7u32)?;
        a.mov(eax, 0x1234_FF9Cu32)?; // ax = -100
        a.idiv(byte_ptr(DATA))?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x1234_FEF2);
}

// ---- xlat, lahf/sahf, setcc ----

#[test]
fn xlat_loads_al_from_ebx_plus_al() {
    let r = run_asm(|a| {
        a.mov(byte_ptr(DATA + 5), 0x0Fu32)?;
        a.mov(ebx, DATA)?;
        a.mov(eax, 0x1234_5605u32)?;
        a.xlatb()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x1234_560F);
}

#[test]
fn xlat_index_is_unsigned() {
    let r = run_asm(|a| {
        a.mov(byte_ptr(DATA + 0x90), 0x77u32)?;
        a.mov(byte_ptr(DATA - 0x70), 0x66u32)?;
        a.mov(ebx, DATA)?;
        a.mov(eax, 0x90u32)?;
        a.xlatb()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x77);
}

#[test]
fn xlat_with_address_size_prefix_uses_bx() {
    let r = run_asm(|a| {
        a.mov(byte_ptr(0x9003u32), 0x42u32)?;
        a.mov(ebx, 0x0001_9000u32)?;
        a.mov(eax, 3u32)?;
        a.db(&[0x67, 0xD7])?; // xlat [bx+al]
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x42);
}

#[test]
fn sahf_loads_sf_zf_af_pf_cf_and_keeps_of() {
    let r = run_asm(|a| {
        set_flags(a, fl::OF)?;
        a.mov(eax, 0xFF00u32)?;
        a.sahf()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(
        r.status(),
        fl::OF | fl::SF | fl::ZF | fl::AF | fl::PF | fl::CF
    );
}

#[test]
fn sahf_with_zero_clears_the_low_flags() {
    let r = run_asm(|a| {
        set_flags(a, fl::STATUS)?;
        a.xor(eax, eax)?;
        a.mov(eax, 0u32)?;
        a.sahf()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.status(), 0);
}

#[test]
fn lahf_stores_the_low_flags_in_ah() {
    let r = run_asm(|a| {
        a.mov(eax, 0x1234_5678u32)?;
        set_flags(a, fl::STATUS)?;
        a.lahf()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x1234_D778);
}

#[test]
fn setcc_writes_one_or_zero_to_a_byte_register() {
    let r = run_asm(|a| {
        a.mov(eax, 0xAAAA_AAAAu32)?;
        a.mov(ebx, 0xBBBB_BBBBu32)?;
        a.stc()?;
        a.setc(al)?;
        a.setnc(bl)?;
        a.setb(bh)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0xAAAA_AA01);
    assert_eq!(r.reg(ebx), 0xBBBB_0100);
}

#[test]
fn setcc_to_esp_based_memory() {
    let r = run_asm(|a| {
        a.push(0xFFFF_FFFFu32)?;
        a.xor(eax, eax)?; // ZF=1
        a.setz(byte_ptr(esp + 1))?;
        a.setnz(byte_ptr(esp + 2))?;
        a.pop(ebx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), 0xFF00_01FF);
}

#[test]
fn setg_and_setle_follow_signed_comparisons() {
    let r = run_asm(|a| {
        a.mov(eax, (-5i32) as u32)?;
        a.cmp(eax, 3)?;
        a.setg(cl)?;
        a.setle(dl)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ecx) & 0xFF, 0);
    assert_eq!(r.reg(edx) & 0xFF, 1);
}

// ---- movzx / movsx ----

#[test]
fn movzx_and_movsx_from_byte_memory() {
    let r = run_asm(|a| {
        a.mov(byte_ptr(DATA), 0x80u32)?;
        a.movzx(eax, byte_ptr(DATA))?;
        a.movsx(ebx, byte_ptr(DATA))?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x80);
    assert_eq!(r.reg(ebx), 0xFFFF_FF80);
}

#[test]
fn movsx_from_word_memory() {
    let r = run_asm(|a| {
        a.mov(word_ptr(DATA), 0x8001u32)?;
        a.movsx(ecx, word_ptr(DATA))?;
        a.movzx(edx, word_ptr(DATA))?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ecx), 0xFFFF_8001);
    assert_eq!(r.reg(edx), 0x8001);
}

#[test]
fn movzx_to_16_bit_keeps_the_upper_half() {
    let r = run_asm(|a| {
        a.mov(eax, 0x1234_5678u32)?;
        a.mov(ebx, 0xF0u32)?;
        a.movzx(ax, bl)?;
        a.mov(ecx, 0x1234_5678u32)?;
        a.movsx(cx, bl)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x1234_00F0);
    assert_eq!(r.reg(ecx), 0x1234_FFF0);
}

#[test]
fn movsx_from_ah() {
    let r = run_asm(|a| {
        a.mov(eax, 0x0000_9000u32)?;
        a.movsx(edx, ah)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(edx), 0xFFFF_FF90);
}

// ---- lea ----

#[test]
fn lea_base_index_scale_displacement() {
    let r = run_asm(|a| {
        a.mov(ebx, 0x1000u32)?;
        a.mov(ecx, 0x10u32)?;
        a.lea(eax, ptr(ebx + ecx * 4 + 8))?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x1048);
}

#[test]
fn lea_with_esp_base() {
    let r = run_asm(|a| {
        a.lea(eax, ptr(esp + 4))?;
        a.lea(ebx, ptr(esp + ecx * 2 - 0x10))?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), S + 4);
    assert_eq!(r.reg(ebx), S - 0x10);
}

#[test]
fn lea_into_esp() {
    let r = run_asm(|a| {
        a.lea(esp, ptr(esp - 8))?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), S - 8);
}

#[test]
fn lea_wraps_at_32_bits() {
    let r = run_asm(|a| {
        a.mov(ebx, 0xFFFF_FFF0u32)?;
        a.mov(ecx, 0x20u32)?;
        a.lea(eax, ptr(ebx + ecx))?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x10);
}

#[test]
fn lea_with_only_a_displacement() {
    let r = run_asm(|a| {
        a.lea(eax, ptr(0x1234_5678u32))?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x1234_5678);
}

#[test]
fn lea_to_16_bit_register_keeps_the_upper_half() {
    let r = run_asm(|a| {
        a.mov(eax, 0xAAAA_AAAAu32)?;
        a.mov(ebx, 0x0001_FFF0u32)?;
        a.mov(ecx, 0x20u32)?;
        a.lea(ax, ptr(ebx + ecx))?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0xAAAA_0010);
}

#[test]
fn lea_16_bit_addressing_bx_si_wraps_at_64k() {
    let r = run_asm(|a| {
        a.mov(ebx, 0x1234_FFFFu32)?;
        a.mov(esi, 0x5678_0002u32)?;
        a.db(&[0x67, 0x8D, 0x00])?; // lea eax, [bx+si]
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 1);
}

#[test]
fn lea_16_bit_addressing_bp_with_negative_displacement() {
    let r = run_asm(|a| {
        a.mov(ebp, 0xAAAA_0000u32)?;
        a.db(&[0x67, 0x8D, 0x46, 0xFE])?; // lea eax, [bp-2]
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0xFFFE);
}

#[test]
fn lea_16_bit_addressing_displacement_only() {
    let r = run_asm(|a| {
        a.db(&[0x67, 0x8D, 0x06, 0x34, 0x12])?; // lea eax, [0x1234]
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x1234);
}

#[test]
fn lea_16_bit_addressing_into_16_bit_register() {
    let r = run_asm(|a| {
        a.mov(eax, 0xFFFF_0000u32)?;
        a.mov(ebx, 0x10u32)?;
        a.mov(edi, 0x20u32)?;
        a.db(&[0x66, 0x67, 0x8D, 0x01])?; // lea ax, [bx+di]
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0xFFFF_0030);
}

#[test]
fn mov_with_16_bit_addressing_ignores_the_upper_register_bits() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(0x9000u32), 0xCAFE_F00Du32)?;
        a.mov(ebx, 0x00AB_9000u32)?;
        a.db(&[0x67, 0x8B, 0x07])?; // mov eax, [bx]
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0xCAFE_F00D);
}

#[test]
fn mov_with_16_bit_addressing_bp_si_disp8() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(0x9010u32), 0x1357_9BDFu32)?;
        a.mov(ebp, 0x1111_8000u32)?;
        a.mov(esi, 0x2222_1000u32)?;
        a.db(&[0x67, 0x8B, 0x42, 0x10])?; // mov eax, [bp+si+0x10]
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x1357_9BDF);
}

#[test]
fn store_with_16_bit_addressing_wraps_at_64k() {
    let r = run_asm(|a| {
        a.mov(ebx, 0xFFFFu32)?;
        a.mov(esi, 0x9001u32)?; // bx+si = 0x19000 -> 0x9000
        a.mov(eax, 0x1122_3344u32)?;
        a.db(&[0x67, 0x89, 0x00])?; // mov [bx+si], eax
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(0x9000), 0x1122_3344);
    assert_eq!(r.mem_u32(0x1_9000), 0);
}

// ---- nop forms ----

#[test]
fn nop_forms_change_nothing() {
    let r = run_asm(|a| {
        distinct(a)?;
        set_flags(a, fl::CF | fl::ZF)?;
        a.db(&[0x90])?;
        a.db(&[0x66, 0x90])?;
        a.db(&[0x0F, 0x1F, 0x00])?; // nop dword [eax]
        a.db(&[0x0F, 0x1F, 0x40, 0x08])?; // nop [eax+8]
        a.db(&[0x0F, 0x1F, 0x44, 0x24, 0x08])?; // nop [esp+8]
        a.db(&[0x66, 0x0F, 0x1F, 0x44, 0x00, 0x00])?;
        a.db(&[0x0F, 0x1F, 0x80, 0x00, 0x00, 0x00, 0x00])?;
        a.db(&[0x66, 0x0F, 0x1F, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00])?;
        a.db(&[0xF3, 0x90])?; // pause
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.regs(), distinct_with(S, &[]));
    assert_eq!(r.status(), fl::CF | fl::ZF);
}

#[test]
fn nop_with_memory_operand_beyond_ram_does_not_fault() {
    // Beyond RAM is not mapped: an access there would fault.
    let r = run_asm_with(Options::paged(), |a| {
        a.mov(eax, 0xFFFF_FFF0u32)?;
        a.db(&[0x0F, 0x1F, 0x00])?; // nop dword [eax]
        a.mov(esp, 0x4000_0000u32)?;
        a.db(&[0x0F, 0x1F, 0x44, 0x24, 0x08])?; // nop [esp+8]
        a.mov(esp, STACK)?;
        Ok(())
    });
    r.assert_halted();
}

#[test]
fn nop_with_16_bit_addressing() {
    let r = run_asm(|a| {
        distinct(a)?;
        a.db(&[0x67, 0x0F, 0x1F, 0x00])?; // nop [bx+si]
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.regs(), distinct_with(S, &[]));
}

// ---- AH-BH with esp-based memory: the register-borrowing path ----

#[test]
fn mov_ah_from_esp_based_memory() {
    let r = run_asm(|a| {
        a.push(0x1122_3344u32)?;
        a.push(0x5566_7788u32)?;
        distinct(a)?;
        a.mov(ah, byte_ptr(esp + 4))?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.regs(), distinct_with(S - 8, &[(0, 0xA0A1_44A3)]));
}

#[test]
fn mov_bh_to_esp_based_memory() {
    let r = run_asm(|a| {
        a.push(0u32)?;
        distinct(a)?;
        a.mov(byte_ptr(esp + 1), bh)?;
        a.pop(edi)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.regs(), distinct_with(S, &[(7, 0x0000_B200)]));
}

#[test]
fn add_bh_to_esp_based_memory() {
    let r = run_asm(|a| {
        a.push(0x0000_0010u32)?;
        distinct(a)?;
        a.add(byte_ptr(esp), bh)?; // 0x10 + 0xB2 = 0xC2
        a.pop(edi)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.regs(), distinct_with(S, &[(7, 0xC2)]));
    assert_eq!(r.status() & (fl::CF | fl::SF | fl::ZF), fl::SF);
}

#[test]
fn sub_dh_from_esp_based_memory_sets_flags() {
    let r = run_asm(|a| {
        a.push(0x0000_00D2u32)?;
        a.push(0u32)?;
        distinct(a)?;
        a.sub(dh, byte_ptr(esp + 4))?; // 0xD2 - 0xD2 = 0
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.regs(), distinct_with(S - 8, &[(2, 0xD0D1_00D3)]));
    assert_eq!(r.status() & (fl::ZF | fl::CF), fl::ZF);
}

#[test]
fn cmp_ch_with_esp_based_memory() {
    let r = run_asm(|a| {
        a.push(0x0000_00FFu32)?;
        distinct(a)?;
        a.cmp(ch, byte_ptr(esp))?; // 0xC2 - 0xFF borrows
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.regs(), distinct_with(S - 4, &[]));
    assert_eq!(r.status() & (fl::ZF | fl::CF), fl::CF);
}

#[test]
fn xchg_ah_with_esp_based_memory() {
    let r = run_asm(|a| {
        a.push(0x0000_0077u32)?;
        distinct(a)?;
        a.xchg(byte_ptr(esp), ah)?;
        a.pop(edi)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.regs(), distinct_with(S, &[(0, 0xA0A1_77A3), (7, 0xA2)]));
}

#[test]
fn mov_ah_from_esp_plus_ebx() {
    let r = run_asm(|a| {
        a.push(0x0000_6600u32)?;
        a.push(0u32)?;
        distinct(a)?;
        a.mov(ebx, 5u32)?;
        a.mov(ah, byte_ptr(esp + ebx))?; // [esp+5] = 0x66
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.regs(), distinct_with(S - 8, &[(0, 0xA0A1_66A3), (3, 5)]));
}

#[test]
fn mov_bh_from_esp_plus_eax_times_two() {
    let r = run_asm(|a| {
        a.push(0x4400_0000u32)?;
        a.push(0u32)?;
        distinct(a)?;
        a.mov(eax, 3u32)?;
        a.mov(bh, byte_ptr(esp + eax * 2 + 1))?; // [esp+7] = 0x44
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.regs(), distinct_with(S - 8, &[(0, 3), (3, 0xB0B1_44B3)]));
}

#[test]
fn cmpxchg_esp_based_memory_with_ah() {
    let r = run_asm(|a| {
        a.push(0x0000_00A3u32)?; // equals al
        distinct(a)?;
        a.cmpxchg(byte_ptr(esp), ah)?; // [esp] = ah = 0xA2
        a.pop(edi)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.regs(), distinct_with(S, &[(7, 0xA2)]));
    assert_eq!(r.status() & fl::ZF, fl::ZF);
}

#[test]
fn xadd_esp_based_memory_with_dh() {
    let r = run_asm(|a| {
        a.push(0x0000_0001u32)?;
        distinct(a)?;
        a.xadd(byte_ptr(esp), dh)?; // [esp] = 1 + 0xD2, dh = 1
        a.pop(edi)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.regs(), distinct_with(S, &[(2, 0xD0D1_01D3), (7, 0xD3)]));
}

#[test]
fn test_dh_with_esp_based_memory() {
    let r = run_asm(|a| {
        a.push(0x0000_2D00u32)?;
        distinct(a)?;
        a.test(byte_ptr(esp + 1), dh)?; // 0x2D & 0xD2 = 0
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.regs(), distinct_with(S - 4, &[]));
    assert_eq!(r.status() & fl::ZF, fl::ZF);
}

#[test]
fn movzx_esp_from_ah() {
    let r = run_asm(|a| {
        distinct(a)?;
        a.movzx(esp, ah)?;
        a.mov(edi, esp)?;
        a.mov(esp, STACK)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.regs(), distinct_with(S, &[(7, 0xA2)]));
}

#[test]
fn movsx_sp_from_bh_keeps_the_upper_half_of_esp() {
    let r = run_asm(|a| {
        distinct(a)?;
        a.movsx(sp, bh)?;
        a.mov(edi, esp)?;
        a.mov(esp, STACK)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(
        r.regs(),
        distinct_with(S, &[(7, (S & 0xFFFF_0000) | 0xFFB2)])
    );
}

#[test]
fn mov_ah_with_16_bit_addressing() {
    let r = run_asm(|a| {
        a.mov(byte_ptr(0x9005u32), 0x99u32)?;
        distinct(a)?;
        a.mov(ebx, 0x0001_9000u32)?;
        a.mov(esi, 0x0002_0005u32)?;
        a.db(&[0x67, 0x8A, 0x20])?; // mov ah, [bx+si]
        Ok(())
    });
    r.assert_halted();
    assert_eq!(
        r.regs(),
        distinct_with(S, &[(0, 0xA0A1_99A3), (3, 0x0001_9000), (6, 0x0002_0005)])
    );
}

#[test]
fn mov_to_memory_from_bh_with_16_bit_addressing() {
    let r = run_asm(|a| {
        distinct(a)?;
        a.mov(ebx, 0x0001_9000u32)?;
        a.db(&[0x67, 0x88, 0x3F])?; // mov [bx], bh
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u8(0x9000), 0x90);
    assert_eq!(r.regs(), distinct_with(S, &[(3, 0x0001_9000)]));
}

// ---- the rest of the integer set ----

#[test]
fn inc_and_dec_keep_the_carry_flag() {
    let r = run_asm(|a| {
        a.mov(eax, 0xFFFF_FFFFu32)?;
        a.stc()?;
        a.inc(eax)?; // ZF, CF unchanged
        a.setc(bl)?;
        a.clc()?;
        a.dec(eax)?; // SF, CF unchanged
        a.setc(bh)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0xFFFF_FFFF);
    assert_eq!(r.reg(ebx) & 0xFFFF, 0x0001);
    assert_eq!(r.status() & (fl::SF | fl::CF | fl::ZF), fl::SF);
}

#[test]
fn inc_r16_short_form_keeps_the_upper_half() {
    let r = run_asm(|a| {
        a.mov(eax, 0x1234_FFFFu32)?;
        a.db(&[0x66, 0x40])?; // inc ax
        a.mov(ecx, 0x5678_0000u32)?;
        a.db(&[0x66, 0x49])?; // dec cx
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x1234_0000);
    assert_eq!(r.reg(ecx), 0x5678_FFFF);
}

#[test]
fn group1_0x82_alias_forms() {
    let r = run_asm(|a| {
        a.mov(eax, 0x10u32)?;
        a.db(&[0x82, 0xC0, 0x05])?; // add al, 5
        a.mov(ecx, 0x05u32)?;
        a.db(&[0x82, 0xF9, 0x05])?; // cmp cl, 5
        a.setz(dl)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x15);
    assert_eq!(r.reg(edx) & 0xFF, 1);
}

#[test]
fn add_adc_chain_carries_into_the_high_dword() {
    let r = run_asm(|a| {
        a.mov(eax, 0xFFFF_FFFFu32)?;
        a.mov(edx, 1u32)?;
        a.add(eax, 1)?;
        a.adc(edx, 0)?;
        a.mov(ecx, 0u32)?;
        a.mov(ebx, 5u32)?;
        a.sub(ecx, 1)?;
        a.sbb(ebx, 0)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0);
    assert_eq!(r.reg(edx), 2);
    assert_eq!(r.reg(ecx), 0xFFFF_FFFF);
    assert_eq!(r.reg(ebx), 4);
}

#[test]
fn rotates_through_carry() {
    let r = run_asm(|a| {
        a.mov(eax, 0x8000_0001u32)?;
        a.clc()?;
        a.rcl(eax, 1)?; // eax = 2, CF = 1
        a.rcr(eax, 1)?; // eax = 0x80000001, CF = 0
        a.mov(ebx, 0x8000_0001u32)?;
        a.rol(ebx, 4)?;
        a.mov(ecx, 0x8000_0001u32)?;
        a.ror(ecx, 1)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x8000_0001);
    assert_eq!(r.reg(ebx), 0x0000_0018);
    assert_eq!(r.reg(ecx), 0xC000_0000);
}

#[test]
fn shift_counts_are_masked_to_5_bits() {
    let r = run_asm(|a| {
        a.mov(eax, 1u32)?;
        a.mov(ecx, 33u32)?;
        a.shl(eax, cl)?;
        a.mov(ebx, 0x8000_0000u32)?;
        a.sar(ebx, 31)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 2);
    assert_eq!(r.reg(ebx), 0xFFFF_FFFF);
}

#[test]
fn sign_extensions_cbw_cwde_cwd_cdq() {
    let r = run_asm(|a| {
        a.mov(eax, 0x1234_0080u32)?;
        a.cbw()?; // ax = 0xFF80
        a.mov(ebx, eax)?;
        a.cwde()?; // eax = 0xFFFFFF80
        a.mov(ecx, eax)?;
        a.mov(edx, 0x5555_5555u32)?;
        a.cwd()?; // dx = 0xFFFF
        a.mov(esi, edx)?;
        a.mov(eax, 1u32)?;
        a.cdq()?; // edx = 0
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), 0x1234_FF80);
    assert_eq!(r.reg(ecx), 0xFFFF_FF80);
    assert_eq!(r.reg(esi), 0x5555_FFFF);
    assert_eq!(r.reg(edx), 0);
}

#[test]
fn neg_and_not() {
    let r = run_asm(|a| {
        a.mov(eax, 5u32)?;
        a.neg(eax)?;
        a.setc(bl)?;
        a.mov(ecx, 0x0F0F_0F0Fu32)?;
        a.not(ecx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), (-5i32) as u32);
    assert_eq!(r.reg(ebx) & 0xFF, 1);
    assert_eq!(r.reg(ecx), 0xF0F0_F0F0);
}

#[test]
fn xchg_register_with_esp_based_memory() {
    let r = run_asm(|a| {
        a.push(0x1111u32)?;
        a.mov(eax, 0x2222u32)?;
        a.xchg(dword_ptr(esp), eax)?;
        a.pop(ebx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x1111);
    assert_eq!(r.reg(ebx), 0x2222);
}

// ---- BCD (emulated by the runtime) ----

#[test]
fn daa_adjusts_a_packed_bcd_sum() {
    let r = run_asm(|a| {
        a.mov(eax, 0x79u32)?;
        a.add(al, 0x35)?;
        a.daa()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x14);
    assert_eq!(r.status() & fl::CF, fl::CF);
}

#[test]
fn das_adjusts_a_packed_bcd_difference() {
    let r = run_asm(|a| {
        a.mov(eax, 0x35u32)?;
        a.sub(al, 0x47)?;
        a.das()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x88);
    assert_eq!(r.status() & fl::CF, fl::CF);
}

#[test]
fn aaa_adjusts_an_unpacked_bcd_sum() {
    let r = run_asm(|a| {
        a.mov(eax, 9u32)?;
        a.add(al, 3)?;
        a.aaa()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x0102);
    assert_eq!(r.status() & (fl::CF | fl::AF), fl::CF | fl::AF);
}

#[test]
fn aas_adjusts_an_unpacked_bcd_difference() {
    let r = run_asm(|a| {
        a.mov(eax, 0x0102u32)?;
        a.sub(al, 5)?;
        a.aas()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x0007);
    assert_eq!(r.status() & (fl::CF | fl::AF), fl::CF | fl::AF);
}

#[test]
fn aam_splits_al_into_decimal_digits() {
    let r = run_asm(|a| {
        a.mov(eax, 0xFFFF_003Fu32)?;
        a.aam(10)?;
        a.mov(ebx, 0x3Fu32)?;
        a.xchg(eax, ebx)?;
        a.db(&[0xD4, 0x10])?; // aam 16
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), 0xFFFF_0603);
    assert_eq!(r.reg(eax), 0x030F);
}

#[test]
fn aad_combines_decimal_digits() {
    let r = run_asm(|a| {
        a.mov(eax, 0x0603u32)?;
        a.aad(10)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x3F);
}

// ---- encodings that mean something else in 64-bit mode or on newer CPUs ----

#[test]
fn rep_bsf_is_bsf_on_a_cpu_without_bmi1() {
    // F3 0F BC is tzcnt with BMI1; compilers emit it as `rep bsf` because
    // older CPUs ignore the prefix. For a source of 1, bsf leaves ZF clear
    // (the source is not zero) where tzcnt would set it (the result is 0).
    let r = run_asm(|a| {
        a.mov(ecx, 0x100u32)?;
        a.db(&[0xF3, 0x0F, 0xBC, 0xC1])?; // rep bsf eax, ecx
        a.mov(ecx, 1u32)?;
        a.db(&[0xF3, 0x0F, 0xBC, 0xD9])?; // rep bsf ebx, ecx
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 8);
    assert_eq!(r.reg(ebx), 0);
    assert_eq!(r.status() & fl::ZF, 0);
}

#[test]
fn rep_bsr_is_bsr_on_a_cpu_without_lzcnt() {
    // F3 0F BD is lzcnt with LZCNT (23 for 0x100); bsr gives 8.
    let r = run_asm(|a| {
        a.mov(ecx, 0x100u32)?;
        a.db(&[0xF3, 0x0F, 0xBD, 0xC1])?; // rep bsr eax, ecx
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 8);
}

#[test]
fn mov_eax_moffs_forms_use_a_32_bit_address() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(DATA), 0x1122_3344u32)?;
        let d = DATA.to_le_bytes();
        a.db(&[0xA1, d[0], d[1], d[2], d[3]])?; // mov eax, [DATA]
        a.db(&[0xA0, d[0], d[1], d[2], d[3]])?; // mov al, [DATA]... (again 0x44)
        a.mov(ebx, eax)?;
        a.mov(eax, 0x5566_7788u32)?;
        let d4 = (DATA + 4).to_le_bytes();
        a.db(&[0xA3, d4[0], d4[1], d4[2], d4[3]])?; // mov [DATA+4], eax
        a.mov(eax, 0x99u32)?;
        let d8 = (DATA + 8).to_le_bytes();
        a.db(&[0xA2, d8[0], d8[1], d8[2], d8[3]])?; // mov [DATA+8], al
        a.db(&[0x66, 0xA1, d4[0], d4[1], d4[2], d4[3]])?; // mov ax, [DATA+4]
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), 0x1122_3344);
    assert_eq!(r.mem_u32(DATA + 4), 0x5566_7788);
    assert_eq!(r.mem_u8(DATA + 8), 0x99);
    assert_eq!(r.reg(eax), 0x7788);
}

#[test]
fn segment_overrides_on_ordinary_memory_operands_address_flat_memory() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(DATA), 0xCAFE_0001u32)?;
        a.mov(ebx, DATA)?;
        a.mov(eax, dword_ptr(ebx).fs())?;
        a.mov(ecx, dword_ptr(ebx).gs())?;
        a.mov(edx, dword_ptr(ebx).ss())?;
        a.mov(esi, dword_ptr(ebx).cs())?;
        a.mov(dword_ptr(ebx + 4).es(), eax)?;
        Ok(())
    });
    r.assert_halted();
    for reg in [eax, ecx, edx, esi] {
        assert_eq!(r.reg(reg), 0xCAFE_0001);
    }
    assert_eq!(r.mem_u32(DATA + 4), 0xCAFE_0001);
}

#[test]
fn xlat_with_fs_override() {
    let r = run_asm(|a| {
        a.mov(byte_ptr(DATA + 2), 0x5Eu32)?;
        a.mov(ebx, DATA)?;
        a.mov(eax, 2u32)?;
        a.db(&[0x64, 0xD7])?; // xlat fs:[ebx+al]
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x5E);
}

#[test]
fn arpl_raises_the_rpl_of_the_destination() {
    let r = run_asm(|a| {
        a.mov(eax, 0xFFFF_0010u32)?;
        a.mov(ebx, 0x0003u32)?;
        a.arpl(ax, bx)?;
        a.setz(cl)?;
        a.mov(edx, 0x0013u32)?;
        a.arpl(dx, bx)?; // already 3: unchanged, ZF=0
        a.setz(ch)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0xFFFF_0013);
    assert_eq!(r.reg(edx), 0x0013);
    assert_eq!(r.reg(ecx) & 0xFFFF, 0x0001);
}

#[test]
fn hint_nops_and_endbr32_do_nothing_even_with_memory_beyond_ram() {
    // endbr32, cldemote/rdsspd encodings, 0F 19 with a [disp32] far beyond
    // RAM (not mapped), a 0x66 multi-byte NOP: all NOPs on a P6, none
    // touches memory.
    let r = run_asm_with(Options::paged(), |a| {
        a.mov(eax, 0x1234u32)?;
        a.db(&[0xF3, 0x0F, 0x1E, 0xFB])?;
        a.db(&[0x0F, 0x1C, 0x40, 0x10])?;
        a.db(&[0xF3, 0x0F, 0x1E, 0xC8])?;
        a.db(&[0x0F, 0x19, 0x05, 0x00, 0x00, 0x00, 0xF0])?;
        a.db(&[0x66, 0x0F, 0x1F, 0x44, 0x00, 0x00])?;
        a.inc(eax)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x1235);
}
