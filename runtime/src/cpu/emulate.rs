//! The `Emulate` helper: instructions the host cannot run for the guest.
//!
//! Generated code calls [`emulate_helper`] with the guest registers and
//! flags spilled to the CPU state. The helper either lets the TU go on
//! (`HELPER_CONTINUE`), or exits: to a new EIP, with a guest exception at
//! the instruction, or with a [`Stop`] for the run loop.

use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};
use translator::abi::{
    CodeCheck, CpuState, ExitReason, HELPER_CONTINUE, HELPER_EXIT, exc_kind, flags, vector,
};

use super::cr::{
    CR0_CD, CR0_ET, CR0_NW, CR0_PE, CR0_PG, CR0_TS, CR4_MCE, CR4_OSFXSR, CR4_OSXMMEXCPT, CR4_PAE,
    CR4_PGE, CR4_PSE, CR4_TSD,
};
use super::descriptor::{fetch_descriptor, load_segment, read_descriptor, set_tss_busy};
use super::operand::{checked_address, get_reg, read_op, segment_linear, set_reg, write_op};
use super::string::advance;
use super::transfer;
use super::{Exception, Fail, HelperKind, Stop, System, TlbFlush, bcd, cpl, cpuid};
use crate::devices::{IoAction, Port};

/// What happens after an emulated instruction.
pub(super) enum Next {
    /// Fall through to the next instruction inside the TU.
    Continue,
    /// Leave the TU and go on at this EIP.
    Jump(u32),
    /// End the run.
    Stop(Stop),
}

pub(super) type Result<T> = std::result::Result<T, Fail>;

/// # Safety
/// Called only by generated code through the helper table, with `cpu`
/// the running CPU state (its `ctx` a live [`System`] that nothing else
/// borrows during the call) and `insn` an instruction the translator keeps.
pub unsafe extern "sysv64" fn emulate_helper(cpu: *mut CpuState, insn: *const Instruction) -> u32 {
    // SAFETY: guaranteed by the caller (see above); CpuState and System are
    // separate allocations, so the two mutable borrows do not overlap.
    let (cpu, insn, sys) = unsafe { (&mut *cpu, &*insn, &mut *((*cpu).ctx as *mut System)) };
    let before = super::mode_key(cpu, false);
    let epoch = sys.mem.tlb_epoch();
    sys.mem.set_user(cpl(cpu) == 3);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| emulate(cpu, sys, insn)));
    // An instruction that changed how code must be translated (a segment
    // load, CR0) leaves the TU, whose chain must not be patched across modes.
    // So does one that wrote to translated code (the run loop drops it) or
    // that dropped guest TLB entries (the run loop drops the jump caches).
    let result = match result {
        Ok(Ok(Next::Continue))
            if super::mode_key(cpu, false) != before
                || sys.mem.code_written()
                || sys.mem.tlb_epoch() != epoch
                || sys.stop.is_some() =>
        {
            Ok(Ok(Next::Jump(insn.next_ip32())))
        }
        r => r,
    };
    match result {
        Ok(Ok(Next::Continue)) => HELPER_CONTINUE,
        Ok(Ok(Next::Jump(eip))) => {
            cpu.eip = eip;
            cpu.exit_reason = ExitReason::Helper as u32;
            HELPER_EXIT
        }
        Ok(Ok(Next::Stop(stop))) => {
            sys.stop = Some(stop);
            cpu.exit_reason = ExitReason::Helper as u32;
            HELPER_EXIT
        }
        Ok(Err(fail)) => {
            let exc = match fail {
                Fail::Exc(e) => {
                    cpu.eip = insn.ip32();
                    e
                }
                // An exception of a new task comes at its first instruction.
                Fail::Task(e) => e,
            };
            cpu.exc_insn = cpu.eip;
            cpu.exc_vector = exc.vector;
            cpu.exc_error = exc.error;
            cpu.exc_kind = exc_kind::HARDWARE;
            cpu.fault_addr = exc.addr;
            cpu.exit_reason = ExitReason::Exception as u32;
            HELPER_EXIT
        }
        Err(_) => {
            sys.stop = Some(Stop::Internal(format!(
                "panic while emulating `{insn}` at {:#010x}",
                insn.ip32()
            )));
            cpu.exit_reason = ExitReason::Helper as u32;
            HELPER_EXIT
        }
    }
}

/// Checks in a row one TU of a self-checking page passes (no code in the
/// page changed meanwhile: a change drops all its TUs) before the page
/// goes back to being write-protected. A kernel that patches its code at
/// boot (ftrace, alternatives, static keys) would otherwise pay the check
/// on every run of those pages for good.
const CALM_CHECKS: u32 = 10_000;

/// # Safety
/// Called only by generated code through the helper table, at the head of
/// a self-checking TU, with `cpu` the running CPU state (its `ctx` a live
/// [`System`]) and `check` the TU's [`CodeCheck`], which the translator
/// keeps.
pub unsafe extern "sysv64" fn check_code_helper(
    cpu: *mut CpuState,
    check: *const CodeCheck,
) -> u32 {
    // SAFETY: guaranteed by the caller (see above).
    let (cpu, check, sys) = unsafe { (&mut *cpu, &*check, &*((*cpu).ctx as *const System)) };
    // A TU's code is at most MAX_TU_BYTES long.
    let mut now = [0u8; translator::tu::MAX_TU_BYTES];
    let now = &mut now[..check.bytes.len().min(translator::tu::MAX_TU_BYTES)];
    let (first, rest) = now.split_at_mut((check.split as usize).min(now.len()));
    let read = sys.mem.read_phys(check.phys, first).is_ok()
        && (rest.is_empty() || sys.mem.read_phys(check.next_phys, rest).is_ok());
    if read && check.matches(now) {
        let passes = check.passes.get() + 1;
        check.passes.set(passes);
        if passes == CALM_CHECKS {
            sys.mem.mark_code_calm(check.phys >> 12);
        }
        return HELPER_CONTINUE;
    }
    // The code changed since it was translated: the run loop drops the
    // translations and comes back here.
    sys.mem.mark_code_written(check.phys >> 12);
    if check.split < check.bytes.len() as u32 {
        sys.mem.mark_code_written(check.next_phys >> 12);
    }
    cpu.eip = check.eip;
    cpu.exit_reason = ExitReason::Helper as u32;
    HELPER_EXIT
}

