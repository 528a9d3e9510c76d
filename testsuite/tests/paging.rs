//! Guest paging (Intel SDM Vol. 3A, chapter 4): the page-table formats
//! (32-bit with 4 KiB and 4 MiB pages, PAE with 4 KiB and 2 MiB pages),
//! accessed and dirty bits, #PF error codes and CR2, U/S, R/W and
//! CR0.WP, INVLPG, CR3 reloads and switches, global pages, NX,
//! self-modifying code through paging, more scattered pages than the
//! shadow can keep mapped, and what a CR3 reload keeps of the shadow
//! (only what no changed table entry affects).
//!
//! Every kernel keeps its own code, data and stacks identity-mapped (the
//! first 4 MiB, user-accessible) and its page tables at 0x20_0000 and up
//! (inside the identity map, so the guest edits them at their physical
//! addresses). A #PF goes to a handler that records the error code, EIP,
//! CS, CR2 and ECX/ESI/EDI and halts.

use bt86_testsuite::paging::pte::*;
use bt86_testsuite::paging::*;
use bt86_testsuite::pm::*;
use bt86_testsuite::*;

/// Where the page tables go.
const TABLES: u32 = 0x20_0000;
/// A second set of tables (a second address space).
const TABLES2: u32 = 0x28_0000;
/// The linear page the tests map somewhere else.
const LIN: u32 = 0x4000_0000;
/// Physical pages the tests map LIN to (inside the identity map, so the
/// guest can look at them directly too).
const PHYS: u32 = 0x30_0000;
const PHYS2: u32 = 0x30_1000;
/// Physical memory outside the identity map.
const HIGH: u32 = 0x80_0000;

/// What the #PF handler records.
const PF_ERROR: u32 = SEEN;
const PF_EIP: u32 = SEEN + 4;
const PF_CS: u32 = SEEN + 8;
const PF_CR2: u32 = SEEN + 0xC;
const PF_COUNT: u32 = SEEN + 0x10;
const PF_ECX: u32 = SEEN + 0x20;
const PF_ESI: u32 = SEEN + 0x24;
const PF_EDI: u32 = SEEN + 0x28;
/// Where the kernels store what they saw.
const OUT: u32 = SEEN + 0x100;

/// The #PF handler (handler 0): records, counts, halts.
fn pf_recorder() -> (u32, Vec<u8>) {
    let at = handler_addr(0);
    (
        at,
        assemble_at(at, |a| {
            a.mov(dword_ptr(PF_ECX), ecx)?;
            a.mov(dword_ptr(PF_ESI), esi)?;
            a.mov(dword_ptr(PF_EDI), edi)?;
            for (i, slot) in [PF_ERROR, PF_EIP, PF_CS].into_iter().enumerate() {
                a.mov(eax, dword_ptr(esp + 4 * i as u32))?;
                a.mov(dword_ptr(slot), eax)?;
            }
            a.mov(eax, cr2)?;
            a.mov(dword_ptr(PF_CR2), eax)?;
            a.inc(dword_ptr(PF_COUNT))?;
            a.hlt()
        }),
    )
}

/// Where the handlers of other exceptions record them: vector + 1 (0:
/// none), then the first two words of the frame (error code and EIP for
/// #GP and #DF, EIP and CS for #UD).
const OTHER: u32 = SEEN + 0x30;

/// Handlers 4, 5, 6 for #GP, #UD and #DF (none is expected; they make
/// a failure say what happened): record and halt.
fn other_recorders() -> Vec<(u32, Vec<u8>)> {
    [(4, 13u32), (5, 6), (6, 8)]
        .into_iter()
        .map(|(k, v)| {
            let at = handler_addr(k);
            let code = assemble_at(at, |a| {
                a.mov(dword_ptr(OTHER), v + 1)?;
                a.mov(eax, dword_ptr(esp))?;
                a.mov(dword_ptr(OTHER + 4), eax)?;
                a.mov(eax, dword_ptr(esp + 4))?;
                a.mov(dword_ptr(OTHER + 8), eax)?;
                a.hlt()
            });
            (at, code)
        })
        .collect()
}

/// The end of a ring-3 program: `int 0x81` to handler 1, which halts.
fn exit_handler() -> (u32, Vec<u8>) {
    (handler_addr(1), assemble_at(handler_addr(1), |a| a.hlt()))
}

/// #PF to the recorder, int 0x81 (callable from ring 3) to the exit,
/// #GP, #UD and #DF to their recorders.
const GATES: [(u32, u32, u32); 5] = [
    (14, 0, 0x8E),
    (0x81, 1, 0xEE),
    (13, 4, 0x8E),
    (6, 5, 0x8E),
    (8, 6, 0x8E),
];

fn stats() -> Options {
    Options {
        stats: true,
        ..Options::default()
    }
}

/// Runs the kit's system with GATES, `body`, `user` and the `blocks`
/// (page tables, data, more handlers), with statistics.
fn run_paged(body: Vec<u8>, user: Vec<u8>, blocks: Vec<(u32, Vec<u8>)>) -> Run {
    run_paged_with(stats(), &[], body, user, blocks)
}

/// Like `run_paged`, with `opts` and more gates (a later gate for the
/// same vector wins).
fn run_paged_with(
    opts: Options,
    gates: &[(u32, u32, u32)],
    body: Vec<u8>,
    user: Vec<u8>,
    blocks: Vec<(u32, Vec<u8>)>,
) -> Run {
    let mut all_gates = GATES.to_vec();
    all_gates.extend_from_slice(gates);
    let mut all = vec![
        (LOAD, system(&all_gates)),
        (BODY, body),
        (USER, user),
        pf_recorder(),
        exit_handler(),
    ];
    all.extend(other_recorders());
    all.extend(blocks);
    run_blocks(opts, &all)
}

/// A new label set at the next instruction.
fn here(a: &mut CodeAssembler) -> Result<CodeLabel, IcedError> {
    let mut l = a.create_label();
    a.set_label(&mut l)?;
    Ok(l)
}

/// The ring-0 body: turn paging on with `s`, run `f`, hlt.
fn paged_body(
    s: Setup,
    f: impl FnOnce(&mut CodeAssembler) -> Result<Vec<CodeLabel>, IcedError>,
) -> (Vec<u8>, Vec<u32>) {
    assemble_labeled(BODY, |a| {
        enable(a, &s)?;
        let labels = f(a)?;
        a.hlt()?;
        Ok(labels)
    })
}

/// The ring-0 body for ring-3 tests: turn paging on with `s`, then iret
/// to USER in ring 3 with DS = ES = UDATA.
fn ring3_body(s: Setup) -> Vec<u8> {
    assemble_at(BODY, |a| {
        enable(a, &s)?;
        a.mov(eax, UDATA)?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.push(UDATA)?;
        a.push(USER_STACK)?;
        a.push(0x2u32)?;
        a.push(UCODE)?;
        a.push(USER)?;
        a.iretd()
    })
}

/// Ring-3 code at USER: `f`, then `int 0x81` (the exit).
fn user_code(
    f: impl FnOnce(&mut CodeAssembler) -> Result<Vec<CodeLabel>, IcedError>,
) -> (Vec<u8>, Vec<u32>) {
    assemble_labeled(USER, |a| {
        let labels = f(a)?;
        a.int(0x81)?;
        Ok(labels)
    })
}

/// 32-bit tables with the first 4 MiB identity-mapped by 4 KiB pages.
fn two_level() -> Tables {
    let mut t = Tables::two_level(TABLES);
    t.identity(0x40_0000);
    t
}

/// PAE tables with the first 4 MiB identity-mapped by 4 KiB pages.
fn pae() -> Tables {
    let mut t = Tables::pae(TABLES);
    t.identity(0x40_0000);
    t
}

/// `v` as a little-endian block at `addr`.
fn dwords(addr: u32, v: &[u32]) -> (u32, Vec<u8>) {
    (addr, v.iter().flat_map(|w| w.to_le_bytes()).collect())
}

/// Asserts the run halted, and not in a #GP, #UD or #DF handler.
fn assert_halted_cleanly(r: &Run) {
    r.assert_halted();
    let other = r.mem_u32(OTHER);
    assert_eq!(
        other,
        0,
        "unexpected exception {} (frame {:#x} {:#x})",
        other.wrapping_sub(1),
        r.mem_u32(OTHER + 4),
        r.mem_u32(OTHER + 8)
    );
}

/// Asserts the run halted without a #PF.
fn assert_no_fault(r: &Run) {
    assert_halted_cleanly(r);
    assert_eq!(
        r.mem_u32(PF_COUNT),
        0,
        "unexpected #PF: error {:#x} at EIP {:#x}, CR2 {:#x}",
        r.mem_u32(PF_ERROR),
        r.mem_u32(PF_EIP),
        r.mem_u32(PF_CR2)
    );
}

/// Asserts the run ended in the #PF handler after one #PF with `error`
/// at `eip` with CR2 = `fault_addr`, and that bt86 counted a true fault.
fn assert_pf(r: &Run, error: u32, eip: u32, fault_addr: u32, what: &str) {
    assert_halted_cleanly(r);
    assert_eq!(r.mem_u32(PF_COUNT), 1, "{what}: one #PF expected");
    let got = (r.mem_u32(PF_ERROR), r.mem_u32(PF_EIP), r.mem_u32(PF_CR2));
    assert_eq!(
        got,
        (error, eip, fault_addr),
        "{what}: (error code, EIP, CR2) = ({:#x}, {:#x}, {:#x}), expected ({error:#x}, {eip:#x}, {fault_addr:#x})",
        got.0,
        got.1,
        got.2
    );
    assert!(
        r.counter("true_faults") >= 1,
        "{what}: the #PF counts as a true fault"
    );
}

// ---------------------------------------------------------------------
// The page-table formats.

/// 32-bit paging, 4 KiB pages: writes through two linear pages land in the physical pages their PTEs name (swapped), a split dword too.
#[test]
fn two_level_4k_pages_map_linear_to_physical() {
    let mut t = two_level();
    t.map(LIN, PHYS2, P | RW);
    t.map(LIN + 0x1000, PHYS, P | RW);
    let (body, _) = paged_body(t.setup(), |a| {
        a.mov(dword_ptr(LIN + 0x10), 0x1111_2222u32)?;
        a.mov(dword_ptr(LIN + 0x1010), 0x3333_4444u32)?;
        a.mov(dword_ptr(LIN + 0xFFE), 0xAABB_CCDDu32)?;
        a.mov(esi, dword_ptr(LIN + 0x10))?;
        a.mov(edi, dword_ptr(PHYS2 + 0x10))?;
        a.mov(ebx, dword_ptr(LIN + 0xFFE))?;
        Ok(vec![])
    });
    let r = run_paged(body, vec![], t.blocks());
    assert_no_fault(&r);
    assert_eq!(r.mem_u32(PHYS2 + 0x10), 0x1111_2222);
    assert_eq!(r.mem_u32(PHYS + 0x10), 0x3333_4444);
    assert_eq!(r.mem_u16(PHYS2 + 0xFFE), 0xCCDD, "split dword, low half");
    assert_eq!(r.mem_u16(PHYS), 0xAABB, "split dword, high half");
    assert_eq!(r.reg(esi), 0x1111_2222, "read back through LIN");
    assert_eq!(r.reg(edi), 0x1111_2222, "read through the identity map");
    assert_eq!(r.reg(ebx), 0xAABB_CCDD, "split dword read back");
    assert!(
        r.counter("hidden_faults") > 0,
        "pages were mapped on demand"
    );
}

