//! System instructions and devices (translator/src/lower/system.rs and
//! runtime/src/cpu/emulate.rs): cpuid, rdtsc, port I/O, the debug console
//! and isa-debug-exit, cli/sti, control registers, descriptor tables and
//! segment loads, msrs, hlt.

use bt86_testsuite::*;

const S: u32 = STACK;
const GDT: u32 = DATA;
const GDTR: u32 = DATA + 0x100;

/// Selectors of the test GDT.
const CODE08: u16 = 0x08;
const CODE10: u16 = 0x10;
const DATA18: u16 = 0x18;
const DATA20: u16 = 0x20;

/// Writes a GDT (null, flat code 0x08 and 0x10, flat data 0x18 and 0x20)
/// at GDT and its pseudo-descriptor at GDTR, and loads it.
fn load_gdt(a: &mut CodeAssembler) -> Result<(), IcedError> {
    let entries: [(u32, u32); 5] = [
        (0, 0),
        (0x0000_FFFF, 0x00CF_9A00), // code, 4 GiB, 32-bit
        (0x0000_FFFF, 0x00CF_9A00),
        (0x0000_FFFF, 0x00CF_9200), // data, 4 GiB, 32-bit
        (0x0000_FFFF, 0x00CF_9200),
    ];
    for (i, (lo, hi)) in entries.iter().enumerate() {
        a.mov(dword_ptr(GDT + 8 * i as u32), *lo)?;
        a.mov(dword_ptr(GDT + 8 * i as u32 + 4), *hi)?;
    }
    a.mov(word_ptr(GDTR), (entries.len() * 8 - 1) as u32)?;
    a.mov(dword_ptr(GDTR + 2), GDT)?;
    a.lgdt(ptr(GDTR))
}

// ---- cpuid / rdtsc ----

#[test]
fn cpuid_leaf_0_reports_genuine_intel() {
    let r = run_asm(|a| {
        a.xor(eax, eax)?;
        a.cpuid()?;
        Ok(())
    });
    r.assert_halted();
    let mut vendor = Vec::new();
    for reg in [ebx, edx, ecx] {
        vendor.extend_from_slice(&r.reg(reg).to_le_bytes());
    }
    assert_eq!(String::from_utf8_lossy(&vendor), "GenuineIntel");
    assert!(r.reg(eax) >= 1, "max basic leaf {}", r.reg(eax));
}

#[test]
fn cpuid_leaf_1_reports_a_p6_with_what_bt86_implements() {
    let r = run_asm(|a| {
        a.mov(eax, 1u32)?;
        a.cpuid()?;
        Ok(())
    });
    r.assert_halted();
    let family = (r.reg(eax) >> 8) & 0xF;
    assert_eq!(family, 6);
    let edx_v = r.reg(edx);
    for (bit, name) in [
        (0, "FPU"),
        (4, "TSC"),
        (5, "MSR"),
        (8, "CX8"),
        (15, "CMOV"),
        (23, "MMX"),
        (24, "FXSR"),
        (25, "SSE"),
        (26, "SSE2"),
        (3, "PSE"),
        (6, "PAE"),
        (13, "PGE"),
        (7, "MCE"),
        (14, "MCA"),
        // The machine has a local APIC, enabled at reset.
        (9, "APIC"),
    ] {
        assert_ne!(edx_v & (1 << bit), 0, "{name} missing from {edx_v:#x}");
    }
    // Not implemented: MTRRs, CLFLUSH.
    for (bit, name) in [(12, "MTRR"), (19, "CLFSH")] {
        assert_eq!(edx_v & (1 << bit), 0, "{name} advertised in {edx_v:#x}");
    }
}

#[test]
fn rdtsc_is_monotonic() {
    let r = run_asm(|a| {
        let mut spin = a.create_label();
        a.rdtsc()?;
        a.mov(esi, eax)?;
        a.mov(edi, edx)?;
        a.mov(ecx, 1000u32)?;
        a.set_label(&mut spin)?;
        a.loop_(spin)?;
        a.rdtsc()?;
        Ok(())
    });
    r.assert_halted();
    let first = ((r.reg(edi) as u64) << 32) | r.reg(esi) as u64;
    let second = ((r.reg(edx) as u64) << 32) | r.reg(eax) as u64;
    assert!(second > first, "{second:#x} <= {first:#x}");
}

// ---- port I/O ----

