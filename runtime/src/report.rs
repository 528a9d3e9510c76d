//! The statistics report of `--stats` and `--stats-json` (DESIGN.md
//! section 9): the translation table, one row per code class and a Total
//! row, then the execution counters.

use std::fmt::Write as _;

use translator::abi::CpuState;
use translator::stats::{ClassRow, CodeClass};
use translator::{Instrument, Translator};

use crate::cpu::{ExitKind, HelperKind, System};

pub struct Report {
    pub rows: Vec<(&'static str, ClassRow)>,
    pub total: ClassRow,
    /// (name, value) in display order; None where the counter was not kept.
    pub counters: Vec<(String, Option<u64>)>,
}

impl Report {
    pub fn collect(t: &Translator, cpu: &CpuState, sys: &System, instr: Instrument) -> Report {
        let rows = CodeClass::ALL
            .iter()
            .zip(t.stats.rows.iter())
            .filter(|(_, r)| r.units > 0)
            .map(|(c, r)| (c.name(), *r))
            .collect();
        let kept = |v: u64| instr.stats.then_some(v);
        let mut counters = vec![
            ("tus_executed".to_string(), kept(cpu.tus_executed)),
            ("chains_patched".to_string(), Some(t.counters.chains)),
            ("jump_cache_hits".to_string(), kept(cpu.jc_hits)),
            ("returns_to_call_site".to_string(), kept(cpu.ret_hits)),
            (
                "jump_cache_misses".to_string(),
                Some(sys.counters.exits[ExitKind::IndirectMiss as usize]),
            ),
            (
                "jump_cache_inserts".to_string(),
                Some(t.counters.jc_inserts),
            ),
            ("cache_flushes".to_string(), Some(t.counters.flushes)),
            ("code_arena_bytes".to_string(), Some(t.code_bytes() as u64)),
            (
                "guest_exceptions".to_string(),
                Some(sys.counters.exceptions),
            ),
            ("port_reads".to_string(), Some(sys.counters.port_reads)),
            ("port_writes".to_string(), Some(sys.counters.port_writes)),
            (
                "smc_invalidations".to_string(),
                Some(sys.counters.smc_invalidations),
            ),
            (
                "hidden_faults".to_string(),
                Some(sys.counters.hidden_faults),
            ),
            ("true_faults".to_string(), Some(sys.counters.true_faults)),
            (
                "mmio_emulations".to_string(),
                Some(sys.counters.mmio_emulations),
            ),
            (
                "shadow_flushes".to_string(),
                Some(sys.mem.shadow_counts().0),
            ),
            (
                "shadow_pages_mapped".to_string(),
                Some(sys.mem.shadow_counts().1 as u64),
            ),
        ];
        for (k, v) in HelperKind::ALL.iter().zip(sys.counters.helper_calls) {
            if v > 0 {
                counters.push((format!("helper_calls.{}", k.name()), Some(v)));
            }
        }
        let mut system: Vec<_> = sys.counters.system_insns.iter().collect();
        system.sort_by(|a, b| {
            b.1.cmp(a.1)
                .then(format!("{:?}", a.0).cmp(&format!("{:?}", b.0)))
        });
        for (m, v) in system {
            counters.push((
                format!("system_insns.{}", format!("{m:?}").to_lowercase()),
                Some(*v),
            ));
        }
        for (k, v) in ExitKind::ALL.iter().zip(sys.counters.exits) {
            if v > 0 {
                counters.push((format!("exits.{}", k.name()), Some(v)));
            }
        }
        Report {
            rows,
            total: t.stats.total(),
            counters,
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
        for (name, r) in &self.rows {
            line(&mut s, name, r);
        }
        line(&mut s, "Total", &self.total);
        let _ = writeln!(s);
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
        s
    }

    pub fn json(&self) -> String {
        let row = |r: &ClassRow| {
            format!(
                "{{\"units\":{},\"input_bytes\":{},\"instructions\":{},\"cycles\":{},\"output_bytes\":{}}}",
                r.units, r.in_bytes, r.instrs, r.cycles, r.out_bytes
            )
        };
        let classes: Vec<String> = self
            .rows
            .iter()
            .map(|(n, r)| format!("\"{n}\":{}", row(r)))
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
            .collect();
        format!(
            "{{\"translation\":{{\"classes\":{{{}}},\"total\":{}}},\"counters\":{{{}}}}}\n",
            classes.join(","),
            row(&self.total),
            counters.join(",")
        )
    }
}
