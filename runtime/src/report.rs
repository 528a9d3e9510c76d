//! The statistics report of `--stats` and `--stats-json` (DESIGN.md
//! section 9): the translation table, one row per code class and a Total
//! row, then the execution counters.

use std::fmt::Write as _;

use translator::abi::CpuState;
use translator::stats::{ClassRow, CodeClass};
use translator::{Instrument, Translator};

use crate::cpu::{ExitKind, HelperKind, System};

/// One code class of the report.
pub struct ClassReport {
    pub name: &'static str,
    /// What the translator read and wrote for it.
    pub translated: ClassRow,
    /// Guest instructions executed, and how many of them ran as the same
    /// host instruction (IDENT); None where not counted (stats off).
    pub executed: Option<Executed>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Executed {
    pub insns: u64,
    pub ident: u64,
}

impl Executed {
    fn add(&mut self, o: &Executed) {
        self.insns += o.insns;
        self.ident += o.ident;
    }

    /// The IDENT share, if anything ran.
    pub fn ident_share(&self) -> Option<f64> {
        (self.insns > 0).then(|| self.ident as f64 / self.insns as f64)
    }
}

/// The classes every report shows, even when nothing of them ran (the
/// others appear when something did).
const ALWAYS: [CodeClass; 3] = [CodeClass::Real16, CodeClass::Kernel32, CodeClass::User32];

pub struct Report {
    pub classes: Vec<ClassReport>,
    /// The sums of the classes (every class, shown or not).
    pub total: ClassRow,
    pub executed_total: Option<Executed>,
    /// (name, value) in display order; None where the counter was not kept.
    pub counters: Vec<(String, Option<u64>)>,
    /// (name, fraction) derived from the counters; None where not kept or
    /// nothing to divide.
    pub rates: Vec<(String, Option<f64>)>,
}

impl Report {
    pub fn collect(t: &Translator, cpu: &CpuState, sys: &System, instr: Instrument) -> Report {
        let kept = |v: u64| instr.stats.then_some(v);
        let executed = |c: CodeClass| {
            instr.stats.then(|| Executed {
                insns: cpu.class_insns[c.index()],
                ident: cpu.class_ident[c.index()],
            })
        };
        let classes: Vec<ClassReport> = CodeClass::ALL
            .iter()
            .map(|&c| ClassReport {
                name: c.name(),
                translated: t.stats.rows[c.index()],
                executed: executed(c),
            })
            .collect();
        let mut executed_total = instr.stats.then(Executed::default);
        if let Some(total) = &mut executed_total {
            for c in &classes {
                total.add(&c.executed.unwrap_or_default());
            }
        }
        let classes = classes
            .into_iter()
            .zip(CodeClass::ALL)
            .filter(|(r, c)| {
                ALWAYS.contains(c)
                    || r.translated.units > 0
                    || r.executed.is_some_and(|e| e.insns > 0)
            })
            .map(|(r, _)| r)
            .collect();
        let c = &sys.counters;
        let misses = c.exits[ExitKind::IndirectMiss as usize];
        // Every TU head is reached by a chained jump, a jump-cache hit or
        // the run loop.
        let chained = cpu
            .tus_executed
            .saturating_sub(cpu.jc_hits)
            .saturating_sub(c.entries);
        let mut counters = vec![
            ("tus_executed".to_string(), kept(cpu.tus_executed)),
            ("transfers.chained".to_string(), kept(chained)),
            ("transfers.jump_cache".to_string(), kept(cpu.jc_hits)),
            ("transfers.run_loop".to_string(), Some(c.entries)),
            ("returns_to_call_site".to_string(), kept(cpu.ret_hits)),
            ("chains_patched".to_string(), Some(t.counters.chains)),
            ("jump_cache_hits".to_string(), kept(cpu.jc_hits)),
            ("jump_cache_misses".to_string(), Some(misses)),
            (
                "jump_cache_inserts".to_string(),
                Some(t.counters.jc_inserts),
            ),
            ("cache_flushes".to_string(), Some(t.counters.flushes)),
            ("code_arena_bytes".to_string(), Some(t.code_bytes() as u64)),
            ("guest_exceptions".to_string(), Some(c.exceptions)),
            ("interrupts".to_string(), Some(c.interrupts)),
            ("port_reads".to_string(), Some(c.port_reads)),
            ("port_writes".to_string(), Some(c.port_writes)),
            ("smc_invalidations".to_string(), Some(c.smc_invalidations)),
            ("hidden_faults".to_string(), Some(c.hidden_faults)),
            ("true_faults".to_string(), Some(c.true_faults)),
            ("mmio_emulations".to_string(), Some(c.mmio_emulations)),
            (
                "shadow_flushes".to_string(),
                Some(sys.mem.shadow_counts().0),
            ),
            (
                "shadow_pages_mapped".to_string(),
                Some(sys.mem.shadow_counts().1 as u64),
            ),
        ];
        for (k, v) in HelperKind::ALL.iter().zip(c.helper_calls) {
            if v > 0 {
                counters.push((format!("helper_calls.{}", k.name()), Some(v)));
            }
        }
        let mut system: Vec<(String, u64)> = iced_x86::Mnemonic::values()
            .zip(&c.system_insns)
            .filter(|(_, v)| **v > 0)
            .map(|(m, v)| (format!("{m:?}").to_lowercase(), *v))
            .collect();
        system.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for (m, v) in system {
            counters.push((format!("system_insns.{m}"), Some(v)));
        }
        for (k, v) in ExitKind::ALL.iter().zip(c.exits) {
            if v > 0 {
                counters.push((format!("exits.{}", k.name()), Some(v)));
            }
        }
        let lookups = cpu.jc_hits + misses;
        let rates = vec![(
            "jump_cache_hit_rate".to_string(),
            (instr.stats && lookups > 0).then(|| cpu.jc_hits as f64 / lookups as f64),
        )];
        Report {
            classes,
            total: t.stats.total(),
            executed_total,
            counters,
            rates,
        }
    }

    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<9}{:>9}{:>10}{:>9}{:>13}{:>10}{:>9}{:>10}",
            "#", "units", "size", "instr", "cycles", "size", "cyc/ins", "ins/unit"
        );
        let _ = writeln!(s, "{:<9}{:-^41}{:>10}", "", "( input )", "output");
        let line = |s: &mut String, name: &str, r: &ClassRow| {
            let cpi = if r.instrs > 0 {
                r.cycles as f64 / r.instrs as f64
            } else {
                0.0
            };
            let ipu = if r.units > 0 {
                r.instrs as f64 / r.units as f64
            } else {
                0.0
            };
            let _ = writeln!(
                s,
                "{:<9}{:>9}{:>10}{:>9}{:>13}{:>10}{:>9.0}{:>10.1}",
                name, r.units, r.in_bytes, r.instrs, r.cycles, r.out_bytes, cpi, ipu
            );
        };
        for c in &self.classes {
            line(&mut s, c.name, &c.translated);
        }
        line(&mut s, "Total", &self.total);
        let _ = writeln!(s);
        if let Some(total) = self.executed_total {
            let _ = writeln!(
                s,
                "{:<9}{:>16}{:>16}{:>9}",
                "#", "executed", "IDENT", "IDENT %"
            );
            let line = |s: &mut String, name: &str, e: &Executed| {
                let share = e
                    .ident_share()
                    .map_or("-".to_string(), |f| format!("{:.1}", 100.0 * f));
                let _ = writeln!(s, "{name:<9}{:>16}{:>16}{share:>9}", e.insns, e.ident);
            };
            for c in &self.classes {
                line(&mut s, c.name, &c.executed.unwrap_or_default());
            }
            line(&mut s, "Total", &total);
            let _ = writeln!(s);
        }
        for (k, v) in &self.counters {
            match v {
                Some(v) => {
                    let _ = writeln!(s, "{k:<28}{v:>14}");
                }
                None => {
                    let _ = writeln!(s, "{k:<28}{:>14}", "(not counted)");
                }
            }
        }
        for (k, v) in &self.rates {
            match v {
                Some(v) => {
                    let _ = writeln!(s, "{k:<28}{:>13.1}%", 100.0 * v);
                }
                None => {
                    let _ = writeln!(s, "{k:<28}{:>14}", "(not counted)");
                }
            }
        }
        s
    }

    pub fn json(&self) -> String {
        let row = |r: &ClassRow, e: Option<Executed>| {
            let executed = e.map_or("null".to_string(), |e| {
                format!(
                    "{{\"instructions\":{},\"ident\":{},\"ident_share\":{}}}",
                    e.insns,
                    e.ident,
                    e.ident_share()
                        .map_or("null".to_string(), |f| format!("{f:.4}"))
                )
            });
            format!(
                "{{\"units\":{},\"input_bytes\":{},\"instructions\":{},\"cycles\":{},\"output_bytes\":{},\"executed\":{executed}}}",
                r.units, r.in_bytes, r.instrs, r.cycles, r.out_bytes
            )
        };
        let classes: Vec<String> = self
            .classes
            .iter()
            .map(|c| format!("\"{}\":{}", c.name, row(&c.translated, c.executed)))
            .collect();
        let counters: Vec<String> = self
            .counters
            .iter()
            .map(|(k, v)| {
                format!(
                    "\"{k}\":{}",
                    v.map_or("null".to_string(), |v| v.to_string())
                )
            })
            .chain(self.rates.iter().map(|(k, v)| {
                format!(
                    "\"{k}\":{}",
                    v.map_or("null".to_string(), |v| format!("{v:.4}"))
                )
            }))
            .collect();
        format!(
            "{{\"translation\":{{\"classes\":{{{}}},\"total\":{}}},\"counters\":{{{}}}}}\n",
            classes.join(","),
            row(&self.total, self.executed_total),
            counters.join(",")
        )
    }
}
