//! The Linux/x86 boot protocol (Documentation/arch/x86/boot.rst), 32-bit
//! entry: the protected-mode kernel of a bzImage at 1 MiB, a zero page
//! (struct boot_params) with the setup header, an e820 map, the command
//! line and the initrd, and the CPU at `code32_start` with ESI pointing
//! at the zero page. The real-mode setup code is not run: what it would
//! ask the BIOS for (memory map) is in the zero page already.

use super::{BootState, LoadError, place};
use crate::memory::GuestMemory;

/// Offsets into the image's first sector / the zero page.
const SETUP_SECTS: usize = 0x1F1;
const BOOT_FLAG: usize = 0x1FE;
const JUMP: usize = 0x200;
const HEADER: usize = 0x202;
const VERSION: usize = 0x206;
const TYPE_OF_LOADER: usize = 0x210;
const LOADFLAGS: usize = 0x211;
const CODE32_START: usize = 0x214;
const RAMDISK_IMAGE: usize = 0x218;
const RAMDISK_SIZE: usize = 0x21C;
const CMD_LINE_PTR: usize = 0x228;
const INITRD_ADDR_MAX: usize = 0x22C;
const CMDLINE_SIZE: usize = 0x238;
/// boot_params fields outside the setup header.
const ALT_MEM_K: usize = 0x1E0;
const E820_ENTRIES: usize = 0x1E8;
const E820_TABLE: usize = 0x2D0;
const E820_MAX: usize = 128;

const HDRS: u32 = 0x5372_6448;
const LOADED_HIGH: u8 = 1 << 0;
/// "Undefined" boot loader: bt86 has no registered id.
const LOADER_UNDEFINED: u8 = 0xFF;

/// Where the loader puts its structures, all in conventional memory below
/// the EBDA: the zero page, and the command line after it.
pub const ZERO_PAGE: u32 = 0x7000;
pub const CMDLINE: u32 = 0x20000;
/// The protected-mode kernel of a bzImage goes here.
pub const KERNEL_BASE: u32 = 0x10_0000;
/// A GDT with the boot protocol's __BOOT_CS (0x10) and __BOOT_DS (0x18).
pub const GDT: u32 = 0x6000;

/// A type of e820 range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum E820 {
    Ram = 1,
    Reserved = 2,
}

