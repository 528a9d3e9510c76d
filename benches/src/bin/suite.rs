//! The OS microbenchmark suite's runner (started by `benches/suite.sh`,
//! which builds the programs and the guest image first).
//!
//! Runs the five benchmark programs natively, inside the Linux guest under
//! bt86 and, if given, inside the same guest under qemu-system-i386 with
//! TCG. Every program times itself (CLOCK_MONOTONIC around the timed work,
//! see `benches/guests/linux_harness.c`), so boot time is excluded. Each
//! figure is the median of the runs; every run of a benchmark must compute
//! the same result on every system, or the suite fails.
//!
//! Writes the side-by-side table to the terminal and to `OUT/suite.txt`,
//! the samples to `OUT/suite.csv` and `OUT/suite.json`, and a bar chart of
//! the ratios to native to `OUT/suite.svg`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bt86_benches::chart::{self, Group};
use clap::Parser;

/// The benchmarks in display order, with the target ratio for bt86
/// and what QEMU's TCG measured on this kind of machine.
const BENCHES: [(&str, f64, f64); 5] = [
    ("countprimes", 1.05, 2.4),
    ("fib", 2.0, 7.4),
    ("getppid", 3.0, 4.2),
    ("forkwait", 4.0, 6.0),
    ("memsweep", 1.1, 27.0),
];

#[derive(Parser)]
#[command(about = "Runs the OS microbenchmarks natively, under bt86 and under QEMU")]
struct Args {
    /// Directory with the native programs bench-NAME.
    #[arg(long)]
    programs: PathBuf,
    /// The guest kernel (bzImage) and the initramfs holding the programs.
    #[arg(long)]
    kernel: PathBuf,
    #[arg(long)]
    initrd: PathBuf,
    /// The bt86 binary.
    #[arg(long)]
    bt86: PathBuf,
    /// qemu-system-i386, or "none".
    #[arg(long, default_value = "none")]
    qemu: String,
    /// Runs per benchmark and system (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: u32,
    /// Comma-separated benchmarks to run (default: all five).
    #[arg(long)]
    only: Option<String>,
    /// Problem sizes, NAME=N (default: each program's own).
    #[arg(long = "size", value_name = "NAME=N")]
    sizes: Vec<String>,
    /// Where the table, CSV, JSON and chart go.
    #[arg(long)]
    out: PathBuf,
    /// Seconds one guest boot (all its runs) may take.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
}

/// One line a benchmark program printed.
#[derive(Clone, Debug)]
struct Sample {
    bench: String,
    n: u64,
    result: u64,
    seconds: f64,
}

fn parse_sample(line: &str) -> Option<Sample> {
    let mut fields = BTreeMap::new();
    for word in line.split_whitespace() {
        let (k, v) = word.split_once('=')?;
        fields.insert(k, v);
    }
    Some(Sample {
        bench: fields.get("bench")?.to_string(),
        n: fields.get("n")?.parse().ok()?,
        result: fields.get("result")?.parse().ok()?,
        seconds: fields.get("ns")?.parse::<f64>().ok()? / 1e9,
    })
}

/// A benchmark's line that is not a result (the program failed).
fn failure(line: &str) -> Option<&str> {
    line.contains(" failed status=").then_some(line)
}

struct Suite {
    args: Args,
    benches: Vec<&'static str>,
    sizes: BTreeMap<String, String>,
}

impl Suite {
    fn native(&self) -> Result<Vec<Sample>, String> {
        let mut samples = Vec::new();
        for round in 1..=self.args.runs {
            for b in &self.benches {
                let prog = self.args.programs.join(format!("bench-{b}"));
                let mut cmd = Command::new(&prog);
                if let Some(n) = self.sizes.get(*b) {
                    cmd.arg(n);
                }
                let out = cmd
                    .output()
                    .map_err(|e| format!("{}: {e}", prog.display()))?;
                let text = String::from_utf8_lossy(&out.stdout);
                let sample = text
                    .lines()
                    .find_map(parse_sample)
                    .filter(|_| out.status.success())
                    .ok_or_else(|| format!("native {b}: {} printed {text:?}", out.status))?;
                eprintln!("native   round {round}: {}", describe(&sample));
                samples.push(sample);
            }
        }
        Ok(samples)
    }

    /// The kernel command line that makes /init run the suite.
    fn append(&self) -> String {
        let mut s = format!(
            "console=ttyS0 quiet bt86.run=bench-suite bench.runs={} bench.only={}",
            self.args.runs,
            self.benches.join(",")
        );
        for (b, n) in &self.sizes {
            let _ = write!(s, " bench.n.{b}={n}");
        }
        s
    }

