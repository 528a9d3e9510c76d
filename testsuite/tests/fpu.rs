//! x87, MMX and SSE/SSE2 on the host FPU: differential tests against the
//! host CPU (special operands, every rounding mode, x87 precision
//! control), the guest's FPU state across helper calls, and the system
//! side: CR0.TS/EM (#NM, #UD), CR4.OSFXSR, unmasked x87 (#MF) and SSE
//! (#XM) exceptions at the right EIP, fxsave's layout, and a host FPU
//! state that guest code cannot leak into Rust.

use bt86_testsuite::native32::{Native32, State, WINDOW_DWORDS};
use bt86_testsuite::*;

/// Window layout (8 dwords, the oracle's): a (f64), b (f64), x87 control
/// word, MXCSR, result (8 bytes).
const A: u32 = 0;
const B: u32 = 8;
const CW: u32 = 16;
const MXCSR: u32 = 20;
const OUT: u32 = 24;

type Body = fn(&mut CodeAssembler, u32) -> Result<(), IcedError>;

/// Operand values: zeros, ones, extremes, denormals, infinities, NaNs.
const SPECIAL: [u64; 16] = [
    0x0000_0000_0000_0000, // 0
    0x8000_0000_0000_0000, // -0
    0x3FF0_0000_0000_0000, // 1
    0xBFF8_0000_0000_0000, // -1.5
    0x4000_0000_0000_0000, // 2
    0x3FD5_5555_5555_5555, // 1/3
    0x4009_21FB_5444_2D18, // pi
    0x7FEF_FFFF_FFFF_FFFF, // max
    0x0010_0000_0000_0000, // min normal
    0x0000_0000_0000_0001, // smallest denormal
    0x7FF0_0000_0000_0000, // inf
    0xFFF0_0000_0000_0000, // -inf
    0x7FF8_0000_0000_0000, // qNaN
    0x7FF0_0000_0000_0001, // sNaN
    0x43E0_0000_0000_0000, // 2^63
    0xC1E0_0000_0010_0000, // -2^31 - 0.5
];

/// The x87 control words (all exceptions masked): each rounding mode at
/// 64-bit precision, and 24- and 53-bit precision.
const CONTROL_WORDS: [u32; 6] = [0x037F, 0x077F, 0x0B7F, 0x0F7F, 0x007F, 0x027F];
/// MXCSR with all exceptions masked: each rounding mode, and FTZ + DAZ.
const MXCSRS: [u32; 5] = [0x1F80, 0x3F80, 0x5F80, 0x7F80, 0x9FC0];

/// The harness around an operation: a clean FPU with the case's control
/// word and MXCSR, the operation, FSW in AX, the full tag word (from
/// fnstenv) in place of the control word and MXCSR stored; then the
/// host's defaults back (the native oracle runs inside Rust).
fn wrap(a: &mut CodeAssembler, m: u32, body: Body) -> Result<(), IcedError> {
    a.fninit()?;
    a.fldcw(word_ptr(m + CW))?;
    a.ldmxcsr(dword_ptr(m + MXCSR))?;
    body(a, m)?;
    a.fnstsw(ax)?;
    a.lea(esp, dword_ptr(esp - 28))?;
    a.fnstenv(ptr(esp))?;
    a.movzx(ecx, word_ptr(esp + 8))?;
    a.mov(dword_ptr(m + CW), ecx)?;
    a.lea(esp, dword_ptr(esp + 28))?;
    a.stmxcsr(dword_ptr(m + MXCSR))?;
    a.fninit()?;
    a.push(0x1F80u32)?;
    a.ldmxcsr(dword_ptr(esp))?;
    a.lea(esp, dword_ptr(esp + 4)) // keeps the operation's flags
}

