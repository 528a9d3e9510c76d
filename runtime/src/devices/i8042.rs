//! The PC's 8042 keyboard controller (ports 0x60 and 0x64) with a PS/2
//! keyboard on its first port and a minimal PS/2 mouse on its second.
//! Register and command meanings follow the OSDev wiki's "8042 PS/2
//! Controller", "PS/2 Keyboard" and "PS/2 Mouse" pages and what Linux's
//! `i8042.c`, `atkbd.c` and `psmouse` drivers send and expect; where those
//! are silent, QEMU's `pckbd.c`/`ps2.c` and 86Box's `kbc_at.c` (modelled
//! on the controllers' firmware) settle it.
//!
//! The model:
//! - Commands complete at once, so the input buffer is never full (status
//!   IBF reads 0) and a command's reply is in the output buffer when the
//!   write returns.
//! - The output buffer is a queue whose front is the data register. The
//!   controller's own replies go ahead of device bytes; a device (the
//!   keyboard, the mouse) hands over its next byte only when the queue is
//!   empty and its port is enabled in the command byte, as the 8042
//!   inhibits a device's clock while its output buffer is full. Reading
//!   port 0x60 takes the front byte and lets the next one in.
//! - The byte in the data register drives IRQ 1 (keyboard and controller
//!   bytes) or IRQ 12 (mouse bytes) when the command byte enables that
//!   interrupt. A read lowers the line even when another byte follows at
//!   once, so that each byte is an edge for an edge-triggered 8259A.
//! - With translation on (command byte bit 6) keyboard bytes pass through
//!   the 8042's set 2 -> set 1 table as they reach the output buffer; an
//!   0xF0 break prefix is swallowed and sets bit 7 of the next byte.
//! - Writing a byte to a device (port 0x60 for the keyboard, command 0xD4
//!   for the mouse) enables that device's port, as the firmware does.
//! - The output port's reset line is a pulse: a 0 written to bit 0 (or
//!   pulsed by commands 0xF0-0xFF) resets the machine through
//!   [`IoAction::Reset`]; bit 1 drives the A20 gate through
//!   [`IoAction::A20`] when it changes.
//! - The controller starts as a BIOS leaves it after POST: A20 on, system
//!   flag set, keyboard enabled in scancode set 2 with translation and its
//!   interrupt on, the mouse port disabled (SeaBIOS's command byte 0x61
//!   plus the system flag).
//! - The mouse is a standard PS/2 mouse (ID 0, no wheel) that never moves:
//!   it answers what a driver probes with, so Linux finds a mouse as it
//!   does on QEMU rather than an empty port.
//! - Host text ([`I8042::type_bytes`]) is typed on the keyboard one key at
//!   a time as the guest drains the output buffer.

use std::collections::VecDeque;

use super::{IoAction, IrqLine, Port, PortDevice};

pub const DATA_PORT: u16 = 0x60;
pub const COMMAND_PORT: u16 = 0x64;
/// The keyboard's interrupt request line on a PC.
pub const KBD_IRQ: u8 = 1;
/// The mouse (auxiliary device) port's interrupt request line on a PC.
pub const AUX_IRQ: u8 = 12;

// Status register (port 0x64 read).
const STATUS_OBF: u8 = 1 << 0;
/// Set by the POST's self-test or from the command byte.
const STATUS_SYSTEM: u8 = 1 << 2;
/// The last write went to port 0x64 (the controller's A2 input).
const STATUS_COMMAND: u8 = 1 << 3;
/// The keyboard lock switch is off (1: not inhibited).
const STATUS_UNLOCKED: u8 = 1 << 4;
/// The byte in the output buffer came from the mouse.
const STATUS_AUX_OBF: u8 = 1 << 5;

// Command byte (controller RAM byte 0).
const CB_KBD_INT: u8 = 1 << 0;
const CB_AUX_INT: u8 = 1 << 1;
const CB_SYSTEM: u8 = 1 << 2;
const CB_KBD_DISABLE: u8 = 1 << 4;
const CB_AUX_DISABLE: u8 = 1 << 5;
const CB_TRANSLATE: u8 = 1 << 6;
/// Interrupts from the keyboard, system flag, mouse port disabled,
/// translation: what SeaBIOS writes after POST (0x61) plus the system flag.
const INITIAL_COMMAND_BYTE: u8 = CB_KBD_INT | CB_SYSTEM | CB_AUX_DISABLE | CB_TRANSLATE;

// Output port (P2).
/// Low holds the CPU in reset.
const OUT_RESET: u8 = 1 << 0;
const OUT_A20: u8 = 1 << 1;
/// The output buffer holds a keyboard byte (wired to IRQ 1).
const OUT_KBD_OBF: u8 = 1 << 4;
/// The output buffer holds a mouse byte (wired to IRQ 12).
const OUT_AUX_OBF: u8 = 1 << 5;
/// The mouse's clock and data (bits 2, 3) and the keyboard's (6, 7) are
/// idle high.
const OUT_LINES: u8 = 0xCC;

/// Input port (P1): bit 7 set is "keyboard not inhibited", bit 5 set "no
/// manufacturing jumper", the rest 0 (colour display). A guest only reads it.
const INPUT_PORT: u8 = 0xA0;

// Controller commands (port 0x64 write).
const READ_RAM: u8 = 0x20; // 0x20-0x3F: RAM byte n & 0x1F; 0x20 is the command byte
const READ_RAM_LAST: u8 = 0x3F;
const WRITE_RAM: u8 = 0x60; // 0x60-0x7F
const WRITE_RAM_LAST: u8 = 0x7F;
const DISABLE_AUX: u8 = 0xA7;
const ENABLE_AUX: u8 = 0xA8;
const TEST_AUX: u8 = 0xA9;
const SELF_TEST: u8 = 0xAA;
const TEST_KBD: u8 = 0xAB;
const DISABLE_KBD: u8 = 0xAD;
const ENABLE_KBD: u8 = 0xAE;
const READ_INPUT_PORT: u8 = 0xC0;
const READ_OUTPUT_PORT: u8 = 0xD0;
const WRITE_OUTPUT_PORT: u8 = 0xD1;
const WRITE_KBD_BUFFER: u8 = 0xD2;
const WRITE_AUX_BUFFER: u8 = 0xD3;
const WRITE_AUX: u8 = 0xD4;
/// A20 off and on without going through the output port (HP Vectra and
/// some chipsets).
const A20_OFF: u8 = 0xDD;
const A20_ON: u8 = 0xDF;
/// 0xF0-0xFF pulse the output port bits whose bit in the low nibble is 0.
const PULSE: u8 = 0xF0;