/// 32-bit paging with CR4.PSE: a 4 MiB PDE maps its whole 4 MiB (identity map too), next to a 4 KiB page table.
#[test]
fn pse_4m_pages_map_linear_to_physical() {
    let mut t = Tables::two_level(TABLES);
    t.map_large(0, 0, P | RW | US);
    t.map_large(LIN, HIGH, P | RW);
    t.map(LIN + 0x40_0000, PHYS, P | RW);
    let s = Setup {
        cr4: CR4_PSE,
        ..t.setup()
    };
    let (body, _) = paged_body(s, |a| {
        a.mov(dword_ptr(LIN + 0x12_3454), 0x1234_5678u32)?;
        a.mov(dword_ptr(LIN + 0x3F_FFFC), 0x9ABC_DEF0u32)?;
        a.mov(dword_ptr(LIN + 0x40_0020), 0x0BAD_F00Du32)?;
        a.mov(esi, dword_ptr(LIN + 0x12_3454))?;
        Ok(vec![])
    });
    let r = run_paged(body, vec![], t.blocks());
    assert_no_fault(&r);
    assert_eq!(r.mem_u32(HIGH + 0x12_3454), 0x1234_5678);
    assert_eq!(r.mem_u32(HIGH + 0x3F_FFFC), 0x9ABC_DEF0, "last dword");
    assert_eq!(r.mem_u32(PHYS + 0x20), 0x0BAD_F00D, "the 4 KiB page");
    assert_eq!(r.reg(esi), 0x1234_5678);
}

/// Without CR4.PSE a PDE's PS bit is ignored: the PDE references a page table.
#[test]
fn pde_ps_is_ignored_without_cr4_pse() {
    let mut t = two_level();
    t.map(LIN, PHYS, P | RW);
    let pde = t.pde_addr(LIN);
    let v = t.read(pde);
    t.write(pde, v | PS);
    let (body, _) = paged_body(t.setup(), |a| {
        a.mov(dword_ptr(LIN + 0x18), 0x5EED_0001u32)?;
        Ok(vec![])
    });
    let r = run_paged(body, vec![], t.blocks());
    assert_no_fault(&r);
    assert_eq!(r.mem_u32(PHYS + 0x18), 0x5EED_0001);
}

/// PAE, 4 KiB pages: 64-bit PTEs in directories under two PDPTEs map linear pages to physical ones.
#[test]
fn pae_4k_pages_map_linear_to_physical() {
    let mut t = pae();
    t.map(LIN, PHYS, P | RW);
    t.map(0xC000_1000, PHYS2, P | RW);
    let (body, _) = paged_body(t.setup(), |a| {
        a.mov(dword_ptr(LIN + 0x10), 0x1111_2222u32)?;
        a.mov(dword_ptr(0xC000_1FFCu32), 0x3333_4444u32)?;
        a.mov(esi, dword_ptr(LIN + 0x10))?;
        Ok(vec![])
    });
    let r = run_paged(body, vec![], t.blocks());
    assert_no_fault(&r);
    assert_eq!(r.mem_u32(PHYS + 0x10), 0x1111_2222);
    assert_eq!(r.mem_u32(PHYS2 + 0xFFC), 0x3333_4444);
    assert_eq!(r.reg(esi), 0x1111_2222);
}

/// PAE, 2 MiB pages: a PDE with PS maps its whole 2 MiB.
#[test]
fn pae_2m_pages_map_linear_to_physical() {
    let mut t = pae();
    t.map_large(0x8020_0000, 0x60_0000, P | RW);
    let (body, _) = paged_body(t.setup(), |a| {
        a.mov(dword_ptr(0x8021_2344u32), 0x1234_5678u32)?;
        a.mov(dword_ptr(0x803F_FFFCu32), 0x9ABC_DEF0u32)?;
        a.mov(esi, dword_ptr(0x8021_2344u32))?;
        Ok(vec![])
    });
    let r = run_paged(body, vec![], t.blocks());
    assert_no_fault(&r);
    assert_eq!(r.mem_u32(0x61_2344), 0x1234_5678);
    assert_eq!(r.mem_u32(0x7F_FFFC), 0x9ABC_DEF0, "last dword");
    assert_eq!(r.reg(esi), 0x1234_5678);
}

/// Clearing CR0.PG makes linear addresses physical again, and setting it again brings back the mapping (not the unpaged view).
#[test]
fn turning_paging_off_and_on_again() {
    let mut t = two_level();
    t.map(LIN, HIGH, P | RW);
    let (body, l) = paged_body(t.setup(), |a| {
        a.mov(dword_ptr(LIN), 0x600Du32)?;
        a.mov(eax, cr0)?;
        a.and(eax, !CR0_PG)?;
        a.mov(cr0, eax)?;
        // Paging off: HIGH is a physical address.
        a.mov(esi, dword_ptr(HIGH))?;
        a.mov(dword_ptr(HIGH + 4), 0x1234u32)?;
        a.mov(eax, cr0)?;
        a.or(eax, CR0_PG)?;
        a.mov(cr0, eax)?;
        a.mov(edi, dword_ptr(LIN + 4))?;
        // HIGH is outside the identity map: not present.
        let fault = here(a)?;
        a.mov(eax, dword_ptr(HIGH + 8))?;
        Ok(vec![fault])
    });
    let r = run_paged(body, vec![], t.blocks());
    assert_pf(&r, 0, l[0], HIGH + 8, "HIGH with paging on again");
    assert_eq!(
        r.mem_u32(PF_ESI),
        0x600D,
        "written through LIN, read at HIGH"
    );
    assert_eq!(
        r.mem_u32(PF_EDI),
        0x1234,
        "written at HIGH, read through LIN"
    );
}

// ---------------------------------------------------------------------
// Accessed and dirty bits.

/// A read sets the PTE's and the PDE's accessed bits and not the dirty bit; a write sets the dirty bit (32-bit and PAE entries; PAE's high dword stays untouched).
#[test]
fn accessed_and_dirty_bits_follow_reads_and_writes() {
    for mut t in [two_level(), pae()] {
        let what = format!("{:?}", t.format());
        t.map(LIN, PHYS, P | RW);
        let (pte, pde) = (t.pte_addr(LIN), t.pde_addr(LIN));
        let (body, _) = paged_body(t.setup(), |a| {
            a.mov(eax, dword_ptr(LIN))?;
            a.mov(eax, dword_ptr(pte))?;
            a.mov(dword_ptr(OUT), eax)?;
            a.mov(eax, dword_ptr(pde))?;
            a.mov(dword_ptr(OUT + 4), eax)?;
            a.mov(dword_ptr(LIN + 4), 1u32)?;
            a.mov(eax, dword_ptr(pte))?;
            a.mov(dword_ptr(OUT + 8), eax)?;
            Ok(vec![])
        });
        let r = run_paged(body, vec![], t.blocks());
        assert_no_fault(&r);
        let after_read = r.mem_u32(OUT) as u64;
        assert_eq!(
            after_read & (A | D),
            A,
            "{what}: PTE after a read: A, not D"
        );
        assert_ne!(
            r.mem_u32(OUT + 4) as u64 & A,
            0,
            "{what}: PDE after a read: A"
        );
        assert_eq!(
            r.mem_u32(OUT + 8) as u64 & (A | D),
            A | D,
            "{what}: PTE after a write"
        );
        assert_eq!(
            r.mem_u32(pte) as u64 & (A | D),
            A | D,
            "{what}: PTE at the end"
        );
        assert_eq!(r.mem_u32(PHYS + 4), 1, "{what}");
        if t.format() == Format::Pae {
            assert_eq!(r.mem_u32(pte + 4), 0, "the high dword is untouched");
        }
    }
}

/// After the guest clears A and D and does invlpg, a read sets A again (D stays clear) and a write sets D.
#[test]
fn accessed_and_dirty_bits_are_set_again_after_clearing_and_invlpg() {
    let mut t = two_level();
    t.map(LIN, PHYS, P | RW);
    let pte = t.pte_addr(LIN);
    let (body, _) = paged_body(t.setup(), |a| {
        a.mov(dword_ptr(LIN), 1u32)?;
        a.mov(eax, dword_ptr(pte))?;
        a.mov(dword_ptr(OUT), eax)?;
        a.and(dword_ptr(pte), !((A | D) as u32))?;
        a.invlpg(ptr(LIN))?;
        a.mov(eax, dword_ptr(LIN))?;
        a.mov(eax, dword_ptr(pte))?;
        a.mov(dword_ptr(OUT + 4), eax)?;
        a.mov(dword_ptr(LIN), 2u32)?;
        a.mov(eax, dword_ptr(pte))?;
        a.mov(dword_ptr(OUT + 8), eax)?;
        Ok(vec![])
    });
    let r = run_paged(body, vec![], t.blocks());
    assert_no_fault(&r);
    let bits = |at| r.mem_u32(at) as u64 & (A | D);
    assert_eq!(bits(OUT), A | D, "after the first write");
    assert_eq!(bits(OUT + 4), A, "cleared, invlpg, read: A, not D");
    assert_eq!(bits(OUT + 8), A | D, "then a write: D");
    assert_eq!(r.mem_u32(PHYS), 2);
}

/// A 4 MiB page's PDE gets A on a read and D on a write.
#[test]
fn accessed_and_dirty_bits_in_a_4m_pde() {
    let mut t = two_level();
    t.map_large(LIN, HIGH, P | RW);
    let pde = t.pde_addr(LIN);
    let s = Setup {
        cr4: CR4_PSE,
        ..t.setup()
    };
    let (body, _) = paged_body(s, |a| {
        a.mov(eax, dword_ptr(LIN + 0x20_0000))?;
        a.mov(eax, dword_ptr(pde))?;
        a.mov(dword_ptr(OUT), eax)?;
        a.mov(dword_ptr(LIN + 0x30_0000), 1u32)?;
        a.mov(eax, dword_ptr(pde))?;
        a.mov(dword_ptr(OUT + 4), eax)?;
        Ok(vec![])
    });
    let r = run_paged(body, vec![], t.blocks());
    assert_no_fault(&r);
    assert_eq!(r.mem_u32(OUT) as u64 & (A | D), A, "after a read");
    assert_eq!(r.mem_u32(OUT + 4) as u64 & (A | D), A | D, "after a write");
    assert_eq!(r.mem_u32(HIGH + 0x30_0000), 1);
}

// ---------------------------------------------------------------------
// #PF: error codes and CR2.

/// A ring-0 read through a not-present PTE, and through a not-present PDE: error 0, CR2 = the address, EIP = the read.
#[test]
fn pf_on_a_read_of_a_not_present_page() {
    for (lin, what) in [(LIN, "PTE P=0"), (0x8000_0000, "PDE P=0")] {
        let mut t = two_level();
        t.map(LIN, PHYS, RW); // not present
        let (body, l) = paged_body(t.setup(), |a| {
            a.mov(esi, 0x5Au32)?;
            let fault = here(a)?;
            a.mov(eax, dword_ptr(lin + 0x123))?;
            Ok(vec![fault])
        });
        let r = run_paged(body, vec![], t.blocks());
        assert_pf(&r, 0, l[0], lin + 0x123, what);
        assert_eq!(r.mem_u32(PF_CS), KCODE);
        assert_eq!(r.mem_u32(PF_ESI), 0x5A, "{what}: what ran before");
    }
}

/// A ring-0 write to a not-present page: error 2 (W).
#[test]
fn pf_on_a_write_to_a_not_present_page() {
    let t = two_level();
    let (body, l) = paged_body(t.setup(), |a| {
        let fault = here(a)?;
        a.mov(dword_ptr(LIN + 0x456), 1u32)?;
        Ok(vec![fault])
    });
    let r = run_paged(body, vec![], t.blocks());
    assert_pf(&r, 2, l[0], LIN + 0x456, "write");
}

/// A ring-3 read of a not-present page: error 4 (U).
#[test]
fn pf_on_a_ring_3_read_of_a_not_present_page() {
    let t = two_level();
    let (user, l) = user_code(|a| {
        let fault = here(a)?;
        a.mov(eax, dword_ptr(LIN + 0x10))?;
        Ok(vec![fault])
    });
    let r = run_paged(ring3_body(t.setup()), user, t.blocks());
    assert_pf(&r, 4, l[0], LIN + 0x10, "ring-3 read");
    assert_eq!(r.mem_u32(PF_CS), UCODE);
}

