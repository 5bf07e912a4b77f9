//! Cost of the clock operations on every read and write path, for clocks of 3, 10 and 50 entries.
//!
//! Run: `cargo bench -p dynamo-versioning --bench clock`. Prints nanoseconds per operation; asserts
//! nothing about time.

use std::hint::black_box;
use std::time::Instant;

use dynamo_versioning::{Actor, Context, Object, VectorClock};

/// Clock sizes measured: a fresh key (N = 3 coordinators), the paper's pruning bound (10), and a
/// clock that was never pruned (50).
const SIZES: [usize; 3] = [3, 10, 50];

/// Operations timed per measurement: enough for the run to last well above timer resolution
/// (tens of milliseconds per line) while the whole benchmark stays within a few seconds.
const ITERATIONS: u32 = 200_000;

/// Two clocks of `size` entries that are concurrent: they agree on all actors but the last two.
fn concurrent_clocks(size: usize) -> (VectorClock, VectorClock) {
    let mut a = VectorClock::new();
    for node in 0..size as u64 {
        for _ in 0..=node % 5 {
            a.increment(Actor::new(node, 0), 1_700_000_000_000 + node);
        }
    }
    let mut b = a.clone();
    a.increment(Actor::new(size as u64 - 1, 0), 1_700_000_001_000);
    b.increment(Actor::new(size as u64 - 2, 0), 1_700_000_002_000);
    (a, b)
}

/// Times `op` over [`ITERATIONS`] runs and returns nanoseconds per run.
fn ns_per_op(mut op: impl FnMut()) -> f64 {
    for _ in 0..ITERATIONS / 10 {
        op();
    }
    let start = Instant::now();
    for _ in 0..ITERATIONS {
        op();
    }
    start.elapsed().as_nanos() as f64 / f64::from(ITERATIONS)
}

fn main() {
    println!(
        "{:>7} {:>12} {:>12} {:>12} {:>12} {:>12} {:>8}",
        "entries", "compare_ns", "merge_ns", "encode_ns", "decode_ns", "obj_put_ns", "bytes"
    );
    for size in SIZES {
        let (a, b) = concurrent_clocks(size);
        let compare = ns_per_op(|| {
            black_box(black_box(&a).compare(black_box(&b)));
        });
        let merge = ns_per_op(|| {
            let mut m = black_box(&a).clone();
            m.merge(black_box(&b));
            black_box(m);
        });
        let context = Context::from_clock(a.clone());
        let encode = ns_per_op(|| {
            black_box(black_box(&context).encode());
        });
        let bytes = context.encode();
        let decode = ns_per_op(|| {
            black_box(Context::decode(black_box(&bytes)).is_ok());
        });
        let mut object: Object<u64> = Object::new();
        object.put(Actor::new(0, 0), &context, 0, 1_700_000_003_000);
        let put = ns_per_op(|| {
            let mut o = black_box(&object).clone();
            let read = o.context();
            black_box(o.put(Actor::new(1, 0), &read, 1, 1_700_000_004_000));
        });
        println!(
            "{size:>7} {compare:>12.1} {merge:>12.1} {encode:>12.1} {decode:>12.1} {put:>12.1} {:>8}",
            bytes.len()
        );
    }
}