fn unsupported(insn: &Instruction, why: &str) -> Next {
    Next::Stop(Stop::Unsupported {
        eip: insn.ip32(),
        what: format!("`{insn}`: {why}"),
    })
}

fn emulate(cpu: &mut CpuState, sys: &mut System, insn: &Instruction) -> Result<Next> {
    use Mnemonic as M;
    let kind = match insn.mnemonic() {
        M::In | M::Out | M::Insb | M::Insw | M::Insd | M::Outsb | M::Outsw | M::Outsd => {
            HelperKind::Io
        }
        M::Cpuid => HelperKind::Cpuid,
        M::Rdtsc => HelperKind::Rdtsc,
        M::Daa | M::Das | M::Aaa | M::Aas | M::Aam | M::Aad | M::Salc => HelperKind::Bcd,
        M::Div | M::Idiv => HelperKind::Divide,
        _ if insn.is_string_instruction() => HelperKind::String,
        _ if super::device::is_data_mov(insn) => HelperKind::Device,
        _ => HelperKind::System,
    };
    sys.counters.helper(kind, insn);
    // Protected-mode-only instructions do not exist in real and v8086 mode.
    if super::real_addressing(cpu)
        && matches!(
            insn.mnemonic(),
            M::Ltr | M::Str | M::Lldt | M::Sldt | M::Arpl | M::Lar | M::Lsl | M::Verr | M::Verw
        )
    {
        return Err(Exception::new(vector::UD).into());
    }
    match insn.mnemonic() {
        M::In => port_in(cpu, sys, insn),
        M::Out => port_out(cpu, sys, insn),
        M::Insb | M::Insw | M::Insd | M::Outsb | M::Outsw | M::Outsd => string_io(cpu, sys, insn),
        _ if insn.is_string_instruction() => Ok(match super::string::execute(cpu, sys, insn)? {
            super::string::Progress::Done => Next::Continue,
            super::string::Progress::Interrupted => Next::Jump(insn.ip32()),
        }),
        M::Cpuid => {
            let apic = sys.apic.as_ref().is_some_and(|a| a.enabled());
            let (a, b, c, d) = cpuid::cpuid(cpu.regs[0], apic);
            cpu.regs[0] = a;
            cpu.regs[3] = b;
            cpu.regs[1] = c;
            cpu.regs[2] = d;
            Ok(Next::Continue)
        }
        M::Rdtsc => {
            if cpu.cr4 & CR4_TSD != 0 && cpl(cpu) != 0 {
                return Err(Exception::with_error(vector::GP, 0).into());
            }
            let t = sys.guest_tsc();
            cpu.regs[0] = t as u32;
            cpu.regs[2] = (t >> 32) as u32;
            Ok(Next::Continue)
        }
        M::Daa => Ok(bcd_op(cpu, bcd::daa)),
        M::Das => Ok(bcd_op(cpu, bcd::das)),
        M::Aaa => Ok(bcd_op(cpu, bcd::aaa)),
        M::Aas => Ok(bcd_op(cpu, bcd::aas)),
        M::Aam => {
            bcd::aam(cpu, insn.immediate8())?;
            Ok(Next::Continue)
        }
        M::Aad => Ok(bcd_op(cpu, |c| bcd::aad(c, insn.immediate8()))),
        M::Salc => Ok(bcd_op(cpu, bcd::salc)),
        M::Hlt => {
            require_ring0(cpu)?;
            // With interrupts off, or nothing that could raise one, nothing
            // can ever wake the CPU: the run ends. Otherwise the run loop
            // sleeps until an interrupt comes.
            if cpu.sys_flags & flags::IF == 0 || sys.irq.as_mut().is_none_or(|i| !i.may_interrupt())
            {
                return Ok(Next::Stop(Stop::Halted {
                    eip: insn.next_ip32(),
                }));
            }
            sys.halted = true;
            Ok(Next::Jump(insn.next_ip32()))
        }
        M::Cli | M::Sti => {
            let iopl = (cpu.sys_flags & flags::IOPL) >> 12;
            if cpl(cpu) > iopl {
                return Err(Exception::with_error(vector::GP, 0).into());
            }
            if insn.mnemonic() == M::Cli {
                cpu.sys_flags &= !flags::IF;
            } else if cpu.sys_flags & flags::IF == 0 {
                // Only sti that turns IF on holds interrupts off.
                cpu.sys_flags |= flags::IF;
                set_shadow(cpu, insn);
            }
            Ok(Next::Continue)
        }
        M::Popf | M::Popfd => popf(cpu, sys, insn),
        M::Pushf | M::Pushfd => pushf(cpu, sys, insn),
        _ if super::device::is_data_mov(insn) => super::device::data_mov(cpu, sys, insn),
        M::Mov => mov_special(cpu, sys, insn),
        M::Clts => {
            require_ring0(cpu)?;
            cpu.cr0 &= !CR0_TS;
            Ok(Next::Continue)
        }
        M::Invd | M::Wbinvd => {
            // No caches to flush.
            require_ring0(cpu)?;
            Ok(Next::Continue)
        }
        M::Invlpg => {
            require_ring0(cpu)?;
            let lin = checked_address(cpu, insn, 1)?;
            if cpu.cr0 & CR0_PG != 0 {
                sys.mem.invalidate_page(lin);
            }
            Ok(Next::Continue)
        }
        M::Lmsw => {
            require_ring0(cpu)?;
            let v = read_op(cpu, sys, insn, 0, 2)?;
            // lmsw can set PE but never clear it.
            let new = (cpu.cr0 & !0xE) | (v & 0xF) | (cpu.cr0 & 1);
            set_cr0(cpu, sys, new)
        }
        M::Smsw => {
            let size = store16_size(insn);
            write_op(cpu, sys, insn, 0, size, cpu.cr0)?;
            Ok(Next::Continue)
        }
        M::Lgdt | M::Lidt => {
            require_ring0(cpu)?;
            let ea = checked_address(cpu, insn, 6)?;
            let limit = sys.mem.read_u16(ea)?;
            let mut base = sys.mem.read_u32(ea.wrapping_add(2))?;
            if insn.code() == Code::Lgdt_m1632_16 || insn.code() == Code::Lidt_m1632_16 {
                base &= 0x00FF_FFFF;
            }
            let t = super::TableReg { base, limit };
            if insn.mnemonic() == M::Lgdt {
                sys.gdtr = t;
                cpu.forget_descriptors();
            } else {
                sys.idtr = t;
            }
            Ok(Next::Continue)
        }
        M::Sgdt | M::Sidt => {
            let t = if insn.mnemonic() == M::Sgdt {
                sys.gdtr
            } else {
                sys.idtr
            };
            let ea = checked_address(cpu, insn, 6)?;
            sys.mem.write_u16(ea, t.limit)?;
            sys.mem.write_u32(ea.wrapping_add(2), t.base)?;
            Ok(Next::Continue)
        }
        M::Rdmsr => {
            require_ring0(cpu)?;
            let v = read_msr(sys, cpu.regs[1])?;
            cpu.regs[0] = v as u32;
            cpu.regs[2] = (v >> 32) as u32;
            Ok(Next::Continue)
        }
        M::Wrmsr => {
            require_ring0(cpu)?;
            let v = ((cpu.regs[2] as u64) << 32) | cpu.regs[0] as u64;
            write_msr(cpu, sys, cpu.regs[1], v)?;
            Ok(Next::Continue)
        }
        M::Bound => {
            let idx = get_reg(cpu, insn.op0_register()) as i32;
            let ea = checked_address(cpu, insn, 2 * insn.op0_register().size() as u32)?;
            let (lo, hi) = if insn.op0_register().size() == 2 {
                (
                    sys.mem.read_u16(ea)? as i16 as i32,
                    sys.mem.read_u16(ea.wrapping_add(2))? as i16 as i32,
                )
            } else {
                (
                    sys.mem.read_u32(ea)? as i32,
                    sys.mem.read_u32(ea.wrapping_add(4))? as i32,
                )
            };
            let idx = if insn.op0_register().size() == 2 {
                idx as i16 as i32
            } else {
                idx
            };
            if idx < lo || idx > hi {
                return Err(Exception::new(vector::BR).into());
            }
            Ok(Next::Continue)
        }
        M::Arpl => {
            let dst = read_op(cpu, sys, insn, 0, 2)?;
            let src = get_reg(cpu, insn.op1_register());
            if dst & 3 < src & 3 {
                write_op(cpu, sys, insn, 0, 2, (dst & !3) | (src & 3))?;
                cpu.arith_flags |= flags::ZF;
            } else {
                cpu.arith_flags &= !flags::ZF;
            }
            Ok(Next::Continue)
        }
        M::Pop => pop_sreg(cpu, sys, insn),
        M::Lds | M::Les | M::Lfs | M::Lgs | M::Lss => load_far_pointer(cpu, sys, insn),
        M::Jmp | M::Call => transfer::far_transfer(cpu, sys, insn),
        M::Iret | M::Iretd => transfer::iret(cpu, sys, insn),
        M::Sysenter => sysenter(cpu, sys),
        M::Sysexit => sysexit(cpu, sys),
        M::Ltr => load_task_register(cpu, sys, insn),
        M::Str => {
            let size = store16_size(insn);
            write_op(cpu, sys, insn, 0, size, sys.tr as u32)?;
            Ok(Next::Continue)
        }
        M::Sldt => {
            let size = store16_size(insn);
            write_op(cpu, sys, insn, 0, size, sys.ldtr as u32)?;
            Ok(Next::Continue)
        }
        M::Lldt => load_ldt(cpu, sys, insn),
        // Ran natively just before this call: make the stored FPU
        // pointers the guest's.
        M::Fnstenv | M::Fstenv | M::Fnsave | M::Fsave | M::Fxsave => {
            super::fpu::guest_pointers(cpu, sys, insn)?;
            Ok(Next::Continue)
        }
        M::Lar | M::Lsl | M::Verr | M::Verw => {
            descriptor_query(cpu, sys, insn)?;
            Ok(Next::Continue)
        }
        // Not in system-management mode: rsm is #UD.
        M::Rsm => Err(Exception::new(vector::UD).into()),
        M::Retf => transfer::far_return(cpu, sys, insn),
        M::Enter => enter_nested(cpu, sys, insn),
        M::Div | M::Idiv => divide(cpu, sys, insn),
        _ => Ok(unsupported(
            insn,
            "not implemented yet (the system CPU comes with a later version)",
        )),
    }
}