const SELF_TEST_PASSED: u8 = 0x55;
const INTERFACE_OK: u8 = 0x00;

// Device commands and replies shared by the keyboard and the mouse.
const ACK: u8 = 0xFA;
const RESEND: u8 = 0xFE;
const RESET: u8 = 0xFF;
const SELF_TEST_OK: u8 = 0xAA;
const IDENTIFY: u8 = 0xF2;
/// Room in a PS/2 device's output buffer.
const DEVICE_BUFFER: usize = 16;
/// Room for controller replies that were not read (the real controller
/// overwrites its one-byte buffer; a queue keeps them, within reason).
const CONTROLLER_QUEUE: usize = 16;

/// A byte on its way to the data register.
#[derive(Clone, Copy, Debug)]
struct OutByte {
    value: u8,
    /// From the mouse port (status bit 5, IRQ 12).
    aux: bool,
    /// Sent by a device (the controller's own replies go ahead of these).
    device: bool,
}

/// What a controller command expects of the next port 0x60 write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Param {
    Ram(usize),
    OutputPort,
    KbdBuffer,
    AuxBuffer,
    AuxDevice,
}

/// The controller with its keyboard and mouse. The machine registers one
/// shared instance at both [`DATA_PORT`] and [`COMMAND_PORT`].
pub struct I8042 {
    kbd_irq: Box<dyn IrqLine>,
    aux_irq: Box<dyn IrqLine>,
    kbd_level: bool,
    aux_level: bool,
    /// Controller RAM; byte 0 is the command byte.
    ram: [u8; 32],
    system_flag: bool,
    last_write_command: bool,
    param: Option<Param>,
    /// P2 without the output-buffer bits (they are derived).
    output_port: u8,
    out: VecDeque<OutByte>,
    /// What the data register holds once the queue is empty.
    last_read: u8,
    /// Translation saw 0xF0: the next keyboard byte is a break code.
    break_prefix: bool,
    kbd: Keyboard,
    aux: Mouse,
    /// Host text not yet typed.
    typed: VecDeque<u8>,
    last_typed: u8,
}

impl I8042 {
    pub fn new(kbd_irq: Box<dyn IrqLine>, aux_irq: Box<dyn IrqLine>) -> Self {
        let mut ram = [0; 32];
        ram[0] = INITIAL_COMMAND_BYTE;
        I8042 {
            kbd_irq,
            aux_irq,
            kbd_level: false,
            aux_level: false,
            ram,
            system_flag: true,
            last_write_command: false,
            param: None,
            output_port: OUT_LINES | OUT_A20 | OUT_RESET,
            out: VecDeque::new(),
            last_read: 0,
            break_prefix: false,
            kbd: Keyboard::new(),
            aux: Mouse::new(),
            typed: VecDeque::new(),
            last_typed: 0,
        }
    }

    /// Types ASCII `text` on the keyboard: letters, digits and punctuation
    /// (with left shift where the US layout needs it), space, Enter (CR,
    /// LF, or a CR LF pair), Backspace (BS or DEL), Tab, Escape, and
    /// control-letter for the other bytes 1-26. Other bytes are dropped.
    ///
    /// This only queues: keys are pressed one at a time, each as the
    /// keyboard's buffer empties, and only while the keyboard scans and its
    /// port is enabled (text typed meanwhile waits). The interrupt goes up
    /// through the keyboard line like any keyboard byte. Nothing paces the
    /// keys but the guest's reads, so a guest that drains port 0x60 in a
    /// loop while probing (Linux's i8042 flush gives up after 16 bytes and
    /// decides there is no controller) should not find much text queued.
    pub fn type_bytes(&mut self, text: &[u8]) {
        self.typed.extend(text);
        self.pump();
    }

    fn status(&self) -> u8 {
        let mut s = STATUS_UNLOCKED;
        if let Some(b) = self.out.front() {
            s |= STATUS_OBF;
            if b.aux {
                s |= STATUS_AUX_OBF;
            }
        }
        if self.system_flag {
            s |= STATUS_SYSTEM;
        }
        if self.last_write_command {
            s |= STATUS_COMMAND;
        }
        s
    }

    fn read_data(&mut self) -> u8 {
        if let Some(b) = self.out.pop_front() {
            self.last_read = b.value;
            self.set_levels(false, false);
            self.pump();
        }
        self.last_read
    }

    fn write_command(&mut self, cmd: u8) -> IoAction {
        self.last_write_command = true;
        // A command abandons one still waiting for its parameter.
        self.param = None;
        let mut action = IoAction::None;
        match cmd {
            READ_RAM..=READ_RAM_LAST => self.reply(self.ram[(cmd & 0x1F) as usize], false),
            WRITE_RAM..=WRITE_RAM_LAST => self.param = Some(Param::Ram((cmd & 0x1F) as usize)),
            DISABLE_AUX => self.ram[0] |= CB_AUX_DISABLE,
            ENABLE_AUX => self.ram[0] &= !CB_AUX_DISABLE,
            TEST_AUX | TEST_KBD => self.reply(INTERFACE_OK, false),
            SELF_TEST => {
                self.system_flag = true;
                self.reply(SELF_TEST_PASSED, false);
            }
            DISABLE_KBD => self.ram[0] |= CB_KBD_DISABLE,
            ENABLE_KBD => self.ram[0] &= !CB_KBD_DISABLE,
            READ_INPUT_PORT => self.reply(INPUT_PORT, false),
            READ_OUTPUT_PORT => {
                let mut v = self.output_port;
                match self.out.front() {
                    Some(b) if b.aux => v |= OUT_AUX_OBF,
                    Some(_) => v |= OUT_KBD_OBF,
                    None => {}
                }
                self.reply(v, false);
            }
            WRITE_OUTPUT_PORT => self.param = Some(Param::OutputPort),
            WRITE_KBD_BUFFER => self.param = Some(Param::KbdBuffer),
            WRITE_AUX_BUFFER => self.param = Some(Param::AuxBuffer),
            WRITE_AUX => self.param = Some(Param::AuxDevice),
            A20_OFF => action = self.set_a20(false),
            A20_ON => action = self.set_a20(true),
            // Pulsing bit 0 low is a reset; a pulse of A20 is too short to
            // matter.
            PULSE..=0xFF if cmd & OUT_RESET == 0 => action = IoAction::Reset,
            PULSE..=0xFF => {}
            _ => log::debug!(target: "bt86::i8042", "unknown command {cmd:#04x} ignored"),
        }
        self.pump();
        action
    }

