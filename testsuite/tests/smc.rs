//! Self-modifying code without paging: pages that hold translated code
//! are write-protected; a write to one (by translated code or by the
//! runtime) drops the translations, and the code runs as modified.

use bt86_testsuite::*;

/// A function on its own page: `mov eax, imm32; ret` (imm at FUNC + 1).
const FUNC: u32 = LOAD + 0x1000;

/// The function at FUNC: `mov eax, 1; ret`.
fn returns_one() -> Vec<u8> {
    assemble_at(FUNC, |a| {
        a.mov(eax, 1u32)?;
        a.ret()
    })
}

/// ESI = the function's last result; its immediate becomes 2; EDI = the
/// result of calling it (through `func`) again; hlt.
fn patch_and_call_again(a: &mut CodeAssembler, func: AsmRegister32) -> Result<(), IcedError> {
    a.mov(esi, eax)?;
    a.mov(dword_ptr(FUNC + 1), 2u32)?;
    a.call(func)?;
    a.mov(edi, eax)?;
    a.hlt()
}

fn run_with_func(main: Vec<u8>, func: Vec<u8>) -> Run {
    run_blocks(
        Options {
            stats: true,
            ..Options::default()
        },
        &[(LOAD, main), (FUNC, func)],
    )
}

#[test]
fn patching_an_immediate_of_code_that_already_ran_takes_effect() {
    let func = returns_one();
    let main = assemble_at(LOAD, |a| {
        a.mov(esp, STACK)?;
        a.mov(ecx, FUNC)?;
        a.call(ecx)?;
        patch_and_call_again(a, ecx)
    });
    let r = run_with_func(main, func);
    r.assert_halted();
    assert_eq!(r.reg(esi), 1);
    assert_eq!(r.reg(edi), 2, "the patched immediate");
    assert!(r.counter("smc_invalidations") >= 1);
}

#[test]
fn a_write_into_the_running_tu_changes_its_next_instructions() {
    // The store rewrites the immediate of the `mov ebx, 1` right after
    // it, in the same TU, into 7.
    let prefix = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        a.mov(ecx, 7u32)?;
        a.mov(dword_ptr(0u32), ecx) // placeholder of the same length
    };
    let target = LOAD + assemble_at(LOAD, prefix).len() as u32;
    let main = assemble_at(LOAD, |a| {
        a.mov(ecx, 7u32)?;
        a.mov(dword_ptr(target + 1), ecx)?;
        a.mov(ebx, 1u32)?;
        a.hlt()
    });
    let r = run_blocks(Options::default(), &[(LOAD, main)]);
    r.assert_halted();
    assert_eq!(r.reg(ebx), 7);
}

#[test]
fn a_stack_on_the_code_page_does_not_stop_progress() {
    // Each push lands on the page of the code doing it.
    let r = run_asm(|a| {
        a.mov(esp, LOAD + 0x800)?;
        for i in 0..4u32 {
            a.push(i)?;
        }
        a.pop(eax)?;
        a.pop(ebx)?;
        a.mov(esp, STACK)
    });
    r.assert_halted();
    assert_eq!((r.reg(eax), r.reg(ebx)), (3, 2));
}

#[test]
fn a_runtime_emulated_store_to_code_takes_effect() {
    // sgdt (emulated by the runtime) stores the 6 bytes lgdt loaded:
    // `mov eax, 0x4242; nop`'s first bytes... over the function.
    let func = returns_one();
    let main = assemble_at(LOAD, |a| {
        a.mov(esp, STACK)?;
        a.mov(ecx, FUNC)?;
        a.call(ecx)?;
        a.mov(esi, eax)?;
        // B8 42 42 00 00 C3: mov eax, 0x4242; ret
        a.mov(dword_ptr(DATA), 0x0042_42B8u32)?;
        a.mov(word_ptr(DATA + 4), 0xC300u32)?;
        a.lgdt(ptr(DATA))?;
        a.sgdt(ptr(FUNC))?;
        a.call(ecx)?;
        a.mov(edi, eax)?;
        a.hlt()
    });
    let r = run_with_func(main, func);
    r.assert_halted();
    assert_eq!(r.reg(esi), 1);
    assert_eq!(r.reg(edi), 0x4242, "the rewritten function ran");
}