/// sti, mov ss and pop ss hold off external interrupts (and single-step
/// traps) until the next instruction has run.
fn set_shadow(cpu: &mut CpuState, insn: &Instruction) {
    cpu.shadow = 1;
    cpu.shadow_eip = insn.next_ip32();
}

fn bcd_op(cpu: &mut CpuState, f: impl FnOnce(&mut CpuState)) -> Next {
    f(cpu);
    Next::Continue
}

fn require_ring0(cpu: &CpuState) -> Result<()> {
    if cpl(cpu) != 0 {
        return Err(Exception::with_error(vector::GP, 0).into());
    }
    Ok(())
}

fn set_cr0(cpu: &mut CpuState, sys: &mut System, v: u32) -> Result<Next> {
    // Paging needs protected mode; CD=0 with NW=1 is invalid.
    if (v & CR0_PG != 0 && v & CR0_PE == 0) || v & (CR0_CD | CR0_NW) == CR0_NW {
        return Err(Exception::with_error(vector::GP, 0).into());
    }
    // ET is hardwired to 1 on a P6.
    cpu.cr0 = v | CR0_ET;
    super::sync_paging(cpu, sys, TlbFlush::None);
    Ok(Next::Continue)
}

fn mov_special(cpu: &mut CpuState, sys: &mut System, insn: &Instruction) -> Result<Next> {
    let (dst, src) = (insn.op0_kind(), insn.op1_kind());
    if dst == OpKind::Register && insn.op0_register().is_cr() {
        require_ring0(cpu)?;
        let v = get_reg(cpu, insn.op1_register());
        return match insn.op0_register() {
            Register::CR0 => set_cr0(cpu, sys, v),
            Register::CR2 => {
                cpu.cr2 = v;
                Ok(Next::Continue)
            }
            Register::CR3 => {
                cpu.cr3 = v;
                super::sync_paging(cpu, sys, TlbFlush::NonGlobal);
                Ok(Next::Continue)
            }
            Register::CR4 => {
                // A P6 has VME PVI TSD DE PSE PAE MCE PGE PCE, and with
                // SSE OSFXSR and OSXMMEXCPT. Only what CPUID reports can
                // be set: the others, like reserved bits, fault. MCE has
                // nothing to enable: there are no error banks.
                const CR4_KNOWN: u32 =
                    CR4_TSD | CR4_PSE | CR4_PAE | CR4_MCE | CR4_PGE | CR4_OSFXSR | CR4_OSXMMEXCPT;
                if v & !CR4_KNOWN != 0 {
                    return Err(Exception::with_error(vector::GP, 0).into());
                }
                cpu.cr4 = v;
                super::sync_paging(cpu, sys, TlbFlush::None);
                Ok(Next::Continue)
            }
            _ => Err(Exception::new(vector::UD).into()),
        };
    }
    if src == OpKind::Register && insn.op1_register().is_cr() {
        require_ring0(cpu)?;
        let v = match insn.op1_register() {
            Register::CR0 => cpu.cr0,
            Register::CR2 => cpu.cr2,
            Register::CR3 => cpu.cr3,
            Register::CR4 => cpu.cr4,
            _ => return Err(Exception::new(vector::UD).into()),
        };
        set_reg(cpu, insn.op0_register(), v);
        return Ok(Next::Continue);
    }
    if dst == OpKind::Register && insn.op0_register().is_dr() {
        require_ring0(cpu)?;
        let n = insn.op0_register().number() - Register::DR0.number();
        let v = get_reg(cpu, insn.op1_register());
        if n < 8 {
            sys.dr[n] = v;
        }
        return Ok(Next::Continue);
    }
    if src == OpKind::Register && insn.op1_register().is_dr() {
        require_ring0(cpu)?;
        let n = insn.op1_register().number() - Register::DR0.number();
        let v = sys.dr.get(n).copied().unwrap_or(0);
        set_reg(cpu, insn.op0_register(), v);
        return Ok(Next::Continue);
    }
    if dst == OpKind::Register && insn.op0_register().is_segment_register() {
        let sel = read_op(cpu, sys, insn, 1, 2)?;
        load_sreg(cpu, sys, insn.op0_register(), sel as u16)?;
        if insn.op0_register() == Register::SS {
            set_shadow(cpu, insn);
        }
        return Ok(Next::Continue);
    }
    if src == OpKind::Register && insn.op1_register().is_segment_register() {
        let sel = cpu.sregs[sreg_index(insn.op1_register())];
        let size = store16_size(insn);
        write_op(cpu, sys, insn, 0, size, sel & 0xFFFF)?;
        return Ok(Next::Continue);
    }
    // Test registers (TR3-TR7) are gone since the Pentium: #UD on a P6.
    Err(Exception::new(vector::UD).into())
}