    fn write_data(&mut self, v: u8) -> IoAction {
        self.last_write_command = false;
        let mut action = IoAction::None;
        match self.param.take() {
            Some(Param::Ram(0)) => {
                self.ram[0] = v;
                self.system_flag = v & CB_SYSTEM != 0;
                if v & CB_TRANSLATE == 0 {
                    self.break_prefix = false;
                }
            }
            Some(Param::Ram(i)) => self.ram[i] = v,
            Some(Param::OutputPort) => action = self.write_output_port(v),
            Some(Param::KbdBuffer) => self.reply(v, false),
            Some(Param::AuxBuffer) => self.reply(v, true),
            Some(Param::AuxDevice) => {
                // Sending to a device enables its port, as the firmware does.
                self.ram[0] &= !CB_AUX_DISABLE;
                self.aux.receive(v);
            }
            None => {
                self.ram[0] &= !CB_KBD_DISABLE;
                self.kbd.receive(v);
            }
        }
        self.pump();
        action
    }

    /// The reset line is modelled as a pulse: a 0 in bit 0 resets the
    /// machine and the bit reads back as 1 (released). A reset takes
    /// precedence over an A20 change written with it; the new A20 value is
    /// kept.
    fn write_output_port(&mut self, v: u8) -> IoAction {
        let old = self.output_port;
        self.output_port = (v & !(OUT_KBD_OBF | OUT_AUX_OBF)) | OUT_RESET;
        if v & OUT_RESET == 0 {
            IoAction::Reset
        } else if (old ^ v) & OUT_A20 != 0 {
            IoAction::A20(v & OUT_A20 != 0)
        } else {
            IoAction::None
        }
    }

    fn set_a20(&mut self, on: bool) -> IoAction {
        let v = if on {
            self.output_port | OUT_A20
        } else {
            self.output_port & !OUT_A20
        };
        self.write_output_port(v)
    }

    /// Queues a byte the controller itself produces, ahead of any device
    /// byte waiting in the data register.
    fn reply(&mut self, value: u8, aux: bool) {
        let mine = self.out.iter().filter(|b| !b.device).count();
        if mine >= CONTROLLER_QUEUE {
            return;
        }
        let at = self
            .out
            .iter()
            .position(|b| b.device)
            .unwrap_or(self.out.len());
        self.out.insert(
            at,
            OutByte {
                value,
                aux,
                device: false,
            },
        );
    }

    fn typing_enabled(&self) -> bool {
        self.ram[0] & CB_KBD_DISABLE == 0 && self.kbd.scanning && self.kbd.awaiting.is_none()
    }

    /// Moves bytes along: host text onto the keyboard, a device byte into
    /// an empty output buffer; then sets the interrupt lines.
    fn pump(&mut self) {
        loop {
            while self.typing_enabled() && self.kbd.keys.is_empty() {
                let Some(c) = self.typed.pop_front() else {
                    break;
                };
                let prev = std::mem::replace(&mut self.last_typed, c);
                if c == b'\n' && prev == b'\r' {
                    continue;
                }
                if let Some((code, modifier)) = key_of(c) {
                    self.kbd.press(code, modifier);
                }
            }
            if !self.out.is_empty() {
                break;
            }
            let from_kbd = if self.ram[0] & CB_KBD_DISABLE == 0 {
                self.kbd.send()
            } else {
                None
            };
            if let Some(raw) = from_kbd {
                if let Some(value) = self.translate(raw) {
                    self.out.push_back(OutByte {
                        value,
                        aux: false,
                        device: true,
                    });
                }
                continue;
            }
            let from_aux = if self.ram[0] & CB_AUX_DISABLE == 0 {
                self.aux.send()
            } else {
                None
            };
            if let Some(value) = from_aux {
                self.out.push_back(OutByte {
                    value,
                    aux: true,
                    device: true,
                });
                continue;
            }
            break;
        }
        let (kbd, aux) = match self.out.front() {
            Some(b) if b.aux => (false, self.ram[0] & CB_AUX_INT != 0),
            Some(_) => (self.ram[0] & CB_KBD_INT != 0, false),
            None => (false, false),
        };
        self.set_levels(kbd, aux);
    }

    fn set_levels(&mut self, kbd: bool, aux: bool) {
        if kbd != self.kbd_level {
            self.kbd_level = kbd;
            self.kbd_irq.set_level(kbd);
        }
        if aux != self.aux_level {
            self.aux_level = aux;
            self.aux_irq.set_level(aux);
        }
    }

    /// The 8042's translation of a keyboard byte, None if it swallows it.
    fn translate(&mut self, raw: u8) -> Option<u8> {
        if self.ram[0] & CB_TRANSLATE == 0 {
            return Some(raw);
        }
        if raw == BREAK_PREFIX {
            self.break_prefix = true;
            return None;
        }
        let code = set1_of(raw);
        if std::mem::take(&mut self.break_prefix) {
            // A break of a code that already has bit 7 set has no set 1
            // form: the firmware drops it (86Box's model).
            (code & 0x80 == 0).then_some(code | 0x80)
        } else {
            Some(code)
        }
    }
}

/// Port 0x60 and 0x64 are byte registers: a wider access sees the byte at
/// its port, the bytes above it reading as all ones and not written.
impl PortDevice for I8042 {
    fn read(&mut self, port: Port, _size: u8) -> u32 {
        let v = match port.0 {
            DATA_PORT => self.read_data(),
            COMMAND_PORT => self.status(),
            _ => 0xFF,
        };
        v as u32 | 0xFFFF_FF00
    }

    fn write(&mut self, port: Port, _size: u8, value: u32) -> IoAction {
        match port.0 {
            DATA_PORT => self.write_data(value as u8),
            COMMAND_PORT => self.write_command(value as u8),
            _ => IoAction::None,
        }
    }
}

// Keyboard commands (PS/2 Keyboard, "Commands").
const SET_LEDS: u8 = 0xED;
const ECHO: u8 = 0xEE;
const SCANCODE_SET: u8 = 0xF0;
const SET_TYPEMATIC: u8 = 0xF3;
const ENABLE_SCANNING: u8 = 0xF4;
const DISABLE_SCANNING: u8 = 0xF5;
const SET_DEFAULTS: u8 = 0xF6;
/// 0xF7-0xFA set every key's typematic/make/break mode (set 3).
const ALL_KEYS_MODE: u8 = 0xF7;
const ALL_KEYS_MODE_LAST: u8 = 0xFA;
/// 0xFB-0xFD set one key's mode (set 3); key codes follow until the next
/// command.
const KEY_MODE: u8 = 0xFB;
const KEY_MODE_LAST: u8 = 0xFD;
/// Bytes from here up are commands; below, arguments.
const FIRST_COMMAND: u8 = SET_LEDS;
/// An MF2 keyboard's identity.
const KEYBOARD_ID: [u8; 2] = [0xAB, 0x83];
const BREAK_PREFIX: u8 = 0xF0;

