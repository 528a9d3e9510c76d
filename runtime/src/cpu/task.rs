//! Task switches (Intel SDM Vol. 3A, 7.3): far jmp or call to a TSS or a
//! task gate, an interrupt or exception through a task gate, and iret
//! with NT set back to the previous task; 32-bit and 16-bit (286) TSSes.

use iced_x86::Register;
use translator::abi::{CpuState, flags, vector};

use super::cr::{CR0_PG, CR0_TS, DR6_BT};
use super::descriptor::{Descriptor, fetch_descriptor, load_segment, set_tss_busy};
use super::emulate::load_sreg;
use super::{Exception, Fail, SREG_CS, System};

/// What starts a task switch: it decides the busy bits, NT and the back
/// link, and which exception a bad TSS raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TaskSource {
    Jmp,
    Call,
    Iret,
    Interrupt,
}

/// Where a TSS keeps the state a switch saves and loads.
struct Layout {
    /// Width of EIP, EFLAGS and the general registers.
    width: u32,
    eip: u32,
    eflags: u32,
    regs: u32,
    /// ES, CS, SS, DS, FS, GS: a 16-bit TSS has no FS and GS.
    sregs: &'static [u32],
    ldt: u32,
    /// The smallest limit a TSS of this kind may have.
    min_limit: u32,
}

const TSS32: Layout = Layout {
    width: 4,
    eip: 0x20,
    eflags: 0x24,
    regs: 0x28,
    sregs: &[0x48, 0x4C, 0x50, 0x54, 0x58, 0x5C],
    ldt: 0x60,
    min_limit: 0x67,
};

const TSS16: Layout = Layout {
    width: 2,
    eip: 0x0E,
    eflags: 0x10,
    regs: 0x12,
    sregs: &[0x22, 0x24, 0x26, 0x28],
    ldt: 0x2A,
    min_limit: 0x2B,
};

const TSS32_CR3: u32 = 0x1C;
/// The T bit: a debug trap as the new task starts.
const TSS32_TRAP: u32 = 0x64;

fn layout(tss32: bool) -> &'static Layout {
    if tss32 { &TSS32 } else { &TSS16 }
}

/// The TSS descriptor a switch goes to: in the GDT, a TSS that is
/// available (busy, for the return from a nested task) and present. A bad
/// one is #GP(sel), or #TS(sel) for iret; `ext` is the EXT bit.
pub(super) fn tss_descriptor(
    sys: &System,
    sel: u16,
    source: TaskSource,
    ext: u32,
) -> Result<Descriptor, Exception> {
    let v = if source == TaskSource::Iret {
        vector::TS
    } else {
        vector::GP
    };
    let bad = Exception::with_error(v, (sel & !3) as u32 | ext);
    if sel & 4 != 0 || sel & !3 == 0 {
        return Err(bad);
    }
    let d = fetch_descriptor(sys, sel).map_err(|e| if e.vector == vector::GP { bad } else { e })?;
    let wanted: [u8; 2] = if source == TaskSource::Iret {
        [3, 11]
    } else {
        [1, 9]
    };
    if !d.system_type().is_some_and(|t| wanted.contains(&t)) {
        return Err(bad);
    }
    if !d.present() {
        return Err(Exception::with_error(vector::NP, (sel & !3) as u32 | ext));
    }
    Ok(d)
}