/// The operations, as bodies over the window at `m`.
fn operations() -> Vec<(&'static str, Body)> {
    macro_rules! x87_binary {
        ($name:literal, $op:ident) => {
            ($name, |a, m| {
                a.fld(qword_ptr(m + A))?;
                a.$op(qword_ptr(m + B))?;
                a.fstp(qword_ptr(m + OUT))
            })
        };
    }
    macro_rules! x87_unary {
        ($name:literal, $op:ident) => {
            ($name, |a, m| {
                a.fld(qword_ptr(m + A))?;
                a.$op()?;
                a.fstp(qword_ptr(m + OUT))
            })
        };
    }
    macro_rules! x87_two {
        ($name:literal, $op:ident) => {
            ($name, |a, m| {
                a.fld(qword_ptr(m + B))?;
                a.fld(qword_ptr(m + A))?;
                a.$op()?;
                a.fstp(qword_ptr(m + OUT))?;
                a.fstp(st0)
            })
        };
    }
    macro_rules! sse_binary {
        ($name:literal, $op:ident) => {
            ($name, |a, m| {
                a.movsd_2(xmm0, qword_ptr(m + A))?;
                a.$op(xmm0, qword_ptr(m + B))?;
                a.movsd_2(qword_ptr(m + OUT), xmm0)
            })
        };
    }
    macro_rules! sse_packed {
        ($name:literal, $op:ident) => {
            ($name, |a, m| {
                a.movq(xmm0, qword_ptr(m + A))?;
                a.movq(xmm1, qword_ptr(m + B))?;
                a.$op(xmm0, xmm1)?;
                a.movq(qword_ptr(m + OUT), xmm0)
            })
        };
    }
    macro_rules! sse_single {
        ($name:literal, $op:ident) => {
            ($name, |a, m| {
                a.movss(xmm1, dword_ptr(m + A + 4))?;
                a.$op(xmm1, dword_ptr(m + B + 4))?;
                a.movss(dword_ptr(m + OUT), xmm1)
            })
        };
    }
    macro_rules! mmx {
        ($name:literal, $op:ident) => {
            ($name, |a, m| {
                a.movq(mm0, qword_ptr(m + A))?;
                a.$op(mm0, qword_ptr(m + B))?;
                a.movq(qword_ptr(m + OUT), mm0)?;
                a.emms()
            })
        };
    }
    vec![
        x87_binary!("fadd", fadd),
        x87_binary!("fsub", fsub),
        x87_binary!("fsubr", fsubr),
        x87_binary!("fmul", fmul),
        x87_binary!("fdiv", fdiv),
        x87_binary!("fdivr", fdivr),
        x87_unary!("fsqrt", fsqrt),
        x87_unary!("frndint", frndint),
        x87_unary!("fsin", fsin),
        x87_unary!("fcos", fcos),
        x87_unary!("f2xm1", f2xm1),
        x87_unary!("fabs", fabs),
        x87_unary!("fchs", fchs),
        x87_two!("fprem", fprem),
        x87_two!("fprem1", fprem1),
        x87_two!("fscale", fscale),
        x87_two!("fyl2x", fyl2x),
        x87_two!("fpatan", fpatan),
        ("fptan", |a, m| {
            a.fld(qword_ptr(m + A))?;
            a.fptan()?;
            a.fstp(st0)?;
            a.fstp(qword_ptr(m + OUT))
        }),
        ("fxtract", |a, m| {
            a.fld(qword_ptr(m + A))?;
            a.fxtract()?;
            a.fstp(qword_ptr(m + OUT))?;
            a.fstp(qword_ptr(m + A))
        }),
        ("fistp", |a, m| {
            a.fld(qword_ptr(m + A))?;
            a.fistp(qword_ptr(m + OUT))
        }),
        ("fbstp", |a, m| {
            a.fld(qword_ptr(m + A))?;
            a.fbstp(tword_ptr(m + B))
        }),
        ("fcomi", |a, m| {
            a.fld(qword_ptr(m + B))?;
            a.fld(qword_ptr(m + A))?;
            a.fucomi(st0, st1)?;
            a.fcmovb(st0, st1)?;
            a.fstp(qword_ptr(m + OUT))?;
            a.fstp(st0)
        }),
        ("fcom", |a, m| {
            a.fld(qword_ptr(m + A))?;
            a.fcom(qword_ptr(m + B))?;
            a.fstp(st0)
        }),
        ("fld80", |a, m| {
            // An 80-bit round trip through memory, and fxam.
            a.fld(qword_ptr(m + A))?;
            a.fxam()?;
            a.fstp(tword_ptr(m + B))?;
            a.fld(tword_ptr(m + B))?;
            a.fstp(qword_ptr(m + OUT))
        }),
        sse_binary!("addsd", addsd),
        sse_binary!("subsd", subsd),
        sse_binary!("mulsd", mulsd),
        sse_binary!("divsd", divsd),
        sse_binary!("sqrtsd", sqrtsd),
        sse_binary!("minsd", minsd),
        sse_binary!("maxsd", maxsd),
        sse_binary!("cvtsd2ss", cvtsd2ss),
        sse_single!("addss", addss),
        sse_single!("mulss", mulss),
        sse_single!("divss", divss),
        sse_single!("rcpss", rcpss),
        ("cvtsd2si", |a, m| {
            a.cvtsd2si(ecx, qword_ptr(m + A))?;
            a.cvttsd2si(edx, qword_ptr(m + B))?;
            a.mov(dword_ptr(m + OUT), ecx)?;
            a.mov(dword_ptr(m + OUT + 4), edx)
        }),
        ("comisd", |a, m| {
            a.movsd_2(xmm2, qword_ptr(m + A))?;
            a.ucomisd(xmm2, qword_ptr(m + B))?;
            a.setp(byte_ptr(m + OUT))?;
            a.comisd(xmm2, qword_ptr(m + B))
        }),
        ("packed", |a, m| {
            a.movq(xmm3, qword_ptr(m + A))?;
            a.movq(xmm4, qword_ptr(m + B))?;
            a.punpcklqdq(xmm3, xmm4)?;
            a.pshufd(xmm5, xmm3, 0x4E)?;
            a.mulpd(xmm3, xmm5)?;
            a.cvtpd2ps(xmm3, xmm3)?;
            a.movq(qword_ptr(m + OUT), xmm3)
        }),
        ("stack overflow", |a, m| {
            for _ in 0..9 {
                a.fld(qword_ptr(m + A))?;
            }
            a.fstp(qword_ptr(m + OUT))
        }),
        ("stack underflow", |a, m| {
            a.fadd(qword_ptr(m + A))?;
            a.fstp(qword_ptr(m + OUT))
        }),
        ("fiadd fimul", |a, m| {
            a.fld(qword_ptr(m + A))?;
            a.fiadd(dword_ptr(m + B))?;
            a.fimul(word_ptr(m + B + 4))?;
            a.fstp(qword_ptr(m + OUT))
        }),
        ("fxch fcmov", |a, m| {
            a.fld(qword_ptr(m + A))?;
            a.fld(qword_ptr(m + B))?;
            a.fxch(st0, st1)?;
            a.fcmovnbe(st0, st1)?;
            a.fcmove(st0, st1)?;
            a.fstp(qword_ptr(m + OUT))?;
            a.fstp(st0)
        }),
        ("fst32 fld32", |a, m| {
            a.fld(qword_ptr(m + A))?;
            a.fst(dword_ptr(m + OUT))?;
            a.fld(dword_ptr(m + OUT))?;
            a.fsubp(st1, st0)?;
            a.fstp(dword_ptr(m + OUT + 4))
        }),
        sse_packed!("andpd", andpd),
        sse_packed!("orpd", orpd),
        sse_packed!("paddq", paddq),
        sse_packed!("pmuludq", pmuludq),
        sse_packed!("pcmpeqd", pcmpeqd),
        sse_packed!("psubusw", psubusw),
        sse_packed!("punpcklbw", punpcklbw),
        sse_packed!("cvtps2pd", cvtps2pd),
        sse_packed!("cvtdq2pd", cvtdq2pd),
        sse_packed!("cvttpd2dq", cvttpd2dq),
        sse_packed!("cvtpd2dq", cvtpd2dq),
        sse_single!("maxss", maxss),
        sse_single!("sqrtss", sqrtss),
        sse_single!("rsqrtss", rsqrtss),
        sse_single!("cvtss2sd", cvtss2sd),
        ("shifts", |a, m| {
            a.movq(xmm0, qword_ptr(m + A))?;
            a.movd(xmm1, dword_ptr(m + B))?;
            a.psllq(xmm0, xmm1)?;
            a.psrad(xmm0, 3)?;
            a.pslldq(xmm0, 3)?;
            a.movq(qword_ptr(m + OUT), xmm0)
        }),
        ("movmsk pextrw", |a, m| {
            a.movq(xmm0, qword_ptr(m + A))?;
            a.movmskpd(ecx, xmm0)?;
            a.pmovmskb(edx, xmm0)?;
            a.pextrw(esi, xmm0, 3)?;
            a.mov(dword_ptr(m + OUT), ecx)?;
            a.shl(edx, 4)?;
            a.add(edx, esi)?;
            a.mov(dword_ptr(m + OUT + 4), edx)
        }),
        ("cvtsi2sd", |a, m| {
            a.cvtsi2sd(xmm6, dword_ptr(m + B))?;
            a.cvtss2si(ecx, dword_ptr(m + A + 4))?;
            a.movsd_2(qword_ptr(m + OUT), xmm6)?;
            a.mov(dword_ptr(m + A), ecx)
        }),
        mmx!("paddusb", paddusb),
        mmx!("pmulhw", pmulhw),
        mmx!("psubsw", psubsw),
        mmx!("packsswb", packsswb),
        mmx!("pmaddwd", pmaddwd),
        mmx!("psrlq", psrlq),
        mmx!("pcmpgtw", pcmpgtw),
        mmx!("punpckhdq", punpckhdq),
        mmx!("pandn", pandn),
    ]
}

