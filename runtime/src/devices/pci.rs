//! PCI configuration mechanism #1 (PCI Local Bus Specification 3.0,
//! 3.2.2.3.2) on bus 0, with the chipset of QEMU's "pc" machine: the
//! i440FX host bridge at 00.0 (Intel 82441FX PMC data sheet, 290549,
//! section 3.2) and the PIIX3 PCI-to-ISA bridge at 01.0 (Intel
//! 82371FB/82371SB PIIX/PIIX3 data sheet, function 0).
//!
//! CONFIG_ADDRESS (0xCF8) is a register only to dword accesses at 0xCF8:
//! byte and word accesses to 0xCF8-0xCFB pass through as ordinary I/O
//! cycles (PCI 3.0 3.2.2.3.2), and the only thing decoding them on a PIIX3
//! system is the reset control register at 0xCF9. (QEMU instead returns
//! the address register to reads of any size there; bt86 follows the
//! hardware.) The data window 0xCFC-0xCFF reaches the selected dword of
//! the selected function while the enable bit is set; byte and word
//! accesses pick bytes within that dword by their port offset. With the
//! enable bit clear, or for a bus, device or function that is not there,
//! the window is ordinary I/O to nothing: reads are all ones, writes lost.
//!
//! Each function is a [`ConfigSpace`]: 256 bytes, a mask of the bits
//! software may write, and the values they take at reset. A BAR is a
//! write mask too (the size bits read back 0), so a new device is one
//! `ConfigSpace` given to [`PciBus::add_function`]. Writes that change
//! the i440FX PAM registers are reported through
//! [`PciBus::take_pam_change`], since a port write can only return an
//! [`IoAction`].

use super::{IoAction, Port, PortDevice};

pub const CONFIG_ADDRESS: u16 = 0xCF8;
pub const CONFIG_DATA: u16 = 0xCFC;
/// The length of each of the two port ranges the bus is registered on.
pub const PORT_COUNT: u16 = 4;
/// PIIX3 reset control register (RC), inside the CONFIG_ADDRESS range.
pub const RESET_CONTROL: u16 = 0xCF9;

/// CONFIG_ADDRESS bit 31: the data window reaches configuration space.
const ENABLE: u32 = 1 << 31;
/// The CONFIG_ADDRESS bits that hold state: enable, bus, device,
/// function, dword register. Bits 30:24 and 1:0 are reserved and read 0.
const ADDRESS_BITS: u32 = 0x80FF_FFFC;

/// RC bit 1: the reset is a hard (system) reset rather than a CPU INIT.
const RC_SYSTEM_RESET: u8 = 1 << 1;
/// RC bit 2: writing 1 starts the reset. It never reads back.
const RC_RESET_CPU: u8 = 1 << 2;

// Type 0 header registers (PCI 3.0, 6.1).
const VENDOR_ID: u8 = 0x00;
const DEVICE_ID: u8 = 0x02;
const COMMAND: u8 = 0x04;
const STATUS: u8 = 0x06;
const REVISION_ID: u8 = 0x08;
const CLASS_CODE: u8 = 0x09;
const LATENCY_TIMER: u8 = 0x0D;
const HEADER_TYPE: u8 = 0x0E;
const SUBSYSTEM_VENDOR_ID: u8 = 0x2C;
const SUBSYSTEM_ID: u8 = 0x2E;

const COMMAND_SPECIAL_CYCLES: u16 = 1 << 3;
const COMMAND_PARITY: u16 = 1 << 6;
const COMMAND_SERR: u16 = 1 << 8;

/// Header type bit 7: functions 1-7 of the device may exist.
pub const HEADER_MULTI_FUNCTION: u8 = 0x80;

pub const VENDOR_INTEL: u16 = 0x8086;
pub const DEVICE_82441FX: u16 = 0x1237;
pub const DEVICE_82371SB_ISA: u16 = 0x7000;
/// The subsystem ids QEMU gives its devices (Red Hat / "QEMU"). SeaBIOS
/// reads them at 00.0 to decide it runs on QEMU.
pub const SUBSYSTEM_VENDOR_QEMU: u16 = 0x1AF4;
pub const SUBSYSTEM_QEMU: u16 = 0x1100;

/// Class codes: base class, subclass, programming interface.
pub const CLASS_HOST_BRIDGE: u32 = 0x06_00_00;
pub const CLASS_ISA_BRIDGE: u32 = 0x06_01_00;

// i440FX device-specific registers (82441FX 3.2.11-3.2.26).
/// PAM0-PAM6 (0x59-0x5F): the read/write enables of 0xC0000-0xFFFFF.
pub const PAM0: u8 = 0x59;
pub const PAM_COUNT: usize = 7;
/// PAM0's low nibble is reserved; in the others bits 7, 6, 3 and 2 are
/// (the 82441FX leaves caching to the CPU's MTRRs).
const PAM0_WRITABLE: u8 = 0x30;
const PAM_WRITABLE: u8 = 0x33;
pub const SMRAM: u8 = 0x72;
const SMRAM_D_OPEN: u8 = 1 << 6;
const SMRAM_D_CLS: u8 = 1 << 5;
const SMRAM_D_LCK: u8 = 1 << 4;
const SMRAM_G_SMRAME: u8 = 1 << 3;
/// C_BASE_SEG, hardwired to 010: SMRAM is at 0xA0000.
const SMRAM_C_BASE_A0000: u8 = 0b010;