/// A PS/2 (MF2) keyboard.
struct Keyboard {
    scanning: bool,
    set: u8,
    /// The command whose argument comes next.
    awaiting: Option<u8>,
    /// Command replies, sent before scan codes.
    replies: VecDeque<u8>,
    /// Scan codes of keys pressed.
    keys: VecDeque<u8>,
    last_sent: u8,
}

impl Keyboard {
    fn new() -> Self {
        Keyboard {
            scanning: true,
            set: 2,
            awaiting: None,
            replies: VecDeque::new(),
            keys: VecDeque::new(),
            last_sent: 0,
        }
    }

    fn reply(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.replies.len() < DEVICE_BUFFER {
                self.replies.push_back(b);
            }
        }
    }

    /// Power-on defaults (set 2; the typematic rate and the LEDs, which
    /// are not modelled); clears the keyboard's buffer.
    fn defaults(&mut self) {
        self.set = 2;
        self.keys.clear();
    }

    fn receive(&mut self, b: u8) {
        if let Some(cmd) = self.awaiting {
            if b < FIRST_COMMAND {
                self.argument(cmd, b);
                return;
            }
            // A command instead of the argument abandons the first one.
            self.awaiting = None;
        }
        match b {
            SET_LEDS | SET_TYPEMATIC | SCANCODE_SET | KEY_MODE..=KEY_MODE_LAST => {
                self.awaiting = Some(b);
                self.reply(&[ACK]);
            }
            ECHO => self.reply(&[ECHO]),
            IDENTIFY => self.reply(&[ACK, KEYBOARD_ID[0], KEYBOARD_ID[1]]),
            ENABLE_SCANNING => {
                self.keys.clear();
                self.scanning = true;
                self.reply(&[ACK]);
            }
            DISABLE_SCANNING => {
                self.defaults();
                self.scanning = false;
                self.reply(&[ACK]);
            }
            SET_DEFAULTS => {
                self.defaults();
                self.scanning = true;
                self.reply(&[ACK]);
            }
            // Accepted; set 3 key modes are not modelled.
            ALL_KEYS_MODE..=ALL_KEYS_MODE_LAST => self.reply(&[ACK]),
            RESEND => self.reply(&[self.last_sent]),
            RESET => {
                self.replies.clear();
                self.defaults();
                self.scanning = true;
                self.reply(&[ACK, SELF_TEST_OK]);
            }
            _ => self.reply(&[RESEND]),
        }
    }

    fn argument(&mut self, cmd: u8, b: u8) {
        match cmd {
            SET_LEDS | SET_TYPEMATIC => {
                self.awaiting = None;
                self.reply(&[ACK]);
            }
            SCANCODE_SET => {
                self.awaiting = None;
                match b {
                    0 => self.reply(&[ACK, self.set]),
                    1..=3 => {
                        self.set = b;
                        self.reply(&[ACK]);
                    }
                    _ => self.reply(&[RESEND]),
                }
            }
            // A key code of a key-mode list: more may follow.
            _ => self.reply(&[ACK]),
        }
    }

    /// The next byte the keyboard sends.
    fn send(&mut self) -> Option<u8> {
        let b = self.replies.pop_front().or_else(|| self.keys.pop_front())?;
        self.last_sent = b;
        Some(b)
    }

    /// Presses and releases the key with set 2 code `code`, inside a press
    /// of `modifier`, in the keyboard's scan code set.
    fn press(&mut self, code: u8, modifier: Option<u8>) {
        if let Some(m) = modifier {
            self.make(m);
        }
        self.make(code);
        self.brk(code);
        if let Some(m) = modifier {
            self.brk(m);
        }
    }

    fn make(&mut self, code: u8) {
        let b = match self.set {
            1 => set1_of(code),
            3 => set3_of(code),
            _ => code,
        };
        self.keys.push_back(b);
    }

    fn brk(&mut self, code: u8) {
        match self.set {
            1 => self.keys.push_back(set1_of(code) | 0x80),
            3 => self.keys.extend([BREAK_PREFIX, set3_of(code)]),
            _ => self.keys.extend([BREAK_PREFIX, code]),
        }
    }
}

// Mouse commands (PS/2 Mouse, "Mouse Device Commands").
const SET_SCALING_1_1: u8 = 0xE6;
const SET_SCALING_2_1: u8 = 0xE7;
const SET_RESOLUTION: u8 = 0xE8;
const STATUS_REQUEST: u8 = 0xE9;
const SET_STREAM: u8 = 0xEA;
const READ_DATA: u8 = 0xEB;
const RESET_WRAP: u8 = 0xEC;
const SET_WRAP: u8 = 0xEE;
const SET_REMOTE: u8 = 0xF0;
const SET_SAMPLE_RATE: u8 = 0xF3;
const ENABLE_REPORTING: u8 = 0xF4;
const DISABLE_REPORTING: u8 = 0xF5;
/// A standard PS/2 mouse (no wheel).
const MOUSE_ID: u8 = 0x00;
const MOUSE_STATUS_REMOTE: u8 = 1 << 6;
const MOUSE_STATUS_ENABLED: u8 = 1 << 5;
const MOUSE_STATUS_SCALING_2_1: u8 = 1 << 4;
/// First byte of a movement packet: bit 3 is always set.
const PACKET_ALWAYS: u8 = 1 << 3;
const DEFAULT_RESOLUTION: u8 = 2; // 4 counts/mm
const DEFAULT_SAMPLE_RATE: u8 = 100;

/// A PS/2 mouse that never moves: it answers the commands a driver probes
/// with and reports no motion.
struct Mouse {
    reporting: bool,
    remote: bool,
    scaling_2_1: bool,
    resolution: u8,
    sample_rate: u8,
    wrap: bool,
    awaiting: Option<u8>,
    out: VecDeque<u8>,
    last_sent: u8,
}

impl Mouse {
    fn new() -> Self {
        Mouse {
            reporting: false,
            remote: false,
            scaling_2_1: false,
            resolution: DEFAULT_RESOLUTION,
            sample_rate: DEFAULT_SAMPLE_RATE,
            wrap: false,
            awaiting: None,
            out: VecDeque::new(),
            last_sent: 0,
        }
    }