#[test]
fn in_al_from_an_unclaimed_port_reads_all_ones() {
    let r = run_asm(|a| {
        a.mov(eax, 0x1234_5678u32)?;
        a.in_(al, 0x70)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x1234_56FF);
}

#[test]
fn in_ax_from_an_unclaimed_port_reads_all_ones() {
    let r = run_asm(|a| {
        a.mov(eax, 0x1234_5678u32)?;
        a.mov(edx, 0x300u32)?;
        a.in_(ax, dx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x1234_FFFF);
}

#[test]
fn in_eax_from_an_unclaimed_port_reads_all_ones() {
    let r = run_asm(|a| {
        a.mov(edx, 0xFFFF_1000u32)?; // only dx names the port
        a.in_(eax, dx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0xFFFF_FFFF);
}

#[test]
fn out_to_unclaimed_ports_in_all_widths_is_ignored() {
    let r = run_asm(|a| {
        a.mov(eax, 0x1234_5678u32)?;
        a.out(0x70, al)?;
        a.mov(edx, 0x300u32)?;
        a.out(dx, ax)?;
        a.out(dx, eax)?;
        a.out(0x71, eax)?;
        a.mov(ebx, 1u32)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), 1);
    assert_eq!(r.reg(eax), 0x1234_5678);
    assert_eq!(r.machine.system().counters.port_writes, 4);
}

#[test]
fn debug_console_reads_back_0xe9() {
    let r = run_asm(|a| {
        a.in_(al, 0xE9)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0xE9);
}

#[test]
fn out_0xe9_al_writes_to_the_debug_console() {
    let r = run_asm(|a| {
        for &c in b"Hi!\n" {
            a.mov(al, c as u32)?;
            a.out(0xE9, al)?;
        }
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.output_str(), "Hi!\n");
}

#[test]
fn out_dx_to_the_debug_console_in_every_width_writes_the_low_byte() {
    let r = run_asm(|a| {
        a.mov(edx, 0xE9u32)?;
        a.mov(eax, 0x1234_5641u32)?;
        a.out(dx, al)?;
        a.out(dx, ax)?;
        a.out(dx, eax)?;
        a.out(0xE9, eax)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.output_str(), "AAAA");
}

#[test]
fn rep_outsb_writes_a_string_to_the_debug_console() {
    let msg = b"hello, world\n";
    let r = run_asm(|a| {
        for (i, chunk) in msg.chunks(4).enumerate() {
            let mut w = [0u8; 4];
            w[..chunk.len()].copy_from_slice(chunk);
            a.mov(dword_ptr(DATA + 4 * i as u32), u32::from_le_bytes(w))?;
        }
        a.mov(esi, DATA)?;
        a.mov(ecx, msg.len() as u32)?;
        a.mov(edx, 0xE9u32)?;
        a.rep().outsb()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.output, msg);
    assert_eq!(r.reg(esi), DATA + msg.len() as u32);
    assert_eq!(r.reg(ecx), 0);
}

#[test]
fn rep_outsb_with_df_set_writes_backwards() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(DATA), u32::from_le_bytes(*b"abc\0"))?;
        a.mov(esi, DATA + 2)?;
        a.mov(ecx, 3u32)?;
        a.mov(edx, 0xE9u32)?;
        a.std()?;
        a.rep().outsb()?;
        a.cld()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.output_str(), "cba");
    assert_eq!(r.reg(esi), DATA - 1);
}

#[test]
fn outsd_writes_the_low_byte_of_each_dword() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(DATA), 0x0000_0058u32)?;
        a.mov(dword_ptr(DATA + 4), 0x1111_1159u32)?;
        a.mov(esi, DATA)?;
        a.mov(edx, 0xE9u32)?;
        a.outsd()?;
        a.outsd()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.output_str(), "XY");
    assert_eq!(r.reg(esi), DATA + 8);
}

#[test]
fn isa_debug_exit_ends_the_run_with_the_shifted_status() {
    let r = run_asm(|a| {
        a.mov(eax, 0x10u32)?;
        a.out(0xF4, al)?;
        a.mov(ebx, 1u32)?;
        Ok(())
    });
    assert_eq!(r.stop, Stop::DebugExit((0x10 << 1) | 1));
    assert_eq!(r.reg(ebx), 0);
}

#[test]
fn isa_debug_exit_with_zero_gives_status_one() {
    let r = run_asm(|a| {
        a.xor(eax, eax)?;
        a.out(0xF4, al)?;
        Ok(())
    });
    assert_eq!(r.stop, Stop::DebugExit(1));
}

#[test]
fn isa_debug_exit_through_dx_with_a_dword() {
    let r = run_asm(|a| {
        a.mov(edx, 0xF4u32)?;
        a.mov(eax, 3u32)?;
        a.out(dx, eax)?;
        Ok(())
    });
    assert_eq!(r.stop, Stop::DebugExit(7));
}

#[test]
fn debug_console_output_before_isa_debug_exit_is_kept() {
    let r = run_asm(|a| {
        a.mov(al, b'k' as u32)?;
        a.out(0xE9, al)?;
        a.mov(al, 2u32)?;
        a.out(0xF4, al)?;
        Ok(())
    });
    assert_eq!(r.stop, Stop::DebugExit(5));
    assert_eq!(r.output_str(), "k");
}

// ---- cli / sti ----

#[test]
fn if_is_clear_at_entry() {
    let r = run_asm(|a| {
        a.pushfd()?;
        a.pop(eax)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax) & fl::IF, 0);
}

#[test]
fn sti_sets_if() {
    let r = run_asm(|a| {
        a.sti()?;
        a.pushfd()?;
        a.pop(eax)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax) & fl::IF, fl::IF);
    assert_eq!(r.eflags() & fl::IF, fl::IF);
}

#[test]
fn cli_clears_if() {
    let r = run_asm(|a| {
        a.sti()?;
        a.cli()?;
        a.pushfd()?;
        a.pop(eax)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax) & fl::IF, 0);
    assert_eq!(r.eflags() & fl::IF, 0);
}

#[test]
fn cli_and_sti_keep_the_status_flags() {
    let r = run_asm(|a| {
        a.push(fl::STATUS | fl::FIXED1)?;
        a.popfd()?;
        a.sti()?;
        a.cli()?;
        a.sti()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.status(), fl::STATUS);
    assert_eq!(r.eflags() & fl::IF, fl::IF);
}

// ---- control registers ----

#[test]
fn cr0_reads_pe_and_et() {
    let r = run_asm(|a| {
        a.mov(eax, cr0)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x11);
}

#[test]
fn mov_to_cr0_keeping_pe_sets_ts_and_clts_clears_it() {
    let r = run_asm(|a| {
        a.mov(eax, cr0)?;
        a.or(eax, 8)?;
        a.mov(cr0, eax)?;
        a.mov(ebx, cr0)?;
        a.clts()?;
        a.mov(ecx, cr0)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), 0x19);
    assert_eq!(r.reg(ecx), 0x11);
}

#[test]
fn mov_to_cr0_cannot_clear_et() {
    let r = run_asm(|a| {
        a.mov(eax, 1u32)?;
        a.mov(cr0, eax)?;
        a.mov(ebx, cr0)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), 0x11);
}

#[test]
fn cr3_and_cr2_round_trip() {
    let r = run_asm(|a| {
        a.mov(eax, 0x0012_3000u32)?;
        a.mov(cr3, eax)?;
        a.mov(ebx, cr3)?;
        a.mov(eax, 0xDEAD_B000u32)?;
        a.mov(cr2, eax)?;
        a.mov(ecx, cr2)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), 0x0012_3000);
    assert_eq!(r.reg(ecx), 0xDEAD_B000);
}

// ---- descriptor tables and segments ----

#[test]
fn segment_registers_start_flat_as_multiboot_leaves_them() {
    let r = run_asm(|a| {
        a.mov(eax, ds)?;
        a.mov(ebx, cs)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), r.sreg(ds));
    assert_eq!(r.reg(ebx), r.sreg(cs));
}

#[test]
fn mov_r32_from_segment_register_zero_extends() {
    let r = run_asm(|a| {
        a.mov(eax, 0xFFFF_FFFFu32)?;
        a.mov(eax, ss)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), r.sreg(ss));
    assert_eq!(r.reg(eax) >> 16, 0);
}

#[test]
fn lgdt_then_sgdt_round_trips() {
    let r = run_asm(|a| {
        load_gdt(a)?;
        a.sgdt(ptr(DATA + 0x200))?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u16(DATA + 0x200), 5 * 8 - 1);
    assert_eq!(r.mem_u32(DATA + 0x202), GDT);
}

#[test]
fn pushes_before_an_emulated_instruction_are_visible_to_it() {
    let r = run_asm(|a| {
        load_gdt(a)?;
        a.push(0u32)?;
        a.push(0u32)?;
        a.sgdt(ptr(esp + 2))?;
        a.pop(eax)?;
        a.pop(ebx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), (5 * 8 - 1) << 16);
    assert_eq!(r.reg(ebx), GDT);
    assert_eq!(r.reg(esp), S);
}

#[test]
fn pushes_before_a_helper_call_are_kept_after_it() {
    let r = run_asm(|a| {
        a.push(0x11u32)?;
        a.push(0x22u32)?;
        a.cpuid()?;
        a.pop(esi)?;
        a.pop(edi)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esi), 0x22);
    assert_eq!(r.reg(edi), 0x11);
    assert_eq!(r.reg(esp), S);
}

#[test]
fn lidt_then_sidt_round_trips() {
    let r = run_asm(|a| {
        a.mov(word_ptr(DATA + 0x300), 0x7FFu32)?;
        a.mov(dword_ptr(DATA + 0x302), 0x0003_0000u32)?;
        a.lidt(ptr(DATA + 0x300))?;
        a.sidt(ptr(DATA + 0x310))?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u16(DATA + 0x310), 0x7FF);
    assert_eq!(r.mem_u32(DATA + 0x312), 0x0003_0000);
}

#[test]
fn far_jmp_to_a_flat_code_selector_loads_cs() {
    let (r, addrs) = run_asm_fix(Options::default(), |a, addrs| {
        let mut target = a.create_label();
        load_gdt(a)?;
        a.jmp_far(CODE08, addrs[0])?;
        a.mov(ebx, 0xBADu32)?;
        a.set_label(&mut target)?;
        a.mov(eax, 1u32)?;
        Ok(vec![target])
    });
    r.assert_halted();
    let _ = addrs;
    assert_eq!(r.reg(eax), 1);
    assert_eq!(r.reg(ebx), 0);
    assert_eq!(r.sreg(cs), CODE08 as u32);
}

#[test]
fn far_jmp_through_memory_loads_cs() {
    let r = run_asm_fix(Options::default(), |a, addrs| {
        let mut target = a.create_label();
        load_gdt(a)?;
        a.mov(dword_ptr(DATA + 0x180), addrs[0])?;
        a.mov(word_ptr(DATA + 0x184), CODE08 as u32)?;
        a.jmp(fword_ptr(DATA + 0x180))?;
        a.mov(ebx, 0xBADu32)?;
        a.set_label(&mut target)?;
        a.mov(eax, 1u32)?;
        Ok(vec![target])
    })
    .0;
    r.assert_halted();
    assert_eq!(r.reg(eax), 1);
    assert_eq!(r.reg(ebx), 0);
    assert_eq!(r.sreg(cs), CODE08 as u32);
}

#[test]
fn mov_ds_ss_es_with_flat_data_selectors_then_memory_still_works() {
    let (r, _) = run_asm_fix(Options::default(), |a, addrs| {
        let mut target = a.create_label();
        load_gdt(a)?;
        a.jmp_far(CODE08, addrs[0])?;
        a.set_label(&mut target)?;
        a.mov(eax, DATA20 as u32)?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.mov(ss, ax)?;
        a.mov(fs, ax)?;
        a.mov(gs, ax)?;
        a.mov(dword_ptr(DATA + 0x400), 0x1234_5678u32)?;
        a.push(0xABCDu32)?;
        a.pop(ebx)?;
        a.mov(ecx, dword_ptr(DATA + 0x400))?;
        Ok(vec![target])
    });
    r.assert_halted();
    for reg in [ds, es, ss, fs, gs] {
        assert_eq!(r.sreg(reg), DATA20 as u32);
    }
    assert_eq!(r.sreg(cs), CODE08 as u32);
    assert_eq!(r.reg(ebx), 0xABCD);
    assert_eq!(r.reg(ecx), 0x1234_5678);
    assert_eq!(r.mem_u32(DATA + 0x400), 0x1234_5678);
}

#[test]
fn push_and_pop_of_ds_round_trip_through_the_gdt() {
    let r = run_asm(|a| {
        load_gdt(a)?;
        a.mov(eax, DATA20 as u32)?;
        a.mov(ds, ax)?;
        a.push(ds)?;
        a.mov(eax, DATA18 as u32)?;
        a.mov(ds, ax)?;
        a.pop(ds)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.sreg(ds), DATA20 as u32);
    assert_eq!(r.reg(esp), S);
}

#[test]
fn mov_ds_with_the_null_selector_is_allowed() {
    let r = run_asm(|a| {
        a.xor(eax, eax)?;
        a.mov(ds, ax)?;
        a.mov(ebx, 1u32)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.sreg(ds), 0);
}

#[test]
fn lds_loads_the_offset_and_the_selector() {
    let r = run_asm(|a| {
        load_gdt(a)?;
        a.mov(dword_ptr(DATA + 0x180), 0xCAFE_0000u32)?;
        a.mov(word_ptr(DATA + 0x184), DATA20 as u32)?;
        a.lds(esi, fword_ptr(DATA + 0x180))?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esi), 0xCAFE_0000);
    assert_eq!(r.sreg(ds), DATA20 as u32);
}

#[test]
fn lss_loads_esp_and_ss() {
    let r = run_asm(|a| {
        load_gdt(a)?;
        a.mov(dword_ptr(DATA + 0x180), S - 0x100)?;
        a.mov(word_ptr(DATA + 0x184), DATA20 as u32)?;
        a.lss(esp, fword_ptr(DATA + 0x180))?;
        a.mov(ebx, esp)?;
        a.mov(esp, S)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), S - 0x100);
    assert_eq!(r.sreg(ss), DATA20 as u32);
}

#[test]
fn mov_ds_from_memory_loads_the_selector_stored_there() {
    let r = run_asm(|a| {
        load_gdt(a)?;
        a.mov(word_ptr(DATA + 0x180), DATA20 as u32)?;
        a.mov(ds, word_ptr(DATA + 0x180))?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.sreg(ds), DATA20 as u32);
}

#[test]
fn mov_segment_register_to_memory_writes_a_word() {
    let r = run_asm(|a| {
        a.mov(dword_ptr(DATA), 0xAAAA_AAAAu32)?;
        a.mov(word_ptr(DATA), ss)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(DATA), 0xAAAA_0000 | r.sreg(ss));
}

#[test]
fn far_call_pushes_cs_and_the_return_address() {
    let (r, addrs) = run_asm_fix(Options::default(), |a, addrs| {
        let mut f = a.create_label();
        let mut after = a.create_label();
        load_gdt(a)?;
        a.call_far(CODE08, addrs[0])?;
        a.set_label(&mut after)?;
        a.mov(ebx, 0xBADu32)?;
        a.set_label(&mut f)?;
        a.mov(eax, dword_ptr(esp))?;
        a.mov(ecx, dword_ptr(esp + 4))?;
        a.mov(edx, esp)?;
        Ok(vec![f, after])
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), addrs[1]);
    assert_eq!(r.reg(ecx) & 0xFFFF, CODE10 as u32);
    assert_eq!(r.reg(edx), S - 8);
    assert_eq!(r.sreg(cs), CODE08 as u32);
    assert_eq!(r.reg(ebx), 0);
}

// ---- msrs ----

#[test]
fn wrmsr_then_rdmsr_round_trips_sysenter_msrs() {
    let r = run_asm(|a| {
        a.mov(ecx, 0x176u32)?; // SYSENTER_EIP
        a.mov(eax, 0x00C0_FFEEu32)?;
        a.xor(edx, edx)?;
        a.wrmsr()?;
        a.xor(eax, eax)?;
        a.rdmsr()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 0x00C0_FFEE);
    assert_eq!(r.reg(edx), 0);
}

#[test]
fn rdmsr_of_the_tsc_counts_up() {
    let r = run_asm(|a| {
        a.mov(ecx, 0x10u32)?;
        a.rdmsr()?;
        a.mov(esi, eax)?;
        a.mov(edi, edx)?;
        a.rdtsc()?;
        Ok(())
    });
    r.assert_halted();
    let msr = ((r.reg(edi) as u64) << 32) | r.reg(esi) as u64;
    let tsc = ((r.reg(edx) as u64) << 32) | r.reg(eax) as u64;
    assert!(tsc >= msr);
}

// ---- hlt ----

#[test]
fn hlt_ends_the_run_with_the_eip_after_it() {
    let (r, addrs) = run_asm_fix(Options::default(), |a, _| {
        let mut after = a.create_label();
        a.mov(eax, 1u32)?;
        a.hlt()?;
        a.set_label(&mut after)?;
        a.mov(eax, 2u32)?;
        Ok(vec![after])
    });
    assert_eq!(r.stop, Stop::Halted { eip: addrs[0] });
    assert_eq!(r.reg(eax), 1);
}

#[test]
fn hlt_keeps_the_registers_and_flags() {
    let r = run_asm(|a| {
        a.mov(ebx, 0x1234u32)?;
        a.mov(esi, 0x5678u32)?;
        a.push(fl::STATUS | fl::FIXED1)?;
        a.popfd()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), 0x1234);
    assert_eq!(r.reg(esi), 0x5678);
    assert_eq!(r.reg(esp), S);
    assert_eq!(r.status(), fl::STATUS);
}