// PIIX3 function 0 registers.
/// PIRQRC[A:D] (0x60-0x63): bit 7 disables routing, bits 3:0 name the
/// ISA IRQ, bits 6:4 are reserved.
pub const PIRQRC: u8 = 0x60;
const PIRQ_DISABLED: u8 = 0x80;
const PIRQ_IRQ: u8 = 0x0F;
/// The IRQs PIRQRC may name (data sheet: 3-7, 9-12, 14, 15); the other
/// values are reserved.
const PIRQ_VALID_IRQS: u16 = 0b1101_1110_1111_1000;
/// Top of memory (TOM): ISA/DMA forwarding below 16 MiB.
pub const TOM: u8 = 0x69;

/// A device and function number on bus 0: bits 7:3 device, 2:0 function,
/// as in CONFIG_ADDRESS bits 15:8.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DevFn(u8);

impl DevFn {
    pub const fn new(device: u8, function: u8) -> Self {
        DevFn(((device & 0x1F) << 3) | (function & 7))
    }

    pub const fn device(self) -> u8 {
        self.0 >> 3
    }

    pub const fn function(self) -> u8 {
        self.0 & 7
    }
}

pub const HOST_BRIDGE: DevFn = DevFn::new(0, 0);
pub const ISA_BRIDGE: DevFn = DevFn::new(1, 0);

/// One function's 256-byte configuration space, the bits of it software
/// may write, and the values it takes at reset. Multi-byte registers are
/// little endian.
#[derive(Clone)]
pub struct ConfigSpace {
    bytes: [u8; 256],
    writable: [u8; 256],
    reset: [u8; 256],
}

impl ConfigSpace {
    /// A type 0 header with these ids and QEMU's subsystem ids; every
    /// other byte reads 0 and is read-only until [`Self::define8`] and
    /// friends say otherwise.
    pub fn new(vendor: u16, device: u16, revision: u8, class: u32) -> Self {
        let mut c = ConfigSpace {
            bytes: [0; 256],
            writable: [0; 256],
            reset: [0; 256],
        };
        c.define16(VENDOR_ID, vendor, 0);
        c.define16(DEVICE_ID, device, 0);
        c.define8(REVISION_ID, revision, 0);
        for (i, b) in class.to_le_bytes()[..3].iter().enumerate() {
            c.define8(CLASS_CODE + i as u8, *b, 0);
        }
        c.define16(SUBSYSTEM_VENDOR_ID, SUBSYSTEM_VENDOR_QEMU, 0);
        c.define16(SUBSYSTEM_ID, SUBSYSTEM_QEMU, 0);
        c
    }

    /// Defines the byte at `offset`: its reset (and current) value and
    /// the bits software may write.
    pub fn define8(&mut self, offset: u8, value: u8, writable: u8) {
        let i = usize::from(offset);
        self.bytes[i] = value;
        self.reset[i] = value;
        self.writable[i] = writable;
    }

    /// [`Self::define8`] for the little-endian word at `offset`.
    pub fn define16(&mut self, offset: u8, value: u16, writable: u16) {
        self.define_bytes(offset, &value.to_le_bytes(), &writable.to_le_bytes());
    }

    /// [`Self::define8`] for the little-endian dword at `offset`.
    pub fn define32(&mut self, offset: u8, value: u32, writable: u32) {
        self.define_bytes(offset, &value.to_le_bytes(), &writable.to_le_bytes());
    }

    fn define_bytes(&mut self, offset: u8, value: &[u8], writable: &[u8]) {
        for (i, (v, w)) in value.iter().zip(writable).enumerate() {
            // A register that runs past 0xFF is a caller bug; wrap rather
            // than panic.
            self.define8(offset.wrapping_add(i as u8), *v, *w);
        }
    }

    pub fn read8(&self, offset: u8) -> u8 {
        self.bytes[usize::from(offset)]
    }

    /// The word at `offset & !1`.
    pub fn read16(&self, offset: u8) -> u16 {
        let i = usize::from(offset & !1);
        u16::from_le_bytes([self.bytes[i], self.bytes[i + 1]])
    }

    /// The dword at `offset & !3`.
    pub fn read32(&self, offset: u8) -> u32 {
        let i = usize::from(offset & !3);
        u32::from_le_bytes([
            self.bytes[i],
            self.bytes[i + 1],
            self.bytes[i + 2],
            self.bytes[i + 3],
        ])
    }

