//! Multiboot (version 1) kernels, entered as the multiboot specification
//! and QEMU's -kernel enter them: 32-bit flat protected mode, paging off,
//! EAX = 0x2BADB002, EBX = the multiboot information structure.

use super::{BootState, LoadError, elf, place};
use crate::memory::GuestMemory;

pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
pub const BOOT_MAGIC: u32 = 0x2BAD_B002;
/// The header must lie in the first 8192 bytes, 32-bit aligned.
const SEARCH_LEN: usize = 8192;

// Header flags (multiboot 0.6.96, 3.1.2).
const FLAG_PAGE_ALIGN: u32 = 1 << 0;
const FLAG_MEMORY_INFO: u32 = 1 << 1;
const FLAG_VIDEO_MODE: u32 = 1 << 2;
const FLAG_AOUT_KLUDGE: u32 = 1 << 16;
/// Bits 0-15 are requirements: a loader must refuse any it does not know.
const KNOWN_REQUIRED: u32 = FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO | FLAG_VIDEO_MODE;

// Information structure flags (3.3).
const INFO_MEMORY: u32 = 1 << 0;
const INFO_CMDLINE: u32 = 1 << 2;
const INFO_MMAP: u32 = 1 << 6;
const INFO_LOADER_NAME: u32 = 1 << 9;

/// Low memory the loader uses for the information structure.
const INFO_AREA: u32 = 0x9000;
const INFO_AREA_LEN: u32 = 0x1000;
/// The stack pointer at entry (the specification leaves it undefined).
pub const INITIAL_ESP: u32 = 0x8FF0;
/// Conventional memory ends here; the EBDA and ROMs follow.
const LOW_MEM_END: u64 = 0x9FC00;
const HIGH_MEM: u64 = 0x10_0000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// File offset of the header.
    pub offset: usize,
    pub flags: u32,
    pub header_addr: u32,
    pub load_addr: u32,
    pub load_end_addr: u32,
    pub bss_end_addr: u32,
    pub entry_addr: u32,
}