/// Random operand bit patterns (seeded): doubles of every exponent, and
/// so also packed integers and singles of every kind.
fn random_operands(n: usize) -> Vec<u64> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })
        .collect()
}

/// The cases: every pair of special and random operands (both orders)
/// under a rounding setting that changes with the pair.
fn cases() -> Vec<State> {
    let operands: Vec<u64> = SPECIAL.iter().copied().chain(random_operands(12)).collect();
    let mut out = Vec::new();
    for (i, &a) in operands.iter().enumerate() {
        for (j, &b) in operands.iter().enumerate() {
            let k = i * operands.len() + j;
            let mut s = State {
                regs: [0; 8],
                eflags: if k.is_multiple_of(3) { 0x1 } else { 0x40 },
                mem: [0; WINDOW_DWORDS],
            };
            s.mem[0] = a as u32;
            s.mem[1] = (a >> 32) as u32;
            s.mem[2] = b as u32;
            s.mem[3] = (b >> 32) as u32;
            s.mem[4] = CONTROL_WORDS[k % CONTROL_WORDS.len()];
            s.mem[5] = MXCSRS[k % MXCSRS.len()];
            out.push(s);
        }
    }
    out
}

const TABLE: u32 = 0x0030_0000;
const RESULTS: u32 = 0x0040_0000;
/// One result: the window, EAX, EFLAGS.
const RECORD: u32 = 4 * WINDOW_DWORDS as u32 + 8;