    /// A configuration write of one byte: only the writable bits change.
    pub fn write8(&mut self, offset: u8, value: u8) {
        let i = usize::from(offset);
        let mask = self.writable[i];
        self.bytes[i] = (self.bytes[i] & !mask) | (value & mask);
    }

    /// Back to the defined values.
    pub fn reset(&mut self) {
        self.bytes = self.reset;
    }
}

/// The i440FX host bridge, with the data sheet's reset values (as QEMU's
/// tests/qtest/i440fx-test.c lists them by section). Registers
/// whose bit layout bt86 has not checked one by one are fully writable,
/// as QEMU makes all of 0x40-0xFF.
fn i440fx() -> ConfigSpace {
    let mut c = ConfigSpace::new(VENDOR_INTEL, DEVICE_82441FX, 0x02, CLASS_HOST_BRIDGE);
    // Memory access and bus master are hardwired on; parity and SERR#
    // reporting may be enabled.
    c.define16(COMMAND, 0x0006, COMMAND_PARITY | COMMAND_SERR);
    // Fast back-to-back capable, medium DEVSEL timing. The error bits are
    // write-1-to-clear and bt86 never sets them, so they stay 0.
    c.define16(STATUS, 0x0280, 0);
    c.define8(LATENCY_TIMER, 0, 0xF8);
    c.define16(0x50, 0x0000, 0xFFFF); // PMCCFG
    c.define8(0x52, 0x00, 0xFF); // DETURBO
    c.define8(0x53, 0x80, 0xFF); // DBC
    c.define8(0x54, 0x00, 0xFF); // AXC
    c.define16(0x55, 0x0000, 0xFFFF); // DRT
    c.define8(0x57, 0x01, 0xFF); // DRAMC
    c.define8(0x58, 0x10, 0xFF); // DRAMT
    c.define8(PAM0, 0, PAM0_WRITABLE);
    for i in 1..PAM_COUNT as u8 {
        c.define8(PAM0 + i, 0, PAM_WRITABLE);
    }
    for i in 0..8 {
        c.define8(0x60 + i, 0x01, 0xFF); // DRB0-DRB7
    }
    c.define8(0x68, 0x00, 0xC0); // FDHC
    c.define8(0x70, 0x00, 0xF8); // MTT
    c.define8(0x71, 0x10, 0xFF); // CLT

    // D_LCK's effect on the other bits is PciBus::write_smram's.
    c.define8(
        SMRAM,
        SMRAM_C_BASE_A0000,
        SMRAM_D_OPEN | SMRAM_D_CLS | SMRAM_D_LCK | SMRAM_G_SMRAME,
    );
    c.define8(0x90, 0x00, 0xFF); // ERRCMD
    c.define8(0x91, 0x00, 0x00); // ERRSTS (write-1-to-clear, never set)
    c.define8(0x93, 0x00, 0xFF); // TRC
    c
}

/// The PIIX3 PCI-to-ISA bridge, with QEMU's reset values (hw/isa/piix.c).
/// As for the host bridge, registers not checked bit by bit are fully
/// writable.
fn piix3_isa() -> ConfigSpace {
    let mut c = ConfigSpace::new(VENDOR_INTEL, DEVICE_82371SB_ISA, 0x00, CLASS_ISA_BRIDGE);
    c.define8(HEADER_TYPE, HEADER_MULTI_FUNCTION, 0);
    // I/O, memory and bus master are hardwired on; special cycles and
    // SERR# may be enabled.
    c.define16(COMMAND, 0x0007, COMMAND_SPECIAL_CYCLES | COMMAND_SERR);
    c.define16(STATUS, 0x0200, 0); // medium DEVSEL timing
    c.define8(0x4C, 0x4D, 0xFF); // IORT
    c.define16(0x4E, 0x0003, 0xFFFF); // XBCS
    for i in 0..4 {
        c.define8(PIRQRC + i, PIRQ_DISABLED, PIRQ_DISABLED | PIRQ_IRQ);
    }
    c.define8(TOM, 0x02, 0xFE); // bit 0 reserved
    c.define8(0x70, 0x80, 0xCF); // MBIRQ0, bits 5:4 reserved
    c.define8(0x76, 0x0C, 0x8F); // MBDMA0
    c.define8(0x77, 0x0C, 0x8F); // MBDMA1
    c.define16(0x78, 0x0002, 0xFFFF); // PCSC
    c.define8(0x80, 0x00, 0x7F); // APICBASE
    c.define8(0x82, 0x00, 0x0F); // DLC
    c.define8(0xA0, 0x08, 0xFF); // SMICNTL
    c.define16(0xA2, 0x0000, 0xFFFF); // SMIEN
    c.define32(0xA4, 0x0000_0000, 0xFFFF_FFFF); // SEE
    c.define8(0xA8, 0x0F, 0xFF); // FTMR
    c.define16(0xAA, 0x0000, 0xFFFF); // SMIREQ
    c.define8(0xAC, 0x00, 0xFF); // CTLTMR
    c.define8(0xAE, 0x00, 0xFF); // CTHTMR
    c
}

