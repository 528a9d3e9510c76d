//! Far control transfers (Intel SDM Vol. 3A 5.8; Vol. 2A CALL, JMP, RET,
//! IRET): far jmp/call to a code segment, through a call gate (to an
//! inner ring on its TSS stack, with the parameters copied) or to a task;
//! retf and iret to the same or an outer ring, iret into and inside
//! v8086 mode, and iret's return from a nested task.

use iced_x86::{Code, Instruction, Mnemonic, OpKind};
use translator::abi::{CpuState, flags, limit, vector};

use super::descriptor::{Descriptor, fetch_descriptor, inner_stack, load_segment, read_descriptor};
use super::emulate::{Next, Result, sp_add, stack_read, writable_flags};
use super::operand::checked_address;
use super::task::{self, TaskSource};
use super::{
    Exception, Fail, SREG_CS, SREG_DS, SREG_ES, SREG_FS, SREG_GS, SREG_SS, System, cpl,
    real_addressing, v86,
};

fn gp(sel: u16) -> Exception {
    Exception::with_error(vector::GP, (sel & !3) as u32)
}

/// #NP(sel) unless the descriptor is present.
fn present(d: &Descriptor, sel: u16) -> std::result::Result<(), Exception> {
    if d.present() {
        Ok(())
    } else {
        Err(Exception::with_error(vector::NP, (sel & !3) as u32))
    }
}

/// A stack that frames are pushed on: its segment base, whether it is
/// 32-bit (else offsets wrap at 64 KiB and only SP changes), and ESP.
#[derive(Clone, Copy)]
pub(super) struct Stack {
    pub base: u32,
    pub big: bool,
    pub esp: u32,
    pub limit: u32,
    pub expand_down: bool,
    /// Pushes are user accesses (a ring-3 stack).
    pub user: bool,
}

impl Stack {
    pub fn current(cpu: &CpuState) -> Self {
        Stack {
            base: cpu.seg_base[SREG_SS],
            big: cpu.seg_db[SREG_SS],
            esp: cpu.regs[4],
            limit: cpu.seg_limit[SREG_SS],
            expand_down: cpu.seg_expand_down[SREG_SS],
            user: cpl(cpu) == 3,
        }
    }

    /// The stack of segment `d` at `esp`.
    pub fn of(d: &Descriptor, esp: u32) -> Self {
        Stack {
            base: d.base,
            big: d.big(),
            esp,
            limit: d.limit,
            expand_down: d.expand_down(),
            user: d.dpl() == 3,
        }
    }

    /// #SS(0) unless `len` bytes at `offset` lie within the stack segment.
    fn check(&self, offset: u32, len: u32) -> std::result::Result<(), Exception> {
        if limit::allows(self.limit, self.expand_down, self.big, offset, len) {
            Ok(())
        } else {
            Err(Exception::with_error(vector::SS, 0))
        }
    }