/// Runs `body` on every case in bt86: a guest loop copies each case's
/// window to DATA, runs the wrapped body there and stores the window,
/// EAX and EFLAGS.
fn run_in_bt86(body: Body, cases: &[State]) -> Vec<State> {
    let n = cases.len() as u32;
    let mut a = CodeAssembler::new(32).unwrap();
    let mut top = a.create_label();
    let program = (|| -> Result<(), IcedError> {
        a.mov(esp, STACK)?;
        a.mov(eax, cr4)?;
        a.or(eax, 0x600)?; // OSFXSR, OSXMMEXCPT
        a.mov(cr4, eax)?;
        a.mov(ebp, 0u32)?;
        a.set_label(&mut top)?;
        // The case: window and EFLAGS from TABLE + ebp * 36.
        a.imul_3(esi, ebp, RECORD as i32 - 4)?;
        a.add(esi, TABLE)?;
        a.mov(edi, DATA)?;
        a.mov(ecx, WINDOW_DWORDS as u32)?;
        a.cld()?;
        a.rep().movsd()?;
        a.xor(eax, eax)?;
        a.push(dword_ptr(esi))?;
        a.popfd()?;
        wrap(&mut a, DATA, body)?;
        a.pushfd()?;
        a.imul_3(edi, ebp, RECORD as i32)?;
        a.add(edi, RESULTS)?;
        a.pop(dword_ptr(edi + RECORD - 4))?;
        a.mov(dword_ptr(edi + RECORD - 8), eax)?;
        a.mov(esi, DATA)?;
        a.mov(ecx, WINDOW_DWORDS as u32)?;
        a.cld()?;
        a.rep().movsd()?;
        a.inc(ebp)?;
        a.cmp(ebp, n)?;
        a.jb(top)?;
        a.hlt()
    })();
    program.unwrap();
    let code = a.assemble(LOAD as u64).unwrap();
    let mut table = Vec::new();
    for c in cases {
        for w in c.mem {
            table.extend_from_slice(&w.to_le_bytes());
        }
        table.extend_from_slice(&(c.eflags | 2).to_le_bytes());
    }
    let r = run_image_with(
        Options {
            ram: 8 << 20,
            ..Options::default()
        },
        &code,
        LOAD,
        LOAD,
        |m| m.memory().write(TABLE, &table).unwrap(),
    );
    r.assert_halted();
    (0..n)
        .map(|i| {
            let at = RESULTS + i * RECORD;
            let mut s = State::default();
            for (k, w) in s.mem.iter_mut().enumerate() {
                *w = r.mem_u32(at + 4 * k as u32);
            }
            s.regs[0] = r.mem_u32(at + RECORD - 8);
            s.eflags = r.mem_u32(at + RECORD - 4);
            s
        })
        .collect()
}