/// Whether `image` is a bzImage (the "HdrS" setup header signature).
pub fn is_bzimage(image: &[u8]) -> bool {
    image.len() > HEADER + 4 && le32(image, HEADER) == HDRS
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// What the setup header says.
#[derive(Debug)]
pub struct Header {
    pub version: u16,
    pub setup_sects: usize,
    pub code32_start: u32,
    pub initrd_addr_max: u32,
    pub cmdline_size: u32,
}

pub fn parse_header(image: &[u8]) -> Result<Header, LoadError> {
    let bad = |why: String| LoadError::Unsupported(format!("bzImage: {why}"));
    if !is_bzimage(image) {
        return Err(bad("no setup header (\"HdrS\" at 0x202)".into()));
    }
    if le16(image, BOOT_FLAG) != 0xAA55 {
        return Err(bad("boot_flag is not 0xAA55".into()));
    }
    let version = le16(image, VERSION);
    if version < 0x0202 {
        return Err(bad(format!(
            "boot protocol {}.{:02} is older than 2.02",
            version >> 8,
            version & 0xFF
        )));
    }
    if image[LOADFLAGS] & LOADED_HIGH == 0 {
        return Err(bad(
            "a zImage (loaded low) rather than a bzImage: not supported".into(),
        ));
    }
    let setup_sects = match image[SETUP_SECTS] {
        0 => 4,
        n => n as usize,
    };
    if (setup_sects + 1) * 512 >= image.len() {
        return Err(bad(format!(
            "{setup_sects} setup sectors but the file has {} bytes",
            image.len()
        )));
    }
    // Fields newer than 2.02 have defaults before their version.
    let initrd_addr_max = if version >= 0x0203 {
        le32(image, INITRD_ADDR_MAX)
    } else {
        0x37FF_FFFF
    };
    let cmdline_size = if version >= 0x0206 {
        le32(image, CMDLINE_SIZE)
    } else {
        255
    };
    Ok(Header {
        version,
        setup_sects,
        code32_start: le32(image, CODE32_START),
        initrd_addr_max,
        cmdline_size,
    })
}

/// Loads a bzImage (and its initrd) and writes the zero page; `e820` is
/// the machine's memory map.
pub fn load(
    mem: &GuestMemory,
    image: &[u8],
    cmdline: &str,
    initrd: Option<&[u8]>,
    e820: &[(u64, u64, E820)],
) -> Result<BootState, LoadError> {
    let h = parse_header(image)?;
    let kernel = &image[(h.setup_sects + 1) * 512..];
    place(
        mem,
        "the protected-mode kernel",
        KERNEL_BASE as u64,
        kernel,
        0,
    )?;

    let mut zero = vec![0u8; 4096];
    // The setup header as the image has it, up to its end (0x202 plus the
    // jump's displacement byte).
    let header_end = (HEADER + image[JUMP + 1] as usize).min(0x280);
    zero[SETUP_SECTS..header_end].copy_from_slice(&image[SETUP_SECTS..header_end]);
    zero[TYPE_OF_LOADER] = LOADER_UNDEFINED;

    if cmdline.len() as u64 > h.cmdline_size as u64 {
        return Err(LoadError::Unsupported(format!(
            "the command line has {} bytes; this kernel takes at most {}",
            cmdline.len(),
            h.cmdline_size
        )));
    }
    let mut line = cmdline.as_bytes().to_vec();
    line.push(0);
    place(mem, "the kernel command line", CMDLINE as u64, &line, 0)?;
    zero[CMD_LINE_PTR..CMD_LINE_PTR + 4].copy_from_slice(&CMDLINE.to_le_bytes());

    if let Some(rd) = initrd {
        let ram = mem.size() as u64;
        let top = ram.min(h.initrd_addr_max as u64 + 1);
        let kernel_end = KERNEL_BASE as u64 + kernel.len() as u64;
        let at = top.checked_sub(rd.len() as u64).map(|a| a & !0xFFF);
        let at = match at {
            Some(a) if a >= kernel_end => a,
            _ => {
                return Err(LoadError::BeyondRam {
                    what: "the initrd".into(),
                    start: kernel_end,
                    end: kernel_end + rd.len() as u64,
                    ram: mem.size(),
                });
            }
        };
        place(mem, "the initrd", at, rd, 0)?;
        zero[RAMDISK_IMAGE..RAMDISK_IMAGE + 4].copy_from_slice(&(at as u32).to_le_bytes());
        zero[RAMDISK_SIZE..RAMDISK_SIZE + 4].copy_from_slice(&(rd.len() as u32).to_le_bytes());
    }

    if e820.len() > E820_MAX {
        return Err(LoadError::Unsupported(format!(
            "{} e820 ranges (the zero page holds {E820_MAX})",
            e820.len()
        )));
    }
    zero[E820_ENTRIES] = e820.len() as u8;
    for (i, &(base, len, kind)) in e820.iter().enumerate() {
        let at = E820_TABLE + i * 20;
        zero[at..at + 8].copy_from_slice(&base.to_le_bytes());
        zero[at + 8..at + 16].copy_from_slice(&len.to_le_bytes());
        zero[at + 16..at + 20].copy_from_slice(&(kind as u32).to_le_bytes());
    }
    // Extended memory in KiB above 1 MiB, as INT 15h E801 would say.
    let ext_k = (mem.size() as u64).saturating_sub(1 << 20) >> 10;
    zero[ALT_MEM_K..ALT_MEM_K + 4]
        .copy_from_slice(&(ext_k.min(u32::MAX as u64) as u32).to_le_bytes());
    place(mem, "the zero page", ZERO_PAGE as u64, &zero, 0)?;

    // Null, unused, then flat 4 GiB code (0x10) and data (0x18).
    let gdt: [u64; 4] = [0, 0, 0x00CF_9A00_0000_FFFF, 0x00CF_9200_0000_FFFF];
    let gdt: Vec<u8> = gdt.iter().flat_map(|d| d.to_le_bytes()).collect();
    place(mem, "the boot GDT", GDT as u64, &gdt, 0)?;

    Ok(BootState {
        eip: h.code32_start,
        esp: 0,
        esi: ZERO_PAGE,
        eax: 0,
        ebx: 0,
    })
}

/// Where [`load`] put the initrd (0 if there is none), read back from
/// the zero page.
pub fn initrd_address(mem: &GuestMemory) -> u32 {
    let mut b = [0u8; 4];
    let _ = mem.read_phys(ZERO_PAGE + RAMDISK_IMAGE as u32, &mut b);
    u32::from_le_bytes(b)
}

/// The real-mode setup part of a bzImage (boot sector and setup code).
pub fn setup_part(image: &[u8]) -> Result<&[u8], LoadError> {
    let h = parse_header(image)?;
    Ok(&image[..(h.setup_sects + 1) * 512])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal bzImage: one setup sector plus the boot sector, then a
    /// protected-mode part of 16 bytes.
    fn image(version: u16) -> Vec<u8> {
        let mut img = vec![0u8; 2 * 512 + 16];
        img[SETUP_SECTS] = 1;
        img[BOOT_FLAG..BOOT_FLAG + 2].copy_from_slice(&0xAA55u16.to_le_bytes());
        img[JUMP] = 0xEB;
        img[JUMP + 1] = 0x66; // header up to 0x268
        img[HEADER..HEADER + 4].copy_from_slice(&HDRS.to_le_bytes());
        img[VERSION..VERSION + 2].copy_from_slice(&version.to_le_bytes());
        img[LOADFLAGS] = LOADED_HIGH;
        img[CODE32_START..CODE32_START + 4].copy_from_slice(&KERNEL_BASE.to_le_bytes());
        img[INITRD_ADDR_MAX..INITRD_ADDR_MAX + 4].copy_from_slice(&0x37FF_FFFFu32.to_le_bytes());
        img[CMDLINE_SIZE..CMDLINE_SIZE + 4].copy_from_slice(&2047u32.to_le_bytes());
        for (i, b) in img[1024..].iter_mut().enumerate() {
            *b = i as u8 + 1;
        }
        img
    }

    fn read32(mem: &GuestMemory, at: u32) -> u32 {
        let mut b = [0; 4];
        mem.read(at, &mut b).unwrap();
        u32::from_le_bytes(b)
    }

    #[test]
    fn loads_kernel_zero_page_cmdline_and_initrd() {
        let mem = GuestMemory::new(64 << 20).unwrap();
        let map = [
            (0, 0x9FC00, E820::Ram),
            (0x10_0000, (64 << 20) - 0x10_0000, E820::Ram),
        ];
        let rd = vec![0x5Au8; 5000];
        let st = load(&mem, &image(0x020F), "console=ttyS0", Some(&rd), &map).unwrap();
        assert_eq!((st.eip, st.esi), (KERNEL_BASE, ZERO_PAGE));
        let mut k = [0; 16];
        mem.read(KERNEL_BASE, &mut k).unwrap();
        assert_eq!(k[0], 1);
        assert_eq!(k[15], 16);
        assert_eq!(read32(&mem, ZERO_PAGE + HEADER as u32), HDRS);
        let mut b = [0; 1];
        mem.read(ZERO_PAGE + TYPE_OF_LOADER as u32, &mut b).unwrap();
        assert_eq!(b[0], 0xFF);
        assert_eq!(read32(&mem, ZERO_PAGE + CMD_LINE_PTR as u32), CMDLINE);
        let mut line = [0; 14];
        mem.read(CMDLINE, &mut line).unwrap();
        assert_eq!(&line, b"console=ttyS0\0");
        // The initrd sits page-aligned at the top of RAM.
        let at = read32(&mem, ZERO_PAGE + RAMDISK_IMAGE as u32);
        assert_eq!(at, ((64 << 20) - 5000) & !0xFFF);
        assert_eq!(read32(&mem, ZERO_PAGE + RAMDISK_SIZE as u32), 5000);
        mem.read(at + 4999, &mut b).unwrap();
        assert_eq!(b[0], 0x5A);
        mem.read(ZERO_PAGE + E820_ENTRIES as u32, &mut b).unwrap();
        assert_eq!(b[0], 2);
        assert_eq!(read32(&mem, ZERO_PAGE + E820_TABLE as u32 + 20), 0x10_0000);
        assert_eq!(read32(&mem, ZERO_PAGE + E820_TABLE as u32 + 36), 1);
    }

    #[test]
    fn initrd_stays_below_initrd_addr_max() {
        let mem = GuestMemory::new(64 << 20).unwrap();
        let mut img = image(0x020F);
        img[INITRD_ADDR_MAX..INITRD_ADDR_MAX + 4].copy_from_slice(&0x00FF_FFFFu32.to_le_bytes());
        load(&mem, &img, "", Some(&[1; 100]), &[]).unwrap();
        assert_eq!(read32(&mem, ZERO_PAGE + RAMDISK_IMAGE as u32), 0xFFF000);
    }

    #[test]
    fn refuses_what_it_cannot_boot() {
        let mem = GuestMemory::new(16 << 20).unwrap();
        let err = |img: &[u8]| load(&mem, img, "", None, &[]).unwrap_err().to_string();
        assert!(err(&image(0x0201)).contains("older than 2.02"));
        let mut zimage = image(0x020F);
        zimage[LOADFLAGS] = 0;
        assert!(err(&zimage).contains("zImage"));
        assert!(err(&[0u8; 100]).contains("no setup header"));
        let mut short = image(0x020F);
        short[SETUP_SECTS] = 200;
        assert!(err(&short).contains("setup sectors"));
        let long = "x".repeat(3000);
        let e = load(&mem, &image(0x020F), &long, None, &[]).unwrap_err();
        assert!(e.to_string().contains("at most 2047"));
        let e = load(&mem, &image(0x020F), "", Some(&vec![0; 20 << 20]), &[]).unwrap_err();
        assert!(e.to_string().contains("initrd"));
    }
}
