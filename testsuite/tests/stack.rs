//! push/pop, pusha/popa, pushf/popf, enter/leave: the stack family
//! (translator/src/lower/stack.rs), 32-bit and 0x66 16-bit forms.

use bt86_testsuite::*;

const S: u32 = STACK;

// ---- push / pop of registers ----

#[test]
fn push_r32_stores_below_esp_and_pop_r32_loads_it_back() {
    let r = run_asm(|a| {
        a.mov(eax, 0x1111_2222u32)?;
        a.mov(ebx, 0x3333_4444u32)?;
        a.push(eax)?;
        a.push(ebx)?;
        a.pop(ecx)?;
        a.pop(edx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(S - 4), 0x1111_2222);
    assert_eq!(r.mem_u32(S - 8), 0x3333_4444);
    assert_eq!(r.reg(ecx), 0x3333_4444);
    assert_eq!(r.reg(edx), 0x1111_2222);
    assert_eq!(r.reg(esp), S);
}

#[test]
fn push_r16_moves_esp_by_two_and_writes_a_word() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(S - 4), 0xAAAA_AAAAu32)?;
        a.mov(eax, 0x1234_5678u32)?;
        a.push(ax)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), S - 2);
    assert_eq!(r.mem_u32(S - 4), 0x5678_AAAA);
}

#[test]
fn pop_r16_moves_esp_by_two_and_keeps_the_upper_half() {
    let r = run_asm(|a| {
        a.push(0x1234_5678u32)?;
        a.mov(ebx, 0xAAAA_BBBBu32)?;
        a.pop(bx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), 0xAAAA_5678);
    assert_eq!(r.reg(esp), S - 2);
}

#[test]
fn push_imm8_is_sign_extended_to_32_bits() {
    let r = run_asm(|a| {
        a.push(-2i32)?; // 6A FE
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), S - 4);
    assert_eq!(r.mem_u32(S - 4), 0xFFFF_FFFE);
}

#[test]
fn push_imm32_stores_the_immediate() {
    let r = run_asm(|a| {
        a.push(0x1234_5678u32)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), S - 4);
    assert_eq!(r.mem_u32(S - 4), 0x1234_5678);
}

#[test]
fn push_imm16_with_operand_size_prefix_pushes_a_word() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(S - 4), 0xAAAA_AAAAu32)?;
        a.db(&[0x66, 0x68, 0x34, 0x12])?; // push word 0x1234
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), S - 2);
    assert_eq!(r.mem_u32(S - 4), 0x1234_AAAA);
}

#[test]
fn push_imm8_with_operand_size_prefix_is_sign_extended_to_16_bits() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(S - 4), 0xAAAA_AAAAu32)?;
        a.db(&[0x66, 0x6A, 0x80])?; // push word -128
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), S - 2);
    assert_eq!(r.mem_u32(S - 4), 0xFF80_AAAA);
}

// ---- push / pop of memory ----

#[test]
fn push_mem32_pushes_the_dword_at_the_address() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(DATA), 0xCAFE_BABEu32)?;
        a.push(dword_ptr(DATA))?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), S - 4);
    assert_eq!(r.mem_u32(S - 4), 0xCAFE_BABE);
}

#[test]
fn push_mem16_pushes_a_word() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(S - 4), 0xAAAA_AAAAu32)?;
        a.mov(dword_ptr(DATA), 0xCAFE_BABEu32)?;
        a.push(word_ptr(DATA))?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), S - 2);
    assert_eq!(r.mem_u32(S - 4), 0xBABE_AAAA);
}

#[test]
fn push_mem_with_esp_base_uses_esp_before_the_decrement() {
    let r = run_asm(|a| {
        a.push(0x11u32)?;
        a.push(0x22u32)?;
        a.push(dword_ptr(esp + 4))?; // the 0x11
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), S - 12);
    assert_eq!(r.mem_u32(S - 12), 0x11);
}

#[test]
fn push_mem_with_esp_index_and_base_register() {
    let r = run_asm(|a| {
        a.push(0x11u32)?;
        a.push(0x22u32)?;
        a.mov(ebx, 2u32)?;
        a.push(dword_ptr(esp + ebx * 2))?; // [esp+4] = 0x11
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), S - 12);
    assert_eq!(r.mem_u32(S - 12), 0x11);
}