/// Bus 0 behind configuration mechanism #1, and the PIIX3 reset control
/// register that shares its ports.
pub struct PciBus {
    address: u32,
    /// The reset control register: only the reset type bit is kept.
    reset_control: u8,
    host: ConfigSpace,
    isa: ConfigSpace,
    others: Vec<(DevFn, ConfigSpace)>,
    pam_change: Option<[u8; PAM_COUNT]>,
}

impl Default for PciBus {
    fn default() -> Self {
        Self::new()
    }
}

impl PciBus {
    /// The i440FX at 00.0 and the PIIX3 ISA bridge at 01.0.
    pub fn new() -> Self {
        PciBus {
            address: 0,
            reset_control: 0,
            host: i440fx(),
            isa: piix3_isa(),
            others: Vec::new(),
            pam_change: None,
        }
    }

    /// Puts a function on bus 0, replacing what was at `devfn`. 00.0 and
    /// 01.0 are the chipset's and cannot be replaced.
    pub fn add_function(&mut self, devfn: DevFn, config: ConfigSpace) {
        debug_assert!(devfn != HOST_BRIDGE && devfn != ISA_BRIDGE);
        if devfn == HOST_BRIDGE || devfn == ISA_BRIDGE {
            return;
        }
        match self.others.iter_mut().find(|(d, _)| *d == devfn) {
            Some((_, c)) => *c = config,
            None => self.others.push((devfn, config)),
        }
    }

    /// The configuration space of the function at `devfn`, if present.
    pub fn config(&self, devfn: DevFn) -> Option<&ConfigSpace> {
        match devfn {
            HOST_BRIDGE => Some(&self.host),
            ISA_BRIDGE => Some(&self.isa),
            _ => self
                .others
                .iter()
                .find(|(d, _)| *d == devfn)
                .map(|(_, c)| c),
        }
    }

    fn config_mut(&mut self, devfn: DevFn) -> Option<&mut ConfigSpace> {
        match devfn {
            HOST_BRIDGE => Some(&mut self.host),
            ISA_BRIDGE => Some(&mut self.isa),
            _ => self
                .others
                .iter_mut()
                .find(|(d, _)| *d == devfn)
                .map(|(_, c)| c),
        }
    }

    /// PAM0-PAM6 of the host bridge.
    pub fn pam(&self) -> [u8; PAM_COUNT] {
        std::array::from_fn(|i| self.host.read8(PAM0 + i as u8))
    }

    /// The PAM registers, if a write (or reset) changed them since the
    /// last call.
    pub fn take_pam_change(&mut self) -> Option<[u8; PAM_COUNT]> {
        self.pam_change.take()
    }

    /// The host bridge's SMRAM control register.
    pub fn smram(&self) -> u8 {
        self.host.read8(SMRAM)
    }

    /// The ISA IRQ each of PIRQA-PIRQD is routed to, or None where
    /// routing is disabled or names a reserved IRQ.
    pub fn pirq_routes(&self) -> [Option<u8>; 4] {
        std::array::from_fn(|i| {
            let r = self.isa.read8(PIRQRC + i as u8);
            let irq = r & PIRQ_IRQ;
            (r & PIRQ_DISABLED == 0 && PIRQ_VALID_IRQS & (1 << irq) != 0).then_some(irq)
        })
    }

    /// A machine reset: every function back to its reset values.
    pub fn reset(&mut self) {
        let pam = self.pam();
        self.address = 0;
        self.reset_control = 0;
        self.host.reset();
        self.isa.reset();
        for (_, c) in &mut self.others {
            c.reset();
        }
        self.note_pam(pam);
    }

    fn note_pam(&mut self, before: [u8; PAM_COUNT]) {
        let now = self.pam();
        if now != before {
            self.pam_change = Some(now);
        }
    }

    /// The function and dword register the data window reaches now.
    fn target(&self) -> Option<(DevFn, u8)> {
        let bus = (self.address >> 16) as u8;
        (self.address & ENABLE != 0 && bus == 0)
            .then_some((DevFn((self.address >> 8) as u8), self.address as u8))
    }

    fn read_port_byte(&self, port: u16) -> u8 {
        match port {
            RESET_CONTROL => self.reset_control,
            CONFIG_DATA..=0xCFF => self
                .target()
                .and_then(|(devfn, reg)| {
                    let c = self.config(devfn)?;
                    Some(c.read8(reg | (port & 3) as u8))
                })
                .unwrap_or(0xFF),
            _ => 0xFF,
        }
    }

    /// Returns whether the write starts a reset.
    fn write_port_byte(&mut self, port: u16, value: u8) -> bool {
        match port {
            RESET_CONTROL => {
                self.reset_control = value & RC_SYSTEM_RESET;
                value & RC_RESET_CPU != 0
            }
            CONFIG_DATA..=0xCFF => {
                if let Some((devfn, reg)) = self.target() {
                    self.write_config(devfn, reg | (port & 3) as u8, value);
                }
                false
            }
            _ => false,
        }
    }

