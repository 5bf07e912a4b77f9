//! The `dynamo-bench` binary: parses the command line, runs the benchmark, prints the figures.

use clap::Parser;
use dynamo_bench::Args;
use dynamo_bench::summary::render_table;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let report = args.execute().await?;
    print!("{}", render_table(&report.phases));
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}
