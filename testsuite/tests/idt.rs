//! Exception and interrupt delivery through the IDT at CPL 0: 32-bit
//! interrupt and trap gates, error codes, iret/retf, #DF and the triple
//! fault (Intel SDM Vol. 3A, chapter 6).

use bt86_testsuite::*;

const GDT: u32 = 0x1000;
const GDTR: u32 = 0x1800;
const IDTR: u32 = 0x1810;
const IDT: u32 = 0x2000;
/// Where each test's body starts, after the far jump that loads CS.
const BODY: u32 = 0x10_4000;
/// Handler k lives at HANDLERS + k * 0x100.
const HANDLERS: u32 = 0x10_8000;
/// Handlers record what they saw here.
const SEEN: u32 = 0x3000;
const CODE_SEL: u32 = 0x08;

fn handler_addr(k: u32) -> u32 {
    HANDLERS + k * 0x100
}

/// A gate for vector `v` to handler `k`: `kind` 0x8E (interrupt gate) or
/// 0x8F (trap gate), or 0x0E for a not-present interrupt gate.
struct Gate {
    v: u32,
    handler: u32,
    kind: u32,
}

/// GDT (null, flat code 0x08, flat data 0x10), the IDT with `gates` and
/// limit `idt_limit`, then a far jump to BODY with CS = 0x08. With
/// `opts.paged_ram`, paging is turned on first.
fn setup(gates: &[Gate], idt_limit: u32, opts: &Options) -> Vec<u8> {
    let gates: Vec<(u32, u32, u32)> = gates
        .iter()
        .map(|g| (g.v, handler_addr(g.handler), g.kind))
        .collect();
    let paged_ram = opts.paged_ram.then_some(opts.ram);
    assemble_at(LOAD, move |a| {
        if let Some(ram) = paged_ram {
            paged_ram_prologue(a, ram)?;
        }
        a.mov(esp, STACK)?;
        for (at, v) in [
            (GDT + 8, 0x0000_FFFFu32),
            (GDT + 12, 0x00CF_9A00),
            (GDT + 16, 0x0000_FFFF),
            (GDT + 20, 0x00CF_9200),
        ] {
            a.mov(dword_ptr(at), v)?;
        }
        a.mov(word_ptr(GDTR), 0x17u32)?;
        a.mov(dword_ptr(GDTR + 2), GDT)?;
        a.lgdt(ptr(GDTR))?;
        for (v, off, kind) in &gates {
            a.mov(dword_ptr(IDT + v * 8), (CODE_SEL << 16) | (off & 0xFFFF))?;
            a.mov(
                dword_ptr(IDT + v * 8 + 4),
                (off & 0xFFFF_0000) | (kind << 8),
            )?;
        }
        a.mov(word_ptr(IDTR), idt_limit)?;
        a.mov(dword_ptr(IDTR + 2), IDT)?;
        a.lidt(ptr(IDTR))?;
        a.mov(eax, 0x10u32)?;
        a.mov(ds, ax)?;
        a.mov(ss, ax)?;
        a.mov(es, ax)?;
        // jmp far 0x08:BODY
        a.db(&[0xEA])?;
        a.dd(&[BODY])?;
        a.dw(&[CODE_SEL as u16])
    })
}

fn run(gates: &[Gate], idt_limit: u32, body: Vec<u8>, handlers: Vec<(u32, Vec<u8>)>) -> Run {
    run_prepared(gates, idt_limit, body, handlers, |_| {})
}

/// [`run`] with paging on and beyond RAM not mapped
/// ([`Options::paged_ram`]), so that an access there is a #PF.
fn run_paged(gates: &[Gate], idt_limit: u32, body: Vec<u8>, handlers: Vec<(u32, Vec<u8>)>) -> Run {
    run_opts(Options::paged(), gates, idt_limit, body, handlers, |_| {})
}

fn run_prepared(
    gates: &[Gate],
    idt_limit: u32,
    body: Vec<u8>,
    handlers: Vec<(u32, Vec<u8>)>,
    prepare: impl FnOnce(&mut bt86_runtime::Machine),
) -> Run {
    run_opts(
        Options::default(),
        gates,
        idt_limit,
        body,
        handlers,
        prepare,
    )
}

