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

/// The number after `"key":` in `json`, from `at` on; and where it ends.
fn json_number(json: &str, at: usize, key: &str) -> (u64, usize) {
    let pat = format!("\"{key}\":");
    let start = json[at..].find(&pat).expect(&pat) + at + pat.len();
    let len = json[start..].find(|c: char| !c.is_ascii_digit()).unwrap();
    (json[start..start + len].parse().expect(key), start + len)
}

/// Checks the statistics of a whole boot (`--stats-json`): the Total row
/// of the translation table is the sum of the class rows, real-mode,
/// kernel and user code each have their row, and both kernel and user
/// code ran, mostly as IDENT.
fn check_stats(json: &str) {
    // (units, translated instructions, executed, IDENT) of an object.
    let row = |at: usize| {
        let (units, at) = json_number(json, at, "units");
        let (instrs, at) = json_number(json, at, "instructions");
        // This row's executed counts: an object (stats on), not null
        // (which would have the next row's numbers read instead).
        let exec = at + json[at..].find("\"executed\":").expect("executed");
        assert!(!json[at..exec].contains('}'), "executed is in this row");
        assert!(json[exec + 11..].starts_with('{'), "executed is counted");
        let (executed, at) = json_number(json, exec, "instructions");
        let (ident, _) = json_number(json, at, "ident");
        [units, instrs, executed, ident]
    };
    let mut sum = [0u64; 4];
    let mut classes = Vec::new();
    let mut at = json.find("\"classes\":{").expect("classes") + 11;
    while let Some(name_end) = json[at..].find("\":{\"units\"") {
        let name_start = json[..at + name_end].rfind('"').unwrap() + 1;
        let name = &json[name_start..at + name_end];
        if name == "total" {
            break;
        }
        let r = row(at + name_end);
        for (s, v) in sum.iter_mut().zip(r) {
            *s += v;
        }
        classes.push((name.to_string(), r));
        at += name_end + 1;
    }
    let total = row(json.find("\"total\":").expect("total"));
    assert_eq!(sum, total, "the Total row is the sum of {classes:?}");
    let class = |n: &str| {
        classes
            .iter()
            .find(|(c, _)| c == n)
            .unwrap_or_else(|| panic!("no {n} row in {classes:?}"))
            .1
    };
    // Booted by the 32-bit entry point: no real-mode code runs.
    assert_eq!(class("real16"), [0; 4]);
    for n in ["kernel32", "user32"] {
        let [units, _, executed, ident] = class(n);
        assert!(units > 100 && executed > 1_000_000, "{n}: {classes:?}");
        assert!(
            ident * 2 > executed,
            "{n}: less than half IDENT: {classes:?}"
        );
    }
    for counter in [
        "tus_executed",
        "transfers.chained",
        "interrupts",
        "hidden_faults",
    ] {
        let (v, _) = json_number(json, 0, counter);
        assert!(v > 0, "{counter} = 0");
    }
}

/// The boots take turns. A guest whose CPU thread waits for a host CPU
/// (three boots on CI's two cores) gets its timer ticks late, and
/// Linux's clocksource watchdog, which checks the TSC against the ticks
/// (jiffies, or the PIT count that builds on them), may then call the
/// TSC unstable: a host too busy for the guest, not what these tests
/// look for.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn boot_test(append: &str, stats: bool) {
    let _turn = one_at_a_time();
    let json = std::env::temp_dir().join(format!("bt86-linux-stats-{}.json", std::process::id()));
    let mut cmd = bt86(&format!("bt86.run=test {append}"));
    if stats {
        cmd.arg("--stats-json").arg(&json);
    }
    let child = cmd
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
    if stats {
        let text = std::fs::read_to_string(&json).expect("the --stats-json file");
        let _ = std::fs::remove_file(&json);
        check_stats(&text);
    }
}

#[test]
fn linux_boots_with_pic_and_pit_only() {
    // Without the APICs Linux's clocksource watchdog checks the TSC
    // against the PIT clocksource, which is jiffies plus the PIT count and
    // lags while a tick waits to be taken: a few hundred microseconds of
    // interrupt latency (one boot in about eight here, cause not pinned
    // down) then calls the TSC unstable. The APIC boot keeps the watchdog.
    boot_test("noapic nolapic acpi=off tsc=nowatchdog", false);
}

#[test]
fn linux_boots_with_the_apics() {
    boot_test("acpi=off", true);
}

#[test]
fn linux_shell_takes_typed_commands() {
    let _turn = one_at_a_time();
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