/// Ring 3 may not touch a supervisor page (U/S = 0 in the PTE or in the PDE): a read is error 5, a write error 7.
#[test]
fn pf_on_a_ring_3_access_to_a_supervisor_page() {
    // (PTE U/S, PDE U/S, write, error)
    for (pte_us, pde_us, write, error) in [
        (false, true, false, 5),
        (true, false, false, 5),
        (false, true, true, 7),
    ] {
        let what = format!("PTE U/S {pte_us}, PDE U/S {pde_us}, write {write}");
        let mut t = two_level();
        t.map(LIN, PHYS, P | RW | if pte_us { US } else { 0 });
        if !pde_us {
            let pde = t.pde_addr(LIN);
            let v = t.read(pde);
            t.write(pde, v & !US);
        }
        let (user, l) = user_code(|a| {
            let fault = here(a)?;
            if write {
                a.mov(dword_ptr(LIN + 0x20), 1u32)?;
            } else {
                a.mov(eax, dword_ptr(LIN + 0x20))?;
            }
            Ok(vec![fault])
        });
        let r = run_paged(ring3_body(t.setup()), user, t.blocks());
        assert_pf(&r, error, l[0], LIN + 0x20, &what);
        assert_eq!(r.mem_u32(PHYS + 0x20), 0, "{what}: nothing written");
    }
}

/// An instruction fetch from a not-present page without NX enabled (32-bit paging, and PAE with EFER.NXE = 0) has I/D = 0: error 0, CR2 = EIP = the target.
#[test]
fn pf_on_a_fetch_from_a_not_present_page_without_nx_has_no_id_bit() {
    for t in [two_level(), pae()] {
        let what = format!("{:?}", t.format());
        let (body, _) = paged_body(t.setup(), |a| {
            a.mov(eax, LIN + 0x40)?;
            a.jmp(eax)?;
            Ok(vec![])
        });
        let r = run_paged(body, vec![], t.blocks());
        assert_pf(&r, 0, LIN + 0x40, LIN + 0x40, &what);
        assert_eq!(r.mem_u32(PF_CS), KCODE);
    }
}

/// With PAE and EFER.NXE = 1, a fetch from a not-present page sets I/D: error 0x10.
#[test]
fn pf_on_a_fetch_from_a_not_present_page_with_pae_and_nxe_sets_id() {
    let t = pae();
    let s = Setup {
        nxe: true,
        ..t.setup()
    };
    let (body, _) = paged_body(s, |a| {
        a.mov(eax, LIN + 0x40)?;
        a.jmp(eax)?;
        Ok(vec![])
    });
    let r = run_paged(body, vec![], t.blocks());
    assert_pf(&r, 0x10, LIN + 0x40, LIN + 0x40, "fetch with NXE");
}

/// A ring-3 jump into a supervisor page: error 5 (32-bit paging: no I/D).
#[test]
fn pf_on_a_ring_3_fetch_from_a_supervisor_page() {
    let mut t = two_level();
    t.map(LIN, PHYS, P | RW);
    let code = assemble_at(LIN, |a| {
        a.mov(esi, 0xBADu32)?;
        a.int(0x81)
    });
    let (user, _) = user_code(|a| {
        a.mov(eax, LIN)?;
        a.jmp(eax)?;
        Ok(vec![])
    });
    let mut blocks = t.blocks();
    blocks.push((PHYS, code));
    let r = run_paged(ring3_body(t.setup()), user, blocks);
    assert_pf(&r, 5, LIN, LIN, "ring-3 fetch");
    assert_eq!(r.mem_u32(PF_CS), UCODE);
}

/// An instruction that starts on a present page and ends on a not-present one faults at its start with CR2 = the first byte of the missing page; the instructions before it ran.
#[test]
fn pf_on_an_instruction_crossing_into_a_not_present_page() {
    let mut t = two_level();
    t.map(LIN, PHYS, P | RW);
    // LIN + 0xFF0: mov esi, 0x5A (5 bytes), 9 nops, then at LIN + 0xFFE
    // a 5-byte mov eax, imm32 whose last 3 bytes are on LIN + 0x1000.
    let code = assemble_at(LIN + 0xFF0, |a| {
        a.mov(esi, 0x5Au32)?;
        for _ in 0..9 {
            a.nop()?;
        }
        a.mov(eax, 0x1234_5678u32)?;
        a.hlt()
    });
    let (body, _) = paged_body(t.setup(), |a| {
        a.mov(esi, 0u32)?;
        a.mov(eax, LIN + 0xFF0)?;
        a.jmp(eax)?;
        Ok(vec![])
    });
    let mut blocks = t.blocks();
    blocks.push((PHYS + 0xFF0, code[..16].to_vec()));
    let r = run_paged(body, vec![], blocks);
    assert_pf(&r, 0, LIN + 0xFFE, LIN + 0x1000, "fetch across pages");
    assert_eq!(r.mem_u32(PF_ESI), 0x5A, "the mov before it ran");
}

/// A dword read that straddles into a not-present page faults with CR2 = the first byte of the missing page.
#[test]
fn pf_on_a_read_crossing_into_a_not_present_page() {
    let mut t = two_level();
    t.map(LIN, PHYS, P | RW);
    let (body, l) = paged_body(t.setup(), |a| {
        let fault = here(a)?;
        a.mov(eax, dword_ptr(LIN + 0xFFE))?;
        Ok(vec![fault])
    });
    let r = run_paged(body, vec![], t.blocks());
    assert_pf(&r, 0, l[0], LIN + 0x1000, "split read");
}

/// A fault in the middle of rep movsd leaves ECX/ESI/EDI at the completed iterations and EIP at the instruction; the completed stores are in memory.
#[test]
fn pf_in_the_middle_of_rep_movsd() {
    let mut t = two_level();
    t.map(LIN, PHYS2, P | RW);
    let (body, l) = paged_body(t.setup(), |a| {
        for i in 0..8u32 {
            a.mov(dword_ptr(PHYS + 4 * i), 0x100 + i)?;
        }
        a.cld()?;
        a.mov(esi, PHYS)?;
        a.mov(edi, LIN + 0xFF0)?;
        a.mov(ecx, 8u32)?;
        let fault = here(a)?;
        a.rep().movsd()?;
        Ok(vec![fault])
    });
    let r = run_paged(body, vec![], t.blocks());
    assert_pf(&r, 2, l[0], LIN + 0x1000, "rep movsd");
    assert_eq!(r.mem_u32(PF_ECX), 4, "ECX");
    assert_eq!(r.mem_u32(PF_ESI), PHYS + 16, "ESI");
    assert_eq!(r.mem_u32(PF_EDI), LIN + 0x1000, "EDI");
    let done: Vec<u32> = (0..4).map(|i| r.mem_u32(PHYS2 + 0xFF0 + 4 * i)).collect();
    assert_eq!(done, [0x100, 0x101, 0x102, 0x103]);
}

/// PAE reserved bits set in a present entry give RSVD (error 9 on a read, 0xB on a write); in a not-present entry they are ignored (error 0).
#[test]
fn pf_for_reserved_bits_in_pae_entries() {
    // (what, entry, bit, write, error)
    let cases: [(&str, &str, u64, bool, u32); 6] = [
        ("PTE bit 62", "pte", 1 << 62, false, 9),
        ("PTE bit 62, write", "pte", 1 << 62, true, 0xB),
        ("PTE bit 63 without NXE", "pte", 1 << 63, false, 9),
        ("PDE (page table) bit 62", "pde", 1 << 62, false, 9),
        ("2 MiB PDE bit 13", "large", 1 << 13, false, 9),
        ("not-present PTE bit 62", "absent", 1 << 62, false, 0),
    ];
    for (what, entry, bit, write, error) in cases {
        let mut t = pae();
        match entry {
            "large" => t.map_large(LIN, 0x60_0000, P | RW | bit),
            "absent" => t.map(LIN, PHYS, RW | bit),
            "pde" => {
                t.map(LIN, PHYS, P | RW);
                let pde = t.pde_addr(LIN);
                let v = t.read(pde);
                t.write(pde, v | bit);
            }
            _ => t.map(LIN, PHYS, P | RW | bit),
        }
        let (body, l) = paged_body(t.setup(), |a| {
            let fault = here(a)?;
            if write {
                a.mov(dword_ptr(LIN + 0x30), 1u32)?;
            } else {
                a.mov(eax, dword_ptr(LIN + 0x30))?;
            }
            Ok(vec![fault])
        });
        let r = run_paged(body, vec![], t.blocks());
        assert_pf(&r, error, l[0], LIN + 0x30, what);
    }
}

/// With CR4.PSE, bit 21 of a 4 MiB PDE is reserved: RSVD, error 9.
#[test]
fn pf_for_a_reserved_bit_in_a_4m_pde() {
    let mut t = two_level();
    t.map_large(LIN, HIGH, P | RW | (1 << 21));
    let s = Setup {
        cr4: CR4_PSE,
        ..t.setup()
    };
    let (body, l) = paged_body(s, |a| {
        let fault = here(a)?;
        a.mov(eax, dword_ptr(LIN + 0x1234))?;
        Ok(vec![fault])
    });
    let r = run_paged(body, vec![], t.blocks());
    assert_pf(&r, 9, l[0], LIN + 0x1234, "4 MiB PDE bit 21");
}

/// Demand paging: a handler that sets P in the faulting PTE, does invlpg and irets is entered once per page, and the reads then see the pages' data.
#[test]
fn demand_paging_handler_maps_pages_and_resumes() {
    const PAGES: u32 = 16;
    let mut t = two_level();
    for i in 0..PAGES {
        t.map(LIN + i * PAGE, PHYS + i * PAGE, RW); // not present yet
    }
    let pt = t.pte_addr(LIN);
    let handler = assemble_at(handler_addr(3), |a| {
        a.push(eax)?;
        a.mov(eax, cr2)?;
        a.shr(eax, 12)?;
        a.and(eax, 0x3FFu32)?;
        a.or(dword_ptr(eax * 4 + pt), P as u32)?;
        a.mov(eax, cr2)?;
        a.invlpg(ptr(eax))?;
        a.inc(dword_ptr(PF_COUNT))?;
        a.pop(eax)?;
        a.add(esp, 4)?;
        a.iretd()
    });
    let (body, _) = paged_body(t.setup(), |a| {
        for i in 0..PAGES {
            a.mov(dword_ptr(PHYS + i * PAGE + 0x10), i + 1)?;
        }
        a.xor(esi, esi)?;
        for i in 0..PAGES {
            a.add(esi, dword_ptr(LIN + i * PAGE + 0x10))?;
        }
        Ok(vec![])
    });
    let mut blocks = t.blocks();
    blocks.push((handler_addr(3), handler));
    let r = run_paged_with(stats(), &[(14, 3, 0x8E)], body, vec![], blocks);
    assert_halted_cleanly(&r);
    assert_eq!(r.reg(esi), (1..=PAGES).sum::<u32>());
    assert_eq!(r.mem_u32(PF_COUNT), PAGES, "one #PF per page");
    assert!(r.counter("true_faults") >= PAGES as u64);
    assert!(r.counter("hidden_faults") > 0);
}

// ---------------------------------------------------------------------
// U/S, R/W and CR0.WP.

/// With CR0.WP = 0, ring 0 writes to read-only pages, user and supervisor.
#[test]
fn wp_clear_lets_ring_0_write_read_only_pages() {
    let mut t = two_level();
    t.map(LIN, PHYS, P | US);
    t.map(LIN + 0x1000, PHYS2, P);
    let (body, _) = paged_body(t.setup(), |a| {
        a.mov(dword_ptr(LIN), 0x1111u32)?;
        a.mov(dword_ptr(LIN + 0x1000), 0x2222u32)?;
        Ok(vec![])
    });
    let r = run_paged(body, vec![], t.blocks());
    assert_no_fault(&r);
    assert_eq!(r.mem_u32(PHYS), 0x1111, "read-only user page");
    assert_eq!(r.mem_u32(PHYS2), 0x2222, "read-only supervisor page");
}

/// With CR0.WP = 1, a ring-0 write to a read-only page (user or supervisor) is #PF error 3 (P|W), and nothing is written.
#[test]
fn wp_set_makes_ring_0_writes_to_read_only_pages_fault() {
    for (flags, what) in [(P | US, "user page"), (P, "supervisor page")] {
        let mut t = two_level();
        t.map(LIN, PHYS, flags);
        let s = Setup {
            cr0: CR0_WP,
            ..t.setup()
        };
        let (body, l) = paged_body(s, |a| {
            a.mov(eax, dword_ptr(LIN + 0x40))?; // reads are fine
            let fault = here(a)?;
            a.mov(dword_ptr(LIN + 0x40), 1u32)?;
            Ok(vec![fault])
        });
        let r = run_paged(body, vec![], t.blocks());
        assert_pf(&r, 3, l[0], LIN + 0x40, what);
        assert_eq!(r.mem_u32(PHYS + 0x40), 0, "{what}: nothing written");
    }
}