fn run_opts(
    opts: Options,
    gates: &[Gate],
    idt_limit: u32,
    body: Vec<u8>,
    handlers: Vec<(u32, Vec<u8>)>,
    prepare: impl FnOnce(&mut bt86_runtime::Machine),
) -> Run {
    let mut blocks = vec![(LOAD, setup(gates, idt_limit, &opts)), (BODY, body)];
    for (k, code) in handlers {
        blocks.push((handler_addr(k), code));
    }
    let (image, start) = blocks_image(&blocks);
    run_image_with(opts, &image, start, start, prepare)
}

/// A handler that records the top `words` of its stack at SEEN, adds
/// `skip` to the saved EIP (at [esp + 4 * eip_slot]), drops an error code
/// if `pop_error`, and returns with iret.
fn recording_handler(k: u32, words: u32, skip: u32, pop_error: bool) -> (u32, Vec<u8>) {
    let code = assemble_at(handler_addr(k), move |a| {
        for i in 0..words {
            a.mov(eax, dword_ptr(esp + 4 * i))?;
            a.mov(dword_ptr(SEEN + 4 * i), eax)?;
        }
        a.mov(eax, cr2)?;
        a.mov(dword_ptr(SEEN + 0x40), eax)?;
        if pop_error {
            a.add(esp, 4)?;
        }
        a.add(dword_ptr(esp), skip)?;
        a.iretd()
    });
    (k, code)
}

#[test]
fn divide_error_goes_to_its_handler_and_iret_resumes() {
    let body = assemble_at(BODY, |a| {
        a.mov(ebx, 0x1234u32)?;
        a.xor(ecx, ecx)?;
        a.mov(eax, 7u32)?;
        a.div(ecx)?; // 2 bytes, at BODY + 12
        a.mov(esi, 0x5678u32)?;
        a.hlt()
    });
    let r = run(
        &[Gate {
            v: 0,
            handler: 0,
            kind: 0x8E,
        }],
        0x7FF,
        body,
        vec![recording_handler(0, 3, 2, false)],
    );
    r.assert_halted();
    assert_eq!(r.reg(esi), 0x5678, "execution resumed after the div");
    assert_eq!(r.reg(ebx), 0x1234);
    assert_eq!(r.mem_u32(SEEN), BODY + 12, "pushed EIP is the faulting div");
    assert_eq!(r.mem_u32(SEEN + 4), CODE_SEL, "pushed CS");
    assert_eq!(r.mem_u32(SEEN + 8) & 0x2, 0x2, "pushed EFLAGS");
    assert_eq!(r.reg(esp), STACK, "iret popped the frame");
}

#[test]
fn int_n_through_a_trap_gate_returns_after_the_int_with_if_kept() {
    let body = assemble_at(BODY, |a| {
        a.sti()?;
        a.int(0x80)?; // at BODY + 1, 2 bytes
        a.pushfd()?;
        a.pop(edi)?;
        a.cli()?;
        a.hlt()
    });
    let handler = assemble_at(handler_addr(1), |a| {
        a.pushfd()?;
        a.pop(esi)?;
        a.mov(eax, dword_ptr(esp))?;
        a.mov(dword_ptr(SEEN), eax)?;
        a.iretd()
    });
    let r = run(
        &[Gate {
            v: 0x80,
            handler: 1,
            kind: 0x8F,
        }],
        0x7FF,
        body,
        vec![(1, handler)],
    );
    r.assert_halted();
    assert_eq!(
        r.mem_u32(SEEN),
        BODY + 3,
        "a software interrupt pushes the next EIP"
    );
    assert_ne!(r.reg(esi) & fl::IF, 0, "a trap gate keeps IF");
    assert_ne!(r.reg(edi) & fl::IF, 0, "iret restored IF");
}

