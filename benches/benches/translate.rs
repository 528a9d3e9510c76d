//! Translator throughput: guest instructions translated per second, on a
//! blob of typical compiled-code instructions (ALU, loads and stores,
//! stack operations, calls and branches), and the cost of a machine.

use bt86_translator::abi::ModeKey;
use bt86_translator::{CodeSource, Instrument, Translator, TuKey};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use iced_x86::code_asm::*;

const BASE: u32 = 0x10_0000;

/// Guest code shaped like compiled integer code, in many small TUs.
fn blob() -> Vec<u8> {
    let mut a = CodeAssembler::new(32).unwrap();
    for i in 0..400u32 {
        let mut skip = a.create_label();
        a.push(ebp).unwrap();
        a.mov(ebp, esp).unwrap();
        a.mov(eax, dword_ptr(ebp + 8)).unwrap();
        a.add(eax, dword_ptr(ebx + ecx * 4 + 0x10)).unwrap();
        a.lea(edx, dword_ptr(eax + eax * 2 + 1)).unwrap();
        a.imul_3(ecx, edx, 12).unwrap();
        a.mov(dword_ptr(esp + 4), ecx).unwrap();
        a.movzx(esi, byte_ptr(edi + i)).unwrap();
        a.cmp(esi, i).unwrap();
        a.jne(skip).unwrap();
        a.xor(eax, eax).unwrap();
        a.set_label(&mut skip).unwrap();
        a.shl(eax, 3).unwrap();
        a.sub(eax, ebx).unwrap();
        a.test(eax, eax).unwrap();
        a.setne(al).unwrap();
        a.pop(ebp).unwrap();
        a.ret().unwrap();
    }
    a.assemble(BASE as u64).unwrap()
}

struct Blob<'a>(&'a [u8]);

impl CodeSource for Blob<'_> {
    fn read_code(&mut self, addr: u32, buf: &mut [u8]) -> usize {
        let Some(off) = addr.checked_sub(BASE).map(|o| o as usize) else {
            return 0;
        };
        let src = self.0.get(off..).unwrap_or(&[]);
        let n = src.len().min(buf.len());
        buf[..n].copy_from_slice(&src[..n]);
        n
    }
}

/// The TU start addresses of the blob: every instruction after a branch
/// and every branch target, found by translating from the start.
fn tu_starts(code: &[u8]) -> Vec<u32> {
    let mut d = iced_x86::Decoder::with_ip(32, code, BASE as u64, iced_x86::DecoderOptions::NONE);
    let mut starts = vec![BASE];
    for insn in d.iter() {
        if insn.flow_control() != iced_x86::FlowControl::Next {
            starts.push(insn.next_ip32());
            if insn.is_jcc_short_or_near() {
                starts.push(insn.near_branch32());
            }
        }
    }
    starts.sort_unstable();
    starts.dedup();
    starts.retain(|&s| s < BASE + code.len() as u32);
    starts
}

fn translate(c: &mut Criterion) {
    let code = blob();
    let starts = tu_starts(&code);
    let instrs = iced_x86::Decoder::with_ip(32, &code, BASE as u64, iced_x86::DecoderOptions::NONE)
        .iter()
        .count();
    let mut g = c.benchmark_group("translate");
    g.throughput(Throughput::Elements(instrs as u64));
    g.bench_function("compiled_code_blob", |b| {
        let mut t = Translator::new(64 << 20, Instrument::default()).unwrap();
        b.iter(|| {
            t.flush();
            for &eip in &starts {
                let key = TuKey {
                    phys: eip,
                    eip,
                    cs_limit: u32::MAX,
                    mode: ModeKey::FLAT32_CPL0,
                    next_page: TuKey::NO_NEXT,
                };
                t.get(key, &mut Blob(&code)).unwrap();
            }
        })
    });
    g.finish();
}

fn machine(c: &mut Criterion) {
    use bt86_runtime::{Machine, MachineConfig, OutputSink};
    c.bench_function("machine/create_run_hlt_drop", |b| {
        b.iter_batched(
            || (),
            |()| {
                let cfg = MachineConfig {
                    ram_size: 16 << 20,
                    debugcon: OutputSink::None,
                    ..Default::default()
                };
                let mut m = Machine::new(cfg).unwrap();
                m.load_flat(&[0xF4], 0x1000, None).unwrap();
                m.run()
            },
            BatchSize::PerIteration,
        )
    });
}

criterion_group!(benches, translate, machine);
criterion_main!(benches);