/// Setting CR0.WP after a permitted ring-0 write to a read-only page makes the next write to it fault (error 3).
#[test]
fn setting_wp_after_a_ring_0_write_makes_the_next_write_fault() {
    let mut t = two_level();
    t.map(LIN, PHYS, P | US);
    let (body, l) = paged_body(t.setup(), |a| {
        a.mov(dword_ptr(LIN), 0x1111u32)?;
        a.mov(eax, cr0)?;
        a.or(eax, CR0_WP)?;
        a.mov(cr0, eax)?;
        let fault = here(a)?;
        a.mov(dword_ptr(LIN + 8), 0x3333u32)?;
        Ok(vec![fault])
    });
    let r = run_paged(body, vec![], t.blocks());
    assert_pf(&r, 3, l[0], LIN + 8, "write after WP was set");
    assert_eq!(r.mem_u32(PHYS), 0x1111, "the write before WP");
    assert_eq!(r.mem_u32(PHYS + 8), 0);
}

/// A ring-3 write to a read-only user page (R/W = 0 in the PTE or in the PDE) is error 7 whatever CR0.WP.
#[test]
fn ring_3_writes_to_read_only_pages_fault_whatever_wp() {
    for wp in [0, CR0_WP] {
        for (pte_rw, pde_rw) in [(false, true), (true, false)] {
            let what = format!("WP {wp:#x}, PTE R/W {pte_rw}, PDE R/W {pde_rw}");
            let mut t = two_level();
            t.map(LIN, PHYS, P | US | if pte_rw { RW } else { 0 });
            if !pde_rw {
                let pde = t.pde_addr(LIN);
                let v = t.read(pde);
                t.write(pde, v & !RW);
            }
            let s = Setup {
                cr0: wp,
                ..t.setup()
            };
            let (user, l) = user_code(|a| {
                a.mov(eax, dword_ptr(LIN + 0x10))?; // reads are fine
                let fault = here(a)?;
                a.mov(dword_ptr(LIN + 0x10), 1u32)?;
                Ok(vec![fault])
            });
            let r = run_paged(ring3_body(s), user, t.blocks());
            assert_pf(&r, 7, l[0], LIN + 0x10, &what);
            assert_eq!(r.mem_u32(PF_CS), UCODE, "{what}");
            assert_eq!(r.mem_u32(PHYS + 0x10), 0, "{what}: nothing written");
        }
    }
}

/// Ring 3 reads and writes user pages it may: writable, and read-only for reads.
#[test]
fn ring_3_reads_and_writes_user_pages() {
    let mut t = two_level();
    t.map(LIN, PHYS, P | RW | US);
    t.map(LIN + 0x1000, PHYS2, P | US);
    let (user, _) = user_code(|a| {
        a.mov(dword_ptr(LIN + 0x10), 0x7777u32)?;
        a.mov(esi, dword_ptr(LIN + 0x1010))?;
        Ok(vec![])
    });
    let data = dwords(PHYS2 + 0x10, &[0x8888]);
    let mut blocks = t.blocks();
    blocks.push(data);
    let r = run_paged(ring3_body(t.setup()), user, blocks);
    assert_no_fault(&r);
    assert_eq!(r.mem_u32(PHYS + 0x10), 0x7777);
    assert_eq!(r.reg(esi), 0x8888);
}

// ---------------------------------------------------------------------
// INVLPG, CR3 and global pages.

