//! bt86's benchmarks live in `benches/` (criterion) and `run.sh` (guest
//! programs run natively and under bt86); this library is empty.