#[test]
fn push_esp_pushes_the_value_before_the_decrement() {
    let r = run_asm(|a| {
        a.push(esp)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), S - 4);
    assert_eq!(r.mem_u32(S - 4), S);
}

#[test]
fn push_sp_pushes_the_low_word_before_the_decrement() {
    let r = run_asm(|a| {
        a.mov(esp, S - 0x10)?; // sp = 0xFFF0
        a.push(sp)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), S - 0x12);
    assert_eq!(r.mem_u16(S - 0x12), 0xFFF0);
}

#[test]
fn pop_into_esp_uses_the_popped_value() {
    let r = run_asm(|a| {
        a.push(0x0012_3456u32)?;
        a.pop(esp)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), 0x0012_3456);
}

#[test]
fn pop_into_sp_replaces_the_low_word_of_the_incremented_esp() {
    let r = run_asm(|a| {
        a.mov(esp, 0x0007_FFFCu32)?;
        a.mov(word_ptr(esp), 0x1234u32)?;
        a.pop(sp)?; // esp+2 = 0x7FFFE, then sp = 0x1234
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), 0x0007_1234);
}

#[test]
fn pop_mem_with_esp_base_uses_incremented_esp() {
    let r = run_asm(|a| {
        a.push(0xAAAAu32)?; // S-4
        a.push(0xBBBBu32)?; // S-8
        a.pop(dword_ptr(esp))?; // pops 0xBBBB, esp = S-4, stores at S-4
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), S - 4);
    assert_eq!(r.mem_u32(S - 4), 0xBBBB);
    assert_eq!(r.mem_u32(S - 8), 0xBBBB);
}

#[test]
fn pop_mem_with_esp_base_and_displacement_uses_incremented_esp() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(S), 0u32)?;
        a.push(0xAAAAu32)?; // S-4
        a.push(0xBBBBu32)?; // S-8
        a.pop(dword_ptr(esp + 4))?; // esp = S-4 after the pop: stores at S
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), S - 4);
    assert_eq!(r.mem_u32(S), 0xBBBB);
    assert_eq!(r.mem_u32(S - 4), 0xAAAA);
}

#[test]
fn pop_mem16_with_esp_base_uses_esp_incremented_by_two() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(S - 4), 0xAAAA_AAAAu32)?;
        a.mov(esp, S - 4)?;
        a.db(&[0x66, 0x68, 0x34, 0x12])?; // push word 0x1234 -> S-6
        a.pop(word_ptr(esp + 2))?; // esp = S-4 after the pop: stores at S-2
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), S - 4);
    assert_eq!(r.mem_u16(S - 2), 0x1234);
    assert_eq!(r.mem_u16(S - 4), 0xAAAA);
}

#[test]
fn pop_mem32_stores_the_popped_dword() {
    let r = run_asm(|a| {
        a.push(0xDEAD_BEEFu32)?;
        a.pop(dword_ptr(DATA + 8))?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), S);
    assert_eq!(r.mem_u32(DATA + 8), 0xDEAD_BEEF);
}

#[test]
fn pop_mem16_stores_a_word() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(DATA), 0xAAAA_AAAAu32)?;
        a.push(0x1234_5678u32)?;
        a.pop(word_ptr(DATA))?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), S - 2);
    assert_eq!(r.mem_u32(DATA), 0xAAAA_5678);
}

#[test]
fn push_ds_moves_esp_by_four_and_writes_only_the_low_word() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(S - 4), 0xAAAA_AAAAu32)?;
        a.push(ds)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), S - 4);
    assert_eq!(r.mem_u16(S - 4) as u32, r.sreg(ds));
    assert_eq!(r.mem_u16(S - 2), 0xAAAA);
}

// ---- pusha / popa ----