/// The size smsw, str, sldt and mov from a segment register store: a
/// register's (zero-extended), or 16 bits to memory.
fn store16_size(insn: &Instruction) -> u32 {
    if insn.op0_kind() == OpKind::Register {
        insn.op0_register().size() as u32
    } else {
        2
    }
}

fn sreg_index(r: Register) -> usize {
    r.number() - Register::ES.number()
}

/// Loads a data or stack segment register (mov, pop, lds...), with the
/// protection checks of protected mode.
pub(super) fn load_sreg(
    cpu: &mut CpuState,
    sys: &System,
    r: Register,
    sel: u16,
) -> std::result::Result<(), Exception> {
    if r == Register::CS {
        return Err(Exception::new(vector::UD));
    }
    let i = sreg_index(r);
    if super::v86(cpu) {
        cpu.set_segment_db(i, sel, (sel as u32) << 4, 0xFFFF, false);
        return Ok(());
    }
    if cpu.cr0 & CR0_PE == 0 {
        // Real mode: the base is the selector's paragraph; limit and D/B stay.
        let (limit, db) = (cpu.seg_limit[i], cpu.seg_db[i]);
        cpu.set_segment_db(i, sel, (sel as u32) << 4, limit, db);
        return Ok(());
    }
    if sel & !3 == 0 {
        if r == Register::SS {
            return Err(Exception::with_error(vector::GP, 0));
        }
        // A null selector: accesses through it are not checked yet, so it
        // keeps a flat base and limit.
        cpu.set_segment(i, sel, 0, u32::MAX);
        return Ok(());
    }
    let gp = Exception::with_error(vector::GP, (sel & !3) as u32);
    let d = fetch_descriptor(sys, sel)?;
    let (rpl, cpl) = ((sel & 3) as u32, cpl(cpu));
    if d.system_type().is_some() {
        return Err(gp);
    }
    if r == Register::SS {
        if rpl != cpl || !d.writable_data() || d.dpl() != cpl {
            return Err(gp);
        }
    } else {
        let readable_code = d.code() && d.access & 0x02 != 0;
        if d.code() && !readable_code {
            return Err(gp);
        }
        if !d.conforming() && (d.dpl() < cpl || d.dpl() < rpl) {
            return Err(gp);
        }
    }
    if !d.present() {
        let v = if r == Register::SS {
            vector::SS
        } else {
            vector::NP
        };
        return Err(Exception::with_error(v, (sel & !3) as u32));
    }
    load_segment(cpu, sys, i, sel, &d)?;
    if sel & 4 == 0 && r != Register::SS {
        // For generated code's reload of the same selector (see
        // `CpuState::desc_sel`).
        let lin = super::descriptor::descriptor_linear(sys, sel);
        cpu.remember_descriptor(i, sel, lin, d.raw | 1 << 40);
    }
    Ok(())
}

/// The linear address of `size` bytes at stack offset `offset` (SP wraps
/// at 64 KiB with a 16-bit stack); #SS(0) outside the stack segment.
fn stack_linear(cpu: &CpuState, offset: u32, size: u32) -> Result<u32> {
    let offset = if cpu.seg_db[super::SREG_SS] {
        offset
    } else {
        offset & 0xFFFF
    };
    Ok(segment_linear(cpu, super::SREG_SS, offset, size)?)
}

