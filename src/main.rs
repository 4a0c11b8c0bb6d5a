use std::process::ExitCode;

/// mimalloc rather than glibc's allocator: 5-7 % more webhooks a second on PostgreSQL
/// (docs/performance.md, "The allocator, the pool's pings, and where the CPU goes").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    callgate::cli::main()
}
