//! The guest side of the FPU environment: the instruction and data
//! pointers that fnstenv, fnsave and fxsave store.
//!
//! These instructions run natively on the guest's FPU state, so they
//! store the host's pointers: the host address of the last x87
//! instruction (in the code arena) and its operand's effective address
//! in the host's GS segment, which is the guest linear address. The
//! translator follows each of them with a call to the runtime, which
//! rewrites the stored pointers into the guest's: the guest EIP of that
//! instruction (found through the fault map, as the fault handler finds
//! it) and CS, the operand's offset in DS and DS.
//! A pointer that is not a host one (loaded by the guest with fldenv,
//! frstor or fxrstor since its last x87 instruction) is left as it is.

use iced_x86::{Code, Instruction};
use translator::abi::CpuState;

use super::operand::checked_address;
use super::{Exception, SREG_CS, SREG_DS, System};

/// Where a save format keeps FIP, FCS, FDP and FDS, and how wide the
/// pointers are.
struct Pointers {
    fip: u32,
    fcs: u32,
    fdp: u32,
    fds: u32,
    width: u32,
    /// Bytes the instruction stores (for the limit check).
    len: u32,
}

/// The protected-mode layouts (Intel SDM Vol. 1, figures 8-9 to 8-12 and
/// table 10-2), by the instruction's form.
fn layout(code: Code) -> Option<Pointers> {
    let p32 = |len| Pointers {
        fip: 12,
        fcs: 16,
        fdp: 20,
        fds: 24,
        width: 4,
        len,
    };
    let p16 = |len| Pointers {
        fip: 6,
        fcs: 8,
        fdp: 10,
        fds: 12,
        width: 2,
        len,
    };
    Some(match code {
        Code::Fnstenv_m28byte | Code::Fstenv_m28byte => p32(28),
        Code::Fnsave_m108byte | Code::Fsave_m108byte => p32(108),
        Code::Fnstenv_m14byte | Code::Fstenv_m14byte => p16(14),
        Code::Fnsave_m94byte | Code::Fsave_m94byte => p16(94),
        Code::Fxsave_m512byte => Pointers {
            fip: 8,
            fcs: 12,
            fdp: 16,
            fds: 20,
            width: 4,
            len: 512,
        },
        _ => return None,
    })
}

/// Rewrites the pointers `insn` (an fnstenv, fnsave or fxsave that just
/// ran natively) stored, as the guest's.
pub fn guest_pointers(cpu: &CpuState, sys: &System, insn: &Instruction) -> Result<(), Exception> {
    let Some(p) = layout(insn.code()) else {
        return Ok(());
    };
    let at = checked_address(cpu, insn, p.len)?;
    let read = |off: u32| sys.mem.read_sized(at.wrapping_add(off), p.width);
    let write = |off: u32, v: u32| sys.mem.write_sized(at.wrapping_add(off), p.width, v);
    // The 32-bit formats keep the low 32 bits of the host addresses.
    let host_fip = read(p.fip)?;
    // SAFETY: the run loop attached the translator's fault map to `cpu`
    // and it is not changed while a helper runs.
    let map = unsafe { &*cpu.fault_map };
    let site = map.lookup(host_fip.wrapping_sub(map.base as u32));
    let Some(site) = site.filter(|_| p.width == 4) else {
        return Ok(());
    };
    write(p.fip, site.guest_eip)?;
    sys.mem
        .write_u16(at.wrapping_add(p.fcs), cpu.sregs[SREG_CS] as u16)?;
    let host_fdp = read(p.fdp)?;
    if host_fdp != 0 {
        write(p.fdp, host_fdp.wrapping_sub(cpu.seg_base[SREG_DS]))?;
        sys.mem
            .write_u16(at.wrapping_add(p.fds), cpu.sregs[SREG_DS] as u16)?;
    }
    Ok(())
}
