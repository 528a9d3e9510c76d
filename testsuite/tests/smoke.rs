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

#[test]
fn paged_ram_maps_ram_and_nothing_above_it() {
    const RAM_END: u32 = 16 << 20;
    let r = run_asm_with(Options::paged(), |a| {
        a.pushfd()?;
        a.pop(esi)?;
        a.mov(edi, eax)?;
        a.mov(ecx, cr0)?;
        a.mov(edx, cr4)?;
        a.mov(dword_ptr(RAM_END - 4), 0x1234_5678u32)?;
        a.mov(ebx, dword_ptr(RAM_END - 4))?;
        a.mov(eax, dword_ptr(RAM_END))
    });
    match r.stop {
        Stop::Unhandled { exc, .. } => {
            assert_eq!((exc.vector, exc.addr), (vec::PF, RAM_END));
            assert_eq!(exc.error, 0, "not present, a read, at CPL 0");
        }
        s => panic!("expected #PF, got {s:?}"),
    }
    assert_eq!(r.machine.cpu().cr2, RAM_END);
    assert_eq!(r.reg(esi), fl::FIXED1, "EFLAGS as at entry");
    assert_eq!(r.reg(edi), 0, "eax as at entry");
    assert_ne!(r.reg(ecx) & paging::CR0_PG, 0);
    assert_eq!(r.reg(edx), paging::CR4_PSE);
    assert_eq!(r.reg(ebx), 0x1234_5678, "the end of RAM is mapped");
    assert_eq!(r.reg(esp), STACK);
}