#[test]
fn an_interrupt_gate_clears_if_and_iret_restores_it() {
    let body = assemble_at(BODY, |a| {
        a.sti()?;
        a.int(0x40)?;
        a.pushfd()?;
        a.pop(edi)?;
        a.cli()?;
        a.hlt()
    });
    let handler = assemble_at(handler_addr(2), |a| {
        a.pushfd()?;
        a.pop(esi)?;
        a.iretd()
    });
    let r = run(
        &[Gate {
            v: 0x40,
            handler: 2,
            kind: 0x8E,
        }],
        0x7FF,
        body,
        vec![(2, handler)],
    );
    r.assert_halted();
    assert_eq!(r.reg(esi) & fl::IF, 0);
    assert_ne!(r.reg(edi) & fl::IF, 0);
}

#[test]
fn page_fault_beyond_ram_pushes_error_code_and_sets_cr2() {
    let body = assemble_at(BODY, |a| {
        a.mov(ebx, 0x4000_0000u32)?;
        a.mov(dword_ptr(ebx), eax)?; // a write beyond RAM (not mapped), 2 bytes at BODY + 5
        a.mov(esi, 1u32)?;
        a.hlt()
    });
    let r = run_paged(
        &[Gate {
            v: 14,
            handler: 3,
            kind: 0x8E,
        }],
        0x7FF,
        body,
        vec![recording_handler(3, 4, 2, true)],
    );
    r.assert_halted();
    assert_eq!(r.reg(esi), 1);
    assert_eq!(
        r.mem_u32(SEEN),
        2,
        "error code: not present, a write, at CPL 0"
    );
    assert_eq!(r.mem_u32(SEEN + 4), BODY + 5, "EIP of the faulting store");
    assert_eq!(r.mem_u32(SEEN + 0x40), 0x4000_0000, "CR2");
    assert_eq!(r.reg(esp), STACK);
}

#[test]
fn a_not_present_gate_raises_np_with_the_gate_in_the_error_code() {
    let body = assemble_at(BODY, |a| {
        a.ud2()?; // BODY
        a.mov(esi, 1u32)?;
        a.hlt()
    });
    let r = run(
        &[
            Gate {
                v: 6,
                handler: 0,
                kind: 0x0E,
            },
            Gate {
                v: 11,
                handler: 4,
                kind: 0x8E,
            },
        ],
        0x7FF,
        body,
        vec![recording_handler(4, 2, 2, true)],
    );
    r.assert_halted();
    assert_eq!(
        r.mem_u32(SEEN),
        6 * 8 + 2 + 1,
        "IDT bit and EXT set, index 6"
    );
    assert_eq!(r.mem_u32(SEEN + 4), BODY);
}

/// Points the #UD gate at selector 0x18: beyond the GDT limit, or (with
/// `grow_gdt`) a not-present code segment there. The fault comes on
/// `handler`'s vector with EXT set.
fn bad_handler_cs(grow_gdt: bool, v: u32) -> Run {
    let body = assemble_at(BODY, move |a| {
        if grow_gdt {
            a.mov(dword_ptr(GDT + 0x18), 0x0000_FFFFu32)?;
            a.mov(dword_ptr(GDT + 0x1C), 0x00CF_1A00u32)?; // P = 0
            a.mov(word_ptr(GDTR), 0x1Fu32)?;
            a.lgdt(ptr(GDTR))?;
        }
        a.mov(word_ptr(IDT + 6 * 8 + 2), 0x18u32)?;
        a.ud2()?;
        a.mov(esi, 1u32)?;
        a.hlt()
    });
    run(
        &[
            Gate {
                v: 6,
                handler: 0,
                kind: 0x8E,
            },
            Gate {
                v,
                handler: 4,
                kind: 0x8E,
            },
        ],
        0x7FF,
        body,
        vec![recording_handler(4, 2, 2, true)],
    )
}

#[test]
fn a_handler_cs_beyond_the_gdt_is_a_general_protection_fault_with_ext() {
    let r = bad_handler_cs(false, 13);
    r.assert_halted();
    assert_eq!(r.reg(esi), 1);
    assert_eq!(r.mem_u32(SEEN), 0x18 + 1, "selector and EXT");
}

#[test]
fn a_not_present_handler_cs_is_a_segment_not_present_fault_with_ext() {
    let r = bad_handler_cs(true, 11);
    r.assert_halted();
    assert_eq!(r.reg(esi), 1);
    assert_eq!(r.mem_u32(SEEN), 0x18 + 1, "selector and EXT");
}