fn word(image: &[u8], at: usize) -> Option<u32> {
    image
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

pub fn find_header(image: &[u8]) -> Result<Header, LoadError> {
    let end = image.len().min(SEARCH_LEN);
    let offset = (0..end.saturating_sub(11))
        .step_by(4)
        .find(|&o| {
            word(image, o) == Some(HEADER_MAGIC)
                && word(image, o + 4)
                    .zip(word(image, o + 8))
                    .is_some_and(|(f, c)| HEADER_MAGIC.wrapping_add(f).wrapping_add(c) == 0)
        })
        .ok_or(LoadError::NoMultibootHeader)?;
    let flags = word(image, offset + 4).unwrap_or(0);
    let unknown = flags & 0xFFFF & !KNOWN_REQUIRED;
    if unknown != 0 {
        return Err(LoadError::BadMultibootHeader(format!(
            "requires features this loader does not know (flags {unknown:#x})"
        )));
    }
    let field = |i: usize| word(image, offset + 12 + 4 * i);
    let mut h = Header {
        offset,
        flags,
        header_addr: 0,
        load_addr: 0,
        load_end_addr: 0,
        bss_end_addr: 0,
        entry_addr: 0,
    };
    if flags & FLAG_AOUT_KLUDGE != 0 {
        let f: Option<Vec<u32>> = (0..5).map(field).collect();
        let f = f.ok_or_else(|| {
            LoadError::BadMultibootHeader("address fields run past the end of the file".into())
        })?;
        (
            h.header_addr,
            h.load_addr,
            h.load_end_addr,
            h.bss_end_addr,
            h.entry_addr,
        ) = (f[0], f[1], f[2], f[3], f[4]);
    }
    Ok(h)
}

/// Loads a multiboot kernel and writes its information structure.
pub fn load(mem: &GuestMemory, image: &[u8], cmdline: &str) -> Result<BootState, LoadError> {
    if image.is_empty() {
        return Err(LoadError::Empty);
    }
    let header = find_header(image)?;
    let (entry, kernel_end) = if header.flags & FLAG_AOUT_KLUDGE != 0 {
        load_aout_kludge(mem, image, &header)?
    } else {
        load_elf(mem, image)?
    };
    let info = write_info(mem, cmdline, kernel_end)?;
    Ok(BootState {
        eip: entry,
        eax: BOOT_MAGIC,
        ebx: info,
        esp: INITIAL_ESP,
        esi: 0,
    })
}

/// Loads with the header's address fields (3.1.3); returns (entry, end).
fn load_aout_kludge(mem: &GuestMemory, image: &[u8], h: &Header) -> Result<(u32, u64), LoadError> {
    let bad = |why: &str| LoadError::BadMultibootHeader(why.into());
    if h.load_addr > h.header_addr {
        return Err(bad("load_addr is above header_addr"));
    }
    let start = (h.offset as u64)
        .checked_sub((h.header_addr - h.load_addr) as u64)
        .ok_or_else(|| bad("header_addr - load_addr exceeds the header's file offset"))?
        as usize;
    let len = if h.load_end_addr == 0 {
        image.len() - start
    } else {
        let l = h
            .load_end_addr
            .checked_sub(h.load_addr)
            .ok_or_else(|| bad("load_end_addr below load_addr"))?;
        (l as usize).min(image.len() - start)
    };
    let load_end = h.load_addr as u64 + len as u64;
    let bss = if h.bss_end_addr == 0 {
        0
    } else {
        (h.bss_end_addr as u64)
            .checked_sub(load_end)
            .ok_or_else(|| bad("bss_end_addr below the loaded image"))?
    };
    place(
        mem,
        "the kernel image",
        h.load_addr as u64,
        &image[start..start + len],
        bss,
    )?;
    Ok((h.entry_addr, load_end + bss))
}

fn load_elf(mem: &GuestMemory, image: &[u8]) -> Result<(u32, u64), LoadError> {
    let elf = elf::parse(image)?;
    if elf.segments.is_empty() {
        return Err(LoadError::NotElf("no loadable segments"));
    }
    let mut end = 0u64;
    for (i, s) in elf.segments.iter().enumerate() {
        let data = &image[s.offset as usize..(s.offset + s.filesz) as usize];
        place(
            mem,
            &format!("ELF segment {i}"),
            s.paddr as u64,
            data,
            (s.memsz - s.filesz) as u64,
        )?;
        end = end.max(s.paddr as u64 + s.memsz as u64);
    }
    Ok((elf.entry, end))
}

/// Writes the information structure, memory map, command line and loader
/// name into low memory (or after the kernel if it sits there).
fn write_info(mem: &GuestMemory, cmdline: &str, kernel_end: u64) -> Result<u32, LoadError> {
    let ram = mem.size() as u64;
    let mut base = INFO_AREA;
    if kernel_end > INFO_AREA as u64 && kernel_end < HIGH_MEM {
        base = kernel_end.next_multiple_of(4096) as u32;
    }
    let mmap_at = base + 0x100;
    let name_at = base + 0x200;
    let cmdline_at = base + 0x300;
    let mut cmd = cmdline.as_bytes().to_vec();
    cmd.truncate((INFO_AREA_LEN - 0x300 - 1) as usize);
    cmd.push(0);

    let regions: [(u64, u64, u32); 4] = [
        (0, LOW_MEM_END, 1),
        (LOW_MEM_END, 0xA0000 - LOW_MEM_END, 2),
        (0xF0000, 0x10000, 2),
        (HIGH_MEM, ram - HIGH_MEM, 1),
    ];
    let mut mmap = Vec::new();
    for (addr, len, kind) in regions {
        mmap.extend_from_slice(&20u32.to_le_bytes());
        mmap.extend_from_slice(&addr.to_le_bytes());
        mmap.extend_from_slice(&len.to_le_bytes());
        mmap.extend_from_slice(&kind.to_le_bytes());
    }

    let mut info = [0u32; 22];
    info[0] = INFO_MEMORY | INFO_CMDLINE | INFO_MMAP | INFO_LOADER_NAME;
    info[1] = (LOW_MEM_END / 1024) as u32;
    info[2] = ((ram - HIGH_MEM) / 1024) as u32;
    info[4] = cmdline_at;
    info[11] = mmap.len() as u32;
    info[12] = mmap_at;
    info[16] = name_at;
    let info_bytes: Vec<u8> = info.iter().flat_map(|w| w.to_le_bytes()).collect();

    place(
        mem,
        "the multiboot information",
        base as u64,
        &info_bytes,
        0,
    )?;
    place(mem, "the multiboot memory map", mmap_at as u64, &mmap, 0)?;
    place(mem, "the loader name", name_at as u64, b"bt86\0", 0)?;
    place(mem, "the kernel command line", cmdline_at as u64, &cmd, 0)?;
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(flags: u32) -> Vec<u8> {
        let mut v = vec![0u8; 64];
        v[16..20].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
        v[20..24].copy_from_slice(&flags.to_le_bytes());
        v[24..28]
            .copy_from_slice(&(0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags)).to_le_bytes());
        v
    }

    #[test]
    fn header_is_found_at_an_aligned_offset() {
        let h = find_header(&header(FLAG_MEMORY_INFO)).unwrap();
        assert_eq!(h.offset, 16);
    }

    #[test]
    fn a_bad_checksum_is_no_header() {
        let mut v = header(0);
        v[24] ^= 1;
        assert!(matches!(find_header(&v), Err(LoadError::NoMultibootHeader)));
    }

    #[test]
    fn unknown_required_flags_are_refused() {
        assert!(matches!(
            find_header(&header(1 << 5)),
            Err(LoadError::BadMultibootHeader(_))
        ));
    }

    #[test]
    fn aout_kludge_fields_past_the_end_are_refused() {
        let v = header(FLAG_AOUT_KLUDGE);
        let v = &v[..32];
        assert!(matches!(
            find_header(v),
            Err(LoadError::BadMultibootHeader(_))
        ));
    }
}
