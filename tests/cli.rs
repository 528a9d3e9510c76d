//! The `bt86` command line end to end: guests, options and every bad-input
//! path give the documented status and a clear message.

use std::path::PathBuf;
use std::process::{Command, Output};

use bt86_testsuite::*;

fn bt86(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bt86"))
        .args(args)
        .output()
        .expect("run bt86")
}

fn tmp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bt86-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A kernel that prints its command line and multiboot magic check, then
/// exits through isa-debug-exit with `status`.
fn hello_kernel(status: u8) -> Vec<u8> {
    multiboot_elf(0x10_0000, |a| {
        let mut bad = a.create_label();
        let mut print = a.create_label();
        let mut done = a.create_label();
        a.cmp(eax, 0x2BAD_B002u32)?;
        a.jne(bad)?;
        a.mov(esi, dword_ptr(ebx + 16))?; // cmdline
        a.set_label(&mut print)?;
        a.lodsb()?;
        a.test(al, al)?;
        a.jz(done)?;
        a.out(0xE9, al)?;
        a.jmp(print)?;
        a.set_label(&mut done)?;
        a.mov(al, status as u32)?;
        a.out(0xF4, al)?;
        a.set_label(&mut bad)?;
        a.mov(al, 0xEEu32)?;
        a.out(0xF4, al)
    })
}

#[test]
fn demo_guest_runs_with_no_arguments() {
    let o = bt86(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("17984 primes below 200000"));
}

#[test]
fn multiboot_kernel_gets_magic_and_command_line_and_exits_with_status() {
    let k = tmp("hello.elf", &hello_kernel(0x10));
    let o = bt86(&[
        "run",
        "--kernel",
        k.to_str().unwrap(),
        "--append",
        "hello world",
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hello world");
    assert_eq!(o.status.code(), Some((0x10 << 1) | 1));
}

#[test]
fn debugcon_can_go_to_a_file_and_move_port() {
    let k = tmp("hello2.elf", &hello_kernel(0));
    let out = std::env::temp_dir().join(format!("bt86-debugcon-{}.txt", std::process::id()));
    let arg = format!("file:{}", out.display());
    let o = bt86(&[
        "--kernel",
        k.to_str().unwrap(),
        "--append",
        "x",
        "--debugcon",
        &arg,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert_eq!(std::fs::read(&out).unwrap(), b"x");
    // Moved away from 0xE9, the kernel's bytes go nowhere.
    let o = bt86(&[
        "--kernel",
        k.to_str().unwrap(),
        "--append",
        "x",
        "--debugcon-port",
        "0x80",
    ]);
    assert!(o.stdout.is_empty());
}

#[test]
fn stats_print_the_table_and_json() {
    let json = std::env::temp_dir().join(format!("bt86-stats-{}.json", std::process::id()));
    let o = bt86(&["--stats", "--stats-json", json.to_str().unwrap()]);
    let err = stderr(&o);
    assert!(
        err.contains("units") && err.contains("Total") && err.contains("tus_executed"),
        "{err}"
    );
    let j = std::fs::read_to_string(&json).unwrap();
    assert!(
        j.starts_with("{\"translation\":{\"classes\":{\"real16\":"),
        "{j}"
    );
    for key in [
        "\"kernel32\":",
        "\"user32\":",
        "\"total\":",
        "\"counters\":{",
    ] {
        assert!(j.contains(key), "no {key} in {j}");
    }
    // The demo guest is 32-bit kernel code: that row counts something.
    assert!(!j.contains("\"kernel32\":{\"units\":0,"), "{j}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let o = bt86(&["--kernel", "/nonexistent/kernel.elf"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot read /nonexistent/kernel.elf"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_file_without_multiboot_header_is_refused() {
    let k = tmp("text.txt", b"this is not a kernel\n");
    let o = bt86(&["--kernel", k.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no multiboot header"), "{}", stderr(&o));
}

#[test]
fn a_multiboot_header_in_a_non_elf_file_is_refused() {
    let mut img = vec![0u8; 64];
    let flags = 3u32;
    img[8..12].copy_from_slice(&0x1BAD_B002u32.to_le_bytes());
    img[12..16].copy_from_slice(&flags.to_le_bytes());
    img[16..20].copy_from_slice(
        &0u32
            .wrapping_sub(0x1BAD_B002)
            .wrapping_sub(flags)
            .to_le_bytes(),
    );
    let k = tmp("raw-mb.bin", &img);
    let o = bt86(&["--kernel", k.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not a 32-bit x86 ELF file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn segments_beyond_ram_are_refused() {
    let k = tmp("high.elf", &multiboot_elf(0x0F00_0000, |a| a.hlt()));
    let o = bt86(&["-m", "16", "--kernel", k.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("does not fit in guest RAM (16 MiB)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn flat_image_beyond_ram_is_refused() {
    let k = tmp("flat.bin", &[0xF4; 16]);
    let o = bt86(&[
        "-m",
        "2M",
        "--flat",
        k.to_str().unwrap(),
        "--load",
        "0x200000",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("does not fit in guest RAM"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_options_are_usage_errors() {
    for args in [
        &["--no-such-option"][..],
        &["-m", "lots"][..],
        &["--flat", "x.bin"][..],
        &["--debugcon", "tcp:1234"][..],
        &["--debugcon-port", "0x10000"][..],
    ] {
        let o = bt86(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn unsupported_memory_sizes_are_refused() {
    for m in ["0", "512K", "5G"] {
        let o = bt86(&["-m", m]);
        assert_eq!(o.status.code(), Some(1), "-m {m}");
        assert!(stderr(&o).contains("guest RAM"), "{}", stderr(&o));
    }
}

#[test]
fn a_guest_exception_names_vector_and_eip() {
    let k = tmp("ud.bin", &[0x0F, 0x0B]);
    let o = bt86(&["--flat", k.to_str().unwrap(), "--load", "0x100000"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("#UD (invalid opcode) at EIP=0x00100000"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn com1_output_goes_to_stdout_or_a_file() {
    // mov al,'h'; mov dx,0x3f8; out dx,al; mov al,'i'; out dx,al; hlt
    let k = tmp(
        "com1.bin",
        &[
            0xB0, b'h', 0x66, 0xBA, 0xF8, 0x03, 0xEE, 0xB0, b'i', 0xEE, 0xF4,
        ],
    );
    let o = bt86(&["--flat", k.to_str().unwrap(), "--load", "0x100000"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hi");
    let out = std::env::temp_dir().join(format!("bt86-com1-{}.txt", std::process::id()));
    let arg = format!("file:{}", out.display());
    let o = bt86(&[
        "--flat",
        k.to_str().unwrap(),
        "--load",
        "0x100000",
        "--serial",
        &arg,
    ]);
    assert!(o.stdout.is_empty());
    assert_eq!(std::fs::read(&out).unwrap(), b"hi");
}
