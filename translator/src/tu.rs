//! TU formation: decode guest bytes into a translation unit of at most
//! [`MAX_TU_INSNS`] instructions, ending at control flow (a conditional
//! branch excepted: the TU goes on with its fall-through), at a sensitive
//! instruction, or before an instruction that cannot be fetched or decoded.

use iced_x86::{Decoder, DecoderError, DecoderOptions, Instruction};

use crate::abi::ModeKey;
use crate::lower::ends_tu;

pub const MAX_TU_INSNS: usize = 12;
const MAX_INSN_LEN: usize = 15;
/// The most guest bytes a TU covers.
pub const MAX_TU_BYTES: usize = MAX_INSN_LEN * MAX_TU_INSNS;

/// Where the translator reads guest code from.
pub trait CodeSource {
    /// Copies the guest bytes at linear `addr` into `buf` and returns how
    /// many could be read (they stop at the first unreadable byte).
    fn read_code(&mut self, addr: u32, buf: &mut [u8]) -> usize;

    /// Bytes from `eip` to the end of its page when a TU must stay within
    /// one page (paging: each page's mapping may change on its own), else
    /// None. An instruction that itself crosses the end is a TU alone.
    fn page_room(&self, _eip: u32) -> Option<u32> {
        None
    }
}

/// Whether an instruction at linear `addr` may run into the next page.
pub fn may_cross_page(addr: u32) -> bool {
    (addr & 0xFFF) as usize + MAX_INSN_LEN > 0x1000
}

/// The code at `addr` cannot be fetched (no memory there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchFault {
    pub addr: u32,
}

#[derive(Debug)]
pub struct FormedTu {
    pub insns: Vec<Instruction>,
    /// Guest bytes covered.
    pub len: u32,
    /// Where control goes after the last instruction if it falls through.
    pub next_eip: u32,
}

pub fn form(src: &mut dyn CodeSource, eip: u32, mode: ModeKey) -> Result<FormedTu, FetchFault> {
    let bitness = if mode.0 & ModeKey::CODE32 != 0 {
        32
    } else {
        16
    };
    let mut insns = Vec::with_capacity(MAX_TU_INSNS);
    // One fetch covers the whole TU: 12 instructions of at most 15 bytes.
    // Fewer bytes than asked for means the rest cannot be fetched.
    let mut buf = [0u8; MAX_TU_BYTES];
    let avail = src.read_code(eip, &mut buf);
    let mut decoder = Decoder::with_ip(bitness, &buf[..avail], eip as u64, DecoderOptions::NONE);
    let mut ip = eip;
    let room = src.page_room(eip).map_or(usize::MAX, |r| r as usize);
    let max = if mode.0 & ModeKey::ONE_INSN != 0 {
        1
    } else {
        MAX_TU_INSNS
    };
    while insns.len() < max {
        let at = ip.wrapping_sub(eip) as usize;
        if at >= room {
            break;
        }
        if at >= avail {
            if insns.is_empty() {
                return Err(FetchFault { addr: ip });
            }
            break;
        }
        let insn = decoder.decode();
        if insn.is_invalid() && decoder.last_error() == DecoderError::NoMoreBytes {
            // The instruction runs into memory that cannot be fetched.
            if insns.is_empty() {
                return Err(FetchFault {
                    addr: eip.wrapping_add(avail as u32),
                });
            }
            break;
        }
        if insn.is_invalid() && !insns.is_empty() {
            // Let the undecodable instruction start its own TU, so the
            // code before it runs and #UD comes at the right EIP.
            break;
        }
        let crosses = at + insn.len() > room;
        if crosses && !insns.is_empty() {
            break;
        }
        ip = ip.wrapping_add(insn.len() as u32);
        insns.push(insn);
        if ends_tu(&insn) || crosses {
            break;
        }
        if bitness == 16 && ip > 0xFFFF {
            // IP wraps at 64 KiB: the next instruction is at CS:0.
            ip &= 0xFFFF;
            break;
        }
    }
    let mut len = ip.wrapping_sub(eip);
    if bitness == 16 {
        len &= 0xFFFF;
        ip &= 0xFFFF;
    }
    Ok(FormedTu {
        insns,
        len,
        next_eip: ip,
    })
}