#[test]
fn a_page_written_constantly_stops_faulting_and_still_sees_code_changes() {
    // A counter beside the code is incremented 10,000 times: after a few
    // invalidations the page is no longer protected (its TUs check their
    // code at their head). Then the function on that page is patched,
    // and the change is still seen.
    const COUNTER: u32 = FUNC + 0x800;
    let func = returns_one();
    let main = assemble_at(LOAD, |a| {
        let mut top = a.create_label();
        a.mov(esp, STACK)?;
        a.mov(ecx, 10_000u32)?;
        a.mov(ebx, FUNC)?;
        a.set_label(&mut top)?;
        a.call(ebx)?;
        a.inc(dword_ptr(COUNTER))?;
        a.dec(ecx)?;
        a.jnz(top)?;
        patch_and_call_again(a, ebx)
    });
    let r = run_with_func(main, func);
    r.assert_halted();
    assert_eq!(r.mem_u32(COUNTER), 10_000);
    assert_eq!((r.reg(esi), r.reg(edi)), (1, 2));
    let invalidations = r.counter("smc_invalidations");
    assert!(
        (2..20).contains(&invalidations),
        "{invalidations} invalidations: the page must stop faulting"
    );
}

#[test]
fn a_hot_page_whose_code_stops_changing_is_protected_again() {
    // The function is patched 8 times (its page turns self-checking),
    // then called 30,000 times unchanged: its page goes back to being
    // write-protected, so the last patch is an invalidation again, and
    // it takes effect.
    let func = returns_one();
    let main = assemble_at(LOAD, |a| {
        let mut patch = a.create_label();
        let mut calm = a.create_label();
        a.mov(esp, STACK)?;
        a.mov(ebx, FUNC)?;
        a.mov(ecx, 8u32)?;
        a.set_label(&mut patch)?;
        a.mov(dword_ptr(FUNC + 1), ecx)?;
        a.call(ebx)?;
        a.dec(ecx)?;
        a.jnz(patch)?;
        a.mov(ecx, 30_000u32)?;
        a.set_label(&mut calm)?;
        a.call(ebx)?;
        a.dec(ecx)?;
        a.jnz(calm)?;
        a.mov(dword_ptr(FUNC + 1), 0x77u32)?;
        a.call(ebx)?;
        a.mov(edi, eax)?;
        a.hlt()
    });
    let r = run_with_func(main, func);
    r.assert_halted();
    assert_eq!(r.reg(edi), 0x77, "the last patch took effect");
    let invalidations = r.counter("smc_invalidations");
    // 4 writes to turn hot (the next 4 patch a live immediate, which a
    // self-checking TU loads as it runs), then the last patch faulting on
    // the page protected again: without that, 4.
    assert!(
        (5..=8).contains(&invalidations),
        "{invalidations} invalidations: the page was not protected again"
    );
}

/// A write to a code page drops that page's translations only, and a
/// direct call chained into the old translation reaches the new one.
#[test]
fn a_write_drops_only_its_pages_translations_and_unchains_them() {
    let func = returns_one();
    let main = assemble_at(LOAD, |a| {
        let mut again = a.create_label();
        a.mov(esp, STACK)?;
        a.xor(ebx, ebx)?;
        a.mov(ecx, 3u32)?;
        a.set_label(&mut again)?;
        a.call(FUNC as u64)?;
        a.add(ebx, eax)?;
        a.inc(dword_ptr(FUNC + 1))?;
        a.loop_(again)?;
        a.hlt()
    });
    let r = run_with_func(main, func);
    r.assert_halted();
    assert_eq!(r.reg(ebx), 1 + 2 + 3, "each call ran the patched function");
    assert_eq!(r.counter("cache_flushes"), 0, "nothing else was dropped");
    assert_eq!(r.counter("smc_invalidations"), 3);
}

/// A function whose immediate is patched before every call: once its page
/// is self-checking the immediate is read from the code as it runs (no
/// retranslation per patch), and a change to anything else is still seen.
#[test]
fn patched_immediates_need_no_retranslation_and_other_changes_are_seen() {
    let func = returns_one();
    let main = assemble_at(LOAD, |a| {
        let mut again = a.create_label();
        a.mov(esp, STACK)?;
        a.xor(ebx, ebx)?;
        a.mov(ecx, 100u32)?;
        a.set_label(&mut again)?;
        a.mov(dword_ptr(FUNC + 1), ecx)?;
        a.call(FUNC as u64)?;
        a.add(ebx, eax)?;
        a.loop_(again)?;
        // mov eax, imm32 becomes mov ecx, imm32.
        a.mov(byte_ptr(FUNC), 0xB9u32)?;
        a.mov(eax, 7u32)?;
        a.call(FUNC as u64)?;
        a.mov(esi, eax)?;
        a.mov(edi, ecx)?;
        a.hlt()
    });
    let r = run_with_func(main, func);
    r.assert_halted();
    assert_eq!(r.reg(ebx), (1..=100).sum::<u32>());
    assert_eq!((r.reg(esi), r.reg(edi)), (7, 1), "the new opcode ran");
    assert!(
        r.counter("smc_invalidations") < 10,
        "{} invalidations",
        r.counter("smc_invalidations")
    );
}
