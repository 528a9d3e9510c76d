//! Raw images: the bytes go to a given address and run from there.

use super::{BootState, LoadError, place};
use crate::memory::GuestMemory;

pub fn load(
    mem: &GuestMemory,
    image: &[u8],
    load: u32,
    entry: Option<u32>,
) -> Result<BootState, LoadError> {
    if image.is_empty() {
        return Err(LoadError::Empty);
    }
    place(mem, "the flat image", load as u64, image, 0)?;
    let eip = entry.unwrap_or(load);
    Ok(BootState {
        eip,
        eax: 0,
        ebx: 0,
        esp: super::multiboot::INITIAL_ESP,
        esi: 0,
    })
}
