//! Latency reports built from the workers' histograms.
//!
//! Each worker records two [`Histogram`]s: `latency` (RX → TX-submit time in
//! nanoseconds) and `batch` (packets per RX batch). The control thread
//! collects them into a [`Report`], which renders:
//!
//! * [`Report::table`]: a fixed-width human table (latency in µs),
//! * [`Report::hgrm`]: the HdrHistogram percentile distribution text, in the
//!   exact layout of Java HdrHistogram's `outputPercentileDistribution`
//!   (what wrk2 prints and HdrHistogram's online plotter reads),
//! * [`Report::json`]: a machine-readable summary (nanoseconds),
//! * [`Report::svg`]: a latency-by-percentile plot,
//! * [`Report::write_dir`]: all of the above as files.
//!
//! Nothing here panics on empty histograms or on histograms with differing
//! bounds.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::latency::Hists;

/// The latency chart could not be drawn (plotters' SVG backend refused).
#[derive(Debug, thiserror::Error)]
#[error("drawing the latency chart: {0}")]
pub struct SvgError(#[from] plotters::drawing::DrawingAreaErrorKind<std::io::Error>);

/// `WorkerHistograms::worker` of the histograms returned by [`Report::merged`].
pub const MERGED: usize = usize::MAX;

/// Highest latency the workers track (60 s, in ns).
pub const LATENCY_MAX_NS: u64 = 60_000_000_000;

/// Significant digits the workers' histograms keep.
pub const SIGFIG: u8 = 3;

/// Percentile reporting ticks per half distance in [`Report::hgrm`]
/// (Java HdrHistogram's default).
pub const HGRM_TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Divisor applied to recorded values in [`Report::hgrm`]: ns → µs.
pub const HGRM_UNIT_RATIO: f64 = 1000.0;

/// The quantiles summarised by the table and the JSON, with their names.
const QUANTILES: [(&str, f64); 5] =
    [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999), ("p9999", 0.9999)];

/// Line colours of the workers in [`Report::svg`] (the merged line is black).
const SERIES_COLOURS: [(u8, u8, u8); 10] = [
    (0x1f, 0x77, 0xb4),
    (0xff, 0x7f, 0x0e),
    (0x2c, 0xa0, 0x2c),
    (0xd6, 0x27, 0x28),
    (0x94, 0x67, 0xbd),
    (0x8c, 0x56, 0x4b),
    (0xe3, 0x77, 0xc2),
    (0x7f, 0x7f, 0x7f),
    (0xbc, 0xbd, 0x22),
    (0x17, 0xbe, 0xcf),
];

/// One worker's histograms (or, with `worker == MERGED`, all workers').
#[derive(Debug, Clone)]
pub struct WorkerHistograms {
    /// Worker index; [`MERGED`] for the merged histograms.
    pub worker: usize,
    /// CPU core the worker runs on (meaningless for the merged histograms).
    pub core: usize,
    /// Its latency and batch-size histograms.
    pub hists: Hists,
}

impl WorkerHistograms {
    /// Empty histograms with the workers' standard bounds ([`Hists::new`]).
    pub fn new(worker: usize, core: usize) -> Self {
        WorkerHistograms { worker, core, hists: Hists::new() }
    }

    /// Whether these are the merged histograms of a [`Report`].
    pub fn is_merged(&self) -> bool {
        self.worker == MERGED
    }

    /// "w3" for worker 3, "merged" for the merged histograms.
    pub fn label(&self) -> String {
        if self.is_merged() {
            "merged".to_string()
        } else {
            format!("w{}", self.worker)
        }
    }
}

/// The histograms of all workers, and the renderings of them.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub workers: Vec<WorkerHistograms>,
}

impl Report {
    pub fn new(workers: Vec<WorkerHistograms>) -> Self {
        Report { workers }
    }