fn distinct_registers(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(eax, 0xA0A0_0001u32)?;
    a.mov(ecx, 0xC0C0_0002u32)?;
    a.mov(edx, 0xD0D0_0003u32)?;
    a.mov(ebx, 0xB0B0_0004u32)?;
    a.mov(ebp, 0xBEBE_0006u32)?;
    a.mov(esi, 0x5151_0007u32)?;
    a.mov(edi, 0xD1D1_0008u32)?;
    Ok(())
}

#[test]
fn pushad_stores_all_registers_with_the_original_esp() {
    let r = run_asm(|a| {
        distinct_registers(a)?;
        a.pushad()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), S - 32);
    let slots: Vec<u32> = (0..8).map(|i| r.mem_u32(S - 32 + 4 * i)).collect();
    assert_eq!(
        slots,
        [
            0xD1D1_0008,
            0x5151_0007,
            0xBEBE_0006,
            S,
            0xB0B0_0004,
            0xD0D0_0003,
            0xC0C0_0002,
            0xA0A0_0001
        ]
    );
}

#[test]
fn popad_loads_all_registers_and_skips_the_esp_slot() {
    let r = run_asm(|a| {
        for v in [1u32, 2, 3, 4, 0xDEAD, 6, 7, 8] {
            a.push(v)?; // eax ecx edx ebx (esp) ebp esi edi
        }
        a.popad()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.regs(), [1, 2, 3, 4, S, 6, 7, 8]);
}

#[test]
fn pushad_then_popad_restores_every_register() {
    let r = run_asm(|a| {
        distinct_registers(a)?;
        a.pushad()?;
        for reg in [eax, ecx, edx, ebx, ebp, esi, edi] {
            a.xor(reg, reg)?;
        }
        a.popad()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(
        r.regs(),
        [
            0xA0A0_0001,
            0xC0C0_0002,
            0xD0D0_0003,
            0xB0B0_0004,
            S,
            0xBEBE_0006,
            0x5151_0007,
            0xD1D1_0008
        ]
    );
}

#[test]
fn pushaw_stores_the_low_words_with_the_original_sp() {
    let r = run_asm(|a| {
        distinct_registers(a)?;
        a.pusha()?; // 66 60
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), S - 16);
    let slots: Vec<u16> = (0..8).map(|i| r.mem_u16(S - 16 + 2 * i)).collect();
    assert_eq!(
        slots,
        [
            0x0008,
            0x0007,
            0x0006,
            (S & 0xFFFF) as u16,
            0x0004,
            0x0003,
            0x0002,
            0x0001
        ]
    );
}

#[test]
fn popaw_loads_the_low_words_and_keeps_the_upper_halves() {
    let r = run_asm(|a| {
        distinct_registers(a)?;
        for v in [0x11u16, 0x22, 0x33, 0x44, 0xDEAD, 0x66, 0x77, 0x88] {
            a.db(&[0x66, 0x68, v as u8, (v >> 8) as u8])?; // push word v
        }
        a.popa()?; // 66 61
        Ok(())
    });
    r.assert_halted();
    assert_eq!(
        r.regs(),
        [
            0xA0A0_0011,
            0xC0C0_0022,
            0xD0D0_0033,
            0xB0B0_0044,
            S,
            0xBEBE_0066,
            0x5151_0077,
            0xD1D1_0088
        ]
    );
}

// ---- pushf / popf ----

#[test]
fn popfd_then_pushfd_round_trips_the_status_flags() {
    let r = run_asm(|a| {
        a.push(fl::STATUS)?;
        a.popfd()?;
        a.pushfd()?;
        a.pop(eax)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), fl::STATUS | fl::FIXED1);
    assert_eq!(r.status(), fl::STATUS);
}

#[test]
fn popfd_clears_the_status_flags() {
    let r = run_asm(|a| {
        a.stc()?;
        a.mov(eax, 0xFFu32)?;
        a.add(al, 1)?; // ZF AF CF PF
        a.push(0u32)?;
        a.popfd()?;
        a.pushfd()?;
        a.pop(ebx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), fl::FIXED1);
    assert_eq!(r.status(), 0);
}

#[test]
fn pushfd_sees_flags_set_by_arithmetic() {
    let r = run_asm(|a| {
        a.mov(eax, 0x7FFF_FFFFu32)?;
        a.add(eax, 1)?; // OF SF AF PF, no CF/ZF
        a.pushfd()?;
        a.pop(ebx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), fl::OF | fl::SF | fl::AF | fl::PF | fl::FIXED1);
}

#[test]
fn popfd_sets_df_and_pushfd_reads_it_back() {
    let r = run_asm(|a| {
        a.push(fl::DF)?;
        a.popfd()?;
        a.pushfd()?;
        a.pop(ebx)?;
        a.mov(esi, DATA + 10)?;
        a.lodsb()?; // DF=1: esi goes down
        a.cld()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), fl::DF | fl::FIXED1);
    assert_eq!(r.reg(esi), DATA + 9);
}

#[test]
fn std_and_cld_show_in_pushfd() {
    let r = run_asm(|a| {
        a.std()?;
        a.pushfd()?;
        a.pop(eax)?;
        a.cld()?;
        a.pushfd()?;
        a.pop(ebx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax) & fl::DF, fl::DF);
    assert_eq!(r.reg(ebx) & fl::DF, 0);
}

#[test]
fn pushfd_shows_if_after_sti_and_not_after_cli() {
    let r = run_asm(|a| {
        a.sti()?;
        a.pushfd()?;
        a.pop(eax)?;
        a.cli()?;
        a.pushfd()?;
        a.pop(ebx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax) & fl::IF, fl::IF);
    assert_eq!(r.reg(ebx) & fl::IF, 0);
    assert_eq!(r.eflags() & fl::IF, 0);
}

#[test]
fn popfd_sets_and_clears_if() {
    let r = run_asm(|a| {
        a.push(fl::IF | fl::FIXED1)?;
        a.popfd()?;
        a.pushfd()?;
        a.pop(eax)?;
        a.push(fl::FIXED1)?;
        a.popfd()?;
        a.pushfd()?;
        a.pop(ebx)?;
        a.push(fl::IF)?;
        a.popfd()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), fl::IF | fl::FIXED1);
    assert_eq!(r.reg(ebx), fl::FIXED1);
    assert_eq!(r.eflags() & fl::IF, fl::IF);
}

#[test]
fn popfd_writes_every_writable_flag_but_vm_rf_vif_vip() {
    // Everything but TF (which would single-step).
    let r = run_asm(|a| {
        a.push(!fl::TF)?;
        a.popfd()?;
        a.pushfd()?;
        a.pop(eax)?;
        a.push(0u32)?;
        a.popfd()?;
        Ok(())
    });
    r.assert_halted();
    let expected = fl::STATUS | fl::IF | fl::DF | fl::IOPL | fl::NT | fl::AC | fl::ID | fl::FIXED1;
    assert_eq!(r.reg(eax), expected, "got {:#x}", r.reg(eax));
}

#[test]
fn pushfw_pushes_the_low_word_of_eflags() {
    let r = run_asm(|a| {
        a.push(fl::CF | fl::ZF | fl::AC)?;
        a.popfd()?;
        a.pushf()?; // 66 9C
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), S - 2);
    assert_eq!(r.mem_u16(S - 2) as u32, fl::CF | fl::ZF | fl::FIXED1);
}

#[test]
fn popfw_changes_only_the_low_word_of_eflags() {
    let r = run_asm(|a| {
        a.push(fl::AC | fl::CF)?;
        a.popfd()?;
        a.db(&[0x66, 0x68])?; // push word ZF|SF
        a.db(&((fl::ZF | fl::SF) as u16).to_le_bytes())?;
        a.popf()?; // 66 9D
        a.pushfd()?;
        a.pop(eax)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), fl::AC | fl::ZF | fl::SF | fl::FIXED1);
    assert_eq!(r.reg(esp), S);
}

// ---- enter / leave ----

#[test]
fn enter_level_0_pushes_ebp_and_reserves_the_frame() {
    let r = run_asm(|a| {
        a.mov(ebp, 0x1111u32)?;
        a.enter(16u32, 0u32)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(S - 4), 0x1111);
    assert_eq!(r.reg(ebp), S - 4);
    assert_eq!(r.reg(esp), S - 4 - 16);
}

#[test]
fn leave_restores_esp_and_ebp() {
    let r = run_asm(|a| {
        a.mov(ebp, 0x1111u32)?;
        a.enter(16u32, 0u32)?;
        a.push(0x55u32)?;
        a.leave()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebp), 0x1111);
    assert_eq!(r.reg(esp), S);
}

#[test]
fn leave_uses_ebp_not_esp() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(DATA + 0x40), 0xFEEDu32)?;
        a.mov(ebp, DATA + 0x40)?;
        a.leave()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebp), 0xFEED);
    assert_eq!(r.reg(esp), DATA + 0x44);
}

#[test]
fn enter_level_1_pushes_the_frame_pointer_once_more() {
    let r = run_asm(|a| {
        a.mov(ebp, 0x1111u32)?;
        a.enter(8u32, 1u32)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(S - 4), 0x1111);
    assert_eq!(r.mem_u32(S - 8), S - 4);
    assert_eq!(r.reg(ebp), S - 4);
    assert_eq!(r.reg(esp), S - 16);
}

#[test]
fn enter_level_2_copies_one_outer_frame_pointer() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(DATA + 0xFC), 0xCAFEu32)?;
        a.mov(ebp, DATA + 0x100)?;
        a.enter(4u32, 2u32)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(S - 4), DATA + 0x100);
    assert_eq!(r.mem_u32(S - 8), 0xCAFE);
    assert_eq!(r.mem_u32(S - 12), S - 4);
    assert_eq!(r.reg(ebp), S - 4);
    assert_eq!(r.reg(esp), S - 16);
}

#[test]
fn enter_level_3_copies_two_outer_frame_pointers() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(DATA + 0xFC), 0xA1u32)?;
        a.mov(dword_ptr(DATA + 0xF8), 0xA2u32)?;
        a.mov(ebp, DATA + 0x100)?;
        a.enter(0u32, 3u32)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(S - 4), DATA + 0x100);
    assert_eq!(r.mem_u32(S - 8), 0xA1);
    assert_eq!(r.mem_u32(S - 12), 0xA2);
    assert_eq!(r.mem_u32(S - 16), S - 4);
    assert_eq!(r.reg(ebp), S - 4);
    assert_eq!(r.reg(esp), S - 16);
}

