//! QEMU's firmware configuration device (fw_cfg) as x86 sees it: a 16-bit
//! selector at 0x510 and a byte-wide data port at 0x511 (QEMU
//! docs/specs/fw_cfg.rst; keys from
//! include/standard-headers/linux/qemu_fw_cfg.h). Only the traditional
//! interface: the ID item says so, and the DMA ports 0x514-0x51B are left
//! unclaimed.
//!
//! Writing the selector picks an item and rewinds to its first byte. Each
//! byte read of the data port returns the next byte, then 0 once past the
//! end. Bit 14 of the selector asks for write access, which QEMU no
//! longer grants through the ports, so it is ignored and data writes are
//! dropped; bit 15 picks the architecture-specific items, which live in
//! the same table under their 0x8000-range keys. As in QEMU, byte
//! accesses to either port are data accesses, only a 16-bit write at 0x510
//! selects, and wider reads return 0 without consuming data.
//!
//! Files (keys 0x20 up, listed in the directory item 0x19) are kept
//! sorted by name, as modern QEMU machine types do, so adding a file
//! renumbers the files after it. The machine builds the device before
//! the guest starts.

use std::collections::BTreeMap;

use super::{IoAction, Port, PortDevice};

pub const SELECTOR_PORT: u16 = 0x510;
pub const DATA_PORT: u16 = 0x511;
pub const PORT_COUNT: u16 = 2;

// Item keys (qemu_fw_cfg.h).
pub const SIGNATURE: u16 = 0x00;
pub const ID: u16 = 0x01;
pub const UUID: u16 = 0x02;
pub const RAM_SIZE: u16 = 0x03;
pub const NOGRAPHIC: u16 = 0x04;
pub const NB_CPUS: u16 = 0x05;
pub const MACHINE_ID: u16 = 0x06;
pub const KERNEL_ADDR: u16 = 0x07;
pub const KERNEL_SIZE: u16 = 0x08;
pub const KERNEL_CMDLINE: u16 = 0x09;
pub const INITRD_ADDR: u16 = 0x0A;
pub const INITRD_SIZE: u16 = 0x0B;
pub const BOOT_DEVICE: u16 = 0x0C;
pub const NUMA: u16 = 0x0D;
pub const BOOT_MENU: u16 = 0x0E;
pub const MAX_CPUS: u16 = 0x0F;
pub const KERNEL_ENTRY: u16 = 0x10;
pub const KERNEL_DATA: u16 = 0x11;
pub const INITRD_DATA: u16 = 0x12;
pub const CMDLINE_ADDR: u16 = 0x13;
pub const CMDLINE_SIZE: u16 = 0x14;
pub const CMDLINE_DATA: u16 = 0x15;
pub const SETUP_ADDR: u16 = 0x16;
pub const SETUP_SIZE: u16 = 0x17;
pub const SETUP_DATA: u16 = 0x18;
pub const FILE_DIR: u16 = 0x19;
pub const FILE_FIRST: u16 = 0x20;

/// Selector bit 14: write access requested (ignored).
pub const WRITE_CHANNEL: u16 = 0x4000;
/// Selector bit 15: an architecture-specific item.
pub const ARCH_LOCAL: u16 = 0x8000;
// x86's architecture-specific items (QEMU hw/i386/fw_cfg.h).
pub const ACPI_TABLES: u16 = ARCH_LOCAL;
pub const SMBIOS_ENTRIES: u16 = ARCH_LOCAL | 1;
pub const IRQ0_OVERRIDE: u16 = ARCH_LOCAL | 2;
pub const E820_TABLE: u16 = ARCH_LOCAL | 3;

/// ID item bit 0: the traditional (port) interface. Bit 1, DMA, stays 0.
const VERSION_TRADITIONAL: u32 = 1 << 0;
/// Keys below 0x4000 in each half of the table; files go up to there.
const KEYS_PER_HALF: u16 = WRITE_CHANNEL;
/// A directory entry: size (BE32), select (BE16), reserved (16 bits),
/// name (56 bytes, NUL-terminated).
const FILE_ENTRY_LEN: usize = 64;
const FILE_NAME_LEN: usize = 56;
/// QEMU's struct e820_entry: address (LE64), length (LE64), type (LE32),
/// packed.
const E820_ENTRY_LEN: usize = 20;
pub const E820_FILE: &str = "etc/e820";
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

pub struct FwCfg {
    /// Numbered items, by key without the write bit.
    items: BTreeMap<u16, Vec<u8>>,
    /// Files sorted by name; file `i` has key `FILE_FIRST + i`.
    files: Vec<(String, Vec<u8>)>,
    /// The directory item, rebuilt when a file is added.
    dir: Vec<u8>,
    /// The selected key without the write bit.
    selected: u16,
    offset: usize,
}

