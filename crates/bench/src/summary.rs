//! Latency and error accounting: one histogram per operation kind (microsecond precision),
//! errors counted per kind and kept out of the latency figures, and the summary a run prints as a
//! table or JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms track: an hour, far beyond any request timeout; longer values
/// are clamped to it rather than lost.
const MAX_TRACKABLE_MICROS: u64 = 3_600_000_000;

/// Significant decimal digits kept: 3 gives 0.1% precision, the usual choice for latencies.
const SIGNIFICANT_DIGITS: u8 = 3;

/// The outcomes of one kind of operation.
#[derive(Clone, Debug)]
pub struct OpRecorder {
    latencies: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    first_error: BTreeMap<String, String>,
}

impl Default for OpRecorder {
    fn default() -> Self {
        OpRecorder {
            latencies: new_histogram(),
            errors: BTreeMap::new(),
            first_error: BTreeMap::new(),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that satisfy the constructor (1 <= low, high >= 2 * low, digits <= 5).
    match Histogram::new_with_bounds(1, MAX_TRACKABLE_MICROS, SIGNIFICANT_DIGITS) {
        Ok(h) => h,
        Err(e) => unreachable!("constant histogram bounds rejected: {e:?}"),
    }
}

impl OpRecorder {
    /// Records a success that took `latency`.
    pub fn record_ok(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latencies.saturating_record(micros.max(1));
    }

    /// Counts a failure of kind `kind`, keeping the first `detail` of each kind.
    pub fn record_error(&mut self, kind: &str, detail: &str) {
        *self.errors.entry(kind.to_string()).or_default() += 1;
        self.first_error
            .entry(kind.to_string())
            .or_insert_with(|| detail.to_string());
    }

    /// Adds `other`'s outcomes to these.
    pub fn merge(&mut self, other: &OpRecorder) {
        // Both histograms share the same bounds, so adding cannot overflow their range.
        let _ = self.latencies.add(&other.latencies);
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
        for (kind, detail) in &other.first_error {
            self.first_error
                .entry(kind.clone())
                .or_insert_with(|| detail.clone());
        }
    }

    /// Successful operations recorded.
    pub fn successes(&self) -> u64 {
        self.latencies.len()
    }

    /// Failed operations recorded.
    pub fn failures(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The summary of these outcomes over a phase that lasted `elapsed`.
    pub fn summarize(&self, op: &str, elapsed: Duration) -> OpSummary {
        let ms = |micros: u64| micros as f64 / 1000.0;
        let q = |quantile: f64| ms(self.latencies.value_at_quantile(quantile));
        let count = self.successes();
        OpSummary {
            op: op.to_string(),
            count,
            ops_per_sec: rate(count, elapsed),
            p50_ms: q(0.5),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: ms(self.latencies.max()),
            errors: self.errors.clone(),
            first_errors: self.first_error.clone(),
        }
    }
}

/// `count` per second over `elapsed` (0 for an empty phase).
fn rate(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

/// Figures for one kind of operation in one phase. Latencies are of successes only, in ms.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpSummary {
    /// The operation: insert, read or update.
    pub op: String,
    /// Successful operations.
    pub count: u64,
    /// Successful operations per second of the phase.
    pub ops_per_sec: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// 99.9th percentile latency.
    pub p999_ms: f64,
    /// Highest latency.
    pub max_ms: f64,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// The first message seen for each failure kind.
    #[serde(skip)]
    pub first_errors: BTreeMap<String, String>,
}

/// Figures for one phase (load or run).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PhaseSummary {
    /// Phase name.
    pub phase: String,
    /// Wall-clock length of the phase in seconds.
    pub elapsed_s: f64,
    /// Successful operations per second, all kinds together.
    pub ops_per_sec: f64,
    /// Per operation kind, in a fixed order.
    pub ops: Vec<OpSummary>,
}

impl PhaseSummary {
    /// Summarizes `recorders` (by operation name) for a phase that lasted `elapsed`.
    pub fn new(phase: &str, recorders: &BTreeMap<String, OpRecorder>, elapsed: Duration) -> Self {
        let ops: Vec<OpSummary> = recorders
            .iter()
            .map(|(op, r)| r.summarize(op, elapsed))
            .collect();
        let total: u64 = ops.iter().map(|o| o.count).sum();
        PhaseSummary {
            phase: phase.to_string(),
            elapsed_s: elapsed.as_secs_f64(),
            ops_per_sec: rate(total, elapsed),
            ops,
        }
    }
}

/// The phases as an aligned text table, followed by one line per kind of error with its count and
/// first message.
pub fn render_table(phases: &[PhaseSummary]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<6} {:<7} {:>10} {:>11} {:>9} {:>9} {:>10} {:>9} {:>8}",
        "phase", "op", "count", "ops/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors"
    );
    for phase in phases {
        for op in &phase.ops {
            let errors: u64 = op.errors.values().sum();
            let _ = writeln!(
                out,
                "{:<6} {:<7} {:>10} {:>11.1} {:>9.3} {:>9.3} {:>10.3} {:>9.3} {:>8}",
                phase.phase,
                op.op,
                op.count,
                op.ops_per_sec,
                op.p50_ms,
                op.p99_ms,
                op.p999_ms,
                op.max_ms,
                errors
            );
        }
        let _ = writeln!(
            out,
            "{:<6} {:<7} {:>10} {:>11.1}   ({:.2} s)",
            phase.phase,
            "total",
            phase.ops.iter().map(|o| o.count).sum::<u64>(),
            phase.ops_per_sec,
            phase.elapsed_s
        );
    }
    for phase in phases {
        for op in &phase.ops {
            for (kind, n) in &op.errors {
                let first = op.first_errors.get(kind).map_or("", String::as_str);
                let _ = writeln!(
                    out,
                    "error  {}/{} {kind}: {n} (first: {first})",
                    phase.phase, op.op
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_and_rate_come_from_successes_only() {
        let mut r = OpRecorder::default();
        for i in 1..=1000 {
            r.record_ok(Duration::from_micros(i * 10));
        }
        r.record_error("timeout", "timed out after 5000 ms");
        let s = r.summarize("read", Duration::from_secs(2));
        assert_eq!(s.count, 1000);
        assert_eq!(s.ops_per_sec, 500.0);
        assert!((s.p50_ms - 5.0).abs() < 0.01, "{}", s.p50_ms);
        assert!((s.p99_ms - 9.9).abs() < 0.01, "{}", s.p99_ms);
        assert!((s.max_ms - 10.0).abs() < 0.01, "{}", s.max_ms);
        assert_eq!(s.errors, BTreeMap::from([("timeout".to_string(), 1)]));
    }

    #[test]
    fn merging_adds_counts_and_errors() {
        let mut a = OpRecorder::default();
        let mut b = OpRecorder::default();
        a.record_ok(ms(1));
        b.record_ok(ms(3));
        b.record_error("unavailable", "quorum not met");
        b.record_error("unavailable", "later message");
        a.merge(&b);
        assert_eq!(a.successes(), 2);
        assert_eq!(a.failures(), 2);
        let s = a.summarize("update", Duration::from_secs(1));
        assert_eq!(s.first_errors["unavailable"], "quorum not met");
        assert!((s.max_ms - 3.0).abs() < 0.01);
    }

    #[test]
    fn sub_microsecond_and_huge_latencies_are_clamped_not_lost() {
        let mut r = OpRecorder::default();
        r.record_ok(Duration::ZERO);
        r.record_ok(Duration::from_secs(10 * 3600));
        assert_eq!(r.successes(), 2);
    }

    #[test]
    fn an_empty_phase_reports_zero_rates() {
        let s = PhaseSummary::new("run", &BTreeMap::new(), Duration::ZERO);
        assert_eq!(s.ops_per_sec, 0.0);
        assert!(s.ops.is_empty());
    }

    #[test]
    fn the_table_lists_every_op_and_error_kind() {
        let mut read = OpRecorder::default();
        read.record_ok(ms(2));
        read.record_error("not_found", "user7");
        let recorders = BTreeMap::from([("read".to_string(), read)]);
        let phase = PhaseSummary::new("run", &recorders, Duration::from_secs(1));
        let table = render_table(std::slice::from_ref(&phase));
        assert!(table.contains("p99.9 ms"), "{table}");
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("run") && l.contains("read"))
        );
        assert!(
            table.contains("run/read not_found: 1 (first: user7)"),
            "{table}"
        );
        let json = serde_json::to_value(&phase).unwrap();
        assert_eq!(json["ops"][0]["errors"]["not_found"], 1);
        assert!(json["ops"][0].get("first_errors").is_none());
    }
}
