//! The `bt86` command line: options -> Machine -> run -> report.

mod demo;
mod terminal;

use std::path::PathBuf;
use std::process::ExitCode;

use bt86_runtime::devices::rtc::{self, StartTime};
use bt86_runtime::machine::status;
use bt86_runtime::{Machine, MachineConfig, OutputSink};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bt86",
    version,
    about = "x86 PC emulator by dynamic binary translation"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run a guest (the default; with no image, the built-in demo guest).
    Run(RunArgs),
}

#[derive(Args, Clone)]
struct RunArgs {
    /// Guest RAM, in MiB or with a K/M/G suffix (as QEMU's -m).
    #[arg(short = 'm', long = "memory", default_value = "128M", value_parser = parse_size)]
    memory: usize,

    /// A kernel: a Linux bzImage (boot protocol 2.02 or later), or a
    /// multiboot (v1) kernel (ELF, or with the a.out kludge).
    #[arg(long, conflicts_with = "flat")]
    kernel: Option<PathBuf>,

    /// An initial ramdisk for a Linux kernel.
    #[arg(long, value_name = "FILE", requires = "kernel")]
    initrd: Option<PathBuf>,

    /// A firmware ROM image (a multiple of 64 KiB, at most 16 MiB), mapped
    /// at the top of the 4 GiB space and below 1 MiB; the CPU starts at
    /// its reset vector F000:FFF0.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["kernel", "flat"])]
    bios: Option<PathBuf>,

    /// The kernel command line.
    #[arg(long, default_value = "", requires = "kernel")]
    append: String,

    /// A raw image, loaded at --load and entered in 32-bit flat protected mode.
    #[arg(long, requires = "load")]
    flat: Option<PathBuf>,

    /// Guest physical address to load the --flat image at.
    #[arg(long, value_parser = parse_u32, requires = "flat")]
    load: Option<u32>,

    /// Entry point of the --flat image (default: its load address).
    #[arg(long, value_parser = parse_u32, requires = "flat")]
    entry: Option<u32>,

    /// Where the debug console (isa-debugcon) writes: stdio, file:PATH or none.
    #[arg(long, default_value = "stdio", value_parser = parse_output)]
    debugcon: OutputDest,

    /// Where a serial port writes: stdio, file:PATH or none. Given up to
    /// four times, for COM1 to COM4 (default: COM1 on stdio, which also
    /// takes the terminal's keys; Ctrl-A X quits).
    #[arg(long, value_parser = parse_output)]
    serial: Vec<OutputDest>,

    /// The RTC's start: base=utc (the host's time, the default) or
    /// base=YYYY-MM-DD[THH:MM:SS] (UTC), as QEMU's -rtc.
    #[arg(long, value_parser = parse_rtc)]
    rtc: Option<StartTime>,

    /// I/O port of the debug console (QEMU's isa-debugcon iobase), e.g. 0x80 for POST codes.
    #[arg(long, default_value = "0xe9", value_parser = parse_u16)]
    debugcon_port: u16,

    /// End the run at a triple fault instead of resetting the machine.
    #[arg(long)]
    no_reboot: bool,

    /// Print the translation statistics table and execution counters at exit.
    #[arg(long)]
    stats: bool,

    /// Write the statistics as JSON to this file at exit.
    #[arg(long, value_name = "FILE")]
    stats_json: Option<PathBuf>,
}

#[derive(Clone, Debug)]
enum OutputDest {
    Stdio,
    File(PathBuf),
    None,
}

fn parse_output(s: &str) -> Result<OutputDest, String> {
    match s {
        "stdio" => Ok(OutputDest::Stdio),
        "none" => Ok(OutputDest::None),
        _ => match s.strip_prefix("file:") {
            Some(p) if !p.is_empty() => Ok(OutputDest::File(PathBuf::from(p))),
            _ => Err(format!("'{s}' is not stdio, none or file:PATH")),
        },
    }
}

fn parse_rtc(s: &str) -> Result<StartTime, String> {
    let bad = || format!("'{s}' is not base=utc or base=YYYY-MM-DD[THH:MM:SS]");
    let base = s.strip_prefix("base=").ok_or_else(bad)?;
    if base == "utc" {
        return Ok(StartTime::Host);
    }
    let (date, time) = base.split_once('T').unwrap_or((base, "00:00:00"));
    let num = |t: &str| t.parse::<i64>().map_err(|_| bad());
    let d: Vec<&str> = date.split('-').collect();
    let t: Vec<&str> = time.split(':').collect();
    if d.len() != 3 || t.len() != 3 {
        return Err(bad());
    }
    let (y, m, day) = (num(d[0])?, num(d[1])?, num(d[2])?);
    let (hh, mm, ss) = (num(t[0])?, num(t[1])?, num(t[2])?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 59 {
        return Err(bad());
    }
    Ok(StartTime::Fixed(
        rtc::days_from_civil(y, m as u8, day as u8) * 86_400 + hh * 3600 + mm * 60 + ss,
    ))
}

/// QEMU spells long options with one dash (`-kernel`, `-serial stdio`):
/// accept them for the options bt86 shares with QEMU.
fn qemu_spelling(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    const SHARED: [&str; 8] = [
        "-kernel",
        "-initrd",
        "-append",
        "-serial",
        "-bios",
        "-no-reboot",
        "-rtc",
        "-debugcon",
    ];
    args.map(|a| match a.to_str() {
        Some(s) if SHARED.contains(&s) => format!("-{s}").into(),
        _ => a,
    })
    .collect()
}

fn parse_number(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => t.parse(),
    };
    r.map_err(|_| format!("'{s}' is not a number (decimal or 0x-prefixed hex)"))
}