/// `esp + delta` as the new stack pointer: only SP changes with a 16-bit stack.
pub(super) fn sp_add(cpu: &CpuState, esp: u32, delta: u32) -> u32 {
    if cpu.seg_db[super::SREG_SS] {
        esp.wrapping_add(delta)
    } else {
        (esp & 0xFFFF_0000) | (esp.wrapping_add(delta) & 0xFFFF)
    }
}

/// Reads `size` bytes at ss:`offset`.
#[inline]
pub(super) fn stack_read(cpu: &CpuState, sys: &System, offset: u32, size: u32) -> Result<u32> {
    Ok(sys.mem.read_sized(stack_linear(cpu, offset, size)?, size)?)
}

/// Writes `size` bytes at ss:`offset`.
pub(super) fn stack_write(
    cpu: &CpuState,
    sys: &System,
    offset: u32,
    size: u32,
    v: u32,
) -> Result<()> {
    Ok(sys
        .mem
        .write_sized(stack_linear(cpu, offset, size)?, size, v)?)
}

fn pop_sreg(cpu: &mut CpuState, sys: &mut System, insn: &Instruction) -> Result<Next> {
    let size = insn.stack_pointer_increment() as u32;
    let esp = cpu.regs[4];
    let sel = stack_read(cpu, sys, esp, 2)? as u16;
    load_sreg(cpu, sys, insn.op0_register(), sel)?;
    cpu.regs[4] = sp_add(cpu, esp, size);
    if insn.op0_register() == Register::SS {
        set_shadow(cpu, insn);
    }
    Ok(Next::Continue)
}

fn load_far_pointer(cpu: &mut CpuState, sys: &mut System, insn: &Instruction) -> Result<Next> {
    let size = insn.op0_register().size() as u32;
    let ea = checked_address(cpu, insn, size + 2)?;
    let offset = sys.mem.read_sized(ea, size)?;
    let sel = sys.mem.read_u16(ea.wrapping_add(size))?;
    let sreg = match insn.mnemonic() {
        Mnemonic::Lds => Register::DS,
        Mnemonic::Les => Register::ES,
        Mnemonic::Lfs => Register::FS,
        Mnemonic::Lgs => Register::GS,
        _ => Register::SS,
    };
    load_sreg(cpu, sys, sreg, sel)?;
    set_reg(cpu, insn.op0_register(), offset);
    Ok(Next::Continue)
}

/// sysenter (Intel SDM Vol. 2B): to ring 0 at SYSENTER_CS:SYSENTER_EIP,
/// flat segments implied.
fn sysenter(cpu: &mut CpuState, sys: &mut System) -> Result<Next> {
    if cpu.cr0 & CR0_PE == 0 || sys.sysenter_cs & 0xFFFC == 0 {
        return Err(Exception::with_error(vector::GP, 0).into());
    }
    let ef = cpu.eflags() & !(flags::VM | flags::IF | flags::RF);
    cpu.set_eflags(ef);
    let cs = sys.sysenter_cs & 0xFFFC;
    cpu.set_segment_db(super::SREG_CS, cs as u16, 0, u32::MAX, true);
    cpu.set_segment_db(super::SREG_SS, (cs + 8) as u16, 0, u32::MAX, true);
    cpu.regs[4] = sys.sysenter_esp;
    Ok(Next::Jump(sys.sysenter_eip))
}

/// sysexit: back to ring 3 at EDX with ESP = ECX.
fn sysexit(cpu: &mut CpuState, sys: &mut System) -> Result<Next> {
    if cpu.cr0 & CR0_PE == 0 || sys.sysenter_cs & 0xFFFC == 0 || cpl(cpu) != 0 {
        return Err(Exception::with_error(vector::GP, 0).into());
    }
    let cs = sys.sysenter_cs & 0xFFFC;
    cpu.set_segment_db(super::SREG_CS, ((cs + 16) | 3) as u16, 0, u32::MAX, true);
    cpu.set_segment_db(super::SREG_SS, ((cs + 24) | 3) as u16, 0, u32::MAX, true);
    cpu.regs[4] = cpu.regs[1];
    Ok(Next::Jump(cpu.regs[2]))
}

/// lar, lsl, verr, verw (Intel SDM Vol. 2A/2B): ZF says whether the
/// selector names a descriptor of a kind the instruction accepts, visible
/// at the current privilege level; lar and lsl then load its access
/// rights or its limit. No exception for a bad selector.
fn descriptor_query(cpu: &mut CpuState, sys: &System, insn: &Instruction) -> Result<()> {
    use Mnemonic as M;
    let src = if insn.mnemonic() == M::Lar || insn.mnemonic() == M::Lsl {
        1
    } else {
        0
    };
    let sel = read_op(cpu, sys, insn, src, 2)? as u16;
    let d = if sel & !3 == 0 {
        None
    } else {
        match fetch_descriptor(sys, sel) {
            Ok(d) => Some(d),
            Err(e) if e.vector == vector::GP => None,
            Err(e) => return Err(e.into()),
        }
    };
    let cpl = cpl(cpu);
    let visible = |d: &super::descriptor::Descriptor| {
        d.conforming() || (d.dpl() >= cpl && d.dpl() >= (sel & 3) as u32)
    };
    let answer = d.filter(|d| match insn.mnemonic() {
        // Every segment, and the system descriptors but interrupt/trap gates.
        M::Lar => match d.system_type() {
            None => visible(d),
            Some(t) => matches!(t, 1..=5 | 9 | 11 | 12) && visible(d),
        },
        // Segments and descriptors with a limit: TSSes and LDTs.
        M::Lsl => match d.system_type() {
            None => visible(d),
            Some(t) => matches!(t, 1..=3 | 9 | 11) && visible(d),
        },
        // A readable segment (conforming code needs no privilege).
        M::Verr => d.system_type().is_none() && (!d.code() || d.access & 0x02 != 0) && visible(d),
        // A writable data segment.
        _ => d.system_type().is_none() && !d.code() && d.access & 0x02 != 0 && visible(d),
    });
    let Some(d) = answer else {
        cpu.arith_flags &= !flags::ZF;
        return Ok(());
    };
    cpu.arith_flags |= flags::ZF;
    match insn.mnemonic() {
        M::Lar => {
            let rights = (d.raw >> 32) as u32 & 0x00F0_FF00;
            set_reg(cpu, insn.op0_register(), rights);
        }
        M::Lsl => set_reg(cpu, insn.op0_register(), d.limit),
        _ => {}
    }
    Ok(())
}