#[test]
fn x87_mmx_and_sse_match_the_host() {
    if !native32::compat_mode_available() {
        eprintln!("skipped: no 32-bit compatibility mode on this host");
        return;
    }
    let mut native = Native32::new().unwrap();
    let cases = cases();
    let mut failures = Vec::new();
    for (name, body) in operations() {
        let got = run_in_bt86(body, &cases);
        for (case, got) in cases.iter().zip(&got) {
            let want = native
                .run_asm(0, move |a, m| wrap(a, m, body), case)
                .unwrap();
            let status = 0x8D5;
            if got.mem != want.mem
                || got.regs[0] & 0xFFFF != want.regs[0] & 0xFFFF
                || got.eflags & status != want.eflags & status
            {
                failures.push(format!(
                    "{name} a={:#x} b={:#x} cw={:#x} mxcsr={:#x}: bt86 {:x?} fsw={:#x} fl={:#x}, host {:x?} fsw={:#x} fl={:#x}",
                    (case.mem[1] as u64) << 32 | case.mem[0] as u64,
                    (case.mem[3] as u64) << 32 | case.mem[2] as u64,
                    case.mem[4],
                    case.mem[5],
                    got.mem,
                    got.regs[0] & 0xFFFF,
                    got.eflags & status,
                    want.mem,
                    want.regs[0] & 0xFFFF,
                    want.eflags & status,
                ));
            }
        }
    }
    for f in failures.iter().take(20) {
        eprintln!("{f}");
    }
    assert!(failures.is_empty(), "{} cases differ", failures.len());
}

// ---- state, system semantics, exceptions ----

use bt86_testsuite::pm::*;

/// `mov cr4, cr4 | bits` (clobbers eax).
fn set_cr4(a: &mut CodeAssembler, bits: u32) -> Result<(), IcedError> {
    a.mov(eax, cr4)?;
    a.or(eax, bits)?;
    a.mov(cr4, eax)
}

const OSFXSR: u32 = 1 << 9;
const OSXMMEXCPT: u32 = 1 << 10;

#[test]
fn the_guest_fpu_state_survives_helpers_and_exits_to_the_run_loop() {
    let r = run_asm(|a| {
        set_cr4(a, OSFXSR)?;
        a.fld1()?;
        a.fldpi()?;
        a.mov(dword_ptr(DATA), 0x4000_0000u32)?; // 2.0f
        a.movss(xmm7, dword_ptr(DATA))?;
        a.cpuid()?; // a helper call
        a.faddp(st1, st0)?;
        // A jump to a new TU: the first time, it leaves to the run loop,
        // which translates and chains the target.
        let mut next = a.create_label();
        a.jmp(next)?;
        a.set_label(&mut next)?;
        a.fstp(dword_ptr(DATA + 4))?;
        a.movss(dword_ptr(DATA + 8), xmm7)
    });
    r.assert_halted();
    assert_eq!(
        f32::from_bits(r.mem_u32(DATA + 4)),
        (1.0 + std::f64::consts::PI) as f32
    );
    assert_eq!(f32::from_bits(r.mem_u32(DATA + 8)), 2.0);
}

/// The host thread's MXCSR and x87 control word.
fn host_fpu_controls() -> (u32, u16) {
    let mut mxcsr = 0u32;
    let mut cw = 0u16;
    // SAFETY: stmxcsr and fnstcw only store to the given locations.
    unsafe {
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut mxcsr);
        std::arch::asm!("fnstcw [{}]", in(reg) &mut cw);
    }
    (mxcsr, cw)
}

#[test]
fn guest_rounding_modes_never_reach_the_host() {
    let before = host_fpu_controls();
    let r = run_asm(|a| {
        set_cr4(a, OSFXSR)?;
        a.mov(dword_ptr(DATA), 0x7FC0u32)?; // round toward zero, DAZ, FTZ
        a.ldmxcsr(dword_ptr(DATA))?;
        a.mov(word_ptr(DATA + 4), 0x0C7Fu32)?; // round toward zero, 24-bit
        a.fldcw(word_ptr(DATA + 4))?;
        a.cpuid()?;
        a.stmxcsr(dword_ptr(DATA + 8))?;
        a.fnstcw(word_ptr(DATA + 12))
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(DATA + 8), 0x7FC0, "the guest keeps its MXCSR");
    assert_eq!(
        r.mem_u32(DATA + 12) & 0xFFFF,
        0x0C7F,
        "and its control word"
    );
    assert_eq!(host_fpu_controls(), before, "the host's are untouched");
}

#[test]
fn cr0_ts_raises_nm_until_clts_the_lazy_switch_protocol() {
    // The #NM handler counts, records the EIP and clears TS; the fld1
    // then runs again.
    let nm = assemble_at(handler_addr(1), |a| {
        a.inc(dword_ptr(SEEN + 0x10))?;
        a.mov(eax, dword_ptr(esp))?;
        a.mov(dword_ptr(SEEN + 0x14), eax)?;
        a.clts()?;
        a.iretd()
    });
    let prefix = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        a.mov(eax, cr0)?;
        a.or(eax, 8)?; // TS
        a.mov(cr0, eax)
    };
    let fld_at = BODY + assemble_at(BODY, prefix).len() as u32;
    let body = assemble_at(BODY, |a| {
        prefix(a)?;
        a.fld1()?;
        a.fstp(dword_ptr(SEEN))?;
        a.hlt()
    });
    let r = run(&[(7, 1, 0x8E)], body, vec![], vec![(handler_addr(1), nm)]);
    r.assert_halted();
    assert_eq!(r.mem_u32(SEEN + 0x10), 1, "one #NM");
    assert_eq!(r.mem_u32(SEEN + 0x14), fld_at, "at the fld1");
    assert_eq!(f32::from_bits(r.mem_u32(SEEN)), 1.0);
}