fn parse_u32(s: &str) -> Result<u32, String> {
    let v = parse_number(s)?;
    u32::try_from(v).map_err(|_| format!("{s} does not fit in 32 bits"))
}

fn parse_u16(s: &str) -> Result<u16, String> {
    let v = parse_number(s)?;
    u16::try_from(v).map_err(|_| format!("{s} is not a port number (0 to 0xffff)"))
}

/// QEMU's -m syntax: a plain number is MiB; K, M, G (optionally with B or
/// iB) are binary units.
fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let lower = lower.trim_end_matches("ib").trim_end_matches('b');
    let (num, shift) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 10),
        Some('m') => (&lower[..lower.len() - 1], 20),
        Some('g') => (&lower[..lower.len() - 1], 30),
        _ => (lower, 20),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a memory size like 128, 128M or 1G"))?;
    n.checked_mul(1 << shift)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("'{s}' is too large"))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse_from(qemu_spelling(std::env::args_os()));
    let args = match cli.command {
        Some(Command::Run(a)) => a,
        None => cli.run,
    };
    match run(args) {
        Ok(code) => ExitCode::from(code as u8),
        Err(msg) => {
            eprintln!("bt86: {msg}");
            ExitCode::from(1)
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum StdinKind {
    Terminal,
    /// A pipe or a regular file.
    Stream,
    /// Closed, /dev/null or another device: nothing to read.
    None,
}

fn stdin_kind() -> StdinKind {
    // SAFETY: isatty and fstat on fd 0 with a valid stat buffer to fill.
    unsafe {
        if libc::isatty(0) == 1 {
            return StdinKind::Terminal;
        }
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(0, &mut st) != 0 {
            return StdinKind::None;
        }
        match st.st_mode & libc::S_IFMT {
            libc::S_IFIFO | libc::S_IFREG | libc::S_IFSOCK => StdinKind::Stream,
            _ => StdinKind::None,
        }
    }
}

fn run(args: RunArgs) -> Result<i32, String> {
    let sink = |dest: &OutputDest| -> Result<OutputSink, String> {
        Ok(match dest {
            OutputDest::Stdio => OutputSink::Stdout,
            OutputDest::None => OutputSink::None,
            OutputDest::File(p) => {
                let f = std::fs::File::create(p)
                    .map_err(|e| format!("cannot create {}: {e}", p.display()))?;
                OutputSink::Writer(Box::new(std::io::BufWriter::new(f)))
            }
        })
    };
    let debugcon = sink(&args.debugcon)?;
    if args.serial.len() > 4 {
        return Err("--serial given more than four times (COM1 to COM4)".into());
    }
    let com1 = args.serial.first().unwrap_or(&OutputDest::Stdio);
    let serial = sink(com1)?;
    let extra_serial = args.serial[1.min(args.serial.len())..]
        .iter()
        .map(sink)
        .collect::<Result<_, _>>()?;
    // COM1 on stdio reads stdin too: a terminal (raw, with Ctrl-A X to
    // quit), or a pipe or file.
    let input = match com1 {
        OutputDest::Stdio => stdin_kind(),
        _ => StdinKind::None,
    };
    let config = MachineConfig {
        ram_size: args.memory,
        debugcon,
        serial,
        extra_serial,
        serial_input: input != StdinKind::None,
        rtc_start: args.rtc.unwrap_or(StartTime::Host),
        debugcon_port: args.debugcon_port,
        no_reboot: args.no_reboot,
        stats: args.stats || args.stats_json.is_some(),
        ..MachineConfig::default()
    };
    let mut machine = Machine::new(config).map_err(|e| e.to_string())?;
    if let Some(b) = &args.bios {
        let image = std::fs::read(b).map_err(|e| format!("cannot read {}: {e}", b.display()))?;
        machine
            .load_bios(&image)
            .map_err(|e| format!("{}: {e}", b.display()))?;
    } else if let Some(k) = &args.kernel {
        let image = std::fs::read(k).map_err(|e| format!("cannot read {}: {e}", k.display()))?;
        let initrd = match &args.initrd {
            Some(p) => {
                Some(std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?)
            }
            None => None,
        };
        machine
            .load_kernel(&image, &args.append, initrd.as_deref())
            .map_err(|e| format!("{}: {e}", k.display()))?;
    } else if let Some(f) = &args.flat {
        let image = std::fs::read(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        let load = args.load.unwrap_or(0);
        machine
            .load_flat(&image, load, args.entry)
            .map_err(|e| format!("{}: {e}", f.display()))?;
    } else {
        let image = demo::image().map_err(|e| format!("assembling the demo guest: {e}"))?;
        machine
            .load_flat(&image, demo::LOAD, None)
            .map_err(|e| e.to_string())?;
    }
    let _raw = (input == StdinKind::Terminal)
        .then(terminal::RawMode::enter)
        .flatten();
    if let Some(serial) = machine.serial_input()
        && input != StdinKind::None
    {
        terminal::forward_stdin(serial, machine.exit_handle(), input == StdinKind::Terminal);
    }
    let outcome = machine.run();
    drop(_raw);
    if let Some(m) = outcome.message() {
        eprintln!("bt86: {m}");
    }
    let report = machine.report();
    if args.stats {
        eprint!("{}", report.text());
    }
    if let Some(p) = &args.stats_json {
        std::fs::write(p, report.json())
            .map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    let code = outcome.exit_status();
    debug_assert!(code != status::INTERNAL || outcome.message().is_some());
    Ok(code)
}