impl Default for FwCfg {
    fn default() -> Self {
        Self::new()
    }
}

impl FwCfg {
    /// The device with its signature and ID items and an empty file
    /// directory, the signature selected (as after QEMU's reset).
    pub fn new() -> Self {
        let mut f = FwCfg {
            items: BTreeMap::new(),
            files: Vec::new(),
            dir: Vec::new(),
            selected: SIGNATURE,
            offset: 0,
        };
        f.rebuild_dir();
        f.add_bytes(SIGNATURE, b"QEMU".to_vec());
        f.add_bytes(ID, VERSION_TRADITIONAL.to_le_bytes().to_vec());
        f
    }

    /// Sets the numbered item `key` (bit 15 set for an arch-specific
    /// one), replacing any earlier data. The directory and file keys
    /// belong to [`Self::add_file`].
    pub fn add_bytes(&mut self, key: u16, data: Vec<u8>) -> &mut Self {
        let key = key & !WRITE_CHANNEL;
        debug_assert!(key != FILE_DIR && !(FILE_FIRST..KEYS_PER_HALF).contains(&key));
        self.items.insert(key, data);
        self
    }

    /// Adds the file `name` (up to 55 bytes are kept, as QEMU does),
    /// replacing the data of a file of the same name.
    pub fn add_file(&mut self, name: &str, data: Vec<u8>) -> &mut Self {
        match self.files.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => self.files[i].1 = data,
            Err(i) => {
                debug_assert!(self.files.len() < usize::from(KEYS_PER_HALF - FILE_FIRST));
                self.files.insert(i, (name.to_owned(), data));
            }
        }
        self.rebuild_dir();
        self
    }

    /// RAM size in bytes (LE64).
    pub fn set_ram_size(&mut self, bytes: u64) -> &mut Self {
        self.add_bytes(RAM_SIZE, bytes.to_le_bytes().to_vec())
    }

    /// Whether the machine has no display (LE16).
    pub fn set_nographic(&mut self, nographic: bool) -> &mut Self {
        self.add_bytes(NOGRAPHIC, u16::from(nographic).to_le_bytes().to_vec())
    }

    /// CPUs present at boot (LE16).
    pub fn set_cpu_count(&mut self, cpus: u16) -> &mut Self {
        self.add_bytes(NB_CPUS, cpus.to_le_bytes().to_vec())
    }

    /// The most CPUs the machine may have (LE16).
    pub fn set_max_cpus(&mut self, cpus: u16) -> &mut Self {
        self.add_bytes(MAX_CPUS, cpus.to_le_bytes().to_vec())
    }

    /// The boot device, QEMU's first `-boot order` letter (LE16).
    pub fn set_boot_device(&mut self, device: u8) -> &mut Self {
        self.add_bytes(BOOT_DEVICE, u16::from(device).to_le_bytes().to_vec())
    }

    /// Whether the firmware shows its boot menu (LE16).
    pub fn set_boot_menu(&mut self, show: bool) -> &mut Self {
        self.add_bytes(BOOT_MENU, u16::from(show).to_le_bytes().to_vec())
    }

    /// The protected-mode kernel: where it is loaded (LE32), its size
    /// (LE32) and its bytes.
    pub fn set_kernel(&mut self, load_addr: u32, data: Vec<u8>) -> &mut Self {
        self.add_sized(KERNEL_ADDR, KERNEL_SIZE, KERNEL_DATA, load_addr, data)
    }

    /// The initrd: where it is loaded, its size and its bytes.
    pub fn set_initrd(&mut self, load_addr: u32, data: Vec<u8>) -> &mut Self {
        self.add_sized(INITRD_ADDR, INITRD_SIZE, INITRD_DATA, load_addr, data)
    }

    /// The real-mode setup code of a Linux kernel: where it is loaded,
    /// its size and its bytes.
    pub fn set_setup(&mut self, load_addr: u32, data: Vec<u8>) -> &mut Self {
        self.add_sized(SETUP_ADDR, SETUP_SIZE, SETUP_DATA, load_addr, data)
    }

    /// The kernel command line: where it is loaded, its size counting the
    /// terminating NUL, and its bytes with the NUL.
    pub fn set_cmdline(&mut self, load_addr: u32, cmdline: &str) -> &mut Self {
        let mut data = cmdline.as_bytes().to_vec();
        data.push(0);
        self.add_sized(CMDLINE_ADDR, CMDLINE_SIZE, CMDLINE_DATA, load_addr, data)
    }

    /// The kernel entry point (LE32).
    pub fn set_kernel_entry(&mut self, entry: u32) -> &mut Self {
        self.add_bytes(KERNEL_ENTRY, entry.to_le_bytes().to_vec())
    }

    fn add_sized(&mut self, addr: u16, size: u16, key: u16, at: u32, data: Vec<u8>) -> &mut Self {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        self.add_bytes(addr, at.to_le_bytes().to_vec());
        self.add_bytes(size, len.to_le_bytes().to_vec());
        self.add_bytes(key, data)
    }

    /// The "etc/e820" file: one entry per (base, length, type).
    pub fn set_e820(&mut self, entries: &[(u64, u64, u32)]) -> &mut Self {
        let mut data = Vec::with_capacity(entries.len() * E820_ENTRY_LEN);
        for &(base, len, kind) in entries {
            data.extend_from_slice(&base.to_le_bytes());
            data.extend_from_slice(&len.to_le_bytes());
            data.extend_from_slice(&kind.to_le_bytes());
        }
        self.add_file(E820_FILE, data)
    }

    fn rebuild_dir(&mut self) {
        let mut dir = Vec::with_capacity(4 + self.files.len() * FILE_ENTRY_LEN);
        dir.extend_from_slice(&(self.files.len() as u32).to_be_bytes());
        for (i, (name, data)) in self.files.iter().enumerate() {
            let size = u32::try_from(data.len()).unwrap_or(u32::MAX);
            dir.extend_from_slice(&size.to_be_bytes());
            dir.extend_from_slice(&(FILE_FIRST + i as u16).to_be_bytes());
            dir.extend_from_slice(&[0, 0]);
            let mut field = [0u8; FILE_NAME_LEN];
            let n = name.len().min(FILE_NAME_LEN - 1);
            field[..n].copy_from_slice(&name.as_bytes()[..n]);
            dir.extend_from_slice(&field);
        }
        self.dir = dir;
    }

    /// The data of the item `key` (without the write bit), if it exists.
    fn item(&self, key: u16) -> Option<&[u8]> {
        if key == FILE_DIR {
            return Some(&self.dir);
        }
        let file = (FILE_FIRST..KEYS_PER_HALF)
            .contains(&key)
            .then(|| self.files.get(usize::from(key - FILE_FIRST)))
            .flatten();
        match file {
            Some((_, data)) => Some(data),
            None => self.items.get(&key).map(Vec::as_slice),
        }
    }

    fn select(&mut self, key: u16) {
        self.selected = key & !WRITE_CHANNEL;
        self.offset = 0;
    }

    fn read_data(&mut self) -> u8 {
        let offset = self.offset;
        match self.item(self.selected).and_then(|d| d.get(offset)) {
            Some(&b) => {
                self.offset += 1;
                b
            }
            None => 0,
        }
    }
}