/// lldt: a null selector leaves no LDT; otherwise the GDT descriptor must
/// be an LDT (system type 2).
fn load_ldt(cpu: &mut CpuState, sys: &mut System, insn: &Instruction) -> Result<Next> {
    require_ring0(cpu)?;
    let sel = read_op(cpu, sys, insn, 0, 2)? as u16;
    if sel & !3 == 0 {
        (sys.ldtr, sys.ldt_base, sys.ldt_limit) = (0, 0, 0);
        return Ok(Next::Continue);
    }
    let gp = Exception::with_error(vector::GP, (sel & !3) as u32);
    if sel & 4 != 0 {
        return Err(gp.into());
    }
    let d = read_descriptor(sys, sel)?;
    if d.system_type() != Some(2) {
        return Err(gp.into());
    }
    (sys.ldtr, sys.ldt_base, sys.ldt_limit) = (sel, d.base, d.limit);
    Ok(Next::Continue)
}

/// ltr: load the task register from an available 32-bit TSS descriptor
/// and mark it busy.
fn load_task_register(cpu: &mut CpuState, sys: &mut System, insn: &Instruction) -> Result<Next> {
    require_ring0(cpu)?;
    let sel = read_op(cpu, sys, insn, 0, 2)? as u16;
    let gp = Exception::with_error(vector::GP, (sel & !3) as u32);
    if sel & !3 == 0 || sel & 4 != 0 {
        return Err(gp.into());
    }
    let d = read_descriptor(sys, sel)?;
    // An available 32-bit or 16-bit TSS.
    if !matches!(d.system_type(), Some(1 | 9)) {
        return Err(gp.into());
    }
    set_tss_busy(sys, sel, true)?;
    sys.tr = sel;
    sys.tss_base = d.base;
    sys.tss_limit = d.limit;
    sys.tss32 = d.system32();
    Ok(Next::Continue)
}

/// The EFLAGS bits popf/iret of `size` bytes may change at the current
/// privilege level (Intel SDM Vol. 2B POPF): IOPL only at CPL 0, IF only
/// at CPL <= IOPL, never the `excluded` ones.
pub(super) fn writable_flags(cpu: &CpuState, size: u32, excluded: u32) -> u32 {
    let iopl = (cpu.eflags() & flags::IOPL) >> 12;
    let mut writable = flags::WRITABLE & !excluded;
    if cpl(cpu) > 0 {
        writable &= !flags::IOPL;
    }
    if cpl(cpu) > iopl {
        writable &= !flags::IF;
    }
    if size == 2 {
        writable &= 0xFFFF;
    }
    writable
}

/// In v8086 mode pushf, popf, iret and int n need IOPL 3 (Intel SDM
/// Vol. 3A, 20.2.7); #GP(0) sends them to the monitor otherwise.
fn v86_iopl_check(cpu: &CpuState) -> Result<()> {
    if super::v86(cpu) && cpu.sys_flags & flags::IOPL != flags::IOPL {
        return Err(Exception::with_error(vector::GP, 0).into());
    }
    Ok(())
}

/// pushf in v8086 mode (elsewhere it is translated): VM and RF read as 0.
fn pushf(cpu: &mut CpuState, sys: &mut System, insn: &Instruction) -> Result<Next> {
    v86_iopl_check(cpu)?;
    let size = (-insn.stack_pointer_increment()) as u32;
    let image = cpu.eflags() & !(flags::VM | flags::RF);
    let esp = cpu.regs[4];
    stack_write(cpu, sys, esp.wrapping_sub(size), size, image)?;
    cpu.regs[4] = sp_add(cpu, esp, size.wrapping_neg());
    Ok(Next::Continue)
}

/// popf outside ring 0 (IOPL rules, Intel SDM Vol. 2B POPF).
fn popf(cpu: &mut CpuState, sys: &mut System, insn: &Instruction) -> Result<Next> {
    v86_iopl_check(cpu)?;
    let size = insn.stack_pointer_increment() as u32;
    let esp = cpu.regs[4];
    let v = stack_read(cpu, sys, esp, size)?;
    let old = cpu.eflags();
    let writable = writable_flags(cpu, size, flags::VM | flags::RF | flags::VIF | flags::VIP);
    let mut ef = (old & !writable) | (v & writable);
    if size == 4 {
        ef &= !flags::RF;
    }
    cpu.set_eflags(ef);
    cpu.regs[4] = sp_add(cpu, esp, size);
    Ok(Next::Jump(insn.next_ip32()))
}

/// div and idiv of 8, 16 or 32 bits (Intel SDM Vol. 2A DIV, IDIV), for
/// divides that raised #DE before (see `Translator::emulate_div`). The
/// flags are undefined and left alone.
fn divide(cpu: &mut CpuState, sys: &mut System, insn: &Instruction) -> Result<Next> {
    let size = if insn.op0_kind() == OpKind::Register {
        insn.op0_register().size() as u32
    } else {
        insn.memory_size().size() as u32
    };
    let de = || Fail::from(Exception::new(vector::DE));
    let divisor = read_op(cpu, sys, insn, 0, size)?;
    if divisor == 0 {
        return Err(de());
    }
    let bits = size * 8;
    let (eax, edx) = (cpu.regs[0], cpu.regs[2]);
    let dividend: u64 = match size {
        1 => (eax & 0xFFFF) as u64,
        2 => (((edx & 0xFFFF) << 16) | (eax & 0xFFFF)) as u64,
        _ => ((edx as u64) << 32) | eax as u64,
    };
    let (q, r) = if insn.mnemonic() == Mnemonic::Idiv {
        let sext = |v: u64, b: u32| ((v << (64 - b)) as i64) >> (64 - b);
        let (n, d) = (
            sext(dividend, 2 * bits) as i128,
            sext(divisor as u64, bits) as i128,
        );
        let (q, r) = (n / d, n % d);
        let (min, max) = (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1);
        if q < min || q > max {
            return Err(de());
        }
        (q as u64, r as u64)
    } else {
        let (q, r) = (dividend / divisor as u64, dividend % divisor as u64);
        if q >> bits != 0 {
            return Err(de());
        }
        (q, r)
    };
    let mask = if bits == 32 {
        u32::MAX
    } else {
        (1 << bits) - 1
    };
    match size {
        1 => set_reg(
            cpu,
            Register::AX,
            ((r as u32 & 0xFF) << 8) | (q as u32 & 0xFF),
        ),
        _ => {
            let (qr, rr) = if size == 2 {
                (Register::AX, Register::DX)
            } else {
                (Register::EAX, Register::EDX)
            };
            set_reg(cpu, qr, q as u32 & mask);
            set_reg(cpu, rr, r as u32 & mask);
        }
    }
    Ok(Next::Continue)
}

