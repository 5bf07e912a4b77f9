//! The `dynamo` binary. Everything it does lives in [`dynamo_node::cli`].

/// mimalloc instead of the system allocator: under write load the node spent about 15% of its
/// CPU in glibc malloc and its arena locks (perf, 64-client put load on `dynamo dev`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    dynamo_node::cli::main()
}