    /// Boots the guest with `cmd` and collects the result lines it prints.
    fn guest(&self, system: &str, mut cmd: Command) -> Result<Vec<Sample>, String> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("{system}: cannot start {:?}: {e}", cmd.get_program()))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let now = Instant::now();
        let deadline = now
            .checked_add(Duration::from_secs(self.args.timeout))
            .unwrap_or(now + Duration::from_secs(u32::MAX.into()));
        let mut samples = Vec::new();
        let mut tail = Vec::new();
        let outcome = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(s) = parse_sample(&line) {
                        eprintln!("{system:<8} {}", describe(&s));
                        samples.push(s);
                    } else if let Some(f) = failure(&line) {
                        break Err(format!("{system}: {f}"));
                    } else if line.contains("bench-suite: done") {
                        break Ok(());
                    }
                    tail.push(line);
                    if tail.len() > 20 {
                        tail.remove(0);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    break Err(format!(
                        "{system}: no end after {} s (--timeout)",
                        self.args.timeout
                    ));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child
                        .wait()
                        .map_or_else(|e| e.to_string(), |s| s.to_string());
                    break Err(format!(
                        "{system}: the guest stopped ({status}) before the suite ended; \
                         its last lines:\n{}",
                        tail.join("\n")
                    ));
                }
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        outcome.map(|()| samples)
    }

    fn bt86(&self) -> Result<Vec<Sample>, String> {
        let mut cmd = Command::new(&self.args.bt86);
        cmd.arg("run")
            .arg("--kernel")
            .arg(&self.args.kernel)
            .arg("--initrd")
            .arg(&self.args.initrd)
            .args(["-m", "256M", "--no-reboot", "--append", &self.append()]);
        self.guest("bt86", cmd)
    }

    fn qemu(&self) -> Result<Vec<Sample>, String> {
        let mut cmd = Command::new(&self.args.qemu);
        cmd.args(["-accel", "tcg", "-m", "256M", "-nographic", "-no-reboot"])
            .arg("-kernel")
            .arg(&self.args.kernel)
            .arg("-initrd")
            .arg(&self.args.initrd)
            .args(["-append", &self.append()]);
        self.guest("qemu", cmd)
    }
}