#[test]
fn a_fault_while_delivering_a_contributory_fault_is_a_double_fault() {
    // #DE's gate is not present: #NP during #DE delivery -> #DF.
    let body = assemble_at(BODY, |a| {
        a.xor(ecx, ecx)?;
        a.div(ecx)?;
        a.hlt()
    });
    let df = assemble_at(handler_addr(5), |a| {
        a.mov(eax, dword_ptr(esp))?;
        a.mov(dword_ptr(SEEN), eax)?;
        a.mov(esi, 0xDFu32)?;
        a.hlt()
    });
    let r = run(
        &[
            Gate {
                v: 0,
                handler: 0,
                kind: 0x0E,
            },
            Gate {
                v: 8,
                handler: 5,
                kind: 0x8E,
            },
        ],
        0x7FF,
        body,
        vec![(5, df)],
    );
    r.assert_halted();
    assert_eq!(r.reg(esi), 0xDF);
    assert_eq!(r.mem_u32(SEEN), 0, "#DF pushes error code 0");
}

#[test]
fn a_fault_while_delivering_a_double_fault_is_a_triple_fault() {
    // Nothing can be pushed: the stack is beyond RAM, not mapped. The #PF
    // pushing #DE's frame is delivered (a contributory fault then a page
    // fault are handled serially), the #PF pushing its own frame is a #DF,
    // and the #PF pushing the #DF's frame a triple fault.
    let body = assemble_at(BODY, |a| {
        a.mov(esp, 0x4000_0000u32)?;
        a.xor(ecx, ecx)?;
        a.div(ecx)?;
        a.hlt()
    });
    let r = run_paged(
        &[
            Gate {
                v: 0,
                handler: 0,
                kind: 0x8E,
            },
            Gate {
                v: 8,
                handler: 0,
                kind: 0x8E,
            },
            Gate {
                v: 14,
                handler: 0,
                kind: 0x8E,
            },
        ],
        0x7FF,
        body,
        vec![],
    );
    assert!(matches!(r.stop, Stop::TripleFault { .. }), "{:?}", r.stop);
}

#[test]
fn without_an_idt_an_exception_ends_the_run() {
    let body = assemble_at(BODY, |a| a.ud2());
    let r = run(&[], 0, body, vec![]);
    r.assert_exception(6, BODY);
}

#[test]
fn a_vector_beyond_the_idt_limit_is_a_general_protection_fault() {
    let body = assemble_at(BODY, |a| {
        a.int(0x20)?; // beyond a 16-entry IDT
        a.hlt()
    });
    let r = run(
        &[Gate {
            v: 13,
            handler: 6,
            kind: 0x8E,
        }],
        16 * 8 - 1,
        body,
        vec![recording_handler(6, 2, 2, true)],
    );
    r.assert_halted();
    assert_eq!(
        r.mem_u32(SEEN),
        0x20 * 8 + 2,
        "error code: IDT bit, index 0x20, EXT clear for int n"
    );
    assert_eq!(r.mem_u32(SEEN + 4), BODY, "#GP points at the int");
}

#[test]
fn retf_reloads_cs_and_returns() {
    let body = assemble_at(BODY, |a| {
        a.push(CODE_SEL)?;
        a.push(BODY + 0x20)?;
        a.retf()?;
        a.hlt()?;
        Ok(())
    });
    let tail = assemble_at(BODY + 0x20, |a| {
        a.mov(esi, 0x77u32)?;
        a.hlt()
    });
    let opts = Options::default();
    let mut blocks = vec![
        (LOAD, setup(&[], 0, &opts)),
        (BODY, body),
        (BODY + 0x20, tail),
    ];
    blocks.sort_by_key(|b| b.0);
    let r = run_blocks(opts, &blocks);
    r.assert_halted();
    assert_eq!(r.reg(esi), 0x77);
    assert_eq!(r.reg(esp), STACK);
}

