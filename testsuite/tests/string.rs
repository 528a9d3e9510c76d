//! movs/stos/lods/cmps/scas (translator/src/lower/string.rs): byte, word
//! and dword, with and without rep/repe/repne, both directions, count 0,
//! the final esi/edi/ecx, and segment overrides.

use bt86_testsuite::*;

const SRC: u32 = DATA;
const DST: u32 = DATA + 0x1000;

/// Fills SRC with 0x00 0x01 0x02 ... (64 bytes) and DST with 0xEE (64 bytes).
fn fill(a: &mut CodeAssembler) -> Result<(), IcedError> {
    for i in 0..16u32 {
        let b = 4 * i;
        a.mov(
            dword_ptr(SRC + b),
            u32::from_le_bytes([b as u8, b as u8 + 1, b as u8 + 2, b as u8 + 3]),
        )?;
        a.mov(dword_ptr(DST + b), 0xEEEE_EEEEu32)?;
    }
    Ok(())
}

fn pattern(from: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| from + i as u8).collect()
}

// ---- movs ----

#[test]
fn movsb_copies_one_byte_and_advances_esi_and_edi() {
    let r = run_asm(|a| {
        fill(a)?;
        a.mov(esi, SRC + 5)?;
        a.mov(edi, DST)?;
        a.movsb()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_bytes(DST, 2), [5, 0xEE]);
    assert_eq!(r.reg(esi), SRC + 6);
    assert_eq!(r.reg(edi), DST + 1);
}

#[test]
fn movsw_copies_a_word_and_advances_by_two() {
    let r = run_asm(|a| {
        fill(a)?;
        a.mov(esi, SRC + 4)?;
        a.mov(edi, DST)?;
        a.movsw()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_bytes(DST, 3), [4, 5, 0xEE]);
    assert_eq!(r.reg(esi), SRC + 6);
    assert_eq!(r.reg(edi), DST + 2);
}

#[test]
fn movsd_copies_a_dword_and_advances_by_four() {
    let r = run_asm(|a| {
        fill(a)?;
        a.mov(esi, SRC + 8)?;
        a.mov(edi, DST)?;
        a.movsd()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(DST), 0x0B0A_0908);
    assert_eq!(r.reg(esi), SRC + 12);
    assert_eq!(r.reg(edi), DST + 4);
}

#[test]
fn movsb_with_df_set_moves_esi_and_edi_down() {
    let r = run_asm(|a| {
        fill(a)?;
        a.mov(esi, SRC + 5)?;
        a.mov(edi, DST + 1)?;
        a.std()?;
        a.movsb()?;
        a.cld()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_bytes(DST, 2), [0xEE, 5]);
    assert_eq!(r.reg(esi), SRC + 4);
    assert_eq!(r.reg(edi), DST);
}

#[test]
fn movsd_with_df_set_moves_down_by_four() {
    let r = run_asm(|a| {
        fill(a)?;
        a.mov(esi, SRC + 8)?;
        a.mov(edi, DST + 8)?;
        a.std()?;
        a.movsd()?;
        a.cld()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(DST + 8), 0x0B0A_0908);
    assert_eq!(r.reg(esi), SRC + 4);
    assert_eq!(r.reg(edi), DST + 4);
}

#[test]
fn rep_movsb_copies_ecx_bytes() {
    let r = run_asm(|a| {
        fill(a)?;
        a.mov(esi, SRC + 3)?;
        a.mov(edi, DST)?;
        a.mov(ecx, 7u32)?;
        a.rep().movsb()?;
        Ok(())
    });
    r.assert_halted();
    let mut want = pattern(3, 7);
    want.push(0xEE);
    assert_eq!(r.mem_bytes(DST, 8), want);
    assert_eq!(r.reg(esi), SRC + 10);
    assert_eq!(r.reg(edi), DST + 7);
    assert_eq!(r.reg(ecx), 0);
}

#[test]
fn rep_movsw_copies_ecx_words() {
    let r = run_asm(|a| {
        fill(a)?;
        a.mov(esi, SRC)?;
        a.mov(edi, DST)?;
        a.mov(ecx, 5u32)?;
        a.rep().movsw()?;
        Ok(())
    });
    r.assert_halted();
    let mut want = pattern(0, 10);
    want.push(0xEE);
    assert_eq!(r.mem_bytes(DST, 11), want);
    assert_eq!(r.reg(esi), SRC + 10);
    assert_eq!(r.reg(edi), DST + 10);
    assert_eq!(r.reg(ecx), 0);
}

#[test]
fn rep_movsd_copies_ecx_dwords() {
    let r = run_asm(|a| {
        fill(a)?;
        a.mov(esi, SRC)?;
        a.mov(edi, DST)?;
        a.mov(ecx, 16u32)?;
        a.rep().movsd()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_bytes(DST, 64), pattern(0, 64));
    assert_eq!(r.reg(esi), SRC + 64);
    assert_eq!(r.reg(edi), DST + 64);
    assert_eq!(r.reg(ecx), 0);
}

#[test]
fn rep_movsd_with_df_set_copies_downwards() {
    let r = run_asm(|a| {
        fill(a)?;
        a.mov(esi, SRC + 12)?;
        a.mov(edi, DST + 12)?;
        a.mov(ecx, 4u32)?;
        a.std()?;
        a.rep().movsd()?;
        a.cld()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_bytes(DST, 16), pattern(0, 16));
    assert_eq!(r.reg(esi), SRC - 4);
    assert_eq!(r.reg(edi), DST - 4);
    assert_eq!(r.reg(ecx), 0);
}

#[test]
fn rep_movsb_with_df_set_copies_downwards() {
    let r = run_asm(|a| {
        fill(a)?;
        a.mov(esi, SRC + 9)?;
        a.mov(edi, DST + 9)?;
        a.mov(ecx, 10u32)?;
        a.std()?;
        a.rep().movsb()?;
        a.cld()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_bytes(DST, 11), [pattern(0, 10), vec![0xEE]].concat());
    assert_eq!(r.reg(esi), SRC - 1);
    assert_eq!(r.reg(edi), DST - 1);
}

#[test]
fn rep_movs_with_count_zero_does_nothing() {
    let r = run_asm(|a| {
        fill(a)?;
        a.mov(esi, SRC)?;
        a.mov(edi, DST)?;
        a.xor(ecx, ecx)?;
        a.rep().movsd()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(DST), 0xEEEE_EEEE);
    assert_eq!(r.reg(esi), SRC);
    assert_eq!(r.reg(edi), DST);
    assert_eq!(r.reg(ecx), 0);
}

#[test]
fn rep_movsb_forward_over_an_overlap_propagates_the_first_byte() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(DATA), 0x4433_225Au32)?;
        a.mov(dword_ptr(DATA + 4), 0x8877_6655u32)?;
        a.mov(esi, DATA)?;
        a.mov(edi, DATA + 1)?;
        a.mov(ecx, 7u32)?;
        a.rep().movsb()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_bytes(DATA, 8), [0x5A; 8]);
}

#[test]
fn rep_movsb_copies_a_large_block() {
    let r = run_asm(|a| {
        a.mov(edi, DATA)?;
        a.mov(ecx, 0x2_0000u32)?;
        a.mov(eax, 0x77u32)?;
        a.rep().stosb()?;
        a.mov(esi, DATA)?;
        a.mov(edi, DATA + 0x10_0000)?;
        a.mov(ecx, 0x2_0000u32)?;
        a.rep().movsb()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(DATA + 0x10_0000), 0x7777_7777);
    assert_eq!(r.mem_u32(DATA + 0x11_FFFC), 0x7777_7777);
    assert_eq!(r.reg(edi), DATA + 0x12_0000);
    assert_eq!(r.reg(esi), DATA + 0x2_0000);
}

// ---- stos ----

#[test]
fn stosb_stores_al_and_advances_edi() {
    let r = run_asm(|a| {
        fill(a)?;
        a.mov(eax, 0x1122_3344u32)?;
        a.mov(edi, DST)?;
        a.stosb()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_bytes(DST, 2), [0x44, 0xEE]);
    assert_eq!(r.reg(edi), DST + 1);
}

#[test]
fn stosw_stores_ax_and_advances_edi_by_two() {
    let r = run_asm(|a| {
        fill(a)?;
        a.mov(eax, 0x1122_3344u32)?;
        a.mov(edi, DST)?;
        a.stosw()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_bytes(DST, 3), [0x44, 0x33, 0xEE]);
    assert_eq!(r.reg(edi), DST + 2);
}

#[test]
fn stosd_with_df_set_stores_eax_and_moves_edi_down() {
    let r = run_asm(|a| {
        fill(a)?;
        a.mov(eax, 0x1122_3344u32)?;
        a.mov(edi, DST + 4)?;
        a.std()?;
        a.stosd()?;
        a.cld()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(DST + 4), 0x1122_3344);
    assert_eq!(r.mem_u32(DST), 0xEEEE_EEEE);
    assert_eq!(r.reg(edi), DST);
}

#[test]
fn rep_stosd_fills_ecx_dwords() {
    let r = run_asm(|a| {
        fill(a)?;
        a.mov(eax, 0xA5A5_5A5Au32)?;
        a.mov(edi, DST)?;
        a.mov(ecx, 3u32)?;
        a.rep().stosd()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(
        [
            r.mem_u32(DST),
            r.mem_u32(DST + 4),
            r.mem_u32(DST + 8),
            r.mem_u32(DST + 12)
        ],
        [0xA5A5_5A5A, 0xA5A5_5A5A, 0xA5A5_5A5A, 0xEEEE_EEEE]
    );
    assert_eq!(r.reg(edi), DST + 12);
    assert_eq!(r.reg(ecx), 0);
}

#[test]
fn rep_stosw_with_df_set_fills_downwards() {
    let r = run_asm(|a| {
        fill(a)?;
        a.mov(eax, 0xBEEFu32)?;
        a.mov(edi, DST + 6)?;
        a.mov(ecx, 3u32)?;
        a.std()?;
        a.rep().stosw()?;
        a.cld()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(
        r.mem_bytes(DST, 8),
        [0xEE, 0xEE, 0xEF, 0xBE, 0xEF, 0xBE, 0xEF, 0xBE]
    );
    assert_eq!(r.reg(edi), DST);
    assert_eq!(r.reg(ecx), 0);
}

#[test]
fn rep_stosb_with_count_zero_stores_nothing() {
    let r = run_asm(|a| {
        fill(a)?;
        a.mov(eax, 0x11u32)?;
        a.mov(edi, DST)?;
        a.xor(ecx, ecx)?;
        a.rep().stosb()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u8(DST), 0xEE);
    assert_eq!(r.reg(edi), DST);
}

// ---- lods ----

#[test]
fn lodsb_loads_al_only_and_advances_esi() {
    let r = run_asm(|a| {
        fill(a)?;
        a.mov(eax, 0x1122_3344u32)?;
        a.mov(esi, SRC + 9)?;
        a.lodsb()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x1122_3309);
    assert_eq!(r.reg(esi), SRC + 10);
}

#[test]
fn lodsw_loads_ax_only() {
    let r = run_asm(|a| {
        fill(a)?;
        a.mov(eax, 0x1122_3344u32)?;
        a.mov(esi, SRC + 2)?;
        a.lodsw()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x1122_0302);
    assert_eq!(r.reg(esi), SRC + 4);
}

#[test]
fn lodsd_with_df_set_moves_esi_down() {
    let r = run_asm(|a| {
        fill(a)?;
        a.mov(esi, SRC + 4)?;
        a.std()?;
        a.lodsd()?;
        a.cld()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x0706_0504);
    assert_eq!(r.reg(esi), SRC);
}

#[test]
fn rep_lodsb_leaves_the_last_byte_in_al() {
    let r = run_asm(|a| {
        fill(a)?;
        a.mov(esi, SRC)?;
        a.mov(ecx, 6u32)?;
        a.rep().lodsb()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax) & 0xFF, 5);
    assert_eq!(r.reg(esi), SRC + 6);
    assert_eq!(r.reg(ecx), 0);
}

// ---- cmps ----

/// Puts "abcdXfgh" at SRC and "abcdYfgh" at DST.
fn strings(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(dword_ptr(SRC), u32::from_le_bytes(*b"abcd"))?;
    a.mov(dword_ptr(SRC + 4), u32::from_le_bytes(*b"Xfgh"))?;
    a.mov(dword_ptr(DST), u32::from_le_bytes(*b"abcd"))?;
    a.mov(dword_ptr(DST + 4), u32::from_le_bytes(*b"Yfgh"))?;
    Ok(())
}

#[test]
fn cmpsb_sets_the_flags_of_source_minus_destination() {
    let r = run_asm(|a| {
        strings(a)?;
        a.mov(esi, SRC + 4)?; // 'X'
        a.mov(edi, DST + 4)?; // 'Y'
        a.cmpsb()?;
        Ok(())
    });
    r.assert_halted();
    // 0x58 - 0x59 = 0xFF: CF SF AF PF
    assert_eq!(r.status(), fl::CF | fl::SF | fl::AF | fl::PF);
    assert_eq!(r.reg(esi), SRC + 5);
    assert_eq!(r.reg(edi), DST + 5);
}

#[test]
fn cmpsd_of_equal_dwords_sets_zf() {
    let r = run_asm(|a| {
        strings(a)?;
        a.mov(esi, SRC)?;
        a.mov(edi, DST)?;
        a.cmpsd()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.status(), fl::ZF | fl::PF);
    assert_eq!(r.reg(esi), SRC + 4);
    assert_eq!(r.reg(edi), DST + 4);
}

#[test]
fn repe_cmpsb_stops_after_the_first_mismatch() {
    let r = run_asm(|a| {
        strings(a)?;
        a.mov(esi, SRC)?;
        a.mov(edi, DST)?;
        a.mov(ecx, 8u32)?;
        a.repe().cmpsb()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esi), SRC + 5);
    assert_eq!(r.reg(edi), DST + 5);
    assert_eq!(r.reg(ecx), 3);
    assert_eq!(r.status() & (fl::ZF | fl::CF), fl::CF);
}

#[test]
fn repe_cmpsw_runs_to_zero_when_all_equal() {
    let r = run_asm(|a| {
        strings(a)?;
        a.mov(esi, SRC)?;
        a.mov(edi, DST)?;
        a.mov(ecx, 2u32)?;
        a.repe().cmpsw()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esi), SRC + 4);
    assert_eq!(r.reg(edi), DST + 4);
    assert_eq!(r.reg(ecx), 0);
    assert_eq!(r.status() & fl::ZF, fl::ZF);
}

#[test]
fn repe_cmpsd_with_df_set_compares_downwards() {
    let r = run_asm(|a| {
        strings(a)?;
        a.mov(esi, SRC + 4)?;
        a.mov(edi, DST + 4)?;
        a.mov(ecx, 2u32)?;
        a.std()?;
        a.repe().cmpsd()?; // mismatch at once
        a.cld()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esi), SRC);
    assert_eq!(r.reg(edi), DST);
    assert_eq!(r.reg(ecx), 1);
    assert_eq!(r.status() & fl::ZF, 0);
}

#[test]
fn repne_cmpsb_stops_at_the_first_equal_byte() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(SRC), 0x0403_0201u32)?;
        a.mov(dword_ptr(DST), 0x0403_0909u32)?;
        a.mov(esi, SRC)?;
        a.mov(edi, DST)?;
        a.mov(ecx, 4u32)?;
        a.repne().cmpsb()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esi), SRC + 3);
    assert_eq!(r.reg(edi), DST + 3);
    assert_eq!(r.reg(ecx), 1);
    assert_eq!(r.status() & fl::ZF, fl::ZF);
}

#[test]
fn repe_cmps_with_count_zero_keeps_flags_and_registers() {
    let r = run_asm(|a| {
        strings(a)?;
        a.mov(esi, SRC + 4)?;
        a.mov(edi, DST + 4)?;
        a.xor(ecx, ecx)?;
        a.stc()?; // CF=1, ZF=1 (from the xor)
        a.repe().cmpsb()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.status(), fl::CF | fl::ZF | fl::PF);
    assert_eq!(r.reg(esi), SRC + 4);
    assert_eq!(r.reg(edi), DST + 4);
}

// ---- scas ----

#[test]
fn repne_scasb_finds_the_terminating_zero() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(SRC), u32::from_le_bytes(*b"hell"))?;
        a.mov(dword_ptr(SRC + 4), u32::from_le_bytes(*b"o\0zz"))?;
        a.mov(edi, SRC)?;
        a.xor(eax, eax)?;
        a.mov(ecx, 0xFFFF_FFFFu32)?;
        a.repne().scasb()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(edi), SRC + 6);
    assert_eq!(r.reg(ecx), 0xFFFF_FFFF - 6);
    assert_eq!(r.status() & fl::ZF, fl::ZF);
}

#[test]
fn repe_scasd_stops_at_the_first_different_dword() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(SRC), 7u32)?;
        a.mov(dword_ptr(SRC + 4), 7u32)?;
        a.mov(dword_ptr(SRC + 8), 9u32)?;
        a.mov(edi, SRC)?;
        a.mov(eax, 7u32)?;
        a.mov(ecx, 10u32)?;
        a.repe().scasd()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(edi), SRC + 12);
    assert_eq!(r.reg(ecx), 7);
    // 7 - 9: CF SF (and AF PF)
    assert_eq!(r.status() & (fl::ZF | fl::CF | fl::SF), fl::CF | fl::SF);
}

#[test]
fn scasw_compares_ax_with_the_word_at_edi() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(SRC), 0x0000_1234u32)?;
        a.mov(edi, SRC)?;
        a.mov(eax, 0xFFFF_1234u32)?;
        a.scasw()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.status(), fl::ZF | fl::PF);
    assert_eq!(r.reg(edi), SRC + 2);
}

#[test]
fn scasb_with_df_set_moves_edi_down() {
    let r = run_asm(|a| {
        fill(a)?;
        a.mov(edi, SRC + 3)?;
        a.mov(eax, 3u32)?;
        a.std()?;
        a.scasb()?;
        a.cld()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.status() & fl::ZF, fl::ZF);
    assert_eq!(r.reg(edi), SRC + 2);
}

// ---- segment overrides, prefixes, DF across helpers ----

#[test]
fn movsb_with_fs_override_on_the_source() {
    let r = run_asm(|a| {
        fill(a)?;
        a.mov(esi, SRC + 7)?;
        a.mov(edi, DST)?;
        a.db(&[0x64, 0xA4])?; // movs byte es:[edi], fs:[esi]
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u8(DST), 7);
    assert_eq!(r.reg(esi), SRC + 8);
    assert_eq!(r.reg(edi), DST + 1);
}

#[test]
fn rep_movsd_with_fs_override_on_the_source() {
    let r = run_asm(|a| {
        fill(a)?;
        a.mov(esi, SRC)?;
        a.mov(edi, DST)?;
        a.mov(ecx, 4u32)?;
        a.db(&[0xF3, 0x64, 0xA5])?; // rep movs dword es:[edi], fs:[esi]
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_bytes(DST, 16), pattern(0, 16));
    assert_eq!(r.reg(esi), SRC + 16);
    assert_eq!(r.reg(edi), DST + 16);
    assert_eq!(r.reg(ecx), 0);
}

#[test]
fn lodsd_with_fs_override() {
    let r = run_asm(|a| {
        fill(a)?;
        a.mov(esi, SRC + 4)?;
        a.db(&[0x64, 0xAD])?; // lods eax, fs:[esi]
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x0706_0504);
    assert_eq!(r.reg(esi), SRC + 8);
}

#[test]
fn repe_cmpsb_with_fs_override_on_the_source() {
    let r = run_asm(|a| {
        strings(a)?;
        a.mov(esi, SRC)?;
        a.mov(edi, DST)?;
        a.mov(ecx, 8u32)?;
        a.db(&[0xF3, 0x64, 0xA6])?; // repe cmps byte fs:[esi], es:[edi]
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esi), SRC + 5);
    assert_eq!(r.reg(ecx), 3);
}

#[test]
fn movsw_with_ds_override_and_operand_size_prefix_in_either_order() {
    let r = run_asm(|a| {
        fill(a)?;
        a.mov(esi, SRC)?;
        a.mov(edi, DST)?;
        a.db(&[0x3E, 0x66, 0xA5])?; // ds movsw
        a.db(&[0x66, 0x3E, 0xA5])?; // movsw with the prefixes swapped
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_bytes(DST, 5), [0, 1, 2, 3, 0xEE]);
    assert_eq!(r.reg(esi), SRC + 4);
    assert_eq!(r.reg(edi), DST + 4);
}

#[test]
fn df_survives_a_helper_call() {
    let r = run_asm(|a| {
        fill(a)?;
        a.std()?;
        a.out(0x80, al)?; // emulated by the runtime
        a.mov(esi, SRC + 4)?;
        a.lodsb()?;
        a.pushfd()?;
        a.pop(ebx)?;
        a.cld()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esi), SRC + 3);
    assert_eq!(r.reg(ebx) & fl::DF, fl::DF);
}

#[test]
fn string_instructions_keep_esi_and_edi_32_bit_after_moving_down_past_zero() {
    // esi walks from 0 down to 0xFFFFFFFF with DF=1 and a count of 1: the
    // single byte at 0 is copied and esi wraps.
    let r = run_asm(|a| {
        a.mov(byte_ptr(0u32), 0x5Au32)?;
        a.xor(esi, esi)?;
        a.mov(edi, DST)?;
        a.mov(ecx, 1u32)?;
        a.std()?;
        a.rep().movsb()?;
        a.cld()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u8(DST), 0x5A);
    assert_eq!(r.reg(esi), 0xFFFF_FFFF);
    assert_eq!(r.reg(edi), DST - 1);
}

#[test]
fn movsb_with_address_size_prefix_uses_si_and_di() {
    // a16 movsb: the addresses are si and di, and only they change.
    let r = run_asm(|a| {
        a.mov(dword_ptr(0x9000u32), 0x0403_0201u32)?;
        a.mov(esi, 0x1234_9000u32)?;
        a.mov(edi, 0x5678_9800u32)?;
        a.db(&[0x67, 0xA4])?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u8(0x9800), 1);
    assert_eq!(r.reg(esi), 0x1234_9001);
    assert_eq!(r.reg(edi), 0x5678_9801);
}

#[test]
fn rep_stosb_with_address_size_prefix_counts_with_cx() {
    let r = run_asm(|a| {
        a.mov(eax, 0x33u32)?;
        a.mov(edi, 0x0001_9000u32)?; // di = 0x9000
        a.mov(ecx, 0xABCD_0004u32)?; // cx = 4
        a.db(&[0xF3, 0x67, 0xAA])?; // rep stosb (a16)
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(0x9000), 0x3333_3333);
    assert_eq!(r.reg(edi), 0x0001_9004);
    assert_eq!(r.reg(ecx), 0xABCD_0000);
}