    fn reply(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.out.len() < DEVICE_BUFFER {
                self.out.push_back(b);
            }
        }
    }

    fn defaults(&mut self) {
        self.reporting = false;
        self.remote = false;
        self.scaling_2_1 = false;
        self.resolution = DEFAULT_RESOLUTION;
        self.sample_rate = DEFAULT_SAMPLE_RATE;
    }

    fn receive(&mut self, b: u8) {
        if let Some(cmd) = self.awaiting.take() {
            if cmd == SET_RESOLUTION {
                self.resolution = b & 3;
            } else {
                self.sample_rate = b;
            }
            self.reply(&[ACK]);
            return;
        }
        if self.wrap && b != RESET_WRAP && b != RESET {
            self.reply(&[b]);
            return;
        }
        match b {
            SET_SCALING_1_1 | SET_SCALING_2_1 => {
                self.scaling_2_1 = b == SET_SCALING_2_1;
                self.reply(&[ACK]);
            }
            SET_RESOLUTION | SET_SAMPLE_RATE => {
                self.awaiting = Some(b);
                self.reply(&[ACK]);
            }
            STATUS_REQUEST => {
                let mut status = 0;
                if self.remote {
                    status |= MOUSE_STATUS_REMOTE;
                }
                if self.reporting {
                    status |= MOUSE_STATUS_ENABLED;
                }
                if self.scaling_2_1 {
                    status |= MOUSE_STATUS_SCALING_2_1;
                }
                self.reply(&[ACK, status, self.resolution, self.sample_rate]);
            }
            SET_STREAM | SET_REMOTE => {
                self.remote = b == SET_REMOTE;
                self.reply(&[ACK]);
            }
            READ_DATA => self.reply(&[ACK, PACKET_ALWAYS, 0, 0]),
            RESET_WRAP | SET_WRAP => {
                self.wrap = b == SET_WRAP;
                self.reply(&[ACK]);
            }
            IDENTIFY => self.reply(&[ACK, MOUSE_ID]),
            ENABLE_REPORTING | DISABLE_REPORTING => {
                self.reporting = b == ENABLE_REPORTING;
                self.reply(&[ACK]);
            }
            SET_DEFAULTS => {
                self.defaults();
                self.reply(&[ACK]);
            }
            RESEND => self.reply(&[self.last_sent]),
            RESET => {
                self.out.clear();
                self.defaults();
                self.wrap = false;
                self.reply(&[ACK, SELF_TEST_OK, MOUSE_ID]);
            }
            _ => self.reply(&[RESEND]),
        }
    }

    fn send(&mut self) -> Option<u8> {
        let b = self.out.pop_front()?;
        self.last_sent = b;
        Some(b)
    }
}

// Set 2 codes of the keys host text uses.
const KEY_LEFT_SHIFT: u8 = 0x12;
const KEY_LEFT_CTRL: u8 = 0x14;
const KEY_ENTER: u8 = 0x5A;
const KEY_BACKSPACE: u8 = 0x66;
const KEY_TAB: u8 = 0x0D;
const KEY_ESCAPE: u8 = 0x76;
const KEY_SPACE: u8 = 0x29;
const KEY_BACKSLASH: u8 = 0x5D;

/// Set 2 codes of the letters a-z.
const LETTERS: [u8; 26] = [
    0x1C, 0x32, 0x21, 0x23, 0x24, 0x2B, 0x34, 0x33, 0x43, 0x3B, 0x42, 0x4B, 0x3A, 0x31, 0x44, 0x4D,
    0x15, 0x2D, 0x1B, 0x2C, 0x3C, 0x2A, 0x1D, 0x22, 0x35, 0x1A,
];
/// Set 2 codes of the digits 0-9.
const DIGITS: [u8; 10] = [0x45, 0x16, 0x1E, 0x26, 0x25, 0x2E, 0x36, 0x3D, 0x3E, 0x46];
/// The other printable characters of a US keyboard: (unshifted, shifted,
/// set 2 code).
const PUNCTUATION: [(u8, u8, u8); 11] = [
    (b'`', b'~', 0x0E),
    (b'-', b'_', 0x4E),
    (b'=', b'+', 0x55),
    (b'[', b'{', 0x54),
    (b']', b'}', 0x5B),
    (b'\\', b'|', KEY_BACKSLASH),
    (b';', b':', 0x4C),
    (b'\'', b'"', 0x52),
    (b',', b'<', 0x41),
    (b'.', b'>', 0x49),
    (b'/', b'?', 0x4A),
];
/// The shifted characters of the digit keys 0-9.
const SHIFTED_DIGITS: &[u8; 10] = b")!@#$%^&*(";

/// The key (set 2 code) and modifier (set 2 code) that type ASCII `c`.
fn key_of(c: u8) -> Option<(u8, Option<u8>)> {
    let shift = Some(KEY_LEFT_SHIFT);
    Some(match c {
        b'\r' | b'\n' => (KEY_ENTER, None),
        0x08 | 0x7F => (KEY_BACKSPACE, None),
        b'\t' => (KEY_TAB, None),
        0x1B => (KEY_ESCAPE, None),
        b' ' => (KEY_SPACE, None),
        1..=26 => (LETTERS[(c - 1) as usize], Some(KEY_LEFT_CTRL)),
        b'a'..=b'z' => (LETTERS[(c - b'a') as usize], None),
        b'A'..=b'Z' => (LETTERS[(c - b'A') as usize], shift),
        b'0'..=b'9' => (DIGITS[(c - b'0') as usize], None),
        _ => {
            if let Some(i) = SHIFTED_DIGITS.iter().position(|&s| s == c) {
                (DIGITS[i], shift)
            } else {
                let &(plain, _, code) = PUNCTUATION
                    .iter()
                    .find(|&&(plain, shifted, _)| c == plain || c == shifted)?;
                (code, if c == plain { None } else { shift })
            }
        }
    })
}

