//! Chaining, the jump cache and the TU budget, checked through the
//! statistics counters (runs with `stats: true`).

use bt86_testsuite::*;

fn stats() -> Options {
    Options {
        stats: true,
        ..Options::default()
    }
}

#[test]
fn hot_loop_runs_chained_without_returning_to_the_run_loop() {
    let r = run_asm_with(stats(), |a| {
        let mut top = a.create_label();
        a.mov(ecx, 1_000_000u32)?;
        a.set_label(&mut top)?;
        a.add(eax, 3)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 3_000_000);
    let tus = r.counter("tus_executed");
    let branch_exits = r.counter("exits.branch");
    assert!(tus >= 1_000_000, "tus_executed = {tus}");
    assert!(branch_exits < 10, "exits.branch = {branch_exits}");
    assert!(r.counter("chains_patched") >= 1);
}

#[test]
fn hot_loop_is_translated_once() {
    let r = run_asm_with(stats(), |a| {
        let mut top = a.create_label();
        a.mov(ecx, 100_000u32)?;
        a.set_label(&mut top)?;
        a.add(eax, 3)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        Ok(())
    });
    r.assert_halted();
    let units = r.machine.report().total.units;
    assert!(units < 10, "{units} translations");
    assert_eq!(r.counter("cache_flushes"), 0);
}

#[test]
fn both_sides_of_a_conditional_branch_get_chained() {
    let r = run_asm_with(stats(), |a| {
        let mut top = a.create_label();
        let mut even = a.create_label();
        let mut join = a.create_label();
        a.mov(ecx, 100_000u32)?;
        a.set_label(&mut top)?;
        a.test(ecx, 1)?;
        a.jz(even)?;
        a.inc(esi)?;
        a.jmp(join)?;
        a.set_label(&mut even)?;
        a.inc(edi)?;
        a.set_label(&mut join)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(esi), 50_000);
    assert_eq!(r.reg(edi), 50_000);
    let branch_exits = r.counter("exits.branch");
    assert!(branch_exits < 20, "exits.branch = {branch_exits}");
    assert!(r.counter("tus_executed") >= 200_000);
}

#[test]
fn loop_instruction_branches_get_chained() {
    let r = run_asm_with(stats(), |a| {
        let mut top = a.create_label();
        a.mov(ecx, 200_000u32)?;
        a.set_label(&mut top)?;
        a.inc(eax)?;
        a.loop_(top)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 200_000);
    let branch_exits = r.counter("exits.branch");
    assert!(branch_exits < 10, "exits.branch = {branch_exits}");
}

#[test]
fn jump_table_dispatch_hits_the_jump_cache() {
    let (r, _) = run_asm_fix(stats(), |a, addrs| {
        let mut h = [
            a.create_label(),
            a.create_label(),
            a.create_label(),
            a.create_label(),
        ];
        let mut top = a.create_label();
        let mut next = a.create_label();
        for (i, addr) in addrs[..4].iter().enumerate() {
            a.mov(dword_ptr(DATA + 4 * i as u32), *addr)?;
        }
        a.mov(ecx, 1000u32)?;
        a.xor(ebx, ebx)?;
        a.set_label(&mut top)?;
        a.mov(eax, ecx)?;
        a.and(eax, 3)?;
        a.jmp(dword_ptr(eax * 4 + DATA))?;
        for (i, label) in h.iter_mut().enumerate() {
            a.set_label(label)?;
            a.add(ebx, [1, 10, 100, 1000][i])?;
            a.jmp(next)?;
        }
        a.set_label(&mut next)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        Ok(h.to_vec())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), 250 * 1111);
    let hits = r.counter("jump_cache_hits");
    let misses = r.counter("jump_cache_misses");
    assert!(hits >= 990, "jump_cache_hits = {hits}");
    assert!(misses <= 8, "jump_cache_misses = {misses}");
}

/// A counter of the report, or 0 if this build does not have it.
fn counter_or_zero(r: &Run, name: &str) -> u64 {
    let report = r.machine.report();
    report
        .counters
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| *v)
        .unwrap_or(0)
}

#[test]
fn returns_are_served_inside_generated_code() {
    let r = run_asm_with(stats(), |a| {
        let mut top = a.create_label();
        let mut f = a.create_label();
        let mut done = a.create_label();
        a.mov(ecx, 10_000u32)?;
        a.set_label(&mut top)?;
        a.call(f)?;
        a.loop_(top)?;
        a.jmp(done)?;
        a.set_label(&mut f)?;
        a.inc(eax)?;
        a.ret()?;
        a.set_label(&mut done)?;
        a.nop()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 10_000);
    assert_eq!(r.reg(esp), STACK);
    // Through the jump cache, or straight to the call site's landing pad
    // where the translator keeps a return stack (`returns_to_call_site`);
    // none needs the run loop.
    let hits = r.counter("jump_cache_hits") + counter_or_zero(&r, "returns_to_call_site");
    let misses = r.counter("jump_cache_misses");
    assert!(hits >= 9_990, "returns served inline = {hits}");
    assert!(misses <= 4, "jump_cache_misses = {misses}");
}

#[test]
fn a_return_to_another_address_than_the_call_site_goes_there() {
    // f replaces its return address: every return goes elsewhere.
    let (r, _) = run_asm_fix(stats(), |a, addrs| {
        let mut top = a.create_label();
        let mut f = a.create_label();
        let mut other = a.create_label();
        let mut done = a.create_label();
        a.mov(ecx, 1000u32)?;
        a.set_label(&mut top)?;
        a.call(f)?;
        a.mov(ebx, 0xBADu32)?; // never reached
        a.jmp(done)?;
        a.set_label(&mut other)?;
        a.inc(edi)?;
        a.loop_(top)?;
        a.jmp(done)?;
        a.set_label(&mut f)?;
        a.inc(eax)?;
        a.mov(dword_ptr(esp), addrs[0])?;
        a.ret()?;
        a.set_label(&mut done)?;
        a.nop()?;
        Ok(vec![other])
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 1000);
    assert_eq!(r.reg(edi), 1000);
    assert_eq!(r.reg(ebx), 0);
    assert_eq!(r.reg(esp), STACK);
}

#[test]
fn deep_recursion_returns_through_every_level() {
    // Deeper than any return-prediction stack: sum(20000) recursively.
    let r = run_asm_with(stats(), |a| {
        let mut sum = a.create_label();
        let mut base = a.create_label();
        let mut done = a.create_label();
        a.mov(ecx, 20_000u32)?;
        a.call(sum)?;
        a.jmp(done)?;
        a.set_label(&mut sum)?;
        a.test(ecx, ecx)?;
        a.jz(base)?;
        a.push(ecx)?;
        a.dec(ecx)?;
        a.call(sum)?;
        a.pop(ecx)?;
        a.add(eax, ecx)?;
        a.ret()?;
        a.set_label(&mut base)?;
        a.xor(eax, eax)?;
        a.ret()?;
        a.set_label(&mut done)?;
        a.nop()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 20_000 * 20_001 / 2);
    assert_eq!(r.reg(esp), STACK);
}

#[test]
fn longjmp_style_stack_reset_skips_pending_returns() {
    // Three levels deep, the innermost function resets esp to the outer
    // frame and returns from there: the inner returns never happen. In a
    // loop, so that skipped returns pile up if anything keeps them.
    let r = run_asm(|a| {
        let mut top = a.create_label();
        let mut f1 = a.create_label();
        let mut f2 = a.create_label();
        let mut f3 = a.create_label();
        let mut done = a.create_label();
        a.mov(edi, 300_000u32)?;
        a.set_label(&mut top)?;
        a.call(f1)?;
        a.inc(ebx)?;
        a.dec(edi)?;
        a.jnz(top)?;
        a.jmp(done)?;
        a.set_label(&mut f1)?;
        a.mov(esi, esp)?; // f1's return address on top
        a.call(f2)?;
        a.mov(ecx, 0xBADu32)?;
        a.ret()?;
        a.set_label(&mut f2)?;
        a.call(f3)?;
        a.mov(ecx, 0xBAD2u32)?;
        a.ret()?;
        a.set_label(&mut f3)?;
        a.mov(esp, esi)?;
        a.ret()?; // to the caller of f1
        a.set_label(&mut done)?;
        a.nop()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ebx), 300_000);
    assert_eq!(r.reg(ecx), 0);
    assert_eq!(r.reg(esp), STACK);
}

#[test]
fn call_pop_idiom_in_a_long_loop_runs_to_the_end() {
    // `call next; next: pop eax` gets the EIP and never returns; done
    // millions of times it must not exhaust anything on the host side.
    let (r, addrs) = run_asm_fix(Options::default(), |a, _| {
        let mut top = a.create_label();
        let mut next = a.create_label();
        a.mov(ecx, 3_000_000u32)?;
        a.set_label(&mut top)?;
        a.call(next)?;
        a.set_label(&mut next)?;
        a.pop(eax)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        Ok(vec![next])
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), addrs[0]);
    assert_eq!(r.reg(ecx), 0);
    assert_eq!(r.reg(esp), STACK);
}

#[test]
fn indirect_targets_sharing_a_jump_cache_slot_each_reach_their_own_code() {
    // A and B have the same low 16 bits, so they share a jump cache slot.
    let a_addr = LOAD + 0x1000;
    let b_addr = LOAD + 0x1_1000;
    let main = assemble_at(LOAD, |a| {
        let mut top = a.create_label();
        let mut skip = a.create_label();
        a.mov(esp, STACK)?;
        a.mov(ecx, 1000u32)?;
        a.set_label(&mut top)?;
        a.mov(eax, a_addr)?;
        a.test(ecx, 1)?;
        a.jz(skip)?;
        a.mov(eax, b_addr)?;
        a.set_label(&mut skip)?;
        a.call(eax)?;
        a.loop_(top)?;
        a.hlt()
    });
    let block_a = assemble_at(a_addr, |a| {
        a.inc(esi)?;
        a.ret()
    });
    let block_b = assemble_at(b_addr, |a| {
        a.inc(edi)?;
        a.ret()
    });
    let r = run_blocks(
        stats(),
        &[(LOAD, main), (a_addr, block_a), (b_addr, block_b)],
    );
    r.assert_halted();
    assert_eq!(r.reg(esi), 500);
    assert_eq!(r.reg(edi), 500);
}

#[test]
fn indirect_jump_to_the_same_target_from_different_sites_hits() {
    let (r, _) = run_asm_fix(stats(), |a, addrs| {
        let mut top = a.create_label();
        let mut target = a.create_label();
        let mut back = a.create_label();
        let mut done = a.create_label();
        a.mov(ecx, 1000u32)?;
        a.mov(edx, addrs[0])?;
        a.set_label(&mut top)?;
        a.test(ecx, 1)?;
        a.jz(back)?;
        a.jmp(edx)?; // site 1
        a.set_label(&mut back)?;
        a.jmp(edx)?; // site 2
        a.set_label(&mut target)?;
        a.inc(eax)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.jmp(done)?;
        a.set_label(&mut done)?;
        a.nop()?;
        Ok(vec![target])
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 1000);
    let hits = r.counter("jump_cache_hits");
    assert!(hits >= 990, "jump_cache_hits = {hits}");
}

#[test]
fn the_tu_budget_stops_an_infinite_loop() {
    let r = run_asm_with(
        Options {
            budget: Some(1000),
            ..Options::default()
        },
        |a| {
            let mut top = a.create_label();
            a.set_label(&mut top)?;
            a.inc(eax)?;
            a.jmp(top)?;
            Ok(())
        },
    );
    assert_eq!(r.stop, Stop::Budget);
    let n = r.reg(eax);
    assert!((990..=1000).contains(&n), "eax = {n}");
}

#[test]
fn the_tu_budget_counts_chained_executions() {
    let r = run_asm_with(
        Options {
            budget: Some(5000),
            stats: true,
            ..Options::default()
        },
        |a| {
            let mut top = a.create_label();
            a.set_label(&mut top)?;
            a.inc(eax)?;
            a.jmp(top)?;
            Ok(())
        },
    );
    assert_eq!(r.stop, Stop::Budget);
    let tus = r.counter("tus_executed");
    assert!((4990..=5001).contains(&tus), "tus_executed = {tus}");
    assert!(r.counter("exits.branch") < 10);
}

#[test]
fn the_tu_budget_stops_a_loop_of_indirect_jumps() {
    let r = run_asm_with(
        Options {
            budget: Some(2000),
            ..Options::default()
        },
        |a| {
            let mut top = a.create_label();
            a.call(top)?; // pushes the address of top
            a.set_label(&mut top)?;
            a.pop(ebx)?;
            a.push(ebx)?;
            a.inc(eax)?;
            a.jmp(ebx)?;
            Ok(())
        },
    );
    assert_eq!(r.stop, Stop::Budget);
    assert!(r.reg(eax) > 1000);
}

#[test]
fn a_program_within_the_budget_halts() {
    let r = run_asm_with(
        Options {
            budget: Some(100),
            ..Options::default()
        },
        |a| {
            let mut top = a.create_label();
            a.mov(ecx, 10u32)?;
            a.set_label(&mut top)?;
            a.loop_(top)?;
            Ok(())
        },
    );
    r.assert_halted();
}

#[test]
fn execution_counters_are_not_kept_without_stats() {
    let r = run_asm(|a| {
        a.nop()?;
        Ok(())
    });
    r.assert_halted();
    let report = r.machine.report();
    let tus = report
        .counters
        .iter()
        .find(|(k, _)| k == "tus_executed")
        .unwrap();
    assert_eq!(tus.1, None);
}

#[test]
fn very_deep_recursion_completes() {
    // A million nested calls (4 MiB of guest stack), then a million returns.
    let r = run_asm(|a| {
        let mut f = a.create_label();
        let mut base = a.create_label();
        let mut done = a.create_label();
        a.mov(esp, 16u32 << 20)?;
        a.mov(ecx, 1_000_000u32)?;
        a.call(f)?;
        a.jmp(done)?;
        a.set_label(&mut f)?;
        a.dec(ecx)?;
        a.jz(base)?;
        a.call(f)?;
        a.inc(eax)?;
        a.set_label(&mut base)?;
        a.ret()?;
        a.set_label(&mut done)?;
        a.nop()?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 999_999);
    assert_eq!(r.reg(esp), 16 << 20);
}

/// The executed-instruction counts of `--stats`, exactly: every TU counts
/// all its instructions when it starts, and the IDENT ones apart.
#[test]
fn executed_instructions_are_counted_per_class_with_their_ident_share() {
    let r = run_asm_with(stats(), |a| {
        let mut top = a.create_label();
        a.mov(ecx, 1000u32)?;
        a.set_label(&mut top)?;
        a.add(eax, 1)?;
        a.add(ebx, 2)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        Ok(())
    });
    r.assert_halted();
    // mov esp (the harness), mov ecx, then 1000 times add, add, dec, jnz,
    // then hlt: 2 + 4000 + 1. All but jnz and hlt are IDENT.
    assert_eq!(r.executed("kernel32"), (4003, 3002));
    assert_eq!(r.executed("real16"), (0, 0));
    assert_eq!(r.executed("user32"), (0, 0));
    let report = r.machine.report();
    let total = report.executed_total.unwrap();
    assert_eq!((total.insns, total.ident), (4003, 3002));
    // The translation table: Total is the sum of the rows.
    let mut sum = bt86_translator::stats::ClassRow::default();
    for c in &report.classes {
        sum.add(&c.translated);
    }
    assert_eq!(sum, report.total);
    assert!(report.text().contains("real16"), "{}", report.text());
}