#[test]
fn nested_enters_build_a_display_and_leaves_unwind_it() {
    let r = run_asm(|a| {
        a.mov(ebp, 0x1111u32)?;
        a.enter(4u32, 1u32)?; // frame 1 at S-4: [S-4]=0x1111, [S-8]=S-4, esp=S-12
        a.enter(4u32, 2u32)?; // frame 2 at S-16: [S-16]=S-4, [S-20]=[S-8]=S-4, [S-24]=S-16, esp=S-28
        a.mov(eax, dword_ptr(ebp - 4))?; // display entry copied from frame 1
        a.mov(ebx, esp)?;
        a.leave()?;
        a.mov(ecx, ebp)?;
        a.leave()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), S - 4);
    assert_eq!(r.reg(ebx), S - 28);
    assert_eq!(r.mem_u32(S - 24), S - 16);
    assert_eq!(r.reg(ecx), S - 4);
    assert_eq!(r.reg(ebp), 0x1111);
    assert_eq!(r.reg(esp), S);
}

#[test]
fn enter_with_operand_size_prefix_pushes_bp_and_sets_bp_only() {
    let r = run_asm(|a| {
        a.mov(ebp, 0xAAAA_1111u32)?;
        a.db(&[0x66, 0xC8, 0x08, 0x00, 0x00])?; // enterw 8, 0
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u16(S - 2), 0x1111);
    assert_eq!(r.reg(ebp), 0xAAAA_0000 | ((S - 2) & 0xFFFF));
    assert_eq!(r.reg(esp), S - 2 - 8);
}

#[test]
fn leave_with_operand_size_prefix_pops_bp() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(DATA + 0x10), 0x5555_4321u32)?;
        a.mov(ebp, DATA + 0x10)?;
        a.db(&[0x66, 0xC9])?; // leavew
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebp), (DATA & 0xFFFF_0000) | 0x4321);
    assert_eq!(r.reg(esp), DATA + 0x12);
}