#[test]
fn single_step_traps_after_each_instruction_started_with_tf_set() {
    const LOG: u32 = 0x3100;
    const COUNT: u32 = 0x30F0;
    let body = assemble_at(BODY, |a| {
        let mut l = a.create_label();
        a.pushfd()?; // BODY
        a.or(dword_ptr(esp), 0x100)?; // BODY + 1, 7 bytes
        a.popfd()?; // BODY + 8: sets TF, no trap after it
        a.nop()?; // BODY + 9
        a.inc(eax)?; // BODY + 10
        a.jmp(l)?; // BODY + 11, 2 bytes
        a.db(&[0xCC; 4])?; // BODY + 13, skipped
        a.set_label(&mut l)?;
        a.pushfd()?; // BODY + 17
        a.and(dword_ptr(esp), !0x100u32)?; // BODY + 18, 7 bytes
        a.popfd()?; // BODY + 25: TF set at its start, so it traps
        a.hlt() // BODY + 26
    });
    let handler = assemble_at(handler_addr(9), |a| {
        a.push(eax)?;
        a.push(ecx)?;
        a.mov(ecx, dword_ptr(COUNT))?;
        a.mov(eax, dword_ptr(esp + 8))?;
        a.mov(dword_ptr(ecx * 4 + LOG), eax)?;
        a.inc(dword_ptr(COUNT))?;
        a.pop(ecx)?;
        a.pop(eax)?;
        a.iretd()
    });
    let r = run(
        &[Gate {
            v: 1,
            handler: 9,
            kind: 0x8E,
        }],
        0x7FF,
        body,
        vec![(9, handler)],
    );
    r.assert_halted();
    let n = r.mem_u32(COUNT);
    let eips: Vec<u32> = (0..n).map(|i| r.mem_u32(LOG + 4 * i) - BODY).collect();
    assert_eq!(eips, vec![10, 11, 17, 18, 25, 26]);
    assert_eq!(
        r.reg(eax),
        0x11,
        "inc ran once (setup left 0x10) and the handler kept eax"
    );
    assert_eq!(r.eflags() & fl::TF, 0);
}

/// An interrupt line another thread raises: INTR with one vector.
#[derive(Clone, Default)]
struct Line(std::sync::Arc<std::sync::atomic::AtomicU32>);