/// Switches to the task of TSS `sel` (descriptor `d`, checked by
/// [`tss_descriptor`] or the caller), saving `return_eip` as the old
/// task's EIP. Until the commit point nothing changes and an error is the
/// old task's exception; after it (the new task's LDT and segments) an
/// error is `Fail::Task`, raised in the new task.
pub(super) fn switch(
    cpu: &mut CpuState,
    sys: &mut System,
    sel: u16,
    d: Descriptor,
    source: TaskSource,
    return_eip: u32,
    ext: u32,
) -> Result<(), Fail> {
    // TSS accesses are supervisor accesses (the helper's and the run
    // loop's next entry set the privilege again).
    sys.mem.set_user(false);
    let ts = |s: u16| Exception::with_error(vector::TS, (s & !3) as u32 | ext);
    let new = layout(d.system32());
    if d.limit < new.min_limit {
        return Err(ts(sel).into());
    }
    let old = layout(sys.tss32);
    if sys.tr & !3 == 0 || sys.tss_limit < old.min_limit {
        return Err(ts(sys.tr).into());
    }
    // The new task's state, read before anything changes.
    let read = |off: u32, w: u32| sys.mem.read_sized(d.base.wrapping_add(off), w);
    let w = new.width;
    let eip = read(new.eip, w)?;
    let mut eflags = read(new.eflags, w)?;
    let mut regs = cpu.regs;
    for (i, r) in regs.iter_mut().enumerate() {
        let v = read(new.regs + w * i as u32, w)?;
        // A 16-bit task leaves the upper halves as they were.
        *r = if w == 4 { v } else { (*r & 0xFFFF_0000) | v };
    }
    // A 16-bit task leaves FS and GS as they were.
    let mut sregs = cpu.sregs.map(|s| s as u16);
    for (s, off) in sregs.iter_mut().zip(new.sregs) {
        *s = read(*off, 2)? as u16;
    }
    let ldt = read(new.ldt, 2)? as u16;
    let (cr3, trap) = if d.system32() {
        (Some(read(TSS32_CR3, 4)?), read(TSS32_TRAP, 2)? & 1 != 0)
    } else {
        (None, false)
    };

    // The old task's state.
    let write =
        |off: u32, w: u32, v: u32| sys.mem.write_sized(sys.tss_base.wrapping_add(off), w, v);
    let mut old_flags = cpu.eflags();
    if source == TaskSource::Iret {
        old_flags &= !flags::NT;
    }
    write(old.eip, old.width, return_eip)?;
    write(old.eflags, old.width, old_flags)?;
    for (i, r) in cpu.regs.iter().enumerate() {
        write(old.regs + old.width * i as u32, old.width, *r)?;
    }
    for (s, off) in cpu.sregs.iter().zip(old.sregs) {
        write(*off, 2, *s)?;
    }
    if matches!(source, TaskSource::Jmp | TaskSource::Iret) {
        set_tss_busy(sys, sys.tr, false)?;
    }
    if matches!(source, TaskSource::Call | TaskSource::Interrupt) {
        sys.mem.write_u16(d.base, sys.tr)?;
        eflags |= flags::NT;
    }
    if source != TaskSource::Iret {
        set_tss_busy(sys, sel, true)?;
    }

    // Commit: from here on the CPU runs the new task.
    sys.tr = sel;
    sys.tss_base = d.base;
    sys.tss_limit = d.limit;
    sys.tss32 = d.system32();
    cpu.cr0 |= CR0_TS;
    if let Some(cr3) = cr3
        && cpu.cr0 & CR0_PG != 0
    {
        cpu.cr3 = cr3;
        super::sync_paging(cpu, sys, super::TlbFlush::NonGlobal);
    }
    cpu.regs = regs;
    cpu.set_eflags(eflags);
    cpu.eip = if w == 4 { eip } else { eip & 0xFFFF };
    load_segments(cpu, sys, ldt, sregs, ext).map_err(Fail::Task)?;
    if trap {
        sys.dr[6] |= DR6_BT;
        return Err(Fail::Task(Exception::new(vector::DB)));
    }
    Ok(())
}

/// Loads the new task's LDT and segment registers with their checks
/// (Intel SDM Vol. 3A, table 7-1): #TS for a bad selector or descriptor,
/// #NP (#SS for SS) for one that is not present.
fn load_segments(
    cpu: &mut CpuState,
    sys: &mut System,
    ldt: u16,
    sregs: [u16; 6],
    ext: u32,
) -> Result<(), Exception> {
    let ts = |s: u16| Exception::with_error(vector::TS, (s & !3) as u32 | ext);
    // The selectors are the new task's even where a check below fails.
    for (r, s) in cpu.sregs.iter_mut().zip(sregs) {
        *r = s as u32;
    }
    if ldt & !3 == 0 {
        (sys.ldtr, sys.ldt_base, sys.ldt_limit) = (0, 0, 0);
    } else {
        if ldt & 4 != 0 {
            return Err(ts(ldt));
        }
        let d = fetch_descriptor(sys, ldt).map_err(|_| ts(ldt))?;
        if d.system_type() != Some(2) || !d.present() {
            return Err(ts(ldt));
        }
        (sys.ldtr, sys.ldt_base, sys.ldt_limit) = (ldt, d.base, d.limit);
    }
    if cpu.sys_flags & flags::VM != 0 {
        for (i, s) in sregs.iter().enumerate() {
            cpu.set_segment_db(i, *s, (*s as u32) << 4, 0xFFFF, false);
        }
        return Ok(());
    }
    // CS first: its RPL is the new CPL, which SS and the others are
    // checked against.
    let cs = sregs[SREG_CS];
    let rpl = (cs & 3) as u32;
    if cs & !3 == 0 {
        return Err(ts(cs));
    }
    let d =
        fetch_descriptor(sys, cs).map_err(|e| if e.vector == vector::GP { ts(cs) } else { e })?;
    let allowed = d.code()
        && if d.conforming() {
            d.dpl() <= rpl
        } else {
            d.dpl() == rpl
        };
    if !allowed {
        return Err(ts(cs));
    }
    if !d.present() {
        return Err(Exception::with_error(vector::NP, (cs & !3) as u32 | ext));
    }
    load_segment(cpu, sys, SREG_CS, cs, &d)?;
    // The others as mov would load them, with #TS where mov raises #GP.
    for r in [
        Register::SS,
        Register::DS,
        Register::ES,
        Register::FS,
        Register::GS,
    ] {
        let sel = sregs[r.number() - Register::ES.number()];
        load_sreg(cpu, sys, r, sel).map_err(|e| match e.vector {
            vector::GP => ts(sel),
            _ => Exception {
                error: e.error | ext,
                ..e
            },
        })?;
    }
    Ok(())
}