/// The 8042's translation of set 2 codes 0x00-0x7F to set 1 (Andries
/// Brouwer's "Keyboard scancodes", "Translation"; QEMU and 86Box have the
/// same table).
const SET1_OF_SET2: [u8; 128] = [
    0xFF, 0x43, 0x41, 0x3F, 0x3D, 0x3B, 0x3C, 0x58, 0x64, 0x44, 0x42, 0x40, 0x3E, 0x0F, 0x29, 0x59,
    0x65, 0x38, 0x2A, 0x70, 0x1D, 0x10, 0x02, 0x5A, 0x66, 0x71, 0x2C, 0x1F, 0x1E, 0x11, 0x03, 0x5B,
    0x67, 0x2E, 0x2D, 0x20, 0x12, 0x05, 0x04, 0x5C, 0x68, 0x39, 0x2F, 0x21, 0x14, 0x13, 0x06, 0x5D,
    0x69, 0x31, 0x30, 0x23, 0x22, 0x15, 0x07, 0x5E, 0x6A, 0x72, 0x32, 0x24, 0x16, 0x08, 0x09, 0x5F,
    0x6B, 0x33, 0x25, 0x17, 0x18, 0x0B, 0x0A, 0x60, 0x6C, 0x34, 0x35, 0x26, 0x27, 0x19, 0x0C, 0x61,
    0x6D, 0x73, 0x28, 0x74, 0x1A, 0x0D, 0x62, 0x6E, 0x3A, 0x36, 0x1C, 0x1B, 0x75, 0x2B, 0x63, 0x76,
    0x55, 0x56, 0x77, 0x78, 0x79, 0x7A, 0x0E, 0x7B, 0x7C, 0x4F, 0x7D, 0x4B, 0x47, 0x7E, 0x7F, 0x6F,
    0x52, 0x53, 0x50, 0x4C, 0x4D, 0x48, 0x01, 0x45, 0x57, 0x4E, 0x51, 0x4A, 0x37, 0x49, 0x46, 0x54,
];

/// Set 1 form of a set 2 byte as the 8042 translates it: bytes from 0x80
/// up pass unchanged but for F7 (0x83) and SysRq (0x84).
fn set1_of(b: u8) -> u8 {
    match b {
        0x00..=0x7F => SET1_OF_SET2[b as usize],
        0x83 => 0x41,
        0x84 => 0x54,
        _ => b,
    }
}