/// The body of the remapping tests: read LIN (PHYS, 0xAAAA) into OUT,
/// point its PTE at PHYS2 (0xBBBB), run `flush`, read LIN into OUT + 4.
fn remap_and_read(
    t: &mut Tables,
    s: Setup,
    flags: u64,
    flush: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Run {
    t.map(LIN, PHYS, flags);
    let pte = t.pte_addr(LIN);
    let (body, _) = paged_body(s, |a| {
        a.mov(dword_ptr(PHYS), 0xAAAAu32)?;
        a.mov(dword_ptr(PHYS2), 0xBBBBu32)?;
        a.mov(eax, dword_ptr(LIN))?;
        a.mov(dword_ptr(OUT), eax)?;
        a.mov(dword_ptr(pte), PHYS2 | flags as u32)?;
        flush(a)?;
        a.mov(eax, dword_ptr(LIN))?;
        a.mov(dword_ptr(OUT + 4), eax)?;
        Ok(vec![])
    });
    run_paged(body, vec![], t.blocks())
}

/// After a PTE is pointed elsewhere, invlpg (of any address in the page) makes the new mapping used.
#[test]
fn invlpg_makes_a_changed_pte_take_effect() {
    let mut t = two_level();
    let s = t.setup();
    let r = remap_and_read(&mut t, s, P | RW, |a| a.invlpg(ptr(LIN + 0x800)));
    assert_no_fault(&r);
    assert_eq!(r.mem_u32(OUT), 0xAAAA, "before");
    assert_eq!(r.mem_u32(OUT + 4), 0xBBBB, "after invlpg");
}

/// After a PTE is pointed elsewhere, reloading CR3 with the same value makes the new mapping used.
#[test]
fn reloading_cr3_makes_a_changed_pte_take_effect() {
    for mut t in [two_level(), pae()] {
        let what = format!("{:?}", t.format());
        let s = t.setup();
        let r = remap_and_read(&mut t, s, P | RW, |a| {
            a.mov(eax, cr3)?;
            a.mov(cr3, eax)
        });
        assert_no_fault(&r);
        assert_eq!(r.mem_u32(OUT), 0xAAAA, "{what}: before");
        assert_eq!(r.mem_u32(OUT + 4), 0xBBBB, "{what}: after mov cr3");
    }
}

/// invlpg of an address anywhere in a 4 MiB page flushes the whole page.
#[test]
fn invlpg_flushes_a_4m_page_by_any_address_in_it() {
    let mut t = two_level();
    t.map_large(LIN, HIGH, P | RW);
    let pde = t.pde_addr(LIN);
    let s = Setup {
        cr4: CR4_PSE,
        ..t.setup()
    };
    let (body, _) = assemble_labeled(BODY, |a| {
        // Paging is off: HIGH + ... are physical addresses.
        a.mov(dword_ptr(HIGH + 0x20_0000), 0xAAAAu32)?;
        a.mov(dword_ptr(HIGH + 0x60_0000), 0xBBBBu32)?;
        enable(a, &s)?;
        a.mov(eax, dword_ptr(LIN + 0x20_0000))?;
        a.mov(dword_ptr(OUT), eax)?;
        a.mov(dword_ptr(pde), (HIGH + 0x40_0000) | (P | RW | PS) as u32)?;
        a.invlpg(ptr(LIN + 0x3F_F000))?;
        a.mov(eax, dword_ptr(LIN + 0x20_0000))?;
        a.mov(dword_ptr(OUT + 4), eax)?;
        a.hlt()?;
        Ok(vec![])
    });
    let r = run_paged(body, vec![], t.blocks());
    assert_no_fault(&r);
    assert_eq!(r.mem_u32(OUT), 0xAAAA);
    assert_eq!(r.mem_u32(OUT + 4), 0xBBBB);
}

/// A global page (PTE.G, CR4.PGE) keeps working across a CR3 reload; invlpg gives its new mapping, and so does toggling CR4.PGE.
#[test]
fn global_pages_survive_cr3_reloads_and_invlpg_flushes_them() {
    let mut t = two_level();
    let flags = P | RW | G;
    t.map(LIN, PHYS, flags);
    let pte = t.pte_addr(LIN);
    let s = Setup {
        cr4: CR4_PGE,
        ..t.setup()
    };
    let (body, _) = paged_body(s, |a| {
        a.mov(dword_ptr(PHYS), 0xAAAAu32)?;
        a.mov(dword_ptr(PHYS2), 0xBBBBu32)?;
        a.mov(eax, dword_ptr(LIN))?;
        a.mov(dword_ptr(OUT), eax)?;
        a.mov(eax, cr3)?;
        a.mov(cr3, eax)?;
        a.mov(eax, dword_ptr(LIN))?;
        a.mov(dword_ptr(OUT + 4), eax)?;
        a.mov(dword_ptr(pte), PHYS2 | flags as u32)?;
        a.invlpg(ptr(LIN))?;
        a.mov(eax, dword_ptr(LIN))?;
        a.mov(dword_ptr(OUT + 8), eax)?;
        a.mov(dword_ptr(pte), PHYS | flags as u32)?;
        a.mov(eax, cr4)?;
        a.and(eax, !CR4_PGE)?;
        a.mov(cr4, eax)?;
        a.or(eax, CR4_PGE)?;
        a.mov(cr4, eax)?;
        a.mov(eax, dword_ptr(LIN))?;
        a.mov(dword_ptr(OUT + 12), eax)?;
        Ok(vec![])
    });
    let r = run_paged(body, vec![], t.blocks());
    assert_no_fault(&r);
    let seen: Vec<u32> = (0..4).map(|i| r.mem_u32(OUT + 4 * i)).collect();
    assert_eq!(
        seen,
        [0xAAAA, 0xAAAA, 0xBBBB, 0xAAAA],
        "first, after the CR3 reload, after invlpg, after toggling CR4.PGE"
    );
}

/// The runtime's own accesses (here sgdt's store, which the runtime
/// emulates) follow a remapped page after INVLPG and after a CR3 reload,
/// as generated code's do: the runtime's walk cache is a TLB.
#[test]
fn runtime_accesses_follow_remapped_pages_after_a_flush() {
    for invlpg in [true, false] {
        let mut t = two_level();
        t.map(LIN, PHYS, P | RW);
        let pte = t.pte_addr(LIN);
        let (body, _) = paged_body(t.setup(), |a| {
            a.sgdt(ptr(LIN))?;
            a.mov(dword_ptr(pte), PHYS2 | (P | RW) as u32)?;
            if invlpg {
                a.invlpg(ptr(LIN))?;
            } else {
                a.mov(eax, cr3)?;
                a.mov(cr3, eax)?;
            }
            a.sgdt(ptr(LIN))?;
            Ok(vec![])
        });
        let r = run_paged(body, vec![], t.blocks());
        assert_no_fault(&r);
        let limit = |at: u32| r.mem_u32(at) & 0xFFFF;
        assert_ne!(
            limit(PHYS),
            0,
            "the first sgdt wrote through the old mapping"
        );
        assert_eq!(limit(PHYS2), limit(PHYS), "invlpg: {invlpg}");
    }
}

/// `mov esi, value; ret` at `addr`.
fn returns_esi(addr: u32, value: u32) -> (u32, Vec<u8>) {
    (
        addr,
        assemble_at(addr, |a| {
            a.mov(esi, value)?;
            a.ret()
        }),
    )
}

/// Indirect calls (through the jump cache) follow a remapped code page:
/// after a CR3 reload for a non-global page, after INVLPG for a global one.
#[test]
fn indirect_calls_follow_remapped_code_pages() {
    for global in [false, true] {
        let mut t = two_level();
        let flags = P | RW | if global { G } else { 0 };
        t.map(LIN, PHYS, flags);
        let pte = t.pte_addr(LIN);
        let s = Setup {
            cr4: CR4_PGE,
            ..t.setup()
        };
        let (body, _) = paged_body(s, |a| {
            a.mov(ebx, LIN)?;
            // The first call fills the jump cache, the second uses it.
            a.call(ebx)?;
            a.call(ebx)?;
            a.mov(dword_ptr(OUT), esi)?;
            a.mov(dword_ptr(pte), PHYS2 | flags as u32)?;
            if global {
                a.invlpg(ptr(LIN))?;
            } else {
                a.mov(eax, cr3)?;
                a.mov(cr3, eax)?;
            }
            a.call(ebx)?;
            a.mov(dword_ptr(OUT + 4), esi)?;
            Ok(vec![])
        });
        let mut blocks = t.blocks();
        blocks.push(returns_esi(PHYS, 0xA));
        blocks.push(returns_esi(PHYS2, 0xB));
        let r = run_paged(body, vec![], blocks);
        assert_no_fault(&r);
        let seen = (r.mem_u32(OUT), r.mem_u32(OUT + 4));
        assert_eq!(seen, (0xA, 0xB), "global page: {global}");
    }
}

/// The jump-cache entries of code on global pages survive CR3 reloads
/// (those of other code do not): a loop of page-table write, CR3 reload
/// and indirect call misses the jump cache twice per round (the callee
/// and the return) unless the code is global.
#[test]
fn jump_cache_entries_of_global_code_survive_cr3_reloads() {
    const ROUNDS: u32 = 1000;
    let misses = |global: bool| {
        // All code global (a jump cache clears whole when it holds any
        // code of a non-global page), or none.
        let g = if global { G } else { 0 };
        let mut t = Tables::two_level(TABLES);
        for page in (0..0x40_0000).step_by(0x1000) {
            t.map(page, page, P | RW | US | g);
        }
        t.map(LIN, PHYS, P | RW | g);
        // Another page in the callee's page table.
        t.map(LIN + 0x2000, PHYS2, P | RW);
        let other = t.pte_addr(LIN + 0x2000);
        let s = Setup {
            cr4: CR4_PGE,
            ..t.setup()
        };
        let (body, _) = paged_body(s, |a| {
            let mut top = a.create_label();
            a.mov(ebx, LIN)?;
            a.mov(ecx, ROUNDS)?;
            a.set_label(&mut top)?;
            // A page table written (another page's entry, rewritten as
            // it was) makes the reload a flush of every non-global page.
            a.mov(dword_ptr(other), PHYS2 | (P | RW) as u32)?;
            a.mov(eax, cr3)?;
            a.mov(cr3, eax)?;
            a.call(ebx)?;
            a.dec(ecx)?;
            a.jnz(top)?;
            Ok(vec![])
        });
        let mut blocks = t.blocks();
        blocks.push(returns_esi(PHYS, 0xA));
        let r = run_paged(body, vec![], blocks);
        assert_no_fault(&r);
        assert_eq!(r.reg(esi), 0xA);
        r.counter("jump_cache_misses")
    };
    let (local, global) = (misses(false), misses(true));
    assert!(
        global < 10 && local >= 2 * u64::from(ROUNDS),
        "jump-cache misses: {global} with a global callee, {local} without"
    );
}

/// Two address spaces map LIN to different physical pages; switching CR3 back and forth reads and writes the right one each time.
#[test]
fn switching_between_two_address_spaces() {
    for format in [Format::TwoLevel, Format::Pae] {
        let mut t1 = Tables::new(format, TABLES);
        t1.identity(0x40_0000);
        t1.map(LIN, PHYS, P | RW);
        let mut t2 = Tables::new(format, TABLES2);
        t2.identity(0x40_0000);
        t2.map(LIN, PHYS2, P | RW);
        let switch = |a: &mut CodeAssembler, t: &Tables| -> Result<(), IcedError> {
            a.mov(eax, t.cr3())?;
            a.mov(cr3, eax)
        };
        let (body, _) = paged_body(t1.setup(), |a| {
            a.mov(dword_ptr(PHYS), 0xAAAAu32)?;
            a.mov(dword_ptr(PHYS2), 0xBBBBu32)?;
            a.mov(eax, dword_ptr(LIN))?;
            a.mov(dword_ptr(OUT), eax)?;
            switch(a, &t2)?;
            a.mov(eax, dword_ptr(LIN))?;
            a.mov(dword_ptr(OUT + 4), eax)?;
            switch(a, &t1)?;
            a.mov(eax, dword_ptr(LIN))?;
            a.mov(dword_ptr(OUT + 8), eax)?;
            switch(a, &t2)?;
            a.mov(dword_ptr(LIN + 8), 0x2222u32)?;
            switch(a, &t1)?;
            a.mov(eax, dword_ptr(LIN + 8))?;
            a.mov(dword_ptr(OUT + 12), eax)?;
            Ok(vec![])
        });
        let mut blocks = t1.blocks();
        blocks.extend(t2.blocks());
        let r = run_paged(body, vec![], blocks);
        assert_no_fault(&r);
        let seen: Vec<u32> = (0..4).map(|i| r.mem_u32(OUT + 4 * i)).collect();
        assert_eq!(seen, [0xAAAA, 0xBBBB, 0xAAAA, 0], "{format:?}");
        assert_eq!(r.mem_u32(PHYS2 + 8), 0x2222, "{format:?}: written via t2");
        assert_eq!(r.mem_u32(PHYS + 8), 0, "{format:?}");
    }
}

// ---------------------------------------------------------------------
// NX.

/// CPUID reports the paging features used here: PSE, PAE and PGE (leaf 1 EDX bits 3, 6, 13) and NX (leaf 0x8000_0001 EDX bit 20).
#[test]
fn cpuid_reports_pse_pae_pge_and_nx() {
    let r = run_asm(|a| {
        a.mov(eax, 1u32)?;
        a.cpuid()?;
        a.mov(esi, edx)?;
        a.mov(eax, 0x8000_0000u32)?;
        a.cpuid()?;
        a.mov(edi, eax)?;
        a.mov(eax, 0x8000_0001u32)?;
        a.cpuid()?;
        a.mov(ebp, edx)
    });
    r.assert_halted();
    for (bit, name) in [(3, "PSE"), (6, "PAE"), (13, "PGE")] {
        assert_ne!(r.reg(esi) & (1 << bit), 0, "{name}");
    }
    assert!(r.reg(edi) >= 0x8000_0001, "extended leaf 0x8000_0001");
    assert_ne!(r.reg(ebp) & (1 << 20), 0, "NX");
}

/// The code an NX test jumps to (it must never run): esi = 0xBAD, hlt.
fn nx_target() -> Vec<u8> {
    assemble_at(LIN, |a| {
        a.mov(esi, 0xBADu32)?;
        a.hlt()
    })
}

/// PAE + EFER.NXE: a jump to a page with NX in its PTE is #PF error 0x11 (P|I/D) with CR2 = EIP = the target; reading the page works.
#[test]
fn nx_page_faults_on_fetch_but_reads_work() {
    let mut t = pae();
    t.map(LIN, PHYS, P | RW | NX);
    let s = Setup {
        nxe: true,
        ..t.setup()
    };
    let (body, _) = paged_body(s, |a| {
        a.mov(esi, dword_ptr(LIN))?;
        a.mov(eax, LIN)?;
        a.jmp(eax)?;
        Ok(vec![])
    });
    let code = nx_target();
    let first = u32::from_le_bytes(code[..4].try_into().unwrap());
    let mut blocks = t.blocks();
    blocks.push((PHYS, code));
    let r = run_paged(body, vec![], blocks);
    assert_pf(&r, 0x11, LIN, LIN, "NX in the PTE");
    assert_eq!(r.mem_u32(PF_ESI), first, "the read of the NX page");
}

/// NX in a PDE covers the pages of its page table (error 0x11), and in a 2 MiB PDE its page.
#[test]
fn nx_in_a_pde_covers_its_pages() {
    for large in [false, true] {
        let mut t = pae();
        if large {
            t.map_large(LIN, 0x60_0000, P | RW | NX);
        } else {
            t.map(LIN, PHYS, P | RW);
            let pde = t.pde_addr(LIN);
            let v = t.read(pde);
            t.write(pde, v | NX);
        }
        let s = Setup {
            nxe: true,
            ..t.setup()
        };
        let (body, _) = paged_body(s, |a| {
            a.mov(eax, LIN + 0x100)?;
            a.jmp(eax)?;
            Ok(vec![])
        });
        let mut blocks = t.blocks();
        let phys = if large { 0x60_0000 } else { PHYS };
        blocks.push((phys + 0x100, nx_target()));
        let r = run_paged(body, vec![], blocks);
        let what = if large { "2 MiB PDE" } else { "PDE" };
        assert_pf(&r, 0x11, LIN + 0x100, LIN + 0x100, what);
    }
}

/// A ring-3 jump to an NX user page is error 0x15 (P|U|I/D).
#[test]
fn nx_from_ring_3() {
    let mut t = pae();
    t.map(LIN, PHYS, P | RW | US | NX);
    let s = Setup {
        nxe: true,
        ..t.setup()
    };
    let (user, _) = user_code(|a| {
        a.mov(eax, LIN)?;
        a.jmp(eax)?;
        Ok(vec![])
    });
    let mut blocks = t.blocks();
    blocks.push((PHYS, nx_target()));
    let r = run_paged(ring3_body(s), user, blocks);
    assert_pf(&r, 0x15, LIN, LIN, "ring-3 fetch from NX");
    assert_eq!(r.mem_u32(PF_CS), UCODE);
}

// ---------------------------------------------------------------------
// Self-modifying code through paging.

/// Code pages: CODE (LIN) -> CODE_PHYS, a function page at FUNC.
const CODE_PHYS: u32 = 0x31_0000;
const FUNC: u32 = LIN + 0x1000;
const FUNC_PHYS: u32 = 0x31_1000;
/// A second linear alias of FUNC_PHYS.
const FUNC_B: u32 = 0x5000_1000;

/// `mov eax, 1; ret`, at any address.
fn returns_one() -> Vec<u8> {
    assemble_at(FUNC, |a| {
        a.mov(eax, 1u32)?;
        a.ret()
    })
}

/// Code at a paged linear address stores into the instruction right after the store (same TU); the patched instruction runs.
#[test]
fn smc_store_into_the_next_instruction_through_paging() {
    let mut t = two_level();
    t.map(LIN, CODE_PHYS, P | RW);
    let prefix = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        a.mov(ecx, 7u32)?;
        a.mov(dword_ptr(0u32), ecx) // placeholder of the same length
    };
    let target = LIN + assemble_at(LIN, prefix).len() as u32;
    let code = assemble_at(LIN, |a| {
        a.mov(ecx, 7u32)?;
        a.mov(dword_ptr(target + 1), ecx)?;
        a.mov(ebx, 1u32)?;
        a.hlt()
    });
    let (body, _) = paged_body(t.setup(), |a| {
        a.mov(eax, LIN)?;
        a.jmp(eax)?;
        Ok(vec![])
    });
    let mut blocks = t.blocks();
    blocks.push((CODE_PHYS, code));
    let r = run_paged(body, vec![], blocks);
    assert_no_fault(&r);
    assert_eq!(r.reg(ebx), 7, "the patched immediate");
    assert_eq!(r.mem_u32(CODE_PHYS + (target - LIN) + 1), 7);
}

/// A function on a paged page, called, patched through its linear address, and called again returns the new value.
#[test]
fn smc_patch_then_call_through_paging() {
    let mut t = two_level();
    t.map(FUNC, FUNC_PHYS, P | RW);
    let (body, _) = paged_body(t.setup(), |a| {
        a.mov(ebx, FUNC)?;
        a.call(ebx)?;
        a.mov(dword_ptr(OUT), eax)?;
        a.mov(dword_ptr(FUNC + 1), 2u32)?;
        a.call(ebx)?;
        a.mov(dword_ptr(OUT + 4), eax)?;
        Ok(vec![])
    });
    let mut blocks = t.blocks();
    blocks.push((FUNC_PHYS, returns_one()));
    let r = run_paged(body, vec![], blocks);
    assert_no_fault(&r);
    assert_eq!((r.mem_u32(OUT), r.mem_u32(OUT + 4)), (1, 2));
}