#[test]
fn cr0_em_and_cr4_osfxsr_decide_nm_and_ud() {
    // (CR0 bits to set, CR4 bits to set, instruction, expected vector)
    let fld1: Body = |a, _| a.fld1();
    let xorps: Body = |a, _| a.xorps(xmm0, xmm0);
    let paddb: Body = |a, _| a.paddb(mm0, mm1);
    for (cr0_set, cr4_set, insn, name, vector) in [
        (4, OSFXSR, fld1, "fld1 with EM", vec::NM),
        (4, OSFXSR, xorps, "xorps with EM", vec::UD),
        (4, OSFXSR, paddb, "paddb with EM", vec::UD),
        (0, 0, xorps, "xorps without OSFXSR", vec::UD),
        (0, 0, paddb, "paddb without OSFXSR", u32::MAX),
        (0, OSFXSR, xorps, "xorps with OSFXSR", u32::MAX),
    ] {
        let prefix = move |a: &mut CodeAssembler| -> Result<(), IcedError> {
            a.mov(eax, cr0)?;
            a.or(eax, cr0_set)?;
            a.mov(cr0, eax)?;
            set_cr4(a, cr4_set)
        };
        let at = BODY + assemble_at(BODY, prefix).len() as u32;
        let body = assemble_at(BODY, move |a| {
            prefix(a)?;
            insn(a, 0)?;
            a.hlt()
        });
        let r = run(
            &[(vec::NM, 1, 0x8E), (vec::UD, 2, 0x8E)],
            body,
            vec![],
            vec![recorder(1, 1), recorder(2, 1)],
        );
        r.assert_halted();
        match vector {
            u32::MAX => assert_eq!(r.mem_u32(SEEN + 0x44), 0, "{name}: runs"),
            _ => {
                assert_eq!(r.mem_u32(SEEN), at, "{name}: faults at its EIP");
                let handler = if vector == vec::NM { 1 } else { 2 };
                assert_eq!(
                    r.stop,
                    Stop::Halted {
                        eip: recorder(handler, 1).0 + recorder(handler, 1).1.len() as u32
                    },
                    "{name}: vector {vector}"
                );
            }
        }
    }
}

#[test]
fn an_unmasked_x87_exception_is_mf_at_the_next_x87_instruction() {
    let mf = assemble_at(handler_addr(1), |a| {
        a.mov(eax, dword_ptr(esp))?;
        a.mov(dword_ptr(SEEN), eax)?;
        a.fnstsw(ax)?;
        a.mov(dword_ptr(SEEN + 4), eax)?;
        // The environment points at the fdivp that caused it.
        a.fnstenv(ptr(SEEN + 0x20))?;
        a.fnclex()?;
        a.hlt()
    });
    let prefix = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        a.mov(eax, cr0)?;
        a.or(eax, 0x20)?; // NE: #MF, not IRQ 13
        a.mov(cr0, eax)?;
        a.fninit()?;
        a.mov(word_ptr(SEEN + 8), 0x037Bu32)?; // ZM clear
        a.fldcw(word_ptr(SEEN + 8))?;
        a.fld1()?;
        a.fldz()?;
        a.fdivp(st1, st0) // 1/0: pending
    };
    let next = BODY + assemble_at(BODY, prefix).len() as u32;
    let fdivp_at = next - 2;
    let body = assemble_at(BODY, |a| {
        prefix(a)?;
        a.mov(ebx, 1u32)?; // not an x87 instruction: nothing yet
        a.fld1()?; // reports it
        a.hlt()
    });
    let r = run(
        &[(vec::MF, 1, 0x8E)],
        body,
        vec![],
        vec![(handler_addr(1), mf)],
    );
    r.assert_halted();
    assert_eq!(r.mem_u32(SEEN), next + 5, "#MF at the fld1 after the mov");
    let fsw = r.mem_u32(SEEN + 4) & 0xFFFF;
    assert_ne!(fsw & 0x04, 0, "ZE in {fsw:#x}");
    assert_ne!(fsw & 0x80, 0, "ES in {fsw:#x}");
    assert_eq!(r.reg(ebx), 1);
    assert_eq!(r.mem_u32(SEEN + 0x20 + 12), fdivp_at, "FIP: the fdivp");
}