    fn write_config(&mut self, devfn: DevFn, offset: u8, value: u8) {
        if devfn == HOST_BRIDGE && offset == SMRAM {
            self.write_smram(value);
        } else if let Some(c) = self.config_mut(devfn) {
            c.write8(offset, value);
        }
    }

    /// SMRAM's D_LCK (82441FX 3.2.23): once set, D_OPEN is cleared and
    /// only D_CLS stays writable until reset.
    fn write_smram(&mut self, value: u8) {
        let old = self.host.read8(SMRAM);
        let writable = if old & SMRAM_D_LCK != 0 {
            SMRAM_D_CLS
        } else {
            SMRAM_D_OPEN | SMRAM_D_CLS | SMRAM_D_LCK | SMRAM_G_SMRAME
        };
        let mut new = (old & !writable) | (value & writable);
        if new & SMRAM_D_LCK != 0 {
            new &= !SMRAM_D_OPEN;
        }
        self.host.bytes[usize::from(SMRAM)] = new;
    }
}

impl PortDevice for PciBus {
    fn read(&mut self, port: Port, size: u8) -> u32 {
        if port.0 == CONFIG_ADDRESS && size == 4 {
            return self.address;
        }
        (0..u16::from(size)).fold(0, |v, i| {
            v | u32::from(self.read_port_byte(port.0.wrapping_add(i))) << (8 * i)
        })
    }

