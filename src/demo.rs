//! The built-in default guest: a small integer benchmark (countPrimes:
//! trial division by odd numbers) assembled from this source with iced's
//! code_asm, run as a flat 32-bit image. It prints its result and the
//! guest TSC cycles it took on the debug console, then halts.

use iced_x86::code_asm::*;

pub const LOAD: u32 = 0x0010_0000;
pub const LIMIT: u32 = 200_000;

pub fn image() -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(32)?;
    let mut outer = a.create_label();
    let mut inner = a.create_label();
    let mut prime = a.create_label();
    let mut composite = a.create_label();
    let mut done = a.create_label();
    let mut print_str = a.create_label();
    let mut print_dec = a.create_label();

    a.mov(esp, 0x0009_0000u32)?;
    a.rdtsc()?;
    a.push(edx)?;
    a.push(eax)?;
    a.mov(ebx, 1u32)?; // 2 is prime
    a.mov(ecx, 3u32)?;
    a.set_label(&mut outer)?;
    a.cmp(ecx, LIMIT)?;
    a.jae(done)?;
    a.mov(edi, 3u32)?;
    a.set_label(&mut inner)?;
    a.mov(eax, edi)?;
    a.mul(edi)?;
    a.cmp(eax, ecx)?;
    a.ja(prime)?;
    a.mov(eax, ecx)?;
    a.xor(edx, edx)?;
    a.div(edi)?;
    a.test(edx, edx)?;
    a.jz(composite)?;
    a.add(edi, 2)?;
    a.jmp(inner)?;
    a.set_label(&mut prime)?;
    a.inc(ebx)?;
    a.add(ecx, 2)?;
    a.jmp(outer)?;
    a.set_label(&mut composite)?;
    a.add(ecx, 2)?;
    a.jmp(outer)?;

    a.set_label(&mut done)?;
    a.rdtsc()?;
    a.pop(esi)?;
    a.pop(edi)?;
    a.sub(eax, esi)?;
    a.sbb(edx, edi)?;
    // Mcycles = (edx:eax) / 1e6
    a.mov(ecx, 1_000_000u32)?;
    a.div(ecx)?;
    a.push(eax)?;
    print_literal(&mut a, print_str, b"bt86 demo guest: countPrimes found \0")?;
    a.mov(eax, ebx)?;
    a.call(print_dec)?;
    print_literal(&mut a, print_str, b" primes below \0")?;
    a.mov(eax, LIMIT)?;
    a.call(print_dec)?;
    print_literal(&mut a, print_str, b" in \0")?;
    a.pop(eax)?;
    a.call(print_dec)?;
    print_literal(&mut a, print_str, b" million guest TSC cycles\n\0")?;
    a.cli()?;
    a.hlt()?;

    // print_str: the NUL-terminated string at esi.
    let mut out = a.create_label();
    a.set_label(&mut print_str)?;
    a.lodsb()?;
    a.test(al, al)?;
    a.jz(out)?;
    a.out(0xE9, al)?;
    a.jmp(print_str)?;
    a.set_label(&mut out)?;
    a.ret()?;

    // print_dec: eax in decimal.
    let mut digits = a.create_label();
    let mut emit = a.create_label();
    a.set_label(&mut print_dec)?;
    a.push(ebx)?;
    a.mov(ebx, 10u32)?;
    a.xor(ecx, ecx)?;
    a.set_label(&mut digits)?;
    a.xor(edx, edx)?;
    a.div(ebx)?;
    a.push(edx)?;
    a.inc(ecx)?;
    a.test(eax, eax)?;
    a.jnz(digits)?;
    a.set_label(&mut emit)?;
    a.pop(eax)?;
    a.add(al, b'0' as u32)?;
    a.out(0xE9, al)?;
    a.loop_(emit)?;
    a.pop(ebx)?;
    a.ret()?;

    a.assemble(LOAD as u64)
}

/// Prints `text` (NUL-terminated) placed inline: `call` over it, so its
/// address is the return address, popped into esi.
fn print_literal(
    a: &mut CodeAssembler,
    print_str: CodeLabel,
    text: &[u8],
) -> Result<(), IcedError> {
    let mut after = a.create_label();
    a.call(after)?;
    a.db(text)?;
    a.set_label(&mut after)?;
    a.pop(esi)?;
    a.call(print_str)
}
