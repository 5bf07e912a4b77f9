//! The `dynamo` program, built inside this package so its tests can start real server processes
//! (`CARGO_BIN_EXE_dynamo-under-test`). It is exactly `dynamo_node::cli::main`.

fn main() -> std::process::ExitCode {
    dynamo_node::cli::main()
}