/// enter with a nesting level above 0 (Intel SDM Vol. 2A ENTER).
fn enter_nested(cpu: &mut CpuState, sys: &mut System, insn: &Instruction) -> Result<Next> {
    let size: u32 = if insn.code() == Code::Enterw_imm16_imm8 {
        2
    } else {
        4
    };
    let frame = insn.immediate16() as u32;
    let level = (insn.immediate8_2nd() & 31) as u32;
    let down = size.wrapping_neg();
    let mut esp = cpu.regs[4];
    let mut ebp = cpu.regs[5];
    // Check every access first so a fault leaves the registers alone.
    let total = size * (level + 1);
    for a in [esp.wrapping_sub(size), esp.wrapping_sub(total)] {
        stack_read(cpu, sys, a, size)?;
    }
    esp = sp_add(cpu, esp, down);
    stack_write(cpu, sys, esp, size, ebp)?;
    // With a 16-bit stack the frame pointer is SP, and only SP moves.
    let frame_ptr = if cpu.seg_db[super::SREG_SS] {
        esp
    } else {
        esp & 0xFFFF
    };
    for _ in 1..level {
        ebp = ebp.wrapping_sub(size);
        let v = stack_read(cpu, sys, ebp, size)?;
        esp = sp_add(cpu, esp, down);
        stack_write(cpu, sys, esp, size, v)?;
    }
    if level > 0 {
        esp = sp_add(cpu, esp, down);
        stack_write(cpu, sys, esp, size, frame_ptr)?;
    }
    if size == 2 {
        set_reg(cpu, Register::BP, frame_ptr);
    } else {
        cpu.regs[5] = frame_ptr;
    }
    cpu.regs[4] = sp_add(cpu, esp, frame.wrapping_neg());
    Ok(Next::Continue)
}

const MSR_TSC: u32 = 0x10;
const MSR_BIOS_SIGN_ID: u32 = 0x8B;
/// Machine-check architecture with no error-reporting banks: nothing can
/// be reported, and there is nothing to control.
const MSR_MCG_CAP: u32 = 0x179;
const MSR_MCG_STATUS: u32 = 0x17A;
const MSR_MISC_ENABLE: u32 = 0x1A0;
use crate::devices::apic::MSR_APIC_BASE;
const MSR_SYSENTER_CS: u32 = 0x174;
const MSR_SYSENTER_ESP: u32 = 0x175;
const MSR_SYSENTER_EIP: u32 = 0x176;
const MSR_EFER: u32 = 0xC000_0080;
const EFER_NXE_BIT: u32 = 11;

fn read_msr(sys: &System, msr: u32) -> Result<u64> {
    Ok(match msr {
        MSR_TSC => sys.guest_tsc(),
        MSR_BIOS_SIGN_ID | MSR_MCG_CAP | MSR_MCG_STATUS => 0,
        MSR_MISC_ENABLE => sys.misc_enable,
        MSR_APIC_BASE if let Some(a) = &sys.apic => a.base_msr(),
        MSR_SYSENTER_CS => sys.sysenter_cs as u64,
        MSR_SYSENTER_ESP => sys.sysenter_esp as u64,
        MSR_SYSENTER_EIP => sys.sysenter_eip as u64,
        MSR_EFER => (sys.nxe as u64) << EFER_NXE_BIT,
        _ => return Err(Exception::with_error(vector::GP, 0).into()),
    })
}

fn write_msr(cpu: &CpuState, sys: &mut System, msr: u32, v: u64) -> Result<()> {
    match msr {
        // Only NXE: there is no long mode and no syscall.
        MSR_EFER if v & !(1 << EFER_NXE_BIT) == 0 => {
            sys.nxe = v != 0;
            super::sync_paging(cpu, sys, TlbFlush::None);
        }
        MSR_TSC => sys.set_guest_tsc(v),
        // The microcode update signature: a write clears it, there is no
        // microcode (revision 0).
        MSR_BIOS_SIGN_ID => {}
        MSR_MCG_STATUS if v == 0 => {}
        // Its bits select processor features this CPU has or not
        // regardless; they read back as written.
        MSR_MISC_ENABLE => sys.misc_enable = v,
        MSR_APIC_BASE if let Some(a) = &sys.apic => {
            if a.set_base_msr(v).is_err() {
                return Err(Exception::with_error(vector::GP, 0).into());
            }
        }
        MSR_SYSENTER_CS => sys.sysenter_cs = v as u32,
        MSR_SYSENTER_ESP => sys.sysenter_esp = v as u32,
        MSR_SYSENTER_EIP => sys.sysenter_eip = v as u32,
        _ => return Err(Exception::with_error(vector::GP, 0).into()),
    }
    Ok(())
}

fn io_size(insn: &Instruction) -> u8 {
    use Mnemonic as M;
    match insn.mnemonic() {
        M::Insb | M::Outsb => 1,
        M::Insw | M::Outsw => 2,
        M::Insd | M::Outsd => 4,
        M::In => insn.op0_register().size() as u8,
        _ => insn.op1_register().size() as u8,
    }
}

