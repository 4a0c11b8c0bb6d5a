use std::process::ExitCode;

/// mimalloc rather than glibc's allocator: 5-9 % more webhooks a second on PostgreSQL
/// (docs/performance.md, "The allocator and the pool's pings").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    callgate::cli::main()
}