#[test]
fn enter_with_operand_size_prefix_level_1() {
    let r = run_asm(|a| {
        a.mov(ebp, 0xAAAA_1111u32)?;
        a.db(&[0x66, 0xC8, 0x04, 0x00, 0x01])?; // enterw 4, 1
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u16(S - 2), 0x1111);
    assert_eq!(r.mem_u16(S - 4) as u32, (S - 2) & 0xFFFF);
    assert_eq!(r.reg(ebp), 0xAAAA_0000 | ((S - 2) & 0xFFFF));
    assert_eq!(r.reg(esp), S - 8);
}

#[test]
fn stack_operations_leave_the_status_flags_alone() {
    let r = run_asm(|a| {
        a.push(fl::STATUS)?;
        a.popfd()?;
        a.push(eax)?;
        a.push(dword_ptr(esp))?;
        a.pop(ebx)?;
        a.pop(dword_ptr(DATA))?;
        a.pushad()?;
        a.popad()?;
        a.enter(8u32, 0u32)?;
        a.leave()?;
        a.enter(8u32, 1u32)?;
        a.leave()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.status(), fl::STATUS);
    assert_eq!(r.reg(esp), S);
}

// ---- instructions right after pushes and pops in the same block (guest
// esp must be exact for every instruction that looks at it) ----

#[test]
fn esp_based_load_after_pushes_sees_the_pushed_values() {
    let r = run_asm(|a| {
        a.push(0x11u32)?;
        a.push(0x22u32)?;
        a.mov(eax, dword_ptr(esp + 4))?;
        a.mov(ebx, dword_ptr(esp))?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x11);
    assert_eq!(r.reg(ebx), 0x22);
}

#[test]
fn mov_from_esp_after_pushes_and_pops() {
    let r = run_asm(|a| {
        a.push(1u32)?;
        a.push(2u32)?;
        a.push(3u32)?;
        a.pop(ecx)?;
        a.mov(eax, esp)?;
        a.lea(ebx, ptr(esp + 4))?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), S - 8);
    assert_eq!(r.reg(ebx), S - 4);
    assert_eq!(r.reg(ecx), 3);
}

#[test]
fn push_esp_after_a_push_pushes_the_current_esp() {
    let r = run_asm(|a| {
        a.push(1u32)?;
        a.push(esp)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(S - 8), S - 4);
    assert_eq!(r.reg(esp), S - 8);
}

#[test]
fn pop_esp_after_pushes_takes_the_popped_value() {
    let r = run_asm(|a| {
        a.push(0x0003_0000u32)?;
        a.push(0x0004_0000u32)?;
        a.pop(esp)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), 0x0004_0000);
}

#[test]
fn pushad_after_a_push_stores_the_current_esp() {
    let r = run_asm(|a| {
        a.push(1u32)?;
        a.pushad()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), S - 36);
    assert_eq!(r.mem_u32(S - 36 + 12), S - 4);
}

#[test]
fn popad_after_pushes_loads_them() {
    let r = run_asm(|a| {
        for v in [1u32, 2, 3, 4, 0xDEAD, 6, 7, 8] {
            a.push(v)?;
        }
        a.popad()?;
        a.push(9u32)?;
        a.pop(eax)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.regs(), [9, 2, 3, 4, S, 6, 7, 8]);
}

#[test]
fn enter_after_a_push_sets_ebp_to_the_current_esp() {
    let r = run_asm(|a| {
        a.push(1u32)?;
        a.enter(8u32, 0u32)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebp), S - 8);
    assert_eq!(r.reg(esp), S - 16);
}

#[test]
fn nested_enter_after_a_push_sets_ebp_to_the_current_esp() {
    let r = run_asm(|a| {
        a.push(1u32)?;
        a.enter(0u32, 1u32)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebp), S - 8);
    assert_eq!(r.mem_u32(S - 12), S - 8);
    assert_eq!(r.reg(esp), S - 12);
}

#[test]
fn leave_after_pushes_sets_esp_from_ebp() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(DATA), 0x1234u32)?;
        a.mov(ebp, DATA)?;
        a.push(1u32)?;
        a.push(2u32)?;
        a.leave()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), DATA + 4);
    assert_eq!(r.reg(ebp), 0x1234);
}

#[test]
fn push_after_leave_uses_the_esp_leave_set() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(DATA), 0x1234u32)?;
        a.mov(ebp, DATA)?;
        a.push(1u32)?;
        a.leave()?;
        a.push(0x77u32)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), DATA);
    assert_eq!(r.mem_u32(DATA), 0x77);
}