impl Line {
    fn raise(&self, vector: u8) {
        self.0
            .store(vector as u32 + 1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl bt86_runtime::devices::InterruptController for Line {
    fn pending(&mut self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst) != 0
    }
    fn acknowledge(&mut self) -> Option<u8> {
        let v = self.0.swap(0, std::sync::atomic::Ordering::SeqCst);
        (v != 0).then(|| (v - 1) as u8)
    }
}

/// Runs `body` with the vector-0x20 handler while another thread raises
/// IRQ vector 0x20 after `delay` and tells the machine.
fn run_with_late_interrupt(body: Vec<u8>, delay: std::time::Duration) -> Run {
    let line = Line::default();
    let mut raiser = None;
    let r = run_irq(body, |m| {
        m.set_interrupt_controller(Box::new(line.clone()));
        let (h, line) = (m.exit_handle(), line.clone());
        raiser = Some(std::thread::spawn(move || {
            std::thread::sleep(delay);
            line.raise(0x20);
            h.interrupt();
        }));
    });
    raiser.expect("prepared").join().unwrap();
    r
}

/// A handler for vector 0x20 that stores edi and a count at SEEN, then irets.
fn irq_handler() -> (u32, Vec<u8>) {
    (
        10,
        assemble_at(handler_addr(10), |a| {
            a.mov(dword_ptr(SEEN), edi)?;
            a.inc(dword_ptr(SEEN + 4))?;
            a.iretd()
        }),
    )
}

/// Runs `body` with `irq_handler` behind the vector-0x20 interrupt gate;
/// `prepare` attaches the interrupt controller.
fn run_irq(body: Vec<u8>, prepare: impl FnOnce(&mut bt86_runtime::Machine)) -> Run {
    let gate = Gate {
        v: 0x20,
        handler: 10,
        kind: 0x8E,
    };
    run_prepared(&[gate], 0x7FF, body, vec![irq_handler()], prepare)
}

#[test]
fn an_interrupt_raised_by_another_thread_reaches_a_spinning_guest() {
    let body = assemble_at(BODY, |a| {
        let mut spin = a.create_label();
        a.sti()?;
        a.set_label(&mut spin)?;
        a.cmp(dword_ptr(SEEN + 4), 0)?;
        a.je(spin)?;
        a.cli()?;
        a.hlt()
    });
    let r = run_with_late_interrupt(body, std::time::Duration::from_millis(30));
    r.assert_halted();
    assert_eq!(r.mem_u32(SEEN + 4), 1);
}

#[test]
fn hlt_with_interrupts_on_sleeps_until_an_interrupt_without_spinning() {
    let body = assemble_at(BODY, |a| {
        a.sti()?;
        a.hlt()?;
        a.mov(esi, 1u32)?;
        a.cli()?;
        a.hlt()
    });
    let cpu_time = || {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime with a valid timespec pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
        t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
    };
    let start = cpu_time();
    let wall = std::time::Instant::now();
    let r = run_with_late_interrupt(body, std::time::Duration::from_millis(300));
    let (busy, waited) = (cpu_time() - start, wall.elapsed().as_secs_f64());
    r.assert_halted();
    assert_eq!(
        r.reg(esi),
        1,
        "the interrupt woke the CPU and it went on after hlt"
    );
    assert!(waited >= 0.3, "it waited for the interrupt");
    assert!(
        busy < 0.15,
        "hlt must sleep, not spin: {busy:.3} s of CPU in {waited:.3} s"
    );
}

#[test]
fn sti_lets_one_more_instruction_run_before_a_pending_interrupt() {
    let body = assemble_at(BODY, |a| {
        a.xor(edi, edi)?;
        a.sti()?;
        a.mov(edi, 0x1234u32)?; // in the sti shadow
        a.mov(edi, 0x5678u32)?;
        a.cli()?;
        a.hlt()
    });
    let line = Line::default();
    line.raise(0x20); // pending from the start, IF off until the sti
    let r = run_irq(body, |m| {
        m.set_interrupt_controller(Box::new(line.clone()));
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(SEEN + 4), 1, "taken once");
    assert_eq!(
        r.mem_u32(SEEN),
        0x1234,
        "after the instruction following sti, not before it"
    );
}

/// A kernel's cli ... sti sections with no interrupt waiting go on in
/// generated code: sti leaves for the run loop only when one waits (the
/// test above).
#[test]
fn sti_with_no_interrupt_waiting_stays_in_generated_code() {
    let body = assemble_at(BODY, |a| {
        let mut top = a.create_label();
        a.mov(ecx, 10_000u32)?;
        a.set_label(&mut top)?;
        a.cli()?;
        a.inc(esi)?;
        a.sti()?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.cli()?;
        a.hlt()
    });
    assert_loop_stays_in_generated_code(body, "sti");
}

/// Runs `body`, a loop that counts 10,000 in esi with no interrupt
/// raised, and checks that it hardly ever left generated code.
fn assert_loop_stays_in_generated_code(body: Vec<u8>, what: &str) {
    let line = Line::default();
    let r = run_irq(body, |m| {
        m.set_interrupt_controller(Box::new(line.clone()));
    });
    r.assert_halted();
    assert_eq!(r.reg(esi), 10_000);
    assert_eq!(r.mem_u32(SEEN + 4), 0, "no interrupt");
    let exits = r.counter("exits.helper") + r.counter("exits.branch");
    assert!(exits < 20, "{exits} exits for 10,000 {what}");
}

#[test]
fn popf_that_sets_if_takes_a_waiting_interrupt_before_the_next_instruction() {
    let body = assemble_at(BODY, |a| {
        a.xor(edi, edi)?;
        a.push(0x202u32)?;
        a.popfd()?; // IF on: no shadow, unlike sti
        a.mov(edi, 0x1234u32)?;
        a.cli()?;
        a.hlt()
    });
    let line = Line::default();
    line.raise(0x20);
    let r = run_irq(body, |m| {
        m.set_interrupt_controller(Box::new(line.clone()));
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(SEEN + 4), 1, "taken once");
    assert_eq!(r.mem_u32(SEEN), 0, "right after popfd");
}

/// A kernel's pushf; cli ... popf sections go on in generated code when
/// no interrupt waits, like sti.
#[test]
fn popf_with_no_interrupt_waiting_stays_in_generated_code() {
    let body = assemble_at(BODY, |a| {
        let mut top = a.create_label();
        a.mov(ecx, 10_000u32)?;
        a.sti()?;
        a.set_label(&mut top)?;
        a.pushfd()?;
        a.cli()?;
        a.inc(esi)?;
        a.popfd()?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.cli()?;
        a.hlt()
    });
    assert_loop_stays_in_generated_code(body, "popf");
}

/// Asserts vector 0x20 once the guest stores a nonzero word at `FLAG`:
/// an interrupt that comes in the middle of a TU, deterministically.
struct RaisedByGuest {
    flag: *mut u32,
}

const FLAG: u32 = SEEN + 8;

// SAFETY: the pointer is into guest RAM, which outlives the machine's run
// and is only touched with volatile accesses.
unsafe impl Send for RaisedByGuest {}

impl bt86_runtime::devices::InterruptController for RaisedByGuest {
    fn pending(&mut self) -> bool {
        // SAFETY: FLAG is inside guest RAM.
        unsafe { self.flag.read_volatile() != 0 }
    }
    fn acknowledge(&mut self) -> Option<u8> {
        // SAFETY: as above.
        unsafe { self.flag.write_volatile(0) };
        Some(0x20)
    }
}

#[test]
fn sti_with_if_already_set_holds_nothing_off() {
    let body = assemble_at(BODY, |a| {
        a.xor(edi, edi)?;
        a.sti()?;
        a.nop()?;
        a.mov(dword_ptr(FLAG), 1u32)?; // the interrupt comes while IF is 1
        a.sti()?; // IF is already 1: no shadow
        a.mov(edi, 0x1234u32)?;
        a.cli()?;
        a.hlt()
    });
    let r = run_irq(body, |m| {
        let flag = (m.memory().shadow_base() + FLAG as u64) as *mut u32;
        m.set_interrupt_controller(Box::new(RaisedByGuest { flag }));
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(SEEN + 4), 1, "taken once");
    assert_eq!(r.mem_u32(SEEN), 0, "right after the second sti");
}

#[test]
fn an_external_interrupt_on_an_exception_vector_pushes_no_error_code() {
    let body = assemble_at(BODY, |a| {
        a.sti()?;
        a.nop()?;
        a.mov(esi, 1u32)?;
        a.cli()?;
        a.hlt()
    });
    let handler = assemble_at(handler_addr(11), |a| {
        a.inc(dword_ptr(SEEN + 4))?;
        a.iretd()
    });
    let line = Line::default();
    line.raise(13);
    let r = run_prepared(
        &[Gate {
            v: 13,
            handler: 11,
            kind: 0x8E,
        }],
        0x7FF,
        body,
        vec![(11, handler)],
        |m| {
            m.set_interrupt_controller(Box::new(line.clone()));
        },
    );
    r.assert_halted();
    assert_eq!(r.reg(esi), 1);
    assert_eq!(r.mem_u32(SEEN + 4), 1);
    assert_eq!(r.reg(esp), STACK);
}

#[test]
fn a_triple_fault_resets_the_machine_and_the_guest_boots_again() {
    // Prints "B" and triple-faults: the IDT's limit leaves out #UD, #GP
    // and #DF (so the stack, the open bus beyond RAM, is never pushed to).
    let code = assemble_at(LOAD, |a| {
        a.mov(al, b'B' as u32)?;
        a.out(0xE9, al)?;
        a.mov(word_ptr(IDTR), 0x7u32)?;
        a.mov(dword_ptr(IDTR + 2), IDT)?;
        a.lidt(ptr(IDTR))?;
        a.mov(esp, 0x4000_0000u32)?;
        a.ud2()
    });
    let opts = Options {
        no_reboot: false,
        budget: Some(200),
        ..Options::default()
    };
    let r = run_blocks(opts, &[(LOAD, code)]);
    assert_eq!(r.stop, Stop::Budget);
    assert!(
        r.output.len() >= 3 && r.output.iter().all(|&b| b == b'B'),
        "booted again after each reset: {:?}",
        r.output_str()
    );
    let r = run_blocks(
        Options::default(),
        &[(LOAD, assemble_at(LOAD, |a| a.ud2()))],
    );
    assert!(
        matches!(r.stop, Stop::Unhandled { .. }),
        "no IDT: the exception is reported, no reset"
    );
}

#[test]
fn single_stepping_works_every_time_tf_is_set_again() {
    const COUNT: u32 = 0x30F0;
    let body = assemble_at(BODY, |a| {
        let mut again = a.create_label();
        a.mov(ecx, 3u32)?;
        a.set_label(&mut again)?;
        a.pushfd()?;
        a.or(dword_ptr(esp), 0x100)?;
        a.popfd()?; // TF on: traps after each of the next 4 instructions
        a.nop()?;
        a.pushfd()?;
        a.and(dword_ptr(esp), !0x100u32)?;
        a.popfd()?; // TF was set when it started: one more trap
        a.dec(ecx)?;
        a.jnz(again)?;
        a.hlt()
    });
    let handler = assemble_at(handler_addr(9), |a| {
        a.inc(dword_ptr(COUNT))?;
        a.iretd()
    });
    let r = run(
        &[Gate {
            v: 1,
            handler: 9,
            kind: 0x8E,
        }],
        0x7FF,
        body,
        vec![(9, handler)],
    );
    r.assert_halted();
    assert_eq!(r.mem_u32(COUNT), 3 * 4);
}

#[test]
fn a_divide_that_faulted_once_is_emulated_and_still_exact() {
    // The same div runs 4 times with divisors 7, 0, 7, 0 and the idiv
    // twice with an overflowing and a valid operand pair: after their
    // first #DE both run in the runtime, which must give the same results.
    const COUNT: u32 = 0x30F0;
    const RESULTS: u32 = 0x3200;
    let body = assemble_at(BODY, |a| {
        let mut again = a.create_label();
        a.xor(esi, esi)?;
        a.set_label(&mut again)?;
        a.mov(ecx, esi)?;
        a.and(ecx, 1)?;
        a.xor(ecx, 1)?;
        a.imul_3(ecx, ecx, 7)?; // 7 on even rounds, 0 on odd ones
        a.xor(edx, edx)?;
        a.mov(eax, 100u32)?;
        a.div(ecx)?; // 2 bytes: the handler skips it
        a.mov(dword_ptr(esi * 8 + RESULTS), eax)?;
        a.mov(dword_ptr(esi * 8 + RESULTS + 4), edx)?;
        a.inc(esi)?;
        a.cmp(esi, 4)?;
        a.jne(again)?;
        for (hi, lo, d) in [
            (0xFFFF_FFFFu32, 0x8000_0000u32, 0xFFFF_FFFFu32),
            (0xFFFF_FFFF, 0xFFFF_FFF9, 2),
        ] {
            a.mov(edx, hi)?;
            a.mov(eax, lo)?;
            a.mov(ebx, d)?;
            a.idiv(ebx)?;
            a.push(eax)?;
            a.push(edx)?;
        }
        a.hlt()
    });
    let handler = assemble_at(handler_addr(12), |a| {
        a.inc(dword_ptr(COUNT))?;
        a.mov(eax, 0xDEDEu32)?;
        a.mov(edx, 0xDEDEu32)?;
        a.add(dword_ptr(esp), 2)?;
        a.iretd()
    });
    let r = run(
        &[Gate {
            v: 0,
            handler: 12,
            kind: 0x8E,
        }],
        0x7FF,
        body,
        vec![(12, handler)],
    );
    r.assert_halted();
    assert_eq!(
        r.mem_u32(COUNT),
        3,
        "two divides by zero and one idiv overflow"
    );
    let results: Vec<u32> = (0..8).map(|i| r.mem_u32(RESULTS + 4 * i)).collect();
    assert_eq!(results, vec![14, 2, 0xDEDE, 0xDEDE, 14, 2, 0xDEDE, 0xDEDE]);
    // -7 / 2 = -3 remainder -1 (after the overflowing pair faulted).
    assert_eq!(r.mem_u32(STACK - 12), (-3i32) as u32);
    assert_eq!(r.mem_u32(STACK - 16), (-1i32) as u32);
}
