//! Boots Debian's i386 686 kernel with a busybox initramfs (fetched by
//! `scripts/fetch-linux.sh`, which `scripts/test.sh` runs first) and
//! checks what its /init prints (scripts/linux-init.sh), the kernel log,
//! and the exit status of the reboot that ends the run.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn images() -> (PathBuf, PathBuf) {
    let dir = std::env::var_os("BT86_LINUX_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/linux"));
    let (kernel, initrd) = (dir.join("bzImage"), dir.join("initrd.gz"));
    assert!(
        kernel.exists() && initrd.exists(),
        "no Linux image in {}: run scripts/fetch-linux.sh (scripts/test.sh does)",
        dir.display()
    );
    (kernel, initrd)
}

fn bt86(append: &str) -> Command {
    let (kernel, initrd) = images();
    let mut c = Command::new(env!("CARGO_BIN_EXE_bt86"));
    c.arg("run")
        .arg("--kernel")
        .arg(kernel)
        .arg("--initrd")
        .arg(initrd)
        .args(["-m", "256M", "--no-reboot", "--append"])
        .arg(format!("console=ttyS0 {append}"));
    c
}

/// Waits for `child` with a deadline, killing it past the deadline.
fn wait(mut child: Child, limit: Duration) -> (Option<i32>, String) {
    let start = Instant::now();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    (status, out)
}

/// What no clean boot's kernel log may say.
const DMESG_FORBIDDEN: [&str; 10] = [
    "unstable",
    "spurious",
    "lost",
    "Oops",
    "BUG",
    "WARNING",
    "Unknown CPU",
    "unknown CPU",
    "Call Trace",
    "Unable to",
];

fn boot_test(append: &str) {
    let child = bt86(&format!("bt86.run=test {append}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run bt86");
    let (status, out) = wait(child, Duration::from_secs(600));
    let expect = [
        "bt86-init: up",
        "uname: Linux 6.",
        "-686 i686",
        "vendor_id\t: GenuineIntel",
        "read back: written in tmpfs",
        "fork/exec loop: 50",
        "bt86-init: done",
    ];
    for e in expect {
        assert!(out.contains(e), "no {e:?} in the output:\n{out}");
    }
    let dmesg = out
        .split("--- dmesg")
        .nth(1)
        .and_then(|d| d.split("--- end of dmesg").next())
        .expect("the dmesg section");
    for bad in DMESG_FORBIDDEN {
        let lines: Vec<&str> = dmesg.lines().filter(|l| l.contains(bad)).collect();
        assert!(
            lines.is_empty(),
            "dmesg says {bad:?}:\n{}",
            lines.join("\n")
        );
    }
    assert_eq!(
        status,
        Some(0),
        "the guest's reboot ends the run with status 0"
    );
}

#[test]
fn linux_boots_with_pic_and_pit_only() {
    boot_test("noapic nolapic acpi=off");
}

#[test]
fn linux_boots_with_the_apics() {
    boot_test("acpi=off");
}

#[test]
fn linux_shell_takes_typed_commands() {
    let mut child = bt86("")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run bt86");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut out = String::new();
    // Types each command once the text before it has appeared.
    let script = [
        ("bt86-init: shell", "echo typed-$((6 * 7))\n"),
        ("typed-42", "exit\n"),
    ];
    let mut step = 0;
    while start.elapsed() < Duration::from_secs(600) {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(chunk) => out.push_str(&String::from_utf8_lossy(&chunk)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
        if let Some((after, typed)) = script.get(step)
            && out.contains(after)
        {
            // Give the shell a moment to print its prompt and read.
            std::thread::sleep(Duration::from_millis(300));
            stdin.write_all(typed.as_bytes()).unwrap();
            stdin.flush().unwrap();
            step += 1;
        }
    }
    // Its output ends before its exit status is there.
    let mut status = None;
    for _ in 0..200 {
        if let Some(st) = child.try_wait().unwrap() {
            status = st.code();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if status.is_none() {
        let _ = child.kill();
    }
    assert!(out.contains("bt86-init: shell"), "no shell:\n{out}");
    assert!(
        out.contains("typed-42"),
        "the typed command did not run:\n{out}"
    );
    assert_eq!(status, Some(0), "exit reboots, which ends the run:\n{out}");
}