/// One physical page of code at two linear addresses (and the identity map): a write through any alias changes what runs through every other.
#[test]
fn smc_through_two_linear_aliases() {
    let mut t = two_level();
    t.map(FUNC, FUNC_PHYS, P | RW);
    t.map(FUNC_B, FUNC_PHYS, P | RW);
    let (body, _) = paged_body(t.setup(), |a| {
        a.mov(ebx, FUNC)?;
        a.mov(ebp, FUNC_B)?;
        a.call(ebx)?;
        a.mov(dword_ptr(OUT), eax)?;
        a.call(ebp)?;
        a.mov(dword_ptr(OUT + 4), eax)?;
        a.mov(dword_ptr(FUNC + 1), 2u32)?; // through alias A
        a.call(ebp)?; // run through alias B
        a.mov(dword_ptr(OUT + 8), eax)?;
        a.call(ebx)?;
        a.mov(dword_ptr(OUT + 12), eax)?;
        a.mov(dword_ptr(FUNC_PHYS + 1), 3u32)?; // through the identity map
        a.call(ebx)?;
        a.mov(dword_ptr(OUT + 16), eax)?;
        a.call(ebp)?;
        a.mov(dword_ptr(OUT + 20), eax)?;
        a.mov(dword_ptr(FUNC_B + 1), 4u32)?; // through alias B
        a.call(ebx)?; // run through alias A
        a.mov(dword_ptr(OUT + 24), eax)?;
        Ok(vec![])
    });
    let mut blocks = t.blocks();
    blocks.push((FUNC_PHYS, returns_one()));
    let r = run_paged(body, vec![], blocks);
    assert_no_fault(&r);
    let seen: Vec<u32> = (0..7).map(|i| r.mem_u32(OUT + 4 * i)).collect();
    assert_eq!(seen, [1, 1, 2, 2, 3, 3, 4]);
}

/// An instruction that crosses into a page whose PTE is rewritten (plus invlpg) between two runs uses the new page's bytes, and the old ones again after switching back.
#[test]
fn code_crossing_into_a_page_whose_mapping_changes() {
    const CROSS: u32 = LIN + 0x2000;
    const P1: u32 = 0x31_2000;
    const X: u32 = 0x32_0000;
    const Y: u32 = 0x33_0000;
    let mut t = two_level();
    t.map(CROSS, P1, P | RW);
    t.map(CROSS + 0x1000, X, P | RW);
    let pte2 = t.pte_addr(CROSS + 0x1000);
    // 14 nops, then at CROSS + 0xFFE `mov eax, imm32` (B8 11 | 22 33 44
    // on the second page, or 55 66 77) and ret.
    let code = assemble_at(CROSS + 0xFF0, |a| {
        for _ in 0..14 {
            a.nop()?;
        }
        a.mov(eax, 0x4433_2211u32)?;
        a.ret()
    });
    assert_eq!(code.len(), 20);
    let (body, _) = paged_body(t.setup(), |a| {
        a.mov(ebx, CROSS + 0xFF0)?;
        for (i, phys) in [(0, X), (1, Y), (2, X)] {
            if i > 0 {
                a.mov(dword_ptr(pte2), phys | (P | RW) as u32)?;
                a.invlpg(ptr(CROSS + 0x1000))?;
            }
            a.call(ebx)?;
            a.mov(dword_ptr(OUT + 4 * i), eax)?;
        }
        Ok(vec![])
    });
    let mut blocks = t.blocks();
    blocks.push((P1 + 0xFF0, code[..16].to_vec()));
    blocks.push((X, code[16..].to_vec()));
    blocks.push((Y, vec![0x55, 0x66, 0x77, 0xC3]));
    let r = run_paged(body, vec![], blocks);
    assert_no_fault(&r);
    let seen: Vec<u32> = (0..3).map(|i| r.mem_u32(OUT + 4 * i)).collect();
    assert_eq!(seen, [0x4433_2211, 0x7766_5511, 0x4433_2211]);
}

// ---------------------------------------------------------------------
// Linear addresses in what the runtime does.

/// With the GDT and IDT reached through non-identity linear aliases and the stack on a remapped page, a segment load and an int work and the frame lands in the right physical page.
#[test]
fn descriptor_tables_and_exception_frames_use_linear_addresses() {
    const GDT_LIN: u32 = 0x4000_0000;
    const IDT_LIN: u32 = 0x4000_1000;
    const STACK_LIN: u32 = 0x5000_0000;
    const STACK_PHYS: u32 = 0x34_0000;
    const TABLE_REGS: u32 = SEEN + 0xF00;
    let mut t = two_level();
    t.map(GDT_LIN, GDT, P | RW);
    t.map(IDT_LIN, IDT, P | RW);
    t.map(STACK_LIN, STACK_PHYS, P | RW);
    let (body, l) = paged_body(t.setup(), |a| {
        a.mov(word_ptr(TABLE_REGS), GDT_LIMIT)?;
        a.mov(dword_ptr(TABLE_REGS + 2), GDT_LIN)?;
        a.lgdt(ptr(TABLE_REGS))?;
        a.mov(word_ptr(TABLE_REGS + 8), 0x7FFu32)?;
        a.mov(dword_ptr(TABLE_REGS + 10), IDT_LIN)?;
        a.lidt(ptr(TABLE_REGS + 8))?;
        a.mov(eax, KDATA)?;
        a.mov(ds, ax)?;
        a.mov(ss, ax)?;
        a.mov(esp, STACK_LIN + 0x1000)?;
        a.int(0x82)?;
        let after = here(a)?;
        a.nop()?;
        Ok(vec![after])
    });
    let mut blocks = t.blocks();
    blocks.push(recorder(2, 3));
    let r = run_paged_with(stats(), &[(0x82, 2, 0x8E)], body, vec![], blocks);
    assert_no_fault(&r);
    assert_eq!(r.mem_u32(SEEN), l[0], "the handler ran, EIP after the int");
    assert_eq!(r.mem_u32(SEEN + 0x40), STACK_LIN + 0xFF4, "handler ESP");
    assert_eq!(r.mem_u32(STACK_PHYS + 0xFF4), l[0], "frame: EIP");
    assert_eq!(r.mem_u32(STACK_PHYS + 0xFF8), KCODE, "frame: CS");
}

/// rep movsd to a linear range whose two pages are far apart physically copies into both.
#[test]
fn string_copy_across_non_contiguous_physical_pages() {
    const DST: u32 = 0x6000_0FF8;
    let mut t = two_level();
    t.map(0x6000_0000, 0x35_0000, P | RW);
    t.map(0x6000_1000, 0x37_0000, P | RW);
    let (body, _) = paged_body(t.setup(), |a| {
        for i in 0..4u32 {
            a.mov(dword_ptr(PHYS + 4 * i), 0x1111_1111 * (i + 1))?;
        }
        a.cld()?;
        a.mov(esi, PHYS)?;
        a.mov(edi, DST)?;
        a.mov(ecx, 4u32)?;
        a.rep().movsd()?;
        Ok(vec![])
    });
    let r = run_paged(body, vec![], t.blocks());
    assert_no_fault(&r);
    assert_eq!(r.mem_u32(0x35_0FF8), 0x1111_1111);
    assert_eq!(r.mem_u32(0x35_0FFC), 0x2222_2222);
    assert_eq!(r.mem_u32(0x37_0000), 0x3333_3333);
    assert_eq!(r.mem_u32(0x37_0004), 0x4444_4444);
    assert_eq!((r.reg(ecx), r.reg(edi)), (0, DST + 16));
}

// ---------------------------------------------------------------------
// More pages than the shadow can map.

/// 40,960 distinct linear pages (640 PDEs sharing 8 page tables of 64 PTEs 64 KiB apart, over 512 physical pages) read and written twice: every access lands right.
#[test]
fn more_scattered_pages_than_the_shadow_can_map() {
    const DATA_PHYS: u32 = 0x40_0000;
    const FIRST_PDE: u32 = LIN >> 22;
    const PDES: u32 = 640;
    const PTS: u32 = 8;
    const PER_PT: u32 = 64;
    const PASSES: u32 = 2;
    let mut t = two_level();
    let pts: Vec<u32> = (0..PTS)
        .map(|k| {
            let pt = t.alloc();
            for j in 0..PER_PT {
                let phys = DATA_PHYS + (k * PER_PT + j) * PAGE;
                t.write(pt + j * 16 * 4, phys as u64 | P | RW);
            }
            pt
        })
        .collect();
    for i in 0..PDES {
        let pde = t.cr3() + (FIRST_PDE + i) * 4;
        t.write(pde, pts[(i % PTS) as usize] as u64 | P | RW);
    }
    let end = LIN + PDES * (4 << 20);
    let s = t.setup();
    let (body, _) = assemble_labeled(BODY, |a| {
        // Paging off: physical page p gets 1 + 3p at offset 0.
        a.mov(edi, DATA_PHYS)?;
        a.mov(eax, 1u32)?;
        a.mov(ecx, PTS * PER_PT)?;
        let init = here(a)?;
        a.mov(dword_ptr(edi), eax)?;
        a.add(eax, 3)?;
        a.add(edi, PAGE)?;
        a.dec(ecx)?;
        a.jnz(init)?;
        enable(a, &s)?;
        a.xor(esi, esi)?;
        a.mov(ecx, PASSES)?;
        let outer = here(a)?;
        a.mov(ebx, LIN)?;
        let inner = here(a)?;
        a.add(esi, dword_ptr(ebx))?;
        a.inc(dword_ptr(ebx + 4))?;
        a.add(ebx, 0x1_0000)?;
        a.cmp(ebx, end)?;
        a.jne(inner)?;
        a.dec(ecx)?;
        a.jnz(outer)?;
        a.hlt()?;
        Ok(vec![])
    });
    let mut expected = 0u32;
    for _ in 0..PASSES {
        for i in 0..PDES {
            for j in 0..PER_PT {
                let p = (i % PTS) * PER_PT + j;
                expected = expected.wrapping_add(1 + 3 * p);
            }
        }
    }
    let opts = Options {
        ram: 64 << 20,
        stats: true,
        budget: Some(500_000_000),
        ..Options::default()
    };
    let r = run_paged_with(opts, &[], body, vec![], t.blocks());
    assert_no_fault(&r);
    assert_eq!(r.reg(esi), expected, "the sum of every page read");
    let aliases = PASSES * PDES / PTS;
    for p in 0..PTS * PER_PT {
        assert_eq!(
            r.mem_u32(DATA_PHYS + p * PAGE + 4),
            aliases,
            "physical page {p}: one increment per alias and pass"
        );
    }
    assert!(r.counter("hidden_faults") > 0);
}

/// CR3 reloads with the same value and no page table written keep the
/// shadow's mappings (the pages are not faulted in again); after a PTE
/// write the next reload drops them and the new mapping is used.
#[test]
fn cr3_reloads_without_table_writes_keep_the_mappings() {
    const RELOADS: u32 = 1000;
    let mut t = two_level();
    t.map(LIN, PHYS, P | RW);
    let pte = t.pte_addr(LIN);
    let s = t.setup();
    let (body, _) = paged_body(s, |a| {
        let mut again = a.create_label();
        a.mov(dword_ptr(PHYS), 0xAAAAu32)?;
        a.mov(dword_ptr(PHYS2), 0xBBBBu32)?;
        a.xor(ebx, ebx)?;
        a.mov(ecx, RELOADS)?;
        a.set_label(&mut again)?;
        a.mov(eax, cr3)?;
        a.mov(cr3, eax)?;
        a.add(ebx, dword_ptr(LIN))?;
        a.dec(ecx)?;
        a.jnz(again)?;
        a.mov(dword_ptr(OUT), ebx)?;
        a.mov(dword_ptr(pte), PHYS2 | (P | RW) as u32)?;
        a.mov(eax, cr3)?;
        a.mov(cr3, eax)?;
        a.mov(eax, dword_ptr(LIN))?;
        a.mov(dword_ptr(OUT + 4), eax)?;
        Ok(vec![])
    });
    let r = run_paged(body, vec![], t.blocks());
    assert_no_fault(&r);
    assert_eq!(r.mem_u32(OUT), 0xAAAA * RELOADS);
    assert_eq!(r.mem_u32(OUT + 4), 0xBBBB, "the PTE write was seen");
    assert!(
        r.counter("hidden_faults") < 100,
        "{} hidden faults: the reloads dropped the mappings",
        r.counter("hidden_faults")
    );
}