    /// The histograms of worker `worker` (by its `worker` field, not its
    /// position in `workers`).
    pub fn worker(&self, worker: usize) -> Option<&WorkerHistograms> {
        self.workers.iter().find(|w| w.worker == worker)
    }

    /// All workers' histograms added together, with `worker == MERGED` and
    /// `core == MERGED`. Histograms with differing bounds are merged too: the
    /// result auto-resizes, and values it still cannot hold are clamped to its
    /// range rather than dropped, so the merged count is always the sum of the
    /// workers' counts.
    pub fn merged(&self) -> WorkerHistograms {
        WorkerHistograms {
            worker: MERGED,
            core: MERGED,
            hists: Hists {
                latency: merge(self.workers.iter().map(|w| &w.hists.latency)),
                batch: merge(self.workers.iter().map(|w| &w.hists.batch)),
            },
        }
    }

    /// A fixed-width table: one line per worker and one for all workers
    /// merged, with the sample count, latency percentiles, max and mean in
    /// microseconds (3 decimals, i.e. ns resolution), and the batch-size
    /// median and max. Workers without samples show "no samples".
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "RX->TX-submit latency in µs (3 decimals: ns resolution); batch = packets per RX batch\n",
        );
        let _ = writeln!(
            out,
            "{:>6} {:>5} {:>12} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>9} {:>9}",
            "worker",
            "core",
            "count",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "p99.99",
            "max",
            "mean",
            "batch-p50",
            "batch-max"
        );
        let merged = self.merged();
        for row in self.workers.iter().chain(std::iter::once(&merged)) {
            let (worker, core) = if row.is_merged() {
                ("merged".to_string(), "-".to_string())
            } else {
                (row.worker.to_string(), row.core.to_string())
            };
            let _ = write!(out, "{worker:>6} {core:>5} ");
            let lat = &row.hists.latency;
            if lat.is_empty() {
                out.push_str("  no samples\n");
                continue;
            }
            let _ = write!(out, "{:>12}", lat.len());
            for (_, q) in QUANTILES {
                let _ = write!(out, " {:>11}", ns_as_us(lat.value_at_quantile(q)));
            }
            let _ = write!(out, " {:>11}", ns_as_us(lat.max()));
            let _ = write!(out, " {:>11.3}", lat.mean() / 1000.0);
            if row.hists.batch.is_empty() {
                let _ = writeln!(out, " {:>9} {:>9}", "-", "-");
            } else {
                let _ = writeln!(
                    out,
                    " {:>9} {:>9}",
                    row.hists.batch.value_at_quantile(0.5),
                    row.hists.batch.max()
                );
            }
        }
        out
    }

    /// The percentile distribution of one worker's latency (`Some(worker)`,
    /// matched on the `worker` field) or of the merged latency (`None`), in
    /// microseconds, formatted exactly as Java HdrHistogram's
    /// `outputPercentileDistribution(out, 5, 1000.0)`. An unknown worker gives
    /// the (valid) distribution of an empty histogram.
    pub fn hgrm(&self, worker: Option<usize>) -> String {
        match worker {
            None => percentile_distribution(
                &self.merged().hists.latency,
                HGRM_TICKS_PER_HALF_DISTANCE,
                HGRM_UNIT_RATIO,
            ),
            Some(id) => match self.worker(id) {
                Some(w) => {
                    percentile_distribution(&w.hists.latency, HGRM_TICKS_PER_HALF_DISTANCE, HGRM_UNIT_RATIO)
                }
                None => {
                    percentile_distribution(&empty_histogram(), HGRM_TICKS_PER_HALF_DISTANCE, HGRM_UNIT_RATIO)
                }
            },
        }
    }

    /// Machine-readable summary, latencies in nanoseconds:
    ///
    /// ```json
    /// { "unit": "ns",
    ///   "workers": [ { "worker": 0, "core": 2,
    ///                  "latency": { "count", "min", "max", "mean", "stdev",
    ///                               "percentiles": { "p50", "p90", "p99", "p999", "p9999" } },
    ///                  "batch": { "count", "min", "max", "mean", "p50", "p99" } } ],
    ///   "merged": { "worker": "merged", "core": null, "latency": {..}, "batch": {..} } }
    /// ```
    ///
    /// For an empty histogram `count` is 0 and the other statistics are null.
    pub fn json(&self) -> Value {
        let workers: Vec<Value> = self
            .workers
            .iter()
            .map(|w| {
                json!({
                    "worker": w.worker,
                    "core": w.core,
                    "latency": latency_json(&w.hists.latency),
                    "batch": batch_json(&w.hists.batch),
                })
            })
            .collect();
        let merged = self.merged();
        json!({
            "unit": "ns",
            "workers": workers,
            "merged": {
                "worker": "merged",
                "core": Value::Null,
                "latency": latency_json(&merged.hists.latency),
                "batch": batch_json(&merged.hists.batch),
            },
        })
    }

    /// Latency by percentile as an SVG document: x is the percentile on the
    /// usual log scale of 1/(1-p) (labelled 0%, 90%, 99%, 99.9%, ...), y the
    /// latency in µs; one line per worker and a thicker black one for the
    /// merged histogram. Workers without samples get a legend entry and no
    /// line; with no samples at all the axes are still drawn.
    pub fn svg(&self) -> Result<String, SvgError> {
        use plotters::prelude::*;

        let merged = self.merged();
        // Merged first, workers over it: with one worker the two lines are
        // the same, and the worker's must stay visible.
        let series: Vec<(String, bool, Curve)> = std::iter::once(&merged)
            .chain(self.workers.iter())
            .map(|r| (r.label(), r.is_merged(), percentile_curve(&r.hists.latency)))
            .collect();

        // x = log10(1/(1-p)): at least up to 99.999%, more when the data goes
        // further; y from 0 to a bit over the largest value plotted.
        let data_x = series.iter().flat_map(|(_, _, pts)| pts.iter().map(|p| p.0)).fold(0.0_f64, f64::max);
        let x_max = data_x.ceil().clamp(5.0, 15.0);
        let data_y = series.iter().flat_map(|(_, _, pts)| pts.iter().map(|p| p.1)).fold(0.0_f64, f64::max);
        let y_max = if data_y > 0.0 { data_y * 1.1 } else { 1.0 };

        let mut buf = String::new();
        {
            let root = SVGBackend::with_string(&mut buf, (1024, 640)).into_drawing_area();
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption("Latency by percentile", ("sans-serif", 22))
                .margin(16)
                // Room for the last x label ("99.999%"), centred on the edge.
                .margin_right(40)
                .x_label_area_size(48)
                .y_label_area_size(72)
                .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
            let x_label_formatter = |x: &f64| percentile_axis_label(*x);
            let y_label_formatter = |y: &f64| format!("{y}");
            chart
                .configure_mesh()
                .x_labels(x_max as usize + 1)
                .x_label_formatter(&x_label_formatter)
                .y_label_formatter(&y_label_formatter)
                .label_style(("sans-serif", 14))
                .x_desc("percentile")
                .y_desc("latency (µs)")
                .draw()?;

            let mut colour_index = 0;
            for (label, is_merged, points) in series {
                let style = if is_merged {
                    BLACK.stroke_width(3)
                } else {
                    let (r, g, b) = SERIES_COLOURS[colour_index % SERIES_COLOURS.len()];
                    colour_index += 1;
                    RGBColor(r, g, b).stroke_width(2)
                };
                chart
                    .draw_series(LineSeries::new(points, style))?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
            root.present()?;
        }
        Ok(buf)
    }

    /// Writes this run's report into its own directory under `dir`, named by
    /// the UTC time and pid (`20261201T204319Z-1234`), and points the
    /// `latest` symlink at it: runs never overwrite each other, and no
    /// per-worker file of an earlier, wider run sits beside this one's.
    pub fn write_run(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        let name =
            format!("{}-{}", super::log::compact_utc(std::time::SystemTime::now()), std::process::id());
        let written = self.write_dir(&dir.join(&name))?;
        let latest = dir.join("latest");
        let tmp = dir.join(format!(".latest-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&name, &tmp)?;
        std::fs::rename(&tmp, &latest)?;
        Ok(written)
    }

    /// Writes `latency.hgrm` (merged), `latency-w{N}.hgrm` (one per worker),
    /// `latency.json` and `latency.svg` into `dir`, creating it if needed.
    /// Returns the paths written, in that order.
    pub fn write_dir(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut written = Vec::new();
        let mut put = |name: String, contents: &[u8]| -> std::io::Result<()> {
            let path = dir.join(name);
            std::fs::write(&path, contents)?;
            written.push(path);
            Ok(())
        };
        put("latency.hgrm".to_string(), self.hgrm(None).as_bytes())?;
        for w in &self.workers {
            put(format!("latency-w{}.hgrm", w.worker), self.hgrm(Some(w.worker)).as_bytes())?;
        }
        let json = serde_json::to_string_pretty(&self.json()).map_err(std::io::Error::other)?;
        put("latency.json".to_string(), format!("{json}\n").as_bytes())?;
        let svg = self.svg().map_err(std::io::Error::other)?;
        put("latency.svg".to_string(), svg.as_bytes())?;
        Ok(written)
    }
}

/// The percentile distribution of `h` in the text layout of Java
/// HdrHistogram's `outputPercentileDistribution(out, ticks, unit_ratio)`:
///
/// ```text
///        Value     Percentile TotalCount 1/(1-Percentile)
///
///       25.000 0.000000000000          1           1.00
///       ...
///       75.000 1.000000000000          3
/// #[Mean    =       50.000, StdDeviation   =       20.412]
/// #[Max     =       75.000, Total count    =            3]
/// #[Buckets =           43, SubBuckets     =         2048]
/// ```
///
/// Rows are `%12.{sigfig}f %2.12f %10d %14.2f` (the last one, at percentile
/// 1.0, without the 1/(1-p) column); values are divided by `unit_ratio`;
/// decimals are rounded half-up like Java's `Formatter`. An empty histogram
/// gives the header and a footer of zeros. `ticks` of 0 is taken as 1.
pub fn percentile_distribution(h: &Histogram<u64>, ticks: u32, unit_ratio: f64) -> String {
    let ratio = if unit_ratio.is_finite() && unit_ratio > 0.0 { unit_ratio } else { 1.0 };
    let digits = usize::from(h.sigfig());
    let mut out = String::new();
    let _ = write!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !h.is_empty() {
        let mut total: u64 = 0;
        for v in h.iter_quantiles(ticks.max(1)) {
            total = total.saturating_add(v.count_since_last_iteration());
            let q = v.quantile_iterated_to();
            let value = java_fixed(v.value_iterated_to() as f64 / ratio, digits);
            let pct = java_fixed(q, 12);
            if q < 1.0 {
                let inv = java_fixed(1.0 / (1.0 - q), 2);
                let _ = writeln!(out, "{value:>12} {pct:>2} {total:>10} {inv:>14}");
            } else {
                let _ = writeln!(out, "{value:>12} {pct:>2} {total:>10}");
            }
        }
    }
    let (mean, stdev, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean() / ratio, h.stdev() / ratio, h.max() as f64 / ratio)
    };
    let _ = writeln!(
        out,
        "#[Mean    = {:>12}, StdDeviation   = {:>12}]",
        java_fixed(mean, digits),
        java_fixed(stdev, digits)
    );
    let _ = writeln!(out, "#[Max     = {:>12}, Total count    = {:>12}]", java_fixed(max, digits), h.len());
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        sub_bucket_count(h.sigfig())
    );
    out
}

