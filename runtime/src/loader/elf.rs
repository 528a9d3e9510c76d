//! The little of ELF32 a kernel loader needs: the loadable segments.

use super::LoadError;

const EM_386: u16 = 3;
const PT_LOAD: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Physical load address (p_paddr, as multiboot loaders use).
    pub paddr: u32,
    pub offset: u32,
    pub filesz: u32,
    pub memsz: u32,
}

#[derive(Debug)]
pub struct Elf32 {
    pub entry: u32,
    pub segments: Vec<Segment>,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, LoadError> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(LoadError::NotElf("truncated header"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, LoadError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(LoadError::NotElf("truncated header"))
}

pub fn is_elf(image: &[u8]) -> bool {
    image.starts_with(b"\x7fELF")
}

pub fn parse(image: &[u8]) -> Result<Elf32, LoadError> {
    if !is_elf(image) {
        return Err(LoadError::NotElf("no ELF magic"));
    }
    if image.get(4) != Some(&1) {
        return Err(LoadError::NotElf("not ELFCLASS32 (a 64-bit kernel?)"));
    }
    if image.get(5) != Some(&1) {
        return Err(LoadError::NotElf("not little-endian"));
    }
    if u16_at(image, 18)? != EM_386 {
        return Err(LoadError::NotElf("machine is not EM_386"));
    }
    let entry = u32_at(image, 24)?;
    let phoff = u32_at(image, 28)? as usize;
    let phentsize = u16_at(image, 42)? as usize;
    let phnum = u16_at(image, 44)? as usize;
    if phnum > 0 && phentsize < 32 {
        return Err(LoadError::NotElf("program header entries too small"));
    }
    let mut segments = Vec::new();
    for i in 0..phnum {
        let at = phoff
            .checked_add(
                i.checked_mul(phentsize)
                    .ok_or(LoadError::NotElf("program headers overflow"))?,
            )
            .ok_or(LoadError::NotElf("program headers overflow"))?;
        if u32_at(image, at)? != PT_LOAD {
            continue;
        }
        let seg = Segment {
            offset: u32_at(image, at + 4)?,
            paddr: u32_at(image, at + 12)?,
            filesz: u32_at(image, at + 16)?,
            memsz: u32_at(image, at + 20)?,
        };
        if seg.filesz > seg.memsz {
            return Err(LoadError::NotElf(
                "segment file size exceeds its memory size",
            ));
        }
        if (seg.offset as u64 + seg.filesz as u64) > image.len() as u64 {
            return Err(LoadError::NotElf(
                "segment extends past the end of the file",
            ));
        }
        segments.push(seg);
    }
    Ok(Elf32 { entry, segments })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        assert!(matches!(
            parse(b"hello world"),
            Err(LoadError::NotElf("no ELF magic"))
        ));
        assert!(matches!(
            parse(b"\x7fELF\x02\x01"),
            Err(LoadError::NotElf(_))
        ));
        assert!(matches!(
            parse(b"\x7fELF\x01\x01\x01"),
            Err(LoadError::NotElf("truncated header"))
        ));
    }
}