impl PortDevice for FwCfg {
    fn read(&mut self, _port: Port, size: u8) -> u32 {
        if size == 1 {
            u32::from(self.read_data())
        } else {
            0
        }
    }

    fn write(&mut self, port: Port, size: u8, value: u32) -> IoAction {
        if port.0 == SELECTOR_PORT && size == 2 {
            self.select(value as u16);
        }
        IoAction::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(f: &mut FwCfg, key: u16) {
        f.write(Port(SELECTOR_PORT), 2, u32::from(key));
    }

    /// `n` byte reads of the data port, as SeaBIOS's `insb`.
    fn read(f: &mut FwCfg, n: usize) -> Vec<u8> {
        (0..n).map(|_| f.read(Port(DATA_PORT), 1) as u8).collect()
    }

    fn read_item(f: &mut FwCfg, key: u16, n: usize) -> Vec<u8> {
        select(f, key);
        read(f, n)
    }

    #[test]
    fn signature_reads_through_the_ports() {
        let mut f = FwCfg::new();
        assert_eq!(read_item(&mut f, SIGNATURE, 4), b"QEMU");
    }

    #[test]
    fn the_signature_is_selected_from_the_start() {
        let mut f = FwCfg::new();
        assert_eq!(read(&mut f, 4), b"QEMU");
    }

    #[test]
    fn id_offers_the_traditional_interface_only() {
        let mut f = FwCfg::new();
        assert_eq!(read_item(&mut f, ID, 4), [1, 0, 0, 0]);
    }

    /// SeaBIOS's qemu_cfg_init: the big-endian count, then the 64-byte
    /// entries read on in one go; then each file by its selector.
    #[test]
    fn file_directory_parses_as_seabios_does() {
        let mut f = FwCfg::new();
        f.add_file("etc/boot-fail-wait", vec![0xFF; 4])
            .add_file("bootorder", b"/pci@i0cf8/ide@1,1/drive@0/disk@0\n".to_vec())
            .add_file("etc/acpi/rsdp", vec![7; 36]);
        select(&mut f, FILE_DIR);
        let count = u32::from_be_bytes(read(&mut f, 4).try_into().unwrap());
        assert_eq!(count, 3);
        let mut files = Vec::new();
        for _ in 0..count {
            let e = read(&mut f, FILE_ENTRY_LEN);
            let size = u32::from_be_bytes(e[0..4].try_into().unwrap());
            let select = u16::from_be_bytes(e[4..6].try_into().unwrap());
            assert_eq!(&e[6..8], [0, 0], "reserved");
            let name_len = e[8..].iter().position(|&b| b == 0).unwrap();
            let name = String::from_utf8(e[8..8 + name_len].to_vec()).unwrap();
            files.push((name, select, size));
        }
        assert_eq!(
            files,
            [
                ("bootorder".to_owned(), 0x20, 34),
                ("etc/acpi/rsdp".to_owned(), 0x21, 36),
                ("etc/boot-fail-wait".to_owned(), 0x22, 4),
            ]
        );
        assert_eq!(read_item(&mut f, 0x21, 36), [7; 36]);
        assert_eq!(read_item(&mut f, 0x22, 4), [0xFF; 4]);
        assert_eq!(read_item(&mut f, 0x20, 9), b"/pci@i0cf");
    }

    #[test]
    fn an_empty_directory_counts_zero() {
        let mut f = FwCfg::new();
        assert_eq!(read_item(&mut f, FILE_DIR, 8), [0; 8]);
    }

    #[test]
    fn adding_a_file_again_replaces_its_data() {
        let mut f = FwCfg::new();
        f.add_file("etc/x", vec![1, 2])
            .add_file("etc/x", vec![3, 4, 5]);
        let dir = read_item(&mut f, FILE_DIR, 4 + FILE_ENTRY_LEN);
        assert_eq!(dir[..4], [0, 0, 0, 1]);
        assert_eq!(dir[4..8], [0, 0, 0, 3]);
        assert_eq!(read_item(&mut f, FILE_FIRST, 3), [3, 4, 5]);
    }

    #[test]
    fn long_file_names_keep_55_bytes_and_a_nul() {
        let mut f = FwCfg::new();
        let name = "n".repeat(70);
        f.add_file(&name, vec![]);
        let dir = read_item(&mut f, FILE_DIR, 4 + FILE_ENTRY_LEN);
        assert_eq!(dir[12..12 + 55], [b'n'; 55]);
        assert_eq!(dir[12 + 55], 0);
    }

    #[test]
    fn e820_file_holds_packed_little_endian_entries() {
        let mut f = FwCfg::new();
        f.set_e820(&[
            (0, 0x9_FC00, E820_RAM),
            (0x10_0000, 0x1_0000_0000, E820_RAM),
            (0xFFFC_0000, 0x4_0000, E820_RESERVED),
        ]);
        select(&mut f, FILE_DIR);
        let dir = read(&mut f, 4 + FILE_ENTRY_LEN);
        assert_eq!(dir[4..8], 60u32.to_be_bytes());
        assert_eq!(&dir[12..12 + 9], b"etc/e820\0");
        let data = read_item(&mut f, FILE_FIRST, 60);
        let entry = |i: usize| {
            let e = &data[i * 20..i * 20 + 20];
            (
                u64::from_le_bytes(e[0..8].try_into().unwrap()),
                u64::from_le_bytes(e[8..16].try_into().unwrap()),
                u32::from_le_bytes(e[16..20].try_into().unwrap()),
            )
        };
        assert_eq!(entry(0), (0, 0x9_FC00, 1));
        assert_eq!(entry(1), (0x10_0000, 0x1_0000_0000, 1));
        assert_eq!(entry(2), (0xFFFC_0000, 0x4_0000, 2));
    }

    #[test]
    fn selecting_rewinds_the_offset() {
        let mut f = FwCfg::new();
        assert_eq!(read_item(&mut f, SIGNATURE, 2), b"QE");
        assert_eq!(read_item(&mut f, SIGNATURE, 4), b"QEMU");
        select(&mut f, SIGNATURE);
        select(&mut f, ID);
        assert_eq!(read(&mut f, 1), [1]);
    }

    #[test]
    fn reads_past_the_end_return_zero() {
        let mut f = FwCfg::new();
        f.set_cpu_count(0x0102);
        assert_eq!(read_item(&mut f, NB_CPUS, 5), [0x02, 0x01, 0, 0, 0]);
        assert_eq!(read_item(&mut f, SIGNATURE, 6), b"QEMU\0\0");
    }

    #[test]
    fn unknown_keys_read_zero() {
        let mut f = FwCfg::new();
        for key in [UUID, 0x1234, 0x3FFF, FILE_FIRST, E820_TABLE, 0xFFFF] {
            assert_eq!(read_item(&mut f, key, 4), [0; 4], "key {key:#x}");
        }
    }

    #[test]
    fn the_write_bit_selects_the_same_item_and_data_writes_are_dropped() {
        let mut f = FwCfg::new();
        select(&mut f, WRITE_CHANNEL | SIGNATURE);
        assert_eq!(read(&mut f, 1), b"Q");
        f.write(Port(DATA_PORT), 1, u32::from(b'X'));
        f.write(Port(SELECTOR_PORT), 1, u32::from(b'X'));
        assert_eq!(read(&mut f, 3), b"EMU", "no write, no advance");
        assert_eq!(read_item(&mut f, SIGNATURE, 4), b"QEMU");
    }

    #[test]
    fn arch_local_items_are_apart_from_generic_ones() {
        let mut f = FwCfg::new();
        f.add_bytes(IRQ0_OVERRIDE, vec![1, 0, 0, 0]);
        f.set_ram_size(0x8000_0000);
        assert_eq!(read_item(&mut f, IRQ0_OVERRIDE, 4), [1, 0, 0, 0]);
        assert_eq!(read_item(&mut f, ARCH_LOCAL | WRITE_CHANNEL | 2, 1), [1]);
        assert_eq!(read_item(&mut f, 2, 1), [0]);
        assert_eq!(read_item(&mut f, ARCH_LOCAL | RAM_SIZE, 1), [0]);
        assert_eq!(read_item(&mut f, RAM_SIZE, 8), 0x8000_0000u64.to_le_bytes());
    }

    #[test]
    fn only_a_word_write_to_the_selector_selects() {
        let mut f = FwCfg::new();
        f.write(Port(SELECTOR_PORT), 1, u32::from(ID));
        f.write(Port(SELECTOR_PORT), 4, u32::from(ID));
        f.write(Port(DATA_PORT), 2, u32::from(ID));
        assert_eq!(read(&mut f, 1), b"Q");
    }

    #[test]
    fn wide_reads_return_zero_and_consume_nothing() {
        let mut f = FwCfg::new();
        assert_eq!(f.read(Port(DATA_PORT), 2), 0);
        assert_eq!(f.read(Port(DATA_PORT), 4), 0);
        // A byte read of the selector port is a data read, as in QEMU.
        assert_eq!(f.read(Port(SELECTOR_PORT), 1), u32::from(b'Q'));
        assert_eq!(read(&mut f, 3), b"EMU");
    }

    #[test]
    fn kernel_items_carry_address_size_and_data() {
        let mut f = FwCfg::new();
        f.set_kernel(0x10_0000, vec![0xAA; 5])
            .set_initrd(0x7F0_0000, vec![0xBB; 3])
            .set_setup(0x9_0000, vec![0xCC; 2])
            .set_cmdline(0x2_0000, "console=ttyS0")
            .set_max_cpus(4)
            .set_nographic(true);
        let le32 = |v: u32| v.to_le_bytes().to_vec();
        assert_eq!(read_item(&mut f, KERNEL_ADDR, 4), le32(0x10_0000));
        assert_eq!(read_item(&mut f, KERNEL_SIZE, 4), le32(5));
        assert_eq!(read_item(&mut f, KERNEL_DATA, 5), [0xAA; 5]);
        assert_eq!(read_item(&mut f, INITRD_ADDR, 4), le32(0x7F0_0000));
        assert_eq!(read_item(&mut f, INITRD_SIZE, 4), le32(3));
        assert_eq!(read_item(&mut f, INITRD_DATA, 3), [0xBB; 3]);
        assert_eq!(read_item(&mut f, SETUP_ADDR, 4), le32(0x9_0000));
        assert_eq!(read_item(&mut f, SETUP_SIZE, 4), le32(2));
        assert_eq!(read_item(&mut f, CMDLINE_ADDR, 4), le32(0x2_0000));
        assert_eq!(read_item(&mut f, CMDLINE_SIZE, 4), le32(14));
        assert_eq!(read_item(&mut f, CMDLINE_DATA, 15), b"console=ttyS0\0\0");
        assert_eq!(read_item(&mut f, MAX_CPUS, 2), [4, 0]);
        assert_eq!(read_item(&mut f, NOGRAPHIC, 2), [1, 0]);
    }
}