/// An empty auto-resizing histogram (1 .. auto, 3 significant digits),
/// obtained without a fallible constructor call of our own.
fn empty_histogram() -> Histogram<u64> {
    std::iter::empty::<Histogram<u64>>().sum()
}

/// Adds the histograms up; see [`Report::merged`].
fn merge<'a>(mut hists: impl Iterator<Item = &'a Histogram<u64>>) -> Histogram<u64> {
    let mut merged = match hists.next() {
        Some(first) => first.clone(),
        None => return empty_histogram(),
    };
    merged.auto(true);
    for h in hists {
        if merged.add(h).is_err() {
            // Only when resizing is impossible (usize too small): keep the
            // counts, clamping values to what the merged histogram holds.
            for v in h.iter_recorded() {
                merged.saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }
    merged
}

/// `ns` as microseconds with exactly three decimals, without going through
/// floating point: 5003 → "5.003".
fn ns_as_us(ns: u64) -> String {
    format!("{}.{:03}", ns / 1000, ns % 1000)
}

fn latency_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        let percentiles: serde_json::Map<String, Value> =
            QUANTILES.iter().map(|(name, _)| ((*name).to_string(), Value::Null)).collect();
        return json!({
            "count": 0,
            "min": Value::Null,
            "max": Value::Null,
            "mean": Value::Null,
            "stdev": Value::Null,
            "percentiles": percentiles,
        });
    }
    let percentiles: serde_json::Map<String, Value> =
        QUANTILES.iter().map(|(name, q)| ((*name).to_string(), json!(h.value_at_quantile(*q)))).collect();
    json!({
        "count": h.len(),
        "min": h.min(),
        "max": h.max(),
        "mean": h.mean(),
        "stdev": h.stdev(),
        "percentiles": percentiles,
    })
}

