//! The `dynamo` binary. Everything it does lives in [`dynamo_node::cli`].

fn main() -> std::process::ExitCode {
    dynamo_node::cli::main()
}