#[test]
fn an_unmasked_sse_exception_is_xm_or_ud_without_osxmmexcpt() {
    for (cr4_set, vector) in [(OSFXSR | OSXMMEXCPT, vec::XM), (OSFXSR, vec::UD)] {
        let prefix = move |a: &mut CodeAssembler| -> Result<(), IcedError> {
            set_cr4(a, cr4_set)?;
            a.mov(dword_ptr(SEEN + 8), 0x1D80u32)?; // ZM clear
            a.ldmxcsr(dword_ptr(SEEN + 8))?;
            a.mov(dword_ptr(SEEN + 12), 0x3F80_0000u32)?; // 1.0f
            a.movss(xmm0, dword_ptr(SEEN + 12))?;
            a.xorps(xmm1, xmm1)
        };
        let at = BODY + assemble_at(BODY, prefix).len() as u32;
        let body = assemble_at(BODY, move |a| {
            prefix(a)?;
            a.divss(xmm0, xmm1)?;
            a.hlt()
        });
        let r = run(&[(vector, 1, 0x8E)], body, vec![], vec![recorder(1, 1)]);
        r.assert_halted();
        assert_eq!(r.mem_u32(SEEN), at, "vector {vector} at the divss");
    }
}

#[test]
fn fxsave_stores_the_guest_state_in_the_documented_layout() {
    const AREA: u32 = DATA + 0x1000; // 16-byte aligned
    let r = run_asm(|a| {
        set_cr4(a, OSFXSR)?;
        a.fninit()?;
        a.fld1()?;
        for (i, w) in [0x1111_1111u32, 0x2222_2222, 0x3333_3333, 0x4444_4444]
            .iter()
            .enumerate()
        {
            a.mov(dword_ptr(DATA + 4 * i as u32), *w)?;
        }
        a.movups(xmm3, xmmword_ptr(DATA))?;
        a.fxsave(ptr(AREA))
    });
    r.assert_halted();
    assert_eq!(r.mem_u32(AREA) & 0xFFFF, 0x037F, "FCW");
    assert_eq!((r.mem_u32(AREA) >> 16) & 0x3800, 0x3800, "FSW: TOP = 7");
    assert_eq!(
        r.mem_u8(AREA + 4),
        0x80,
        "abridged tag word: st0 (reg 7) valid"
    );
    assert_eq!(r.mem_u32(AREA + 24), 0x1F80, "MXCSR");
    assert_eq!(
        r.mem_u32(AREA + 36),
        0x8000_0000,
        "st0 = 1.0: mantissa high"
    );
    assert_eq!(r.mem_u32(AREA + 40) & 0xFFFF, 0x3FFF, "st0 exponent");
    assert_eq!(r.mem_u32(AREA + 160 + 48), 0x1111_1111, "xmm3");
    assert_eq!(r.mem_u32(AREA + 160 + 60), 0x4444_4444, "xmm3 top");
}

#[test]
fn fnstenv_and_fnsave_show_guest_instruction_and_data_pointers() {
    // The multiboot start state: CS = 0x10, DS = 0x18, flat. Each store
    // follows an x87 instruction with a memory operand.
    let prefix = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        a.fninit()?;
        a.mov(dword_ptr(DATA + 8), 0u32)?;
        a.mov(dword_ptr(DATA + 12), 0x3FF0_0000u32)?;
        a.fld1()
    };
    let first = LOAD + 5 + assemble_at(LOAD + 5, prefix).len() as u32;
    let middle = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        a.fadd(qword_ptr(DATA + 8))?;
        a.fnstenv(ptr(DATA + 0x100))
    };
    let second = first + assemble_at(first, middle).len() as u32;
    let r = run_asm(|a| {
        prefix(a)?;
        middle(a)?;
        a.fmul(qword_ptr(DATA + 16))?;
        a.fnsave(ptr(DATA + 0x200))
    });
    r.assert_halted();
    for (at, fip, fdp, name) in [
        (DATA + 0x100, first, DATA + 8, "fnstenv"),
        (DATA + 0x200, second, DATA + 16, "fnsave"),
    ] {
        assert_eq!(r.mem_u32(at + 12), fip, "{name}: FIP");
        assert_eq!(r.mem_u32(at + 16) & 0xFFFF, 0x10, "{name}: FCS");
        assert_eq!(r.mem_u32(at + 20), fdp, "{name}: FDP");
        assert_eq!(r.mem_u32(at + 24) & 0xFFFF, 0x18, "{name}: FDS");
    }
}