fn batch_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({
            "count": 0,
            "min": Value::Null,
            "max": Value::Null,
            "mean": Value::Null,
            "p50": Value::Null,
            "p99": Value::Null,
        });
    }
    json!({
        "count": h.len(),
        "min": h.min(),
        "max": h.max(),
        "mean": h.mean(),
        "p50": h.value_at_quantile(0.5),
        "p99": h.value_at_quantile(0.99),
    })
}

/// A plotted line: (x, y) points.
type Curve = Vec<(f64, f64)>;

/// Points (log10(1/(1-p)), latency in µs) of the percentile distribution, as
/// in the .hgrm rows; the final row (p = 1, x = ∞) is dropped.
fn percentile_curve(h: &Histogram<u64>) -> Curve {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_quantiles(HGRM_TICKS_PER_HALF_DISTANCE)
        .filter(|v| v.quantile_iterated_to() < 1.0)
        .map(|v| {
            let x = (1.0 / (1.0 - v.quantile_iterated_to())).log10();
            (x, v.value_iterated_to() as f64 / HGRM_UNIT_RATIO)
        })
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect()
}

/// Axis label at x = log10(1/(1-p)): 0 → "0%", 1 → "90%", 2 → "99%",
/// 3 → "99.9%", ...; nothing between the decades.
fn percentile_axis_label(x: f64) -> String {
    let k = x.round();
    if (x - k).abs() > 1e-6 || k < 0.0 {
        return String::new();
    }
    match k as usize {
        0 => "0%".to_string(),
        1 => "90%".to_string(),
        n => format!("99{}{}%", if n > 2 { "." } else { "" }, "9".repeat(n - 2)),
    }
}

