use bt86_testsuite::*;

#[test]
fn push_pop_round_trip() {
    let _ = env_logger::builder().is_test(true).try_init();
    let r = run_asm(|a| {
        a.mov(eax, 0x1234u32)?;
        a.mov(ebx, 0x5678u32)?;
        a.push(eax)?;
        a.push(ebx)?;
        a.pop(ecx)?;
        a.pop(edx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(ecx), 0x5678);
    assert_eq!(r.reg(edx), 0x1234);
    assert_eq!(r.reg(esp), STACK);
}

#[test]
fn sub_sbb_div() {
    let r = run_asm(|a| {
        a.mov(eax, 5_000_000u32)?;
        a.mov(edx, 0u32)?;
        a.mov(ecx, 1_000_000u32)?;
        a.div(ecx)?;
        Ok(())
    });
    r.assert_halted();
    assert_eq!(r.reg(eax), 5);
}

#[test]
fn rdtsc_gives_small_values() {
    let r = run_asm(|a| {
        a.rdtsc()?;
        a.mov(esi, eax)?;
        a.mov(edi, edx)?;
        Ok(())
    });
    r.assert_halted();
    eprintln!("{:x} {:x}", r.reg(edi), r.reg(esi));
}