/// With everything but the user code and stack supervisor-only, a ring-3
/// `int` still reaches its handler: the IDT, GDT and TSS reads and the
/// ring-0 stack pushes are supervisor accesses.
#[test]
fn ring_3_interrupts_reach_supervisor_only_tables() {
    let mut t = two_level();
    for page in (0..0x40_0000u32).step_by(PAGE as usize) {
        let user = page == USER & !0xFFF || page == (USER_STACK - 4) & !0xFFF;
        t.map(page, page, if user { P | RW | US } else { P | RW });
    }
    let (user, _) = user_code(|a| {
        a.mov(esi, 0x1234u32)?;
        Ok(vec![])
    });
    let r = run_paged(ring3_body(t.setup()), user, t.blocks());
    assert_no_fault(&r);
    assert_eq!(r.reg(esi), 0x1234, "ring 3 ran");
    assert_eq!(r.sreg(cs) & 3, 0, "the handler runs in ring 0");
}

/// The shadow of an address space kept across a CR3 switch is not used
/// stale: a PTE of the other address space, rewritten while this one is
/// current, takes effect when CR3 switches back to it; and switching
/// back and forth without table writes faults nothing in again.
#[test]
fn a_kept_address_space_sees_its_tables_rewritten_meanwhile() {
    const SWITCHES: u32 = 500;
    for format in [Format::TwoLevel, Format::Pae] {
        let mut t1 = Tables::new(format, TABLES);
        t1.identity(0x40_0000);
        t1.map(LIN, PHYS, P | RW);
        let mut t2 = Tables::new(format, TABLES2);
        t2.identity(0x40_0000);
        t2.map(LIN, PHYS2, P | RW);
        let pte2 = t2.pte_addr(LIN);
        let (body, _) = paged_body(t1.setup(), |a| {
            let mut again = a.create_label();
            a.mov(dword_ptr(PHYS), 0xAAAAu32)?;
            a.mov(dword_ptr(PHYS2), 0xBBBBu32)?;
            a.mov(dword_ptr(PHYS2 + 0x1000), 0xCCCCu32)?;
            a.xor(ebx, ebx)?;
            a.mov(ecx, SWITCHES)?;
            a.set_label(&mut again)?;
            a.mov(eax, t2.cr3())?;
            a.mov(cr3, eax)?;
            a.add(ebx, dword_ptr(LIN))?;
            a.mov(eax, t1.cr3())?;
            a.mov(cr3, eax)?;
            a.add(ebx, dword_ptr(LIN))?;
            a.dec(ecx)?;
            a.jnz(again)?;
            a.mov(dword_ptr(OUT), ebx)?;
            // In t1: point t2's PTE for LIN elsewhere, then switch to t2.
            a.mov(dword_ptr(pte2), (PHYS2 + 0x1000) | (P | RW) as u32)?;
            a.mov(eax, t2.cr3())?;
            a.mov(cr3, eax)?;
            a.mov(eax, dword_ptr(LIN))?;
            a.mov(dword_ptr(OUT + 4), eax)?;
            Ok(vec![])
        });
        let mut blocks = t1.blocks();
        blocks.extend(t2.blocks());
        let r = run_paged(body, vec![], blocks);
        assert_no_fault(&r);
        assert_eq!(r.mem_u32(OUT), (0xAAAA + 0xBBBB) * SWITCHES, "{format:?}");
        assert_eq!(r.mem_u32(OUT + 4), 0xCCCC, "{format:?}: the rewritten PTE");
        assert!(
            r.counter("hidden_faults") < 200,
            "{format:?}: {} hidden faults: the switches dropped the shadow",
            r.counter("hidden_faults")
        );
    }
}

// ---------------------------------------------------------------------
// What a CR3 reload keeps: the shadow compares the written page tables
// with its copies of them and drops only what depends on a changed
// entry. Architecturally a reload flushes every non-global translation.

/// A second frame for FUNC's page, holding other code.
const FUNC_PHYS2: u32 = 0x31_2000;

/// `mov eax, v; ret`, at any address.
fn returns(v: u32) -> Vec<u8> {
    assemble_at(FUNC, |a| {
        a.mov(eax, v)?;
        a.ret()
    })
}

/// `mov cr3, cr3`: a reload with the value CR3 has.
fn reload_cr3(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(eax, cr3)?;
    a.mov(cr3, eax)
}

/// Tables of `format` with the first 4 MiB identity-mapped.
fn tables(format: Format) -> Tables {
    let mut t = Tables::new(format, TABLES);
    t.identity(0x40_0000);
    t
}

/// A code page pointed at another frame at the same linear address (as
/// exec does) runs the new frame's code after a CR3 reload, called
/// indirectly and directly: only code fetches used the PTE, no data
/// mapping depends on it.
#[test]
fn cr3_reload_runs_the_new_code_of_a_remapped_code_page() {
    for format in [Format::TwoLevel, Format::Pae] {
        let mut t = tables(format);
        t.map(FUNC, FUNC_PHYS, P | RW);
        let pte = t.pte_addr(FUNC);
        let (body, _) = paged_body(t.setup(), |a| {
            a.mov(ebx, FUNC)?;
            a.call(ebx)?;
            a.mov(dword_ptr(OUT), eax)?;
            a.call(FUNC as u64)?;
            a.mov(dword_ptr(OUT + 4), eax)?;
            a.mov(dword_ptr(pte), FUNC_PHYS2 | (P | RW) as u32)?;
            reload_cr3(a)?;
            a.call(ebx)?;
            a.mov(dword_ptr(OUT + 8), eax)?;
            a.call(FUNC as u64)?;
            a.mov(dword_ptr(OUT + 12), eax)?;
            Ok(vec![])
        });
        let mut blocks = t.blocks();
        blocks.push((FUNC_PHYS, returns(1)));
        blocks.push((FUNC_PHYS2, returns(2)));
        let r = run_paged(body, vec![], blocks);
        assert_no_fault(&r);
        let seen: Vec<u32> = (0..4).map(|i| r.mem_u32(OUT + 4 * i)).collect();
        assert_eq!(
            seen,
            [1, 1, 2, 2],
            "{format:?}: indirect and direct calls, before and after the reload"
        );
    }
}

/// LIN + 0x1000 (same page table) is read so that the table is traced;
/// LIN's PTE is pointed at PHYS2 (0x22) and LIN read (no INVLPG: the
/// shadow maps LIN from this intermediate entry; not checked, a CPU may
/// still use the old translation), the PTE is pointed back at PHYS
/// (0x11), CR3 reloaded and LIN read into OUT + 4. Both entries have A
/// set (as kernels make them), so the walks write nothing to the table:
/// its final contents equal the copy made before the first write.
fn intermediate_pte(format: Format) -> Run {
    let mut t = tables(format);
    t.map(LIN, PHYS, P | RW | A);
    t.map(LIN + 0x1000, HIGH, P | RW);
    let pte = t.pte_addr(LIN);
    let (body, _) = paged_body(t.setup(), |a| {
        a.mov(eax, dword_ptr(LIN + 0x1000))?;
        a.mov(dword_ptr(pte), PHYS2 | (P | RW | A) as u32)?;
        a.movzx(eax, byte_ptr(LIN))?;
        a.mov(dword_ptr(OUT), eax)?;
        a.mov(dword_ptr(pte), PHYS | (P | RW | A) as u32)?;
        reload_cr3(a)?;
        a.movzx(eax, byte_ptr(LIN))?;
        a.mov(dword_ptr(OUT + 4), eax)?;
        Ok(vec![])
    });
    let mut blocks = t.blocks();
    blocks.push((PHYS, vec![0x11]));
    blocks.push((PHYS2, vec![0x22]));
    run_paged(body, vec![], blocks)
}

/// A PTE pointed elsewhere, read through, and restored before a CR3
/// reload: after the reload the read sees the restored frame, not one
/// the shadow mapped from the intermediate value (32-bit entries).
#[test]
fn cr3_reload_drops_a_mapping_made_from_an_intermediate_pte() {
    let r = intermediate_pte(Format::TwoLevel);
    assert_no_fault(&r);
    assert_eq!(r.mem_u32(OUT + 4), 0x11, "after the reload");
}

/// The same with PAE's 8-byte entries.
#[test]
fn cr3_reload_drops_a_mapping_made_from_an_intermediate_pae_pte() {
    let r = intermediate_pte(Format::Pae);
    assert_no_fault(&r);
    assert_eq!(r.mem_u32(OUT + 4), 0x11, "after the reload");
}

/// The same with code: FUNC's PTE pointed at another code frame, FUNC
/// called, the PTE restored and CR3 reloaded; then the call runs the
/// restored frame's code. No data mapping was made from either entry
/// (LIN, read to trace the table, is FUNC's neighbour), and both have A
/// set, so the table ends equal to its copy.
#[test]
fn cr3_reload_forgets_code_fetched_through_an_intermediate_pte() {
    for format in [Format::TwoLevel, Format::Pae] {
        let mut t = tables(format);
        t.map(FUNC, FUNC_PHYS, P | RW | A);
        t.map(LIN, HIGH, P | RW);
        let pte = t.pte_addr(FUNC);
        let (body, _) = paged_body(t.setup(), |a| {
            a.mov(eax, dword_ptr(LIN))?;
            a.mov(dword_ptr(pte), FUNC_PHYS2 | (P | RW | A) as u32)?;
            a.mov(ebx, FUNC)?;
            a.call(ebx)?;
            a.mov(dword_ptr(OUT), eax)?;
            a.mov(dword_ptr(pte), FUNC_PHYS | (P | RW | A) as u32)?;
            reload_cr3(a)?;
            a.call(ebx)?;
            a.mov(dword_ptr(OUT + 4), eax)?;
            Ok(vec![])
        });
        let mut blocks = t.blocks();
        blocks.push((FUNC_PHYS, returns(1)));
        blocks.push((FUNC_PHYS2, returns(2)));
        let r = run_paged(body, vec![], blocks);
        assert_no_fault(&r);
        assert_eq!(r.mem_u32(OUT + 4), 1, "{format:?}: after the reload");
    }
}

/// The guest clearing a PTE's dirty bit (everything else kept) and
/// reloading CR3: the next write sets it again. LIN + 0x1000 is read
/// first, so the page table is traced before the walks set LIN's bits.
#[test]
fn cr3_reload_after_clearing_the_dirty_bit_sets_it_again() {
    for format in [Format::TwoLevel, Format::Pae] {
        let mut t = tables(format);
        t.map(LIN, PHYS, P | RW);
        t.map(LIN + 0x1000, HIGH, P | RW);
        let pte = t.pte_addr(LIN);
        let (body, _) = paged_body(t.setup(), |a| {
            a.mov(eax, dword_ptr(LIN + 0x1000))?;
            a.mov(dword_ptr(LIN), 1u32)?;
            a.mov(eax, dword_ptr(pte))?;
            a.mov(dword_ptr(OUT), eax)?;
            a.and(dword_ptr(pte), !(D as u32))?;
            reload_cr3(a)?;
            a.mov(dword_ptr(LIN), 2u32)?;
            a.mov(eax, dword_ptr(pte))?;
            a.mov(dword_ptr(OUT + 4), eax)?;
            Ok(vec![])
        });
        let r = run_paged(body, vec![], t.blocks());
        assert_no_fault(&r);
        let bits = |at| r.mem_u32(at) as u64 & (A | D);
        assert_eq!(bits(OUT), A | D, "{format:?}: after the first write");
        assert_eq!(bits(OUT + 4), A | D, "{format:?}: D cleared, reload, write");
        assert_eq!(r.mem_u32(PHYS), 2, "{format:?}");
    }
}