/// Java HdrHistogram's `subBucketCount` for `sigfig` significant digits: the
/// power of two at or above 2 × 10^sigfig.
fn sub_bucket_count(sigfig: u8) -> u64 {
    let largest = 2 * 10_u64.pow(u32::from(sigfig.min(5)));
    largest.next_power_of_two()
}

/// `x` with `decimals` decimals as Java's `String.format("%.Nf")` writes it:
/// the shortest decimal representation of `x`, rounded half-up (Rust's `{:.N}`
/// rounds the exact binary value half-to-even, which differs on ties such as
/// 0.125 → "0.13" in Java, "0.12" in Rust).
fn java_fixed(x: f64, decimals: usize) -> String {
    if x.is_nan() {
        return "NaN".to_string();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    // Shortest round-trip digits d0 d1 ... and exponent: x = 0.d0d1... × 10^point.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exponent: i64 = exponent.parse().unwrap_or(0);
    let digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect();
    let point = exponent + 1;
    // Digits of round(x × 10^decimals), most significant first.
    let keep = point + decimals as i64;
    let mut kept: Vec<u8> = if keep <= 0 {
        Vec::new()
    } else {
        let keep = keep as usize;
        let mut k: Vec<u8> = digits.iter().copied().take(keep).collect();
        k.resize(keep, 0);
        k
    };
    let next_digit = if keep < 0 { 0 } else { digits.get(keep as usize).copied().unwrap_or(0) };
    if next_digit >= 5 {
        let mut carry = true;
        for d in kept.iter_mut().rev() {
            if *d == 9 {
                *d = 0;
            } else {
                *d += 1;
                carry = false;
                break;
            }
        }
        if carry {
            kept.insert(0, 1);
        }
    }
    // Pad to at least one integer digit, then place the decimal point.
    if kept.len() < decimals + 1 {
        let mut padded = vec![0; decimals + 1 - kept.len()];
        padded.extend_from_slice(&kept);
        kept = padded;
    }
    let split = kept.len() - decimals;
    let mut out = String::with_capacity(kept.len() + 2);
    if x < 0.0 {
        out.push('-');
    }
    out.extend(kept[..split].iter().map(|d| char::from(b'0' + d)));
    if decimals > 0 {
        out.push('.');
        out.extend(kept[split..].iter().map(|d| char::from(b'0' + d)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_fixed_rounds_half_up_on_shortest_digits() {
        assert_eq!(java_fixed(0.125, 2), "0.13");
        assert_eq!(java_fixed(0.15, 1), "0.2");
        assert_eq!(java_fixed(1.0005, 3), "1.001");
        assert_eq!(java_fixed(0.0, 3), "0.000");
        assert_eq!(java_fixed(5.003, 3), "5.003");
        assert_eq!(java_fixed(9.9996, 3), "10.000");
        assert_eq!(java_fixed(0.0004, 3), "0.000");
        assert_eq!(java_fixed(0.0005, 3), "0.001");
        assert_eq!(java_fixed(0.000_05, 3), "0.000");
        assert_eq!(java_fixed(123_456.0, 0), "123456");
        assert_eq!(java_fixed(0.5, 0), "1");
        assert_eq!(java_fixed(1e-20, 2), "0.00");
        assert_eq!(java_fixed(1.0 / 3.0, 12), "0.333333333333");
        assert_eq!(java_fixed(0.1 + 0.2, 12), "0.300000000000");
        assert_eq!(java_fixed(-2.5, 1), "-2.5");
        assert_eq!(java_fixed(1e21, 2), "1000000000000000000000.00");
    }

    #[test]
    fn sub_buckets_match_java() {
        assert_eq!(sub_bucket_count(3), 2048);
        assert_eq!(sub_bucket_count(2), 256);
        assert_eq!(sub_bucket_count(0), 2);
    }

    #[test]
    fn axis_labels() {
        let labels: Vec<String> = (0..6).map(|k| percentile_axis_label(k as f64)).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]);
        assert_eq!(percentile_axis_label(0.5), "");
    }

    #[test]
    fn microseconds() {
        assert_eq!(ns_as_us(5003), "5.003");
        assert_eq!(ns_as_us(7), "0.007");
        assert_eq!(ns_as_us(60_000_000_000), "60000000.000");
    }
}
