//! Boot loaders: put a guest image into RAM and say how the CPU starts.

pub mod bzimage;
pub mod elf;
pub mod flat;
pub mod multiboot;

use crate::memory::GuestMemory;

/// How the CPU starts after loading: 32-bit flat protected mode, paging
/// off, interrupts off (the state multiboot and QEMU's -kernel give).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootState {
    pub eip: u32,
    pub eax: u32,
    pub ebx: u32,
    pub esp: u32,
    pub esi: u32,
}

#[derive(Debug)]
pub enum LoadError {
    Io(String, std::io::Error),
    NotElf(&'static str),
    NoMultibootHeader,
    BadMultibootHeader(String),
    Unsupported(String),
    BeyondRam {
        what: String,
        start: u64,
        end: u64,
        ram: usize,
    },
    Empty,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Io(path, e) => write!(f, "cannot read {path}: {e}"),
            LoadError::NotElf(why) => write!(f, "not a 32-bit x86 ELF file: {why}"),
            LoadError::NoMultibootHeader => {
                write!(
                    f,
                    "no multiboot header (magic 0x1BADB002) in the first 8192 bytes: not a multiboot kernel"
                )
            }
            LoadError::BadMultibootHeader(why) => write!(f, "bad multiboot header: {why}"),
            LoadError::Unsupported(why) => write!(f, "unsupported image: {why}"),
            LoadError::BeyondRam {
                what,
                start,
                end,
                ram,
            } => write!(
                f,
                "{what} at {start:#x}..{end:#x} does not fit in guest RAM ({} MiB); try a larger -m",
                ram >> 20
            ),
            LoadError::Empty => write!(f, "the image is empty"),
        }
    }
}

impl std::error::Error for LoadError {}

/// Copies `data` to guest physical `addr` and zeroes `zero_len` bytes after
/// it, or says clearly why it does not fit.
pub fn place(
    mem: &GuestMemory,
    what: &str,
    addr: u64,
    data: &[u8],
    zero_len: u64,
) -> Result<(), LoadError> {
    let end = addr + data.len() as u64 + zero_len;
    if end > mem.size() as u64 {
        return Err(LoadError::BeyondRam {
            what: what.into(),
            start: addr,
            end,
            ram: mem.size(),
        });
    }
    let beyond = |_| LoadError::BeyondRam {
        what: what.into(),
        start: addr,
        end,
        ram: mem.size(),
    };
    mem.write(addr as u32, data).map_err(beyond)?;
    mem.fill((addr + data.len() as u64) as u32, zero_len as usize, 0)
        .map_err(beyond)?;
    Ok(())
}

pub fn read_file(path: &std::path::Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|e| LoadError::Io(path.display().to_string(), e))
}
