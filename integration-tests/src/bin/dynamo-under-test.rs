//! The `dynamo` program, built inside this package so its tests can start real server processes
//! (`CARGO_BIN_EXE_dynamo-under-test`). It is exactly `dynamo_node::cli::main`, with the same
//! allocator as `crates/node/src/main.rs`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    dynamo_node::cli::main()
}