/// I/O permission (Intel SDM Vol. 1, 19.5): at CPL <= IOPL any port
/// (not in v8086 mode, where IOPL does not count); otherwise every bit
/// for the accessed ports in the TSS I/O bitmap must be clear, and a
/// bitmap beyond the TSS limit (or a 16-bit TSS, which has none) denies
/// access.
fn check_io(cpu: &CpuState, sys: &System, port: Port, size: u8) -> Result<()> {
    let iopl = (cpu.sys_flags & flags::IOPL) >> 12;
    if cpl(cpu) <= iopl && !super::v86(cpu) {
        return Ok(());
    }
    let gp = || Fail::from(Exception::with_error(vector::GP, 0));
    const IOMAP_BASE: u32 = 0x66;
    if sys.tr & !3 == 0 || !sys.tss32 || IOMAP_BASE + 1 > sys.tss_limit {
        return Err(gp());
    }
    let tss = |off: u32| {
        sys.mem
            .supervisor(|m| m.read_u16(sys.tss_base.wrapping_add(off)))
    };
    let map = tss(IOMAP_BASE)? as u32;
    let first = port.0 as u32;
    let last = first + size as u32 - 1;
    // The bits may straddle a byte: read the two bytes that hold them.
    let at = map + first / 8;
    if at + 1 > sys.tss_limit {
        return Err(gp());
    }
    let bits = tss(at)? as u32;
    let mask = ((1u32 << (last - first + 1)) - 1) << (first % 8);
    if bits & mask != 0 {
        return Err(gp());
    }
    Ok(())
}

fn io_port(cpu: &CpuState, insn: &Instruction, op: u32) -> Port {
    if insn.op_kind(op) == OpKind::Register {
        Port(cpu.regs[2] as u16)
    } else {
        Port(insn.immediate8() as u16)
    }
}

fn port_in(cpu: &mut CpuState, sys: &mut System, insn: &Instruction) -> Result<Next> {
    let port = io_port(cpu, insn, 1);
    check_io(cpu, sys, port, io_size(insn))?;
    let v = sys.bus.read(port, io_size(insn));
    sys.counters.port_reads += 1;
    set_reg(cpu, insn.op0_register(), v);
    Ok(Next::Continue)
}

fn port_out(cpu: &mut CpuState, sys: &mut System, insn: &Instruction) -> Result<Next> {
    let port = io_port(cpu, insn, 0);
    check_io(cpu, sys, port, io_size(insn))?;
    let v = get_reg(cpu, insn.op1_register());
    sys.counters.port_writes += 1;
    let action = sys.bus.write(port, io_size(insn), v);
    io_action(sys, action)
}

fn io_action(sys: &mut System, a: IoAction) -> Result<Next> {
    Ok(match a {
        IoAction::None => Next::Continue,
        IoAction::Exit(status) => Next::Stop(Stop::DebugExit(status)),
        IoAction::Reset => Next::Stop(Stop::Reset),
        IoAction::A20(on) => {
            sys.a20_gates.0 = on;
            set_a20(sys)
        }
        IoAction::FastA20(on) => {
            sys.a20_gates.1 = on;
            set_a20(sys)
        }
    })
}

/// The A20 line follows its two gates. A change reports every page of
/// translated code as written, which ends the TU.
fn set_a20(sys: &mut System) -> Next {
    let (kbc, fast) = sys.a20_gates;
    match sys.mem.set_a20(kbc || fast) {
        Ok(()) => Next::Continue,
        Err(e) => Next::Stop(Stop::Internal(format!("switching A20: {e}"))),
    }
}

/// ins/outs with and without rep; 32-bit or 16-bit addressing.
fn string_io(cpu: &mut CpuState, sys: &mut System, insn: &Instruction) -> Result<Next> {
    check_io(cpu, sys, Port(cpu.regs[2] as u16), io_size(insn))?;
    let size = io_size(insn) as u32;
    let a16 = matches!(
        insn.op_kind(if is_ins(insn) { 0 } else { 1 }),
        OpKind::MemoryESDI | OpKind::MemorySegSI
    );
    // ins/outs repeat with F2 as with F3 (there is no condition to test).
    let rep = insn.has_rep_prefix() || insn.has_repne_prefix();
    let step = if cpu.arith_flags & flags::DF != 0 {
        size.wrapping_neg()
    } else {
        size
    };
    let port = Port(cpu.regs[2] as u16);
    let (ptr_reg, count_reg) = if is_ins(insn) { (7, 1) } else { (6, 1) };
    let mask = if a16 { 0xFFFF } else { 0xFFFF_FFFF };
    // A long rep runs in slices: between them the instruction restarts
    // from the run loop, which can take interrupts and stop requests.
    const SLICE: u32 = 4096;
    for _ in 0..SLICE {
        if rep && cpu.regs[count_reg] & mask == 0 {
            return Ok(Next::Continue);
        }
        let seg = if is_ins(insn) {
            super::SREG_ES
        } else {
            insn.memory_segment().number()
        };
        let ptr = segment_linear(cpu, seg, cpu.regs[ptr_reg] & mask, size)?;
        if is_ins(insn) {
            // Check the destination before the port read has side effects.
            sys.mem.read_sized(ptr, size)?;
            let v = sys.bus.read(port, size as u8);
            sys.mem.write_sized(ptr, size, v)?;
            sys.counters.port_reads += 1;
        } else {
            let v = sys.mem.read_sized(ptr, size)?;
            sys.counters.port_writes += 1;
            let action = sys.bus.write(port, size as u8, v);
            if action != IoAction::None {
                advance(cpu, ptr_reg, step, mask);
                if rep {
                    advance(cpu, count_reg, u32::MAX, mask);
                }
                return io_action(sys, action);
            }
        }
        advance(cpu, ptr_reg, step, mask);
        if !rep {
            return Ok(Next::Continue);
        }
        advance(cpu, count_reg, u32::MAX, mask);
    }
    if cpu.regs[count_reg] & mask == 0 {
        Ok(Next::Continue)
    } else {
        Ok(Next::Jump(insn.ip32()))
    }
}

fn is_ins(insn: &Instruction) -> bool {
    matches!(
        insn.mnemonic(),
        Mnemonic::Insb | Mnemonic::Insw | Mnemonic::Insd
    )
}