/// Set 3 code of a typed key given by its set 2 code: the keys host text
/// uses have the same codes in both sets but for these three.
fn set3_of(code: u8) -> u8 {
    match code {
        KEY_ESCAPE => 0x08,
        KEY_LEFT_CTRL => 0x11,
        KEY_BACKSLASH => 0x5C,
        _ => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// An interrupt line that records every level it is set to.
    #[derive(Clone, Default)]
    struct Line(Arc<Mutex<Vec<bool>>>);

    impl IrqLine for Line {
        fn set_level(&mut self, high: bool) {
            self.0.lock().unwrap().push(high);
        }
    }

    impl Line {
        fn high(&self) -> bool {
            self.0.lock().unwrap().last().copied().unwrap_or(false)
        }

        fn take(&self) -> Vec<bool> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    fn controller() -> (I8042, Line, Line) {
        let (kbd, aux) = (Line::default(), Line::default());
        (
            I8042::new(Box::new(kbd.clone()), Box::new(aux.clone())),
            kbd,
            aux,
        )
    }

    fn cmd(c: &mut I8042, v: u8) -> IoAction {
        c.write(Port(COMMAND_PORT), 1, v as u32)
    }

    fn data(c: &mut I8042, v: u8) -> IoAction {
        c.write(Port(DATA_PORT), 1, v as u32)
    }

    fn status(c: &mut I8042) -> u8 {
        c.read(Port(COMMAND_PORT), 1) as u8
    }

    fn read(c: &mut I8042) -> u8 {
        assert_ne!(status(c) & 0x01, 0, "output buffer empty");
        c.read(Port(DATA_PORT), 1) as u8
    }

    /// Reads while the status says the output buffer is full.
    fn drain(c: &mut I8042) -> Vec<u8> {
        let mut got = Vec::new();
        while status(c) & 0x01 != 0 && got.len() < 64 {
            got.push(c.read(Port(DATA_PORT), 1) as u8);
        }
        got
    }

    /// A controller command with one result byte (Linux's i8042_command).
    fn query(c: &mut I8042, v: u8) -> u8 {
        cmd(c, v);
        read(c)
    }

    fn write_command_byte(c: &mut I8042, v: u8) {
        cmd(c, 0x60);
        data(c, v);
    }

    #[test]
    fn self_test_replies_0x55_and_sets_the_system_flag() {
        let (mut c, _, _) = controller();
        write_command_byte(&mut c, 0x61); // system flag clear
        assert_eq!(status(&mut c) & 0x04, 0);
        assert_eq!(query(&mut c, 0xAA), 0x55);
        assert_ne!(status(&mut c) & 0x04, 0, "self-test sets the system flag");
        assert_eq!(status(&mut c) & 0x01, 0, "one byte of reply");
    }

    #[test]
    fn status_after_post_and_the_command_data_bit() {
        let (mut c, _, _) = controller();
        // System flag (bit 2) and not inhibited (bit 4); IBF never set.
        assert_eq!(status(&mut c), 0x14);
        cmd(&mut c, 0xAD);
        assert_eq!(status(&mut c) & 0x08, 0x08, "last write was a command");
        data(&mut c, 0xF4);
        assert_eq!(status(&mut c) & 0x08, 0, "last write was data");
        assert_eq!(status(&mut c) & 0x02, 0);
    }

    #[test]
    fn the_command_byte_reads_back_what_was_written() {
        let (mut c, _, _) = controller();
        assert_eq!(query(&mut c, 0x20), INITIAL_COMMAND_BYTE);
        assert_eq!(INITIAL_COMMAND_BYTE & 0x40, 0x40, "translation on");
        write_command_byte(&mut c, 0x47);
        assert_eq!(query(&mut c, 0x20), 0x47);
        cmd(&mut c, 0xAD);
        cmd(&mut c, 0xA7);
        assert_eq!(query(&mut c, 0x20), 0x47 | 0x10 | 0x20);
        cmd(&mut c, 0xAE);
        cmd(&mut c, 0xA8);
        assert_eq!(query(&mut c, 0x20), 0x47);
        // The other RAM bytes are there too.
        cmd(&mut c, 0x65);
        data(&mut c, 0x5A);
        assert_eq!(query(&mut c, 0x25), 0x5A);
    }

    #[test]
    fn the_output_port_drives_a20_and_reset() {
        let (mut c, _, _) = controller();
        let p2 = query(&mut c, 0xD0);
        assert_eq!(p2 & 0x03, 0x03, "A20 on and reset released after POST");
        cmd(&mut c, 0xD1);
        assert_eq!(data(&mut c, 0xDD), IoAction::A20(false));
        assert_eq!(query(&mut c, 0xD0) & 0x02, 0);
        cmd(&mut c, 0xD1);
        assert_eq!(data(&mut c, 0xDF), IoAction::A20(true));
        cmd(&mut c, 0xD1);
        assert_eq!(data(&mut c, 0xDF), IoAction::None, "no change");
        cmd(&mut c, 0xD1);
        assert_eq!(data(&mut c, 0xDE), IoAction::Reset, "bit 0 low");
        assert_eq!(query(&mut c, 0xD0) & 0x01, 0x01, "reset released");
    }

    #[test]
    fn commands_dd_and_df_turn_a20_off_and_on() {
        let (mut c, _, _) = controller();
        assert_eq!(cmd(&mut c, 0xDF), IoAction::None, "already on");
        assert_eq!(cmd(&mut c, 0xDD), IoAction::A20(false));
        assert_eq!(cmd(&mut c, 0xDF), IoAction::A20(true));
    }

    #[test]
    fn pulsing_output_port_bit_0_resets() {
        let (mut c, _, _) = controller();
        assert_eq!(cmd(&mut c, 0xFE), IoAction::Reset);
        assert_eq!(cmd(&mut c, 0xF0), IoAction::Reset);
        assert_eq!(cmd(&mut c, 0xFF), IoAction::None, "pulse no bits");
        assert_eq!(cmd(&mut c, 0xFD), IoAction::None, "pulse A20 only");
    }

    #[test]
    fn interface_tests_pass_and_unknown_commands_are_ignored() {
        let (mut c, _, _) = controller();
        assert_eq!(query(&mut c, 0xAB), 0x00);
        assert_eq!(query(&mut c, 0xA9), 0x00);
        assert_eq!(query(&mut c, 0xC0) & 0x80, 0x80, "keyboard not inhibited");
        assert_eq!(cmd(&mut c, 0xC8), IoAction::None);
        assert_eq!(status(&mut c) & 0x01, 0);
    }

    #[test]
    fn keyboard_probe_as_linux_atkbd_does_it() {
        let (mut c, _, _) = controller();
        // Translation on: the controller translates the keyboard's replies,
        // so the MF2 ID AB 83 arrives as AB 41.
        data(&mut c, 0xF2);
        assert_eq!(drain(&mut c), [0xFA, 0xAB, 0x41]);
        data(&mut c, 0xF5);
        assert_eq!(drain(&mut c), [0xFA]);
        data(&mut c, 0xED); // LEDs
        assert_eq!(drain(&mut c), [0xFA]);
        data(&mut c, 0x00);
        assert_eq!(drain(&mut c), [0xFA]);
        data(&mut c, 0xF3); // typematic rate
        assert_eq!(drain(&mut c), [0xFA]);
        data(&mut c, 0x20);
        assert_eq!(drain(&mut c), [0xFA]);
        data(&mut c, 0xF4);
        assert_eq!(drain(&mut c), [0xFA]);
        data(&mut c, 0xFF); // reset, then the self-test result
        assert_eq!(drain(&mut c), [0xFA, 0xAA]);
        data(&mut c, 0xEA); // not a keyboard command (atkbd's EX_ENABLE)
        assert_eq!(drain(&mut c), [0xFE]);
        data(&mut c, 0xEE);
        assert_eq!(drain(&mut c), [0xEE], "echo has no ACK");
        data(&mut c, 0xFE);
        assert_eq!(drain(&mut c), [0xEE], "resend repeats the last byte");
    }

    #[test]
    fn without_translation_the_keyboard_bytes_pass_unchanged() {
        let (mut c, _, _) = controller();
        write_command_byte(&mut c, 0x25);
        data(&mut c, 0xF2);
        assert_eq!(drain(&mut c), [0xFA, 0xAB, 0x83]);
        data(&mut c, 0xF0);
        data(&mut c, 0x00);
        assert_eq!(drain(&mut c), [0xFA, 0xFA, 0x02], "scan code set 2");
        // With translation the set number is translated too: 2 -> 0x41.
        write_command_byte(&mut c, 0x65);
        data(&mut c, 0xF0);
        data(&mut c, 0x00);
        assert_eq!(drain(&mut c), [0xFA, 0xFA, 0x41]);
    }

    #[test]
    fn irq1_follows_the_output_buffer_when_enabled() {
        let (mut c, kbd, aux) = controller();
        data(&mut c, 0xF2);
        assert!(kbd.high());
        assert_eq!(kbd.take(), [true]);
        c.read(Port(DATA_PORT), 1);
        // Each byte is a new edge.
        assert_eq!(kbd.take(), [false, true]);
        c.read(Port(DATA_PORT), 1);
        c.read(Port(DATA_PORT), 1);
        assert_eq!(kbd.take(), [false, true, false]);
        assert_eq!(status(&mut c) & 0x01, 0);
        assert!(aux.take().is_empty());
    }

    #[test]
    fn irq1_stays_low_with_the_keyboard_interrupt_disabled() {
        let (mut c, kbd, _) = controller();
        write_command_byte(&mut c, 0x64);
        data(&mut c, 0xF4);
        assert_eq!(status(&mut c) & 0x01, 0x01, "polled: OBF still set");
        assert!(kbd.take().is_empty());
        // Enabling the interrupt with a byte waiting raises the line.
        write_command_byte(&mut c, 0x65);
        assert_eq!(kbd.take(), [true]);
        assert_eq!(read(&mut c), 0xFA);
        assert_eq!(kbd.take(), [false]);
    }

    #[test]
    fn reading_an_empty_buffer_returns_the_last_byte() {
        let (mut c, _, _) = controller();
        data(&mut c, 0xEE);
        assert_eq!(read(&mut c), 0xEE);
        assert_eq!(c.read(Port(DATA_PORT), 1) as u8, 0xEE);
    }

    #[test]
    fn typed_text_arrives_as_set_1_scancodes() {
        let (mut c, _, _) = controller();
        c.type_bytes(b"A");
        // Left shift make, a make, a break, left shift break.
        assert_eq!(drain(&mut c), [0x2A, 0x1E, 0x9E, 0xAA]);
        c.type_bytes(b"hi\r\n");
        assert_eq!(drain(&mut c), [0x23, 0xA3, 0x17, 0x97, 0x1C, 0x9C]);
        c.type_bytes(&[0x03]); // ctrl-C
        assert_eq!(drain(&mut c), [0x1D, 0x2E, 0xAE, 0x9D]);
        c.type_bytes(b"1 !");
        let want = [0x02, 0x82, 0x39, 0xB9, 0x2A, 0x02, 0x82, 0xAA];
        assert_eq!(drain(&mut c), want);
        c.type_bytes(b"\t\x1b\x7f"); // tab, escape, backspace
        assert_eq!(drain(&mut c), [0x0F, 0x8F, 0x01, 0x81, 0x0E, 0x8E]);
        c.type_bytes("é".as_bytes());
        assert!(drain(&mut c).is_empty(), "non-ASCII is dropped");
    }

    #[test]
    fn typed_text_arrives_as_set_2_without_translation() {
        let (mut c, _, _) = controller();
        write_command_byte(&mut c, 0x25);
        c.type_bytes(b"A");
        assert_eq!(drain(&mut c), [0x12, 0x1C, 0xF0, 0x1C, 0xF0, 0x12]);
        c.type_bytes(b"|");
        assert_eq!(drain(&mut c), [0x12, 0x5D, 0xF0, 0x5D, 0xF0, 0x12]);
    }

    #[test]
    fn the_keyboard_types_in_the_scan_code_set_selected() {
        let (mut c, _, _) = controller();
        write_command_byte(&mut c, 0x25);
        data(&mut c, 0xF0);
        data(&mut c, 0x01);
        assert_eq!(drain(&mut c), [0xFA, 0xFA]);
        c.type_bytes(b"a");
        assert_eq!(drain(&mut c), [0x1E, 0x9E]);
        data(&mut c, 0xF0);
        data(&mut c, 0x03);
        assert_eq!(drain(&mut c), [0xFA, 0xFA]);
        c.type_bytes(b"\x1b");
        assert_eq!(drain(&mut c), [0x08, 0xF0, 0x08]);
    }

    #[test]
    fn text_typed_while_the_keyboard_is_disabled_waits() {
        let (mut c, _, _) = controller();
        data(&mut c, 0xF5);
        assert_eq!(drain(&mut c), [0xFA]);
        c.type_bytes(b"a");
        assert!(drain(&mut c).is_empty(), "scanning off");
        cmd(&mut c, 0xAD);
        data(&mut c, 0xF4);
        // Writing to the keyboard enabled its port again.
        assert_eq!(drain(&mut c), [0xFA, 0x1E, 0x9E]);
        cmd(&mut c, 0xAD);
        c.type_bytes(b"b");
        assert!(drain(&mut c).is_empty(), "port disabled");
        cmd(&mut c, 0xAE);
        assert_eq!(drain(&mut c), [0x30, 0xB0]);
    }

    #[test]
    fn controller_replies_go_ahead_of_a_waiting_keyboard_byte() {
        let (mut c, _, _) = controller();
        c.type_bytes(b"a");
        assert_eq!(query(&mut c, 0x20), INITIAL_COMMAND_BYTE);
        assert_eq!(drain(&mut c), [0x1E, 0x9E]);
    }

    #[test]
    fn aux_probe_as_linux_i8042_does_it() {
        let (mut c, kbd, aux) = controller();
        assert!(drain(&mut c).is_empty());
        // AUX_LOOP: the byte comes back as if from the mouse.
        cmd(&mut c, 0xD3);
        data(&mut c, 0x5A);
        assert_eq!(status(&mut c) & 0x21, 0x21);
        assert_eq!(read(&mut c), 0x5A);
        // Toggling the port shows in the command byte's bit 5.
        cmd(&mut c, 0xA7);
        assert_eq!(query(&mut c, 0x20) & 0x20, 0x20);
        cmd(&mut c, 0xA8);
        assert_eq!(query(&mut c, 0x20) & 0x20, 0);
        // IRQ 12 delivery test: AUX interrupt on, AUX_LOOP 0xA5.
        write_command_byte(&mut c, (INITIAL_COMMAND_BYTE & !0x20) | 0x02);
        kbd.take();
        cmd(&mut c, 0xD3);
        data(&mut c, 0xA5);
        assert!(aux.high());
        assert!(kbd.take().is_empty());
        assert_eq!(status(&mut c) & 0x21, 0x21);
        assert_eq!(read(&mut c), 0xA5);
        assert!(!aux.high());
        // No active multiplexer: the third loop byte comes back unchanged.
        for b in [0xF0, 0x56, 0xA4] {
            cmd(&mut c, 0xD3);
            data(&mut c, b);
            assert_eq!(read(&mut c), b);
        }
    }

    #[test]
    fn the_mouse_answers_psmouse_probes_on_irq12() {
        let (mut c, kbd, aux) = controller();
        write_command_byte(&mut c, 0x47); // both ports and interrupts on
        kbd.take();
        cmd(&mut c, 0xD4);
        data(&mut c, 0xFF);
        assert_eq!(aux.take(), [true]);
        assert_eq!(status(&mut c) & 0x21, 0x21);
        assert_eq!(drain(&mut c), [0xFA, 0xAA, 0x00]);
        assert!(kbd.take().is_empty());
        cmd(&mut c, 0xD4);
        data(&mut c, 0xF2);
        assert_eq!(drain(&mut c), [0xFA, 0x00], "standard PS/2 mouse");
        for (byte, reply) in [(0xF3, 0xFA), (200, 0xFA), (0xE8, 0xFA), (3, 0xFA)] {
            cmd(&mut c, 0xD4);
            data(&mut c, byte);
            assert_eq!(drain(&mut c), [reply]);
        }
        cmd(&mut c, 0xD4);
        data(&mut c, 0xF4);
        assert_eq!(drain(&mut c), [0xFA]);
        cmd(&mut c, 0xD4);
        data(&mut c, 0xE9); // status: enabled, resolution 3, 200/s
        assert_eq!(drain(&mut c), [0xFA, 0x20, 0x03, 200]);
        cmd(&mut c, 0xD4);
        data(&mut c, 0x42);
        assert_eq!(drain(&mut c), [0xFE], "not a mouse command");
    }

    #[test]
    fn writing_to_the_mouse_enables_its_port() {
        let (mut c, _, _) = controller();
        assert_eq!(query(&mut c, 0x20) & 0x20, 0x20, "disabled after POST");
        cmd(&mut c, 0xD4);
        data(&mut c, 0xF5);
        assert_eq!(drain(&mut c), [0xFA]);
        assert_eq!(query(&mut c, 0x20) & 0x20, 0);
    }

    #[test]
    fn d2_writes_the_keyboard_output_buffer() {
        let (mut c, kbd, _) = controller();
        cmd(&mut c, 0xD2);
        data(&mut c, 0x1E);
        assert!(kbd.high());
        assert_eq!(status(&mut c) & 0x21, 0x01);
        assert_eq!(read(&mut c), 0x1E);
    }

    #[test]
    fn a_guest_flooding_the_controller_uses_bounded_memory() {
        let (mut c, _, _) = controller();
        for _ in 0..10_000 {
            cmd(&mut c, 0x20);
            data(&mut c, 0xF2);
            cmd(&mut c, 0xD4);
            data(&mut c, 0xE9);
        }
        assert!(drain(&mut c).len() <= CONTROLLER_QUEUE + 2 * DEVICE_BUFFER);
    }
}