    fn write(&mut self, port: Port, size: u8, value: u32) -> IoAction {
        if port.0 == CONFIG_ADDRESS && size == 4 {
            self.address = value & ADDRESS_BITS;
            return IoAction::None;
        }
        let pam = self.pam();
        let mut reset = false;
        for i in 0..u16::from(size) {
            reset |= self.write_port_byte(port.0.wrapping_add(i), (value >> (8 * i)) as u8);
        }
        self.note_pam(pam);
        if reset {
            IoAction::Reset
        } else {
            IoAction::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(devfn: DevFn, reg: u8) -> u32 {
        ENABLE | (u32::from(devfn.0) << 8) | u32::from(reg)
    }

    fn inl(bus: &mut PciBus, port: u16) -> u32 {
        bus.read(Port(port), 4)
    }

    fn outl(bus: &mut PciBus, port: u16, value: u32) -> IoAction {
        bus.write(Port(port), 4, value)
    }

    /// Reads `size` bytes at `reg` as a driver does: select the dword,
    /// then access the data window at the register's byte offset.
    fn cfg_read(bus: &mut PciBus, devfn: DevFn, reg: u8, size: u8) -> u32 {
        outl(bus, CONFIG_ADDRESS, address(devfn, reg & 0xFC));
        bus.read(Port(CONFIG_DATA + u16::from(reg & 3)), size)
    }

    fn cfg_write(bus: &mut PciBus, devfn: DevFn, reg: u8, size: u8, value: u32) -> IoAction {
        outl(bus, CONFIG_ADDRESS, address(devfn, reg & 0xFC));
        bus.write(Port(CONFIG_DATA + u16::from(reg & 3)), size, value)
    }

    #[test]
    fn vendor_and_device_ids_read_through_the_ports() {
        let mut bus = PciBus::new();
        outl(&mut bus, CONFIG_ADDRESS, 0x8000_0000);
        assert_eq!(inl(&mut bus, CONFIG_DATA), 0x1237_8086);
        outl(&mut bus, CONFIG_ADDRESS, 0x8000_0800);
        assert_eq!(inl(&mut bus, CONFIG_DATA), 0x7000_8086);
        // Revision and class of the host bridge.
        assert_eq!(cfg_read(&mut bus, HOST_BRIDGE, 0x08, 4), 0x0600_0002);
        assert_eq!(cfg_read(&mut bus, ISA_BRIDGE, 0x08, 4), 0x0601_0000);
    }

    #[test]
    fn subsystem_ids_are_qemus() {
        let mut bus = PciBus::new();
        for devfn in [HOST_BRIDGE, ISA_BRIDGE] {
            assert_eq!(cfg_read(&mut bus, devfn, 0x2C, 2), 0x1AF4);
            assert_eq!(cfg_read(&mut bus, devfn, 0x2E, 2), 0x1100);
        }
    }

    #[test]
    fn header_types_mark_the_piix3_multi_function() {
        let mut bus = PciBus::new();
        assert_eq!(cfg_read(&mut bus, HOST_BRIDGE, HEADER_TYPE, 1), 0x00);
        assert_eq!(cfg_read(&mut bus, ISA_BRIDGE, HEADER_TYPE, 1), 0x80);
    }

    #[test]
    fn absent_functions_read_all_ones_and_ignore_writes() {
        let mut bus = PciBus::new();
        for devfn in [DevFn::new(2, 0), DevFn::new(1, 1), DevFn::new(31, 7)] {
            assert_eq!(cfg_read(&mut bus, devfn, 0, 4), 0xFFFF_FFFF);
            assert_eq!(cfg_read(&mut bus, devfn, 2, 2), 0xFFFF);
            assert_eq!(cfg_read(&mut bus, devfn, 3, 1), 0xFF);
            assert_eq!(cfg_write(&mut bus, devfn, 4, 4, 0), IoAction::None);
        }
        // Bus 1 does not exist either.
        outl(&mut bus, CONFIG_ADDRESS, 0x8001_0000);
        assert_eq!(inl(&mut bus, CONFIG_DATA), 0xFFFF_FFFF);
    }

    #[test]
    fn the_window_is_closed_while_the_enable_bit_is_clear() {
        let mut bus = PciBus::new();
        outl(&mut bus, CONFIG_ADDRESS, 0x0000_0000);
        assert_eq!(inl(&mut bus, CONFIG_DATA), 0xFFFF_FFFF);
        outl(&mut bus, CONFIG_ADDRESS, 0x0000_005C);
        outl(&mut bus, CONFIG_DATA, 0x3333_3333);
        assert_eq!(bus.pam(), [0; 7], "the write went nowhere");
        assert_eq!(bus.take_pam_change(), None);
    }

    #[test]
    fn byte_and_word_accesses_pick_bytes_by_port_offset() {
        let mut bus = PciBus::new();
        outl(&mut bus, CONFIG_ADDRESS, address(ISA_BRIDGE, 0x08));
        assert_eq!(bus.read(Port(0xCFC), 1), 0x00, "revision");
        assert_eq!(bus.read(Port(0xCFD), 1), 0x00, "programming interface");
        assert_eq!(bus.read(Port(0xCFE), 1), 0x01, "subclass");
        assert_eq!(bus.read(Port(0xCFF), 1), 0x06, "base class");
        assert_eq!(bus.read(Port(0xCFE), 2), 0x0601);
        assert_eq!(bus.read(Port(0xCFD), 2), 0x0100);
        outl(&mut bus, CONFIG_ADDRESS, address(ISA_BRIDGE, 0x0C));
        assert_eq!(bus.read(Port(0xCFE), 1), 0x80, "header type");
        // The low two bits of CONFIG_ADDRESS do not move the window.
        outl(&mut bus, CONFIG_ADDRESS, address(HOST_BRIDGE, 0x00) | 3);
        assert_eq!(bus.read(Port(0xCFC), 2), 0x8086);
    }

    #[test]
    fn byte_and_word_writes_reach_single_registers() {
        let mut bus = PciBus::new();
        // Word write of PIRQRC[B:A] at 0x60, then a byte write of PIRQC.
        cfg_write(&mut bus, ISA_BRIDGE, 0x60, 2, 0x0B0A);
        cfg_write(&mut bus, ISA_BRIDGE, 0x62, 1, 0x05);
        assert_eq!(cfg_read(&mut bus, ISA_BRIDGE, 0x60, 4), 0x8005_0B0A);
        assert_eq!(bus.pirq_routes(), [Some(10), Some(11), Some(5), None]);
    }

    #[test]
    fn an_access_past_0xcff_gets_nothing_there() {
        let mut bus = PciBus::new();
        outl(&mut bus, CONFIG_ADDRESS, address(HOST_BRIDGE, 0));
        // Bytes 0xCFE-0xCFF are the device id; 0xD00-0xD01 are no one's.
        assert_eq!(bus.read(Port(0xCFE), 4), 0xFFFF_1237);
    }

    #[test]
    fn read_only_bits_ignore_writes() {
        let mut bus = PciBus::new();
        cfg_write(&mut bus, HOST_BRIDGE, 0x00, 4, 0);
        assert_eq!(cfg_read(&mut bus, HOST_BRIDGE, 0x00, 4), 0x1237_8086);
        cfg_write(&mut bus, HOST_BRIDGE, 0x08, 4, 0xFFFF_FFFF);
        assert_eq!(cfg_read(&mut bus, HOST_BRIDGE, 0x08, 4), 0x0600_0002);
        // Command: only parity and SERR# enables; status: nothing.
        cfg_write(&mut bus, HOST_BRIDGE, 0x04, 4, 0xFFFF_FFFF);
        assert_eq!(cfg_read(&mut bus, HOST_BRIDGE, 0x04, 4), 0x0280_0146);
        cfg_write(&mut bus, HOST_BRIDGE, 0x04, 2, 0);
        assert_eq!(cfg_read(&mut bus, HOST_BRIDGE, 0x04, 2), 0x0006);
        cfg_write(&mut bus, ISA_BRIDGE, 0x04, 2, 0xFFFF);
        assert_eq!(cfg_read(&mut bus, ISA_BRIDGE, 0x04, 2), 0x010F);
        // The latency timer's low three bits are hardwired to 0.
        cfg_write(&mut bus, HOST_BRIDGE, LATENCY_TIMER, 1, 0xFF);
        assert_eq!(cfg_read(&mut bus, HOST_BRIDGE, LATENCY_TIMER, 1), 0xF8);
        // No BARs: sizing reads back 0.
        for bar in (0x10..0x28).step_by(4) {
            cfg_write(&mut bus, ISA_BRIDGE, bar, 4, 0xFFFF_FFFF);
            assert_eq!(cfg_read(&mut bus, ISA_BRIDGE, bar, 4), 0);
        }
        // PIRQRC bits 6:4 are reserved.
        cfg_write(&mut bus, ISA_BRIDGE, PIRQRC, 1, 0x7B);
        assert_eq!(cfg_read(&mut bus, ISA_BRIDGE, PIRQRC, 1), 0x0B);
    }

    #[test]
    fn pam_writes_are_reported_once() {
        let mut bus = PciBus::new();
        assert_eq!(bus.take_pam_change(), None);
        // SeaBIOS's make_bios_writable: 0x33 into PAM1-PAM6, 0x30 into PAM0.
        for i in 1..7 {
            cfg_write(&mut bus, HOST_BRIDGE, PAM0 + i, 1, 0x33);
        }
        cfg_write(&mut bus, HOST_BRIDGE, PAM0, 1, 0x30);
        assert_eq!(bus.pam(), [0x30, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33]);
        assert_eq!(bus.take_pam_change(), Some(bus.pam()));
        assert_eq!(bus.take_pam_change(), None);
        // Writing the same values again is no change.
        cfg_write(&mut bus, HOST_BRIDGE, 0x5C, 4, 0x3333_3333);
        assert_eq!(bus.take_pam_change(), None);
        // A dword write across PAM3-PAM6 (0x5C-0x5F), with reserved bits.
        cfg_write(&mut bus, HOST_BRIDGE, 0x5C, 4, 0xFF11_FF11);
        assert_eq!(bus.pam(), [0x30, 0x33, 0x33, 0x11, 0x33, 0x11, 0x33]);
        assert_eq!(bus.take_pam_change(), Some(bus.pam()));
        // PAM0's low nibble is reserved.
        cfg_write(&mut bus, HOST_BRIDGE, PAM0, 1, 0x0F);
        assert_eq!(bus.pam()[0], 0x00);
        // Writes next to PAM do not report.
        bus.take_pam_change();
        cfg_write(&mut bus, HOST_BRIDGE, 0x58, 1, 0x00);
        cfg_write(&mut bus, HOST_BRIDGE, 0x60, 1, 0x20);
        assert_eq!(bus.take_pam_change(), None);
    }

    #[test]
    fn reset_restores_pam_and_reports_it() {
        let mut bus = PciBus::new();
        cfg_write(&mut bus, HOST_BRIDGE, PAM0, 1, 0x10);
        bus.take_pam_change();
        bus.reset();
        assert_eq!(bus.take_pam_change(), Some([0; 7]));
        assert_eq!(inl(&mut bus, CONFIG_ADDRESS), 0);
    }

    /// Linux's pci_check_type1 and pci_sanity_check
    /// (arch/x86/pci/direct.c).
    #[test]
    fn linux_type1_probe_finds_a_host_bridge() {
        let mut bus = PciBus::new();
        bus.write(Port(0xCFB), 1, 0x01);
        let saved = inl(&mut bus, CONFIG_ADDRESS);
        outl(&mut bus, CONFIG_ADDRESS, 0x8000_0000);
        assert_eq!(inl(&mut bus, CONFIG_ADDRESS), 0x8000_0000);
        let host = (0..=255u8).find(|&devfn| {
            outl(
                &mut bus,
                CONFIG_ADDRESS,
                0x8000_0000 | u32::from(devfn) << 8 | 0x08,
            );
            bus.read(Port(CONFIG_DATA + 2), 2) == 0x0600
        });
        assert_eq!(host, Some(0));
        outl(&mut bus, CONFIG_ADDRESS, saved);
        assert_eq!(inl(&mut bus, CONFIG_ADDRESS), saved);
    }

    /// Linux's pci_check_type2 must not mistake the bus for mechanism #2.
    #[test]
    fn linux_type2_probe_finds_nothing() {
        let mut bus = PciBus::new();
        bus.write(Port(0xCFB), 1, 0x00);
        bus.write(Port(0xCF8), 1, 0x00);
        bus.write(Port(0xCFA), 1, 0x00);
        assert_eq!(bus.read(Port(0xCF8), 1), 0xFF);
        assert_eq!(bus.read(Port(0xCFA), 1), 0xFF);
    }

    #[test]
    fn the_address_register_reads_back_without_its_reserved_bits() {
        let mut bus = PciBus::new();
        outl(&mut bus, CONFIG_ADDRESS, 0xFFFF_FFFF);
        assert_eq!(inl(&mut bus, CONFIG_ADDRESS), 0x80FF_FFFC);
        outl(&mut bus, CONFIG_ADDRESS, 0x8000_0810);
        assert_eq!(inl(&mut bus, CONFIG_ADDRESS), 0x8000_0810);
        // Byte and word accesses pass through: they neither read nor
        // change the register.
        assert_eq!(bus.read(Port(0xCF8), 1), 0xFF);
        assert_eq!(bus.read(Port(0xCF8), 2), 0x00FF, "0xCF9 is RC");
        assert_eq!(bus.read(Port(0xCFA), 2), 0xFFFF);
        bus.write(Port(0xCF8), 2, 0x1234);
        bus.write(Port(0xCFB), 1, 0x00);
        assert_eq!(inl(&mut bus, CONFIG_ADDRESS), 0x8000_0810);
    }

    #[test]
    fn the_reset_control_register_resets_on_reset_cpu() {
        let mut bus = PciBus::new();
        assert_eq!(bus.read(Port(RESET_CONTROL), 1), 0x00);
        // SeaBIOS's and Linux's sequence: the reset type, then RCPU.
        assert_eq!(bus.write(Port(RESET_CONTROL), 1, 0x02), IoAction::None);
        assert_eq!(bus.read(Port(RESET_CONTROL), 1), 0x02);
        assert_eq!(bus.write(Port(RESET_CONTROL), 1, 0x06), IoAction::Reset);
        assert_eq!(
            bus.read(Port(RESET_CONTROL), 1),
            0x02,
            "RCPU never reads back"
        );
        // A word write to 0xCF8 covers 0xCF9 too.
        assert_eq!(bus.write(Port(0xCF8), 2, 0x0400), IoAction::Reset);
        // The dword address register does not.
        assert_eq!(outl(&mut bus, CONFIG_ADDRESS, 0x8000_0400), IoAction::None);
    }

    #[test]
    fn smram_lock_freezes_open_and_enable() {
        let mut bus = PciBus::new();
        assert_eq!(bus.smram(), 0x02);
        cfg_write(&mut bus, HOST_BRIDGE, SMRAM, 1, 0x68);
        assert_eq!(bus.smram(), 0x6A, "D_OPEN, D_CLS, G_SMRAME; base hardwired");
        cfg_write(&mut bus, HOST_BRIDGE, SMRAM, 1, 0x5A);
        assert_eq!(bus.smram(), 0x1A, "D_LCK clears D_OPEN");
        cfg_write(&mut bus, HOST_BRIDGE, SMRAM, 1, 0x60);
        assert_eq!(bus.smram(), 0x3A, "only D_CLS still writable");
        bus.reset();
        assert_eq!(bus.smram(), 0x02);
    }

    #[test]
    fn pirq_routing_starts_disabled_and_skips_reserved_irqs() {
        let mut bus = PciBus::new();
        assert_eq!(bus.pirq_routes(), [None; 4]);
        // SeaBIOS's piix_isa_bridge_setup: 10, 10, 11, 11.
        for (i, irq) in [10, 10, 11, 11].into_iter().enumerate() {
            cfg_write(&mut bus, ISA_BRIDGE, PIRQRC + i as u8, 1, irq);
        }
        assert_eq!(bus.pirq_routes(), [Some(10), Some(10), Some(11), Some(11)]);
        cfg_write(&mut bus, ISA_BRIDGE, PIRQRC, 4, 0x8B_0D_08_02);
        assert_eq!(bus.pirq_routes(), [None, None, None, None]);
    }

    #[test]
    fn tom_reset_value_and_reserved_bit() {
        let mut bus = PciBus::new();
        assert_eq!(cfg_read(&mut bus, ISA_BRIDGE, TOM, 1), 0x02);
        cfg_write(&mut bus, ISA_BRIDGE, TOM, 1, 0xFF);
        assert_eq!(cfg_read(&mut bus, ISA_BRIDGE, TOM, 1), 0xFE);
    }

    #[test]
    fn an_added_function_sizes_its_bar_through_the_write_mask() {
        let mut bus = PciBus::new();
        let mut c = ConfigSpace::new(0x1234, 0x1111, 0x02, 0x03_00_00);
        // A 16 MiB prefetchable memory BAR.
        c.define32(0x10, 0x0000_0008, 0xFF00_0000);
        let vga = DevFn::new(2, 0);
        bus.add_function(vga, c);
        assert_eq!(cfg_read(&mut bus, vga, 0, 4), 0x1111_1234);
        cfg_write(&mut bus, vga, 0x10, 4, 0xFFFF_FFFF);
        assert_eq!(cfg_read(&mut bus, vga, 0x10, 4), 0xFF00_0008);
        cfg_write(&mut bus, vga, 0x10, 4, 0xFD00_0000);
        assert_eq!(bus.config(vga).map(|c| c.read32(0x10)), Some(0xFD00_0008));
    }
}
