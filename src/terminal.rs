//! The host terminal as the guest's serial console, as QEMU's
//! `-serial mon:stdio` has it: raw mode while the guest runs (restored
//! when bt86 exits), every key sent to the guest, and Ctrl-A X to quit
//! (Ctrl-A Ctrl-A sends a Ctrl-A).

use std::io::Read;

use bt86_runtime::machine::ExitHandle;
use bt86_runtime::pc::SerialInput;

/// The terminal's settings before raw mode, put back on drop.
pub struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    /// Puts stdin's terminal in raw mode; None if stdin is not a terminal.
    pub fn enter() -> Option<RawMode> {
        // SAFETY: isatty and tcgetattr on fd 0 with a valid termios to fill.
        unsafe {
            if libc::isatty(0) != 1 {
                return None;
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return None;
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(0, libc::TCSANOW, &raw) != 0 {
                return None;
            }
            Some(RawMode { saved })
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores settings read from the same terminal.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.saved);
        }
    }
}

const CTRL_A: u8 = 0x01;

/// Reads stdin on its own thread and types it into the guest's serial
/// port until end of file. With `escapes` (a terminal), Ctrl-A X stops
/// the machine.
pub fn forward_stdin(input: SerialInput, exit: ExitHandle, escapes: bool) {
    let spawned = std::thread::Builder::new()
        .name("bt86-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 256];
            let mut after_ctrl_a = false;
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if !escapes {
                    input.send(&buf[..n]);
                    continue;
                }
                let mut out = Vec::with_capacity(n);
                for &b in &buf[..n] {
                    if after_ctrl_a {
                        after_ctrl_a = false;
                        match b {
                            b'x' | b'X' => {
                                exit.stop();
                                return;
                            }
                            CTRL_A => out.push(CTRL_A),
                            _ => {}
                        }
                    } else if b == CTRL_A {
                        after_ctrl_a = true;
                    } else {
                        out.push(b);
                    }
                }
                input.send(&out);
            }
        });
    if let Err(e) = spawned {
        eprintln!("bt86: no serial input: cannot start the stdin thread: {e}");
    }
}