/// The guest clearing a PTE's accessed bit (everything else kept) and
/// reloading CR3: the next read sets it again (and not D).
#[test]
fn cr3_reload_after_clearing_the_accessed_bit_sets_it_again() {
    for format in [Format::TwoLevel, Format::Pae] {
        let mut t = tables(format);
        t.map(LIN, PHYS, P | RW);
        t.map(LIN + 0x1000, HIGH, P | RW);
        let pte = t.pte_addr(LIN);
        let (body, _) = paged_body(t.setup(), |a| {
            a.mov(eax, dword_ptr(LIN + 0x1000))?;
            a.mov(esi, dword_ptr(LIN))?;
            a.mov(eax, dword_ptr(pte))?;
            a.mov(dword_ptr(OUT), eax)?;
            a.and(dword_ptr(pte), !(A as u32))?;
            reload_cr3(a)?;
            a.mov(edi, dword_ptr(LIN))?;
            a.mov(eax, dword_ptr(pte))?;
            a.mov(dword_ptr(OUT + 4), eax)?;
            Ok(vec![])
        });
        let mut blocks = t.blocks();
        blocks.push(dwords(PHYS, &[0x1234]));
        let r = run_paged(body, vec![], blocks);
        assert_no_fault(&r);
        let bits = |at| r.mem_u32(at) as u64 & (A | D);
        assert_eq!(bits(OUT), A, "{format:?}: after the first read");
        assert_eq!(bits(OUT + 4), A, "{format:?}: A cleared, reload, read");
        assert_eq!((r.reg(esi), r.reg(edi)), (0x1234, 0x1234), "{format:?}");
    }
}

/// Reading 64 pages mapped by one page table, rewriting another PTE of
/// that table and reloading CR3 keeps the 64 mappings: reading them
/// again costs (next to) no hidden faults, where dropping the address
/// space would cost one per page at least. Measured as the difference
/// between a run with the second pass and one without.
#[test]
fn cr3_reload_after_an_unrelated_pte_write_keeps_the_other_mappings() {
    const PAGES: u32 = 64;
    const Z: u32 = LIN + PAGES * PAGE;
    let expected: u32 = (1..=PAGES).sum();
    let run = |second_pass: bool| {
        let mut t = two_level();
        for i in 0..PAGES {
            t.map(LIN + i * PAGE, PHYS + i * PAGE, P | RW);
        }
        t.map(Z, HIGH, P | RW);
        let z_pte = t.pte_addr(Z);
        let pass = |a: &mut CodeAssembler, out: u32| -> Result<(), IcedError> {
            a.xor(esi, esi)?;
            for i in 0..PAGES {
                a.add(esi, dword_ptr(LIN + i * PAGE))?;
            }
            a.mov(dword_ptr(out), esi)
        };
        let (body, _) = paged_body(t.setup(), |a| {
            pass(a, OUT)?;
            a.mov(dword_ptr(z_pte), (HIGH + PAGE) | (P | RW) as u32)?;
            reload_cr3(a)?;
            a.mov(eax, dword_ptr(Z))?;
            a.mov(dword_ptr(OUT + 4), eax)?;
            if second_pass {
                pass(a, OUT + 8)?;
            }
            Ok(vec![])
        });
        let mut blocks = t.blocks();
        blocks.extend((0..PAGES).map(|i| dwords(PHYS + i * PAGE, &[i + 1])));
        blocks.push(dwords(HIGH, &[0xAAAA]));
        blocks.push(dwords(HIGH + PAGE, &[0xBBBB]));
        let r = run_paged(body, vec![], blocks);
        assert_no_fault(&r);
        assert_eq!(r.mem_u32(OUT), expected, "the first pass");
        assert_eq!(r.mem_u32(OUT + 4), 0xBBBB, "Z's new frame");
        r
    };
    let without = run(false).counter("hidden_faults");
    let r = run(true);
    assert_eq!(r.mem_u32(OUT + 8), expected, "the pass after the reload");
    let with = r.counter("hidden_faults");
    assert!(
        with.saturating_sub(without) < PAGES as u64 / 8,
        "the pass after the reload took {} hidden faults ({with} with it, {without} without): the reload dropped the mappings",
        with.saturating_sub(without)
    );
}

/// Two address spaces whose directories share the page table for LIN
/// (as kernels share their half): a PTE of it rewritten under the first
/// is seen under the second, whose shadow mapped LIN before, and under
/// the first again.
#[test]
fn address_spaces_sharing_a_page_table_see_its_changes() {
    for format in [Format::TwoLevel, Format::Pae] {
        let mut t1 = tables(format);
        t1.map(LIN, PHYS, P | RW);
        let pde1 = t1.pde_addr(LIN);
        let shared = t1.read(pde1);
        let pte = t1.pte_addr(LIN);
        let mut t2 = Tables::new(format, TABLES2);
        t2.identity(0x40_0000);
        let pde2 = t2.pde_addr(LIN);
        t2.write(pde2, shared);
        let switch = |a: &mut CodeAssembler, t: &Tables| -> Result<(), IcedError> {
            a.mov(eax, t.cr3())?;
            a.mov(cr3, eax)
        };
        let (body, _) = paged_body(t1.setup(), |a| {
            a.mov(eax, dword_ptr(LIN))?;
            a.mov(dword_ptr(OUT), eax)?;
            switch(a, &t2)?;
            a.mov(eax, dword_ptr(LIN))?;
            a.mov(dword_ptr(OUT + 4), eax)?;
            switch(a, &t1)?;
            a.mov(dword_ptr(pte), PHYS2 | (P | RW) as u32)?;
            switch(a, &t2)?;
            a.mov(eax, dword_ptr(LIN))?;
            a.mov(dword_ptr(OUT + 8), eax)?;
            switch(a, &t1)?;
            a.mov(eax, dword_ptr(LIN))?;
            a.mov(dword_ptr(OUT + 12), eax)?;
            Ok(vec![])
        });
        let mut blocks = t1.blocks();
        blocks.extend(t2.blocks());
        blocks.push(dwords(PHYS, &[0xAAAA]));
        blocks.push(dwords(PHYS2, &[0xBBBB]));
        let r = run_paged(body, vec![], blocks);
        assert_no_fault(&r);
        let seen: Vec<u32> = (0..4).map(|i| r.mem_u32(OUT + 4 * i)).collect();
        assert_eq!(
            seen,
            [0xAAAA, 0xAAAA, 0xBBBB, 0xBBBB],
            "{format:?}: under 1, under 2, rewritten under 1: under 2, under 1"
        );
    }
}

/// A page read (mapped from its PTE), the PTE pointed at another frame
/// without A, and code at the page then called (the fetch's walk sets A
/// in the new entry): after a CR3 reload a read sees the new frame.
#[test]
fn cr3_reload_drops_a_mapping_whose_pte_a_fetch_walked_after_a_rewrite() {
    for format in [Format::TwoLevel, Format::Pae] {
        let mut t = tables(format);
        t.map(FUNC, FUNC_PHYS, P | RW);
        let pte = t.pte_addr(FUNC);
        let (body, _) = paged_body(t.setup(), |a| {
            a.movzx(eax, byte_ptr(FUNC + 0x800))?;
            a.mov(dword_ptr(OUT), eax)?;
            a.mov(dword_ptr(pte), FUNC_PHYS2 | (P | RW) as u32)?;
            a.mov(ebx, FUNC)?;
            a.call(ebx)?;
            a.mov(dword_ptr(OUT + 4), eax)?;
            reload_cr3(a)?;
            a.movzx(eax, byte_ptr(FUNC + 0x800))?;
            a.mov(dword_ptr(OUT + 8), eax)?;
            Ok(vec![])
        });
        let mut blocks = t.blocks();
        blocks.push((FUNC_PHYS, returns(1)));
        blocks.push((FUNC_PHYS + 0x800, vec![0x11]));
        blocks.push((FUNC_PHYS2, returns(2)));
        blocks.push((FUNC_PHYS2 + 0x800, vec![0x22]));
        let r = run_paged(body, vec![], blocks);
        assert_no_fault(&r);
        assert_eq!(r.mem_u32(OUT), 0x11, "{format:?}: before");
        assert_eq!(r.mem_u32(OUT + 8), 0x22, "{format:?}: after the reload");
    }
}

/// A PDE pointed at another page table (mapping LIN elsewhere) takes
/// effect at a CR3 reload: the mapping depended on the PDE too.
#[test]
fn cr3_reload_after_a_pde_points_at_another_page_table() {
    for format in [Format::TwoLevel, Format::Pae] {
        let mut t = tables(format);
        t.map(LIN, PHYS, P | RW);
        let pde = t.pde_addr(LIN);
        // Another table, with LIN's entry at the same index.
        let other = t.alloc();
        let index = (LIN >> 12) % (PAGE / t.entry_size());
        t.write(other + index * t.entry_size(), PHYS2 as u64 | P | RW);
        let (body, _) = paged_body(t.setup(), |a| {
            a.mov(eax, dword_ptr(LIN))?;
            a.mov(dword_ptr(OUT), eax)?;
            a.mov(dword_ptr(pde), other | (P | RW | US) as u32)?;
            reload_cr3(a)?;
            a.mov(eax, dword_ptr(LIN))?;
            a.mov(dword_ptr(OUT + 4), eax)?;
            Ok(vec![])
        });
        let mut blocks = t.blocks();
        blocks.push(dwords(PHYS, &[0xAAAA]));
        blocks.push(dwords(PHYS2, &[0xBBBB]));
        let r = run_paged(body, vec![], blocks);
        assert_no_fault(&r);
        let seen = (r.mem_u32(OUT), r.mem_u32(OUT + 4));
        assert_eq!(seen, (0xAAAA, 0xBBBB), "{format:?}: before and after");
    }
}

/// A walk the runtime made for a helper (here `enter` with a nesting
/// level, which the runtime runs) reads a table that is only write-
/// protected when generated code runs next; a CR3 reload of the same
/// value must still drop it after the guest rewrote the entry.
#[test]
fn a_cr3_reload_drops_the_runtimes_walks() {
    let mut t = two_level();
    t.map(LIN, PHYS, P | RW);
    let pte = t.pte_addr(LIN);
    let (body, _) = paged_body(t.setup(), |a| {
        let mut next = a.create_label();
        // The table's page becomes writable in the shadow first.
        a.mov(dword_ptr(pte), PHYS | (P | RW) as u32)?;
        a.jmp(next)?;
        a.set_label(&mut next)?;
        a.mov(edi, esp)?;
        a.mov(esp, LIN + 0x800)?;
        a.mov(ebp, 0x1234_5678u32)?;
        a.enter(8u32, 1u32)?;
        a.mov(esp, edi)?;
        a.mov(dword_ptr(pte), PHYS2 | (P | RW) as u32)?;
        a.mov(eax, cr3)?;
        a.mov(cr3, eax)?;
        a.mov(esp, LIN + 0x800)?;
        a.mov(ebp, 0x9ABC_DEF0u32)?;
        a.enter(8u32, 1u32)?;
        a.mov(esp, edi)?;
        Ok(vec![])
    });
    let r = run_paged(body, vec![], t.blocks());
    assert_no_fault(&r);
    assert_eq!(r.mem_u32(PHYS + 0x7FC), 0x1234_5678);
    assert_eq!(
        r.mem_u32(PHYS2 + 0x7FC),
        0x9ABC_DEF0,
        "through the new entry"
    );
}

/// INVLPG drops the jump-cache entry of a TU that starts in the 4 MiB
/// before the flushed page and runs into it.
#[test]
fn invlpg_drops_jump_cache_entries_of_code_running_into_its_page() {
    let mut t = two_level();
    t.map(0x40_0000, PHYS, P | RW);
    let pte = t.pte_addr(0x40_0000);
    let (body, _) = paged_body(t.setup(), |a| {
        a.mov(ebx, 0x3F_FFFEu32)?;
        a.call(ebx)?;
        a.call(ebx)?;
        a.mov(dword_ptr(OUT), esi)?;
        a.mov(dword_ptr(pte), PHYS2 | (P | RW) as u32)?;
        a.invlpg(ptr(0x40_0000u32))?;
        a.call(ebx)?;
        a.mov(dword_ptr(OUT + 4), esi)?;
        Ok(vec![])
    });
    let mut blocks = t.blocks();
    // mov esi, imm32 (its last three bytes in the next page); ret
    blocks.push((0x3F_FFFE, vec![0xBE, 0x11]));
    blocks.push((PHYS, vec![0x0A, 0x0A, 0x0A, 0xC3]));
    blocks.push((PHYS2, vec![0x0B, 0x0B, 0x0B, 0xC3]));
    let r = run_paged(body, vec![], blocks);
    assert_no_fault(&r);
    assert_eq!(
        (r.mem_u32(OUT), r.mem_u32(OUT + 4)),
        (0x0A0A_0A11, 0x0B0B_0B11)
    );
}