#[test]
fn two_tasks_share_the_fpu_through_ts_and_an_nm_handler() {
    // Task A (TSS_SEL) and task B (TSS2) switch with jmp; each switch sets
    // CR0.TS, and the #NM handler swaps their FPU states with fxsave and
    // fxrstor (the lazy protocol of 1990s kernels). A keeps 3.0 on its x87
    // stack across the switches, B keeps 2.0.
    const TSS2: u32 = 0x5000;
    const TSS2_SEL: u32 = GDT_FREE;
    const TASK_B: u32 = HANDLERS + 0x800;
    const AREA_A: u32 = 0x6000;
    const AREA_B: u32 = 0x6200;
    const OWNER: u32 = SEEN + 0x40;
    const RESULT_A: u32 = SEEN + 0x48;
    const RESULT_B: u32 = SEEN + 0x50;
    const NM_COUNT: u32 = SEEN + 0x58;
    let jmp_far = |a: &mut CodeAssembler, sel: u32| -> Result<(), IcedError> {
        a.db(&[0xEA, 0, 0, 0, 0])?;
        a.dw(&[sel as u16])
    };
    let task_a = assemble_at(BODY, |a| {
        set_descriptor(a, TSS2_SEL, segment(TSS2, 0x67, 0x89, 0))?;
        for (off, v) in [
            (0x20, TASK_B),
            (0x24, 0x2),
            (0x38, 0x5_0000),
            (0x48, KDATA),
            (0x4C, KCODE),
            (0x50, KDATA),
            (0x54, KDATA),
        ] {
            a.mov(dword_ptr(TSS2 + off), v)?;
        }
        a.fninit()?;
        a.fxsave(ptr(AREA_B))?; // B starts from a clean FPU
        a.mov(dword_ptr(OWNER), TSS_SEL)?;
        a.mov(dword_ptr(SEEN), 0x4040_0000u32)?; // 3.0f
        a.fld(dword_ptr(SEEN))?;
        jmp_far(a, TSS2_SEL)?;
        a.fld1()?; // #NM: A's state comes back
        a.faddp(st1, st0)?;
        a.fstp(dword_ptr(RESULT_A))?;
        jmp_far(a, TSS2_SEL)
    });
    let task_b = assemble_at(TASK_B, |a| {
        a.fld1()?; // #NM: B's state comes in
        a.fld1()?;
        a.faddp(st1, st0)?;
        jmp_far(a, TSS_SEL)?;
        a.fld1()?; // #NM again
        a.faddp(st1, st0)?;
        a.fstp(dword_ptr(RESULT_B))?;
        a.hlt()
    });
    let nm = assemble_at(handler_addr(1), |a| {
        let mut same = a.create_label();
        a.push(eax)?;
        a.inc(dword_ptr(NM_COUNT))?;
        a.clts()?;
        a.str(ax)?;
        a.movzx(eax, ax)?;
        a.cmp(eax, dword_ptr(OWNER))?;
        a.je(same)?;
        // Save the owner's state, load the current task's.
        a.cmp(dword_ptr(OWNER), TSS_SEL)?;
        let mut owner_b = a.create_label();
        a.jne(owner_b)?;
        a.fxsave(ptr(AREA_A))?;
        a.fxrstor(ptr(AREA_B))?;
        a.mov(dword_ptr(OWNER), TSS2_SEL)?;
        a.jmp(same)?;
        a.set_label(&mut owner_b)?;
        a.fxsave(ptr(AREA_B))?;
        a.fxrstor(ptr(AREA_A))?;
        a.mov(dword_ptr(OWNER), TSS_SEL)?;
        a.set_label(&mut same)?;
        a.pop(eax)?;
        a.iretd()
    });
    let r = run(
        &[(vec::NM, 1, 0x8E)],
        task_a,
        vec![],
        vec![(handler_addr(1), nm), (TASK_B, task_b)],
    );
    r.assert_halted();
    assert_eq!(f32::from_bits(r.mem_u32(RESULT_A)), 4.0, "task A: 3 + 1");
    assert_eq!(
        f32::from_bits(r.mem_u32(RESULT_B)),
        3.0,
        "task B: 1 + 1 + 1"
    );
    assert_eq!(r.mem_u32(NM_COUNT), 3);
}