fn describe(s: &Sample) -> String {
    format!(
        "{:<12} n={:<9} result={:<11} {:.3} s",
        s.bench, s.n, s.result, s.seconds
    )
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// The samples of one system, by benchmark.
struct Results {
    system: &'static str,
    by_bench: BTreeMap<String, Vec<Sample>>,
}

impl Results {
    fn new(system: &'static str, samples: Vec<Sample>) -> Self {
        let mut by_bench: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
        for s in samples {
            by_bench.entry(s.bench.clone()).or_default().push(s);
        }
        Results { system, by_bench }
    }

    fn median(&self, bench: &str) -> Option<f64> {
        let mut t: Vec<f64> = self
            .by_bench
            .get(bench)?
            .iter()
            .map(|s| s.seconds)
            .collect();
        (!t.is_empty()).then(|| median(&mut t))
    }

    /// The median time of `bench` over `native`'s, if both are there and
    /// native's is not 0 (a tiny size can take no measurable time).
    fn ratio(&self, native: &Results, bench: &str) -> Option<f64> {
        let r = self.median(bench)? / native.median(bench)?;
        r.is_finite().then_some(r)
    }
}

/// Every system ran every benchmark `runs` times with one size and got
/// one result.
fn check(results: &[Results], benches: &[&str], runs: u32) -> Result<(), String> {
    for b in benches {
        let mut seen: Option<(u64, u64, &str)> = None;
        for r in results {
            let samples = r.by_bench.get(*b).map_or(&[][..], |v| v.as_slice());
            if samples.len() != runs as usize {
                return Err(format!(
                    "{}: {b} ran {} times, not {runs}",
                    r.system,
                    samples.len()
                ));
            }
            for s in samples {
                match seen {
                    None => seen = Some((s.n, s.result, r.system)),
                    Some((n, result, first)) if (n, result) != (s.n, s.result) => {
                        return Err(format!(
                            "{b}: {first} computed result={result} for n={n}, {} result={} for n={}",
                            r.system, s.result, s.n
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
    }
    Ok(())
}

fn table(results: &[Results], benches: &[&str], runs: u32) -> String {
    let mut s = String::new();
    let _ = write!(s, "{:<12}", "benchmark");
    for r in results {
        let _ = write!(s, "{:>22}", r.system);
    }
    let _ = writeln!(s, "{:>10}{:>10}", "target", "QEMU ref");
    let native = &results[0];
    for (b, target, qemu_ref) in BENCHES.iter().filter(|(b, ..)| benches.contains(b)) {
        let _ = write!(s, "{b:<12}");
        for r in results {
            let t = r.median(b).unwrap_or(f64::NAN);
            let ratio = r
                .ratio(native, b)
                .map_or("-".to_string(), |x| format!("{x:.2}x"));
            let _ = write!(s, "{:>12.3} s {:>7}", t, ratio);
        }
        let _ = writeln!(s, "{:>9.2}x{:>9.1}x", target, qemu_ref);
    }
    let _ = writeln!(
        s,
        "(median of {runs} runs; ratio to native in the same suite run; target: the issue's \
         goal for bt86; QEMU ref: TCG as measured on this kind of machine before)"
    );
    s
}

fn csv(results: &[Results], benches: &[&str]) -> String {
    let mut s =
        String::from("benchmark,system,n,result,run,seconds,median_seconds,ratio_to_native\n");
    let native = &results[0];
    for b in benches {
        for r in results {
            let m = r.median(b).unwrap_or(f64::NAN);
            let ratio = r
                .ratio(native, b)
                .map_or(String::new(), |x| format!("{x:.4}"));
            for (i, x) in r.by_bench.get(*b).into_iter().flatten().enumerate() {
                let _ = writeln!(
                    s,
                    "{b},{},{},{},{},{:.6},{:.6},{ratio}",
                    r.system,
                    x.n,
                    x.result,
                    i + 1,
                    x.seconds,
                    m,
                );
            }
        }
    }
    s
}

fn json(results: &[Results], benches: &[&str], runs: u32) -> String {
    let native = &results[0];
    let mut items = Vec::new();
    for (b, target, qemu_ref) in BENCHES.iter().filter(|(b, ..)| benches.contains(b)) {
        let systems: Vec<String> = results
            .iter()
            .map(|r| {
                let samples = r.by_bench.get(*b).map_or(&[][..], |v| v.as_slice());
                let secs: Vec<String> = samples.iter().map(|x| format!("{:.6}", x.seconds)).collect();
                let m = r.median(b).unwrap_or(f64::NAN);
                let ratio = r.ratio(native, b).map_or("null".to_string(), |x| format!("{x:.4}"));
                format!(
                    "\"{}\":{{\"median_seconds\":{:.6},\"ratio_to_native\":{ratio},\"seconds\":[{}]}}",
                    r.system,
                    m,
                    secs.join(",")
                )
            })
            .collect();
        let first = &native.by_bench[*b][0];
        items.push(format!(
            "{{\"benchmark\":\"{b}\",\"n\":{},\"result\":{},\"target_ratio\":{target},\"qemu_reference_ratio\":{qemu_ref},\"systems\":{{{}}}}}",
            first.n,
            first.result,
            systems.join(",")
        ));
    }
    format!(
        "{{\"runs\":{runs},\"benchmarks\":[\n  {}\n]}}\n",
        items.join(",\n  ")
    )
}

fn run(args: Args) -> Result<(), String> {
    let benches: Vec<&'static str> = match &args.only {
        None => BENCHES.iter().map(|b| b.0).collect(),
        Some(list) => list
            .split(',')
            .map(|name| {
                BENCHES
                    .iter()
                    .find(|b| b.0 == name)
                    .map(|b| b.0)
                    .ok_or_else(|| format!("unknown benchmark {name:?}"))
            })
            .collect::<Result<_, _>>()?,
    };
    let mut sizes = BTreeMap::new();
    for s in &args.sizes {
        let (b, n) = s
            .split_once('=')
            .filter(|(b, n)| benches.contains(b) && n.parse::<u64>().is_ok())
            .ok_or_else(|| format!("--size {s:?}: expected NAME=N for a benchmark that runs"))?;
        sizes.insert(b.to_string(), n.to_string());
    }
    if args.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let suite = Suite {
        args,
        benches,
        sizes,
    };
    let mut results = vec![Results::new("native", suite.native()?)];
    results.push(Results::new("bt86", suite.bt86()?));
    if suite.args.qemu != "none" {
        results.push(Results::new("qemu-tcg", suite.qemu()?));
    }
    let (benches, runs) = (&suite.benches, suite.args.runs);
    check(&results, benches, runs)?;

    let text = table(&results, benches, runs);
    print!("\n{text}");
    let groups: Vec<Group> = BENCHES
        .iter()
        .filter(|(b, ..)| benches.contains(b))
        .map(|(b, target, _)| Group {
            label: b.to_string(),
            values: results[1..]
                .iter()
                .map(|r| r.ratio(&results[0], b).unwrap_or(f64::NAN))
                .collect(),
            target: Some(*target),
        })
        .collect();
    let series: Vec<&str> = results[1..].iter().map(|r| r.system).collect();
    let svg = chart::ratio_bars(
        "OS microbenchmarks: time relative to native (lower is better)",
        &series,
        &groups,
    );
    let out = &suite.args.out;
    write(out, "suite.txt", &text)?;
    write(out, "suite.csv", &csv(&results, benches))?;
    write(out, "suite.json", &json(&results, benches, runs))?;
    write(out, "suite.svg", &svg)?;
    eprintln!(
        "suite: wrote suite.txt, suite.csv, suite.json and suite.svg in {}",
        out.display()
    );
    Ok(())
}

fn write(dir: &Path, name: &str, text: &str) -> Result<(), String> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("suite: {e}");
            ExitCode::FAILURE
        }
    }
}