    /// Pushes `words` (the first one first), `width` bytes each, and
    /// returns the new stack pointer. Nothing is written unless all of it
    /// fits (in the segment, and in RAM).
    pub fn push(
        &self,
        sys: &System,
        words: &[u32],
        width: u32,
    ) -> std::result::Result<u32, Exception> {
        let len = width * words.len() as u32;
        let top = self.esp.wrapping_sub(len);
        if self.big || (top & 0xFFFF) + len <= 0x10000 {
            // Contiguous: one check and one write (frames are hot: an
            // interrupt or an iret each).
            let offset = if self.big { top } else { top & 0xFFFF };
            self.check(offset, len)?;
            let mut bytes = [0u8; 64];
            let mut long = Vec::new();
            let buf: &mut [u8] = if len as usize <= bytes.len() {
                &mut bytes[..len as usize]
            } else {
                long.resize(len as usize, 0);
                &mut long
            };
            // Constant-size copies: a variable one is a memcpy call.
            for (i, w) in words.iter().rev().enumerate() {
                if width == 4 {
                    buf[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
                } else {
                    buf[2 * i..2 * i + 2].copy_from_slice(&(*w as u16).to_le_bytes());
                }
            }
            let at = self.base.wrapping_add(offset);
            sys.mem.with_privilege(self.user, |m| m.write(at, buf))?;
        } else {
            // A 16-bit stack that wraps inside the frame: word by word,
            // all checked first.
            let offset = |i: usize| self.esp.wrapping_sub(width * (i as u32 + 1)) & 0xFFFF;
            let at = |i: usize| self.base.wrapping_add(offset(i));
            for i in 0..words.len() {
                self.check(offset(i), width)?;
                sys.mem
                    .with_privilege(self.user, |m| m.check_write(at(i), width as usize))?;
            }
            for (i, w) in words.iter().enumerate() {
                sys.mem
                    .with_privilege(self.user, |m| m.write_sized(at(i), width, *w))?;
            }
        }
        let pushed = self.esp.wrapping_sub(width * words.len() as u32);
        Ok(if self.big {
            pushed
        } else {
            (self.esp & 0xFFFF_0000) | (pushed & 0xFFFF)
        })
    }
}

/// The far pointer of a far jmp/call: selector, offset, operand size.
fn far_pointer(cpu: &CpuState, sys: &System, insn: &Instruction) -> Result<(u16, u32, u32)> {
    Ok(match insn.op0_kind() {
        OpKind::FarBranch32 => (insn.far_branch_selector(), insn.far_branch32(), 4),
        OpKind::FarBranch16 => (insn.far_branch_selector(), insn.far_branch16() as u32, 2),
        _ => {
            let size = if matches!(insn.code(), Code::Jmp_m1616 | Code::Call_m1616) {
                2
            } else {
                4
            };
            let ea = checked_address(cpu, insn, size + 2)?;
            (
                sys.mem.read_u16(ea.wrapping_add(size))?,
                sys.mem.read_sized(ea, size)?,
                size,
            )
        }
    })
}

/// far jmp and far call.
pub(super) fn far_transfer(
    cpu: &mut CpuState,
    sys: &mut System,
    insn: &Instruction,
) -> Result<Next> {
    let call = insn.mnemonic() == Mnemonic::Call;
    let (sel, offset, size) = far_pointer(cpu, sys, insn)?;
    if real_addressing(cpu) {
        // The selector is the paragraph of the new CS.
        if call {
            cpu.regs[4] =
                Stack::current(cpu).push(sys, &[cpu.sregs[SREG_CS], insn.next_ip32()], size)?;
        }
        real_mode_cs(cpu, sel);
        return Ok(Next::Jump(offset));
    }
    if sel & !3 == 0 {
        return Err(gp(0).into());
    }
    let d = fetch_descriptor(sys, sel)?;
    let (cpl, rpl) = (cpl(cpu), (sel & 3) as u32);
    match d.system_type() {
        None => {
            let allowed = d.code()
                && if d.conforming() {
                    d.dpl() <= cpl
                } else {
                    d.dpl() == cpl && rpl <= cpl
                };
            if !allowed {
                return Err(gp(sel).into());
            }
            present(&d, sel)?;
            if offset > d.limit {
                return Err(gp(0).into());
            }
            if call {
                cpu.regs[4] =
                    Stack::current(cpu).push(sys, &[cpu.sregs[SREG_CS], insn.next_ip32()], size)?;
            }
            load_segment(cpu, sys, SREG_CS, (sel & !3) | cpl as u16, &d)?;
            Ok(Next::Jump(offset))
        }
        Some(4 | 12) => call_gate(cpu, sys, insn, sel, d),
        // A task gate, or an available TSS (a busy one is #GP below).
        Some(t @ (1 | 5 | 9)) => {
            if d.dpl() < cpl || d.dpl() < rpl {
                return Err(gp(sel).into());
            }
            present(&d, sel)?;
            let (tss_sel, tss) = if t == 5 {
                let tss_sel = d.gate_selector();
                let source = TaskSource::Jmp;
                (tss_sel, task::tss_descriptor(sys, tss_sel, source, 0)?)
            } else {
                (sel, d)
            };
            let source = if call {
                TaskSource::Call
            } else {
                TaskSource::Jmp
            };
            task::switch(cpu, sys, tss_sel, tss, source, insn.next_ip32(), 0)?;
            Ok(Next::Jump(task_entry(cpu, 0)?))
        }
        _ => Err(gp(sel).into()),
    }
}

/// After a task switch: the new task's EIP, which must lie within its CS
/// (#GP in the new task otherwise).
pub(super) fn task_entry(cpu: &CpuState, ext: u32) -> Result<u32> {
    if cpu.eip > cpu.seg_limit[SREG_CS] {
        return Err(Fail::Task(Exception::with_error(vector::GP, ext)));
    }
    Ok(cpu.eip)
}

/// far call/jmp through a call gate (Intel SDM Vol. 3A 5.8.4-5.8.5): to
/// the same ring, or (call only) to a more privileged one on that ring's
/// stack from the TSS, with the gate's parameter count copied across.
fn call_gate(
    cpu: &mut CpuState,
    sys: &mut System,
    insn: &Instruction,
    gate_sel: u16,
    gate: Descriptor,
) -> Result<Next> {
    let call = insn.mnemonic() == Mnemonic::Call;
    let cpl = cpl(cpu);
    if gate.dpl() < cpl || gate.dpl() < (gate_sel & 3) as u32 {
        return Err(gp(gate_sel).into());
    }
    present(&gate, gate_sel)?;
    let cs = gate.gate_selector();
    if cs & !3 == 0 {
        return Err(gp(0).into());
    }
    let d = fetch_descriptor(sys, cs)?;
    let conforming = d.conforming();
    if !d.code() || d.dpl() > cpl || (!call && !conforming && d.dpl() != cpl) {
        return Err(gp(cs).into());
    }
    present(&d, cs)?;
    let offset = gate.gate_offset();
    if offset > d.limit {
        return Err(gp(0).into());
    }
    let width = if gate.system32() { 4 } else { 2 };
    let ret = [cpu.sregs[SREG_CS], insn.next_ip32()];
    if !(call && !conforming && d.dpl() < cpl) {
        if call {
            cpu.regs[4] = Stack::current(cpu).push(sys, &ret, width)?;
        }
        load_segment(cpu, sys, SREG_CS, (cs & !3) | cpl as u16, &d)?;
        return Ok(Next::Jump(offset));
    }
    let new_cpl = d.dpl();
    let (ss, esp, sd) = inner_stack(sys, new_cpl, 0)?;
    // The new stack gets the old SS:ESP, the parameters in their order,
    // and the return address.
    let mut words = vec![cpu.sregs[SREG_SS], cpu.regs[4]];
    for i in (0..gate.gate_params()).rev() {
        words.push(stack_read(
            cpu,
            sys,
            cpu.regs[4].wrapping_add(i * width),
            width,
        )?);
    }
    words.extend(ret);
    let inner = Stack::of(&sd, esp);
    let new_esp = inner.push(sys, &words, width)?;
    load_segment(cpu, sys, SREG_SS, ss, &sd)?;
    cpu.regs[4] = new_esp;
    load_segment(cpu, sys, SREG_CS, (cs & !3) | new_cpl as u16, &d)?;
    Ok(Next::Jump(offset))
}

/// Loads CS in real and v8086 mode: base = selector * 16, 16-bit code.
pub(super) fn real_mode_cs(cpu: &mut CpuState, sel: u16) {
    let limit = if v86(cpu) {
        0xFFFF
    } else {
        cpu.seg_limit[SREG_CS]
    };
    cpu.set_segment_db(SREG_CS, sel, (sel as u32) << 4, limit, false);
}

/// Checks the CS a far return or iret goes to (its RPL is the new CPL,
/// never inner to the current one); returns that level and the descriptor.
fn check_return_cs(cpu: &CpuState, sys: &System, cs: u16) -> Result<(u32, Descriptor)> {
    let rpl = (cs & 3) as u32;
    if cs & !3 == 0 || rpl < cpl(cpu) {
        return Err(gp(cs).into());
    }
    let d = read_descriptor(sys, cs)?;
    if !d.code() || (!d.conforming() && d.dpl() != rpl) || (d.conforming() && d.dpl() > rpl) {
        return Err(gp(cs).into());
    }
    Ok((rpl, d))
}

/// Checks the SS popped by a return to ring `rpl` and returns its
/// descriptor.
fn check_return_ss(sys: &System, ss: u16, rpl: u32) -> Result<Descriptor> {
    if ss & !3 == 0 || (ss & 3) as u32 != rpl {
        return Err(gp(ss).into());
    }
    let d = read_descriptor(sys, ss)?;
    if !d.writable_data() || d.dpl() != rpl {
        return Err(gp(ss).into());
    }
    Ok(d)
}

/// After a return to an outer ring, data segment registers the new ring
/// may not use become null (Intel SDM Vol. 2A, RET/IRET).
fn null_inaccessible_segments(cpu: &mut CpuState, sys: &System) {
    let new_cpl = cpl(cpu);
    for i in [SREG_ES, SREG_DS, SREG_FS, SREG_GS] {
        let sel = cpu.sregs[i] as u16;
        if sel & !3 == 0 {
            continue;
        }
        let keep = read_descriptor(sys, sel).is_ok_and(|d| d.conforming() || d.dpl() >= new_cpl);
        if !keep {
            cpu.set_segment(i, 0, 0, u32::MAX);
        }
    }
}

/// iret: in real mode, in v8086 mode (IOPL 3 only), from a nested task
/// (NT), to v8086 mode from ring 0, or within protected mode to the same
/// or an outer privilege level.
pub(super) fn iret(cpu: &mut CpuState, sys: &mut System, insn: &Instruction) -> Result<Next> {
    let size = if insn.code() == Code::Iretw { 2 } else { 4 };
    let esp = cpu.regs[4];
    let pop = |cpu: &CpuState, i: u32| stack_read(cpu, sys, esp.wrapping_add(i * size), size);
    if real_addressing(cpu) {
        let iopl = (cpu.sys_flags & flags::IOPL) >> 12;
        if v86(cpu) && iopl < 3 {
            return Err(gp(0).into());
        }
        let (new_eip, new_cs, new_flags) = (pop(cpu, 0)?, pop(cpu, 1)? as u16, pop(cpu, 2)?);
        // Every flag but VM (and the VIF/VIP pair) loads; v8086 code
        // cannot change IOPL either.
        let mut keep = if size == 2 {
            0xFFFF_0000
        } else {
            flags::VM | flags::VIP | flags::VIF
        };
        if v86(cpu) {
            keep |= flags::IOPL;
        }
        cpu.set_eflags((cpu.eflags() & keep) | (new_flags & !keep));
        real_mode_cs(cpu, new_cs);
        cpu.regs[4] = sp_add(cpu, esp, 3 * size);
        return Ok(Next::Jump(new_eip));
    }
    if cpu.sys_flags & flags::NT != 0 {
        // Back to the task whose selector is this TSS's back link.
        let link = sys.mem.supervisor(|m| m.read_u16(sys.tss_base))?;
        let tss = task::tss_descriptor(sys, link, TaskSource::Iret, 0)?;
        task::switch(cpu, sys, link, tss, TaskSource::Iret, insn.next_ip32(), 0)?;
        return Ok(Next::Jump(task_entry(cpu, 0)?));
    }
    let (new_eip, new_cs, new_flags) = (pop(cpu, 0)?, pop(cpu, 1)? as u16, pop(cpu, 2)?);
    if size == 4 && new_flags & flags::VM != 0 && cpl(cpu) == 0 {
        return iret_to_v86(cpu, sys, new_eip, new_cs, new_flags);
    }
    let (new_cpl, cs_desc) = check_return_cs(cpu, sys, new_cs)?;
    let outer = new_cpl > cpl(cpu);
    let (new_esp, new_ss) = if outer {
        let (e, s) = (pop(cpu, 3)?, pop(cpu, 4)? as u16);
        let d = check_return_ss(sys, s, new_cpl)?;
        (e, Some((s, d)))
    } else {
        (sp_add(cpu, esp, 3 * size), None)
    };
    let old = cpu.eflags();
    let writable = writable_flags(cpu, size, flags::VM | flags::VIP | flags::VIF);
    cpu.set_eflags((old & !writable) | (new_flags & writable));
    load_segment(cpu, sys, SREG_CS, new_cs, &cs_desc)?;
    cpu.regs[4] = new_esp;
    if let Some((ss, d)) = new_ss {
        load_segment(cpu, sys, SREG_SS, ss, &d)?;
        null_inaccessible_segments(cpu, sys);
    }
    Ok(Next::Jump(new_eip))
}

/// A 32-bit iret at CPL 0 whose EFLAGS image has VM set: the frame goes
/// on with ESP, SS, ES, DS, FS, GS, all loaded as real-mode segments
/// (Intel SDM Vol. 2A IRET, RETURN-TO-VIRTUAL-8086-MODE).
fn iret_to_v86(
    cpu: &mut CpuState,
    sys: &System,
    new_eip: u32,
    new_cs: u16,
    new_flags: u32,
) -> Result<Next> {
    let esp = cpu.regs[4];
    let mut rest = [0u32; 6];
    for (i, w) in rest.iter_mut().enumerate() {
        *w = stack_read(cpu, sys, esp.wrapping_add(12 + 4 * i as u32), 4)?;
    }
    let [new_esp, ss, es, ds, fs, gs] = rest;
    cpu.set_eflags(new_flags);
    for (i, sel) in [
        (SREG_CS, new_cs as u32),
        (SREG_SS, ss),
        (SREG_ES, es),
        (SREG_DS, ds),
        (SREG_FS, fs),
        (SREG_GS, gs),
    ] {
        let sel = sel as u16;
        cpu.set_segment_db(i, sel, (sel as u32) << 4, 0xFFFF, false);
    }
    cpu.regs[4] = new_esp;
    Ok(Next::Jump(new_eip & 0xFFFF))
}

/// retf, to the same or an outer privilege level.
pub(super) fn far_return(cpu: &mut CpuState, sys: &mut System, insn: &Instruction) -> Result<Next> {
    let size = if matches!(insn.code(), Code::Retfw | Code::Retfw_imm16) {
        2
    } else {
        4
    };
    let params = if insn.op_count() > 0 {
        insn.immediate16() as u32
    } else {
        0
    };
    let esp = cpu.regs[4];
    let new_eip = stack_read(cpu, sys, esp, size)?;
    let new_cs = stack_read(cpu, sys, esp.wrapping_add(size), size)? as u16;
    if real_addressing(cpu) {
        real_mode_cs(cpu, new_cs);
        cpu.regs[4] = sp_add(cpu, esp, 2 * size + params);
        return Ok(Next::Jump(new_eip));
    }
    let (new_cpl, cs_desc) = check_return_cs(cpu, sys, new_cs)?;
    let mut new_esp = sp_add(cpu, esp, 2 * size + params);
    let outer = new_cpl > cpl(cpu);
    if outer {
        let outer_esp = stack_read(cpu, sys, new_esp, size)?;
        let ss = stack_read(cpu, sys, new_esp.wrapping_add(size), size)? as u16;
        let d = check_return_ss(sys, ss, new_cpl)?;
        load_segment(cpu, sys, SREG_SS, ss, &d)?;
        // The parameters come off the outer stack, by its own size.
        new_esp = sp_add(cpu, outer_esp, params);
    }
    load_segment(cpu, sys, SREG_CS, new_cs, &cs_desc)?;
    if outer {
        // After CS: the check is against the new, outer privilege level.
        null_inaccessible_segments(cpu, sys);
    }
    cpu.regs[4] = new_esp;
    Ok(Next::Jump(new_eip))
}