#[test]
fn pushfd_and_popfd_after_pushes() {
    let r = run_asm(|a| {
        a.push(fl::CF | fl::FIXED1)?;
        a.push(fl::ZF | fl::FIXED1)?;
        a.popfd()?; // ZF
        a.pushfd()?;
        a.pop(eax)?;
        a.popfd()?; // CF
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax) & fl::STATUS, fl::ZF);
    assert_eq!(r.status(), fl::CF);
    assert_eq!(r.reg(esp), S);
}

#[test]
fn push_r16_after_push_r32() {
    let r = run_asm(|a| {
        a.mov(eax, 0x1234_5678u32)?;
        a.push(eax)?;
        a.push(ax)?;
        a.push(eax)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), S - 10);
    assert_eq!(r.mem_u32(S - 4), 0x1234_5678);
    assert_eq!(r.mem_u16(S - 6), 0x5678);
    assert_eq!(r.mem_u32(S - 10), 0x1234_5678);
}

#[test]
fn ah_with_esp_based_memory_right_after_a_push() {
    let r = run_asm(|a| {
        a.mov(eax, 0u32)?;
        a.push(0x1122_3344u32)?;
        a.mov(ah, byte_ptr(esp + 2))?;
        a.add(byte_ptr(esp + 3), ah)?;
        a.pop(ecx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x2200);
    assert_eq!(r.reg(ecx), 0x3322_3344);
    assert_eq!(r.reg(esp), S);
}

#[test]
fn push_imm_then_pop_ds_in_the_same_block() {
    // pop ds is emulated by the runtime: it must see the pushed value.
    let r = run_asm(|a| {
        // A GDT with flat data at 0x18 (the selector DS starts with).
        for (i, (lo, hi)) in [
            (0u32, 0u32),
            (0xFFFF, 0x00CF_9A00),
            (0xFFFF, 0x00CF_9A00),
            (0xFFFF, 0x00CF_9200),
        ]
        .iter()
        .enumerate()
        {
            a.mov(dword_ptr(DATA + 8 * i as u32), *lo)?;
            a.mov(dword_ptr(DATA + 8 * i as u32 + 4), *hi)?;
        }
        a.mov(word_ptr(DATA + 0x100), 31u32)?;
        a.mov(dword_ptr(DATA + 0x102), DATA)?;
        a.lgdt(ptr(DATA + 0x100))?;
        a.xor(eax, eax)?;
        a.mov(ax, ds)?;
        a.push(eax)?;
        a.push(0u32)?;
        a.pop(ds)?; // the null selector
        a.pop(ds)?; // back to the original
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esp), S);
    assert_eq!(r.sreg(ds), r.reg(eax) & 0xFFFF);
}

#[test]
fn many_pushes_then_many_pops_in_one_block() {
    let r = run_asm(|a| {
        for i in 0..20u32 {
            a.push(i)?;
        }
        a.mov(eax, dword_ptr(esp + 4 * 19))?;
        for _ in 0..19 {
            a.pop(ebx)?;
        }
        a.pop(ecx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0);
    assert_eq!(r.reg(ebx), 1);
    assert_eq!(r.reg(ecx), 0);
    assert_eq!(r.reg(esp), S);
}

#[test]
fn enter_nesting_level_is_taken_modulo_32() {
    let r = run_asm(|a| {
        a.mov(ebp, 0x1111u32)?;
        a.enter(8u32, 33u32)?; // level 1
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(S - 8), S - 4);
    assert_eq!(r.reg(ebp), S - 4);
    assert_eq!(r.reg(esp), S - 16);
}
