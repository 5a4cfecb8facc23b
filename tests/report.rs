//! Latency reports: table, .hgrm, JSON, SVG and the files written.

use hdrhistogram::Histogram;
use shunt::telemetry::latency::Hists;
use shunt::telemetry::report::*;

fn hist(high: u64) -> Histogram<u64> {
    Histogram::new_with_bounds(1, high, 3).expect("valid bounds")
}

/// Worker 0: latency uniform over 1..=10000 ns, batches cycling 1..=64.
/// Worker 1: 1000 × 50 µs plus a tail of 10 × 2 ms, batches all 32.
fn two_workers() -> Report {
    let mut w0 = WorkerHistograms {
        worker: 0,
        core: 2,
        hists: Hists { latency: hist(60_000_000_000), batch: hist(64) },
    };
    for ns in 1..=10_000u64 {
        w0.hists.latency.record(ns).expect("in range");
    }
    for i in 0..640u64 {
        w0.hists.batch.record(i % 64 + 1).expect("in range");
    }
    let mut w1 = WorkerHistograms::new(1, 3);
    w1.hists.latency.record_n(50_000, 1000).expect("in range");
    w1.hists.latency.record_n(2_000_000, 10).expect("in range");
    w1.hists.batch.record_n(32, 100).expect("in range");
    Report::new(vec![w0, w1])
}

fn empty_report() -> Report {
    Report::new(vec![WorkerHistograms::new(0, 0)])
}

fn us(ns: u64) -> String {
    format!("{}.{:03}", ns / 1000, ns % 1000)
}

/// The table's cells, by column name, for the row whose first cell is `first`.
fn table_row(table: &str, first: &str) -> Vec<(String, String)> {
    let header = table.lines().find(|l| l.trim_start().starts_with("worker")).expect("header line");
    let names: Vec<&str> = header.split_whitespace().collect();
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row {first} in\n{table}"));
    names.iter().zip(row.split_whitespace()).map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

fn cell<'a>(row: &'a [(String, String)], name: &str) -> &'a str {
    &row.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no column {name}")).1
}

#[test]
fn merged_adds_all_workers() {
    let r = two_workers();
    let m = r.merged();
    assert_eq!(m.worker, MERGED);
    assert!(m.is_merged());
    assert_eq!(m.hists.latency.len(), 10_000 + 1010);
    assert_eq!(m.hists.batch.len(), 640 + 100);
    assert_eq!(m.hists.latency.max(), r.workers[1].hists.latency.max());
    assert_eq!(m.hists.latency.min(), 1);
    // The workers are untouched.
    assert_eq!(r.workers[0].hists.latency.len(), 10_000);
}

#[test]
fn merged_of_nothing_is_empty() {
    let r = Report::default();
    let m = r.merged();
    assert!(m.hists.latency.is_empty());
    assert!(m.hists.batch.is_empty());
}

#[test]
fn merged_handles_differing_bounds() {
    // A worker with tighter bounds first: the merged histogram must grow.
    let mut small =
        WorkerHistograms { worker: 0, core: 0, hists: Hists { latency: hist(1000), batch: hist(64) } };
    small.hists.latency.record(10).expect("in range");
    let mut big = WorkerHistograms::new(1, 1);
    big.hists.latency.record(30_000_000_000).expect("in range");
    big.hists.batch.record(1000).expect("in range");
    let m = Report::new(vec![small, big]).merged();
    assert_eq!(m.hists.latency.len(), 2);
    assert!(m.hists.latency.equivalent(m.hists.latency.max(), 30_000_000_000));
    assert_eq!(m.hists.batch.len(), 1);
    assert!(m.hists.batch.equivalent(m.hists.batch.max(), 1000));
}

#[test]
fn table_numbers() {
    let r = two_workers();
    let t = r.table();
    assert!(t.lines().next().expect("title").contains("µs"), "{t}");

    let w0 = &r.workers[0].hists.latency;
    let row = table_row(&t, "0");
    assert_eq!(cell(&row, "core"), "2");
    assert_eq!(cell(&row, "count"), "10000");
    assert_eq!(cell(&row, "p50"), us(w0.value_at_quantile(0.5)));
    assert_eq!(cell(&row, "p90"), us(w0.value_at_quantile(0.9)));
    assert_eq!(cell(&row, "p99"), us(w0.value_at_quantile(0.99)));
    assert_eq!(cell(&row, "p99.9"), us(w0.value_at_quantile(0.999)));
    assert_eq!(cell(&row, "p99.99"), us(w0.value_at_quantile(0.9999)));
    assert_eq!(cell(&row, "max"), us(w0.max()));
    // Independent sanity: uniform 1..=10000 ns, three significant digits.
    let p50: f64 = cell(&row, "p50").parse().expect("number");
    let p99: f64 = cell(&row, "p99").parse().expect("number");
    let max: f64 = cell(&row, "max").parse().expect("number");
    let mean: f64 = cell(&row, "mean").parse().expect("number");
    assert!((p50 - 5.0).abs() <= 0.005, "p50 {p50}");
    assert!((p99 - 9.9).abs() <= 0.01, "p99 {p99}");
    assert!((max - 10.0).abs() <= 0.01, "max {max}");
    assert!((mean - 5.0).abs() <= 0.01, "mean {mean}");
    assert_eq!(cell(&row, "batch-p50"), "32");
    assert_eq!(cell(&row, "batch-max"), "64");

    let row = table_row(&t, "1");
    assert_eq!(cell(&row, "count"), "1010");
    assert_eq!(cell(&row, "p50"), us(r.workers[1].hists.latency.value_at_quantile(0.5)));
    let p50: f64 = cell(&row, "p50").parse().expect("number");
    assert!((p50 - 50.0).abs() <= 0.05, "p50 {p50}");
    // 10 of 1010 samples (0.99%) are 2 ms: p99 is still 50 µs, p99.9 is 2 ms.
    let p99: f64 = cell(&row, "p99").parse().expect("number");
    assert!((p99 - 50.0).abs() <= 0.05, "p99 {p99}");
    let p999: f64 = cell(&row, "p99.9").parse().expect("number");
    assert!((p999 - 2000.0).abs() <= 2.0, "p99.9 {p999}");
    assert_eq!(cell(&row, "batch-p50"), "32");
    assert_eq!(cell(&row, "batch-max"), "32");

    let m = r.merged();
    let row = table_row(&t, "merged");
    assert_eq!(cell(&row, "count"), "11010");
    assert_eq!(cell(&row, "p50"), us(m.hists.latency.value_at_quantile(0.5)));
    assert_eq!(cell(&row, "p99"), us(m.hists.latency.value_at_quantile(0.99)));
    assert_eq!(cell(&row, "max"), us(m.hists.latency.max()));
    assert_eq!(cell(&row, "batch-max"), "64");
}

#[test]
fn table_without_samples() {
    let t = empty_report().table();
    assert_eq!(t.matches("no samples").count(), 2, "{t}"); // worker 0 and merged
    let t = Report::default().table();
    assert!(t.contains("no samples"), "{t}");
}

/// An independent reader of the .hgrm text.
struct Hgrm {
    /// (value, percentile, total count, 1/(1-p) where present)
    rows: Vec<(f64, f64, u64, Option<f64>)>,
    mean: f64,
    stdev: f64,
    max: f64,
    total: u64,
    buckets: u64,
    sub_buckets: u64,
}

fn footer_pair(line: &str, tag: &str) -> (String, String) {
    let body = line
        .strip_prefix(tag)
        .and_then(|l| l.strip_suffix(']'))
        .unwrap_or_else(|| panic!("footer {tag:?} in {line:?}"));
    let mut parts = body.split(',');
    let first = parts.next().expect("first").trim().to_string();
    let second = parts.next().expect("second");
    let second = second.split('=').nth(1).expect("second value").trim().to_string();
    assert!(parts.next().is_none());
    (first.trim_start_matches('=').trim().to_string(), second)
}

fn parse_hgrm(text: &str) -> Hgrm {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "       Value     Percentile TotalCount 1/(1-Percentile)");
    assert_eq!(lines[1], "");
    let mut rows = Vec::new();
    let mut footer = Vec::new();
    for line in &lines[2..] {
        if line.starts_with('#') {
            footer.push(*line);
            continue;
        }
        assert!(footer.is_empty(), "row after footer: {line:?}");
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert!(cols.len() == 3 || cols.len() == 4, "row {line:?}");
        // Fixed columns: %12.3f %2.12f %10d %14.2f
        assert_eq!(line[..12].trim_start(), cols[0], "value column {line:?}");
        assert_eq!(&line[12..13], " ");
        assert_eq!(cols[1].len(), 14, "percentile {line:?}");
        assert_eq!(
            line.len(),
            if cols.len() == 4 { 12 + 1 + 14 + 1 + 10 + 1 + 14 } else { 12 + 1 + 14 + 1 + 10 }
        );
        assert_eq!(cols[0].split('.').nth(1).map(str::len), Some(3), "{line:?}");
        rows.push((
            cols[0].parse().expect("value"),
            cols[1].parse().expect("percentile"),
            cols[2].parse().expect("count"),
            cols.get(3).map(|c| c.parse().expect("1/(1-p)")),
        ));
    }
    assert_eq!(footer.len(), 3, "{text}");
    let (mean, stdev) = footer_pair(footer[0], "#[Mean    ");
    let (max, total) = footer_pair(footer[1], "#[Max     ");
    let (buckets, sub_buckets) = footer_pair(footer[2], "#[Buckets ");
    Hgrm {
        rows,
        mean: mean.parse().expect("mean"),
        stdev: stdev.parse().expect("stdev"),
        max: max.parse().expect("max"),
        total: total.parse().expect("total"),
        buckets: buckets.parse().expect("buckets"),
        sub_buckets: sub_buckets.parse().expect("sub buckets"),
    }
}

fn check_hgrm_against(text: &str, h: &Histogram<u64>) {
    let g = parse_hgrm(text);
    assert!(!g.rows.is_empty());
    let last = g.rows.last().expect("rows");
    assert_eq!(last.2, h.len(), "last TotalCount");
    assert_eq!(last.1, 1.0, "last percentile");
    assert!(last.3.is_none(), "last row has no 1/(1-p)");
    assert_eq!(g.rows[0].1, 0.0);
    for pair in g.rows.windows(2) {
        assert!(pair[0].1 <= pair[1].1, "percentiles decrease: {pair:?}");
        assert!(pair[0].2 <= pair[1].2, "counts decrease: {pair:?}");
        assert!(pair[0].0 <= pair[1].0, "values decrease: {pair:?}");
    }
    for (value_us, p, _, inv) in &g.rows {
        let ns = (value_us * 1000.0).round() as u64;
        let expected = h.value_at_quantile(*p);
        // Within one bucket of the histogram's resolution.
        let width = h.highest_equivalent(expected) - h.lowest_equivalent(expected) + 1;
        assert!(ns.abs_diff(expected) <= width, "p {p}: {ns} vs value_at_quantile {expected}");
        if let Some(inv) = inv {
            assert!((inv - 1.0 / (1.0 - p)).abs() <= 0.005 + 1e-9 * inv, "{p} {inv}");
        }
    }
    assert_eq!(g.total, h.len());
    assert!((g.max - h.max() as f64 / 1000.0).abs() < 0.0005);
    assert!((g.mean - h.mean() / 1000.0).abs() < 0.0005);
    assert!((g.stdev - h.stdev() / 1000.0).abs() < 0.0005);
    assert_eq!(g.buckets, u64::from(h.buckets()));
    assert_eq!(g.sub_buckets, 2048);
}

#[test]
fn hgrm_parses_back() {
    let r = two_workers();
    let m = r.merged();
    let text = r.hgrm(None);
    check_hgrm_against(&text, &m.hists.latency);
    // The ticks reach 1/(1-p) > 1000 before the 2 ms tail (10 of 11010).
    let g = parse_hgrm(&text);
    assert!(g.rows.len() > 40, "{text}");
    assert!(g.rows.iter().any(|r| r.3.is_some_and(|inv| inv > 1000.0)), "{text}");
    for w in &r.workers {
        check_hgrm_against(&r.hgrm(Some(w.worker)), &w.hists.latency);
    }
}

#[test]
fn hgrm_matches_java_layout() {
    // outputPercentileDistribution(System.out, 5, 1.0) of 25, 50, 75 in a
    // 3-digit histogram reaching 2^53 (43 buckets), as Java prints it.
    let mut h = hist((1 << 53) - 1);
    for v in [25, 50, 75] {
        h.record(v).expect("in range");
    }
    let expected = "       Value     Percentile TotalCount 1/(1-Percentile)

      25.000 0.000000000000          1           1.00
      25.000 0.100000000000          1           1.11
      25.000 0.200000000000          1           1.25
      25.000 0.300000000000          1           1.43
      50.000 0.400000000000          2           1.67
      50.000 0.500000000000          2           2.00
      50.000 0.550000000000          2           2.22
      50.000 0.600000000000          2           2.50
      50.000 0.650000000000          2           2.86
      75.000 0.700000000000          3           3.33
      75.000 1.000000000000          3
#[Mean    =       50.000, StdDeviation   =       20.412]
#[Max     =       75.000, Total count    =            3]
#[Buckets =           43, SubBuckets     =         2048]
";
    assert_eq!(percentile_distribution(&h, 5, 1.0), expected);
}

#[test]
fn hgrm_of_empty_histograms() {
    let zero_footer = "#[Mean    =        0.000, StdDeviation   =        0.000]
#[Max     =        0.000, Total count    =            0]
";
    for r in [empty_report(), Report::default()] {
        for text in [r.hgrm(None), r.hgrm(Some(0)), r.hgrm(Some(99))] {
            assert!(
                text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n#[Mean"),
                "{text}"
            );
            assert!(text.contains(zero_footer), "{text}");
            let g = parse_hgrm(&text);
            assert!(g.rows.is_empty());
            assert_eq!(g.total, 0);
        }
    }
}

#[test]
fn json_fields() {
    let r = two_workers();
    let j = r.json();
    assert_eq!(j["unit"], "ns");
    let workers = j["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 2);
    for (w, hw) in workers.iter().zip(&r.workers) {
        assert_eq!(w["worker"], hw.worker);
        assert_eq!(w["core"], hw.core);
        let lat = &w["latency"];
        let h = &hw.hists.latency;
        assert_eq!(lat["count"], h.len());
        assert_eq!(lat["min"], h.min());
        assert_eq!(lat["max"], h.max());
        assert!((lat["mean"].as_f64().expect("mean") - h.mean()).abs() < 1e-6);
        assert!((lat["stdev"].as_f64().expect("stdev") - h.stdev()).abs() < 1e-6);
        for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999), ("p9999", 0.9999)] {
            assert_eq!(lat["percentiles"][name], h.value_at_quantile(q), "{name}");
        }
        let batch = &w["batch"];
        assert_eq!(batch["count"], hw.hists.batch.len());
        assert_eq!(batch["max"], hw.hists.batch.max());
        assert_eq!(batch["p50"], hw.hists.batch.value_at_quantile(0.5));
        for key in ["min", "mean", "p99"] {
            assert!(batch[key].is_number(), "batch {key}");
        }
    }
    // Worker 0 by hand: uniform 1..=10000.
    let p50 = workers[0]["latency"]["percentiles"]["p50"].as_u64().expect("p50");
    assert!((4995..=5005).contains(&p50), "{p50}");
    assert_eq!(workers[0]["latency"]["min"], 1);
    let min1 = workers[1]["latency"]["min"].as_u64().expect("min");
    assert!(r.workers[1].hists.latency.equivalent(min1, 50_000), "{min1}");

    let m = &j["merged"];
    assert_eq!(m["worker"], "merged");
    assert_eq!(m["latency"]["count"], 11_010);
    assert_eq!(m["batch"]["count"], 740);
    assert_eq!(m["latency"]["percentiles"]["p99"], r.merged().hists.latency.value_at_quantile(0.99));
    // Round-trips through text.
    let text = serde_json::to_string(&j).expect("serialise");
    let back: serde_json::Value = serde_json::from_str(&text).expect("parse");
    assert_eq!(back, j);
}

#[test]
fn json_of_empty_histograms() {
    let j = empty_report().json();
    for entry in [&j["workers"][0], &j["merged"]] {
        assert_eq!(entry["latency"]["count"], 0);
        assert!(entry["latency"]["max"].is_null());
        assert!(entry["latency"]["percentiles"]["p99"].is_null());
        assert_eq!(entry["batch"]["count"], 0);
    }
    let j = Report::default().json();
    assert_eq!(j["workers"].as_array().map(Vec::len), Some(0));
    assert_eq!(j["merged"]["latency"]["count"], 0);
}

fn check_svg_shape(svg: &str) {
    let trimmed = svg.trim();
    assert!(trimmed.starts_with("<svg") || trimmed.starts_with("<?xml"), "{trimmed:.200}");
    assert!(trimmed.contains("<svg"));
    assert!(trimmed.ends_with("</svg>"), "…{}", &trimmed[trimmed.len().saturating_sub(200)..]);
    assert_eq!(svg.matches("<svg").count(), 1);
}

#[test]
fn svg_has_a_line_per_series() {
    let r = two_workers();
    let svg = r.svg().expect("svg");
    check_svg_shape(&svg);
    // One line per series, plus each series' legend sample.
    let lines = svg.matches("<polyline").count() + svg.matches("<path").count();
    assert!(lines >= 3, "{lines} lines");
    for label in ["w0", "w1", "merged", "90%", "99%", "99.9%", "99.99%", "99.999%", "percentile"] {
        assert!(svg.contains(&format!(">{label}<")) || svg.contains(label), "label {label}");
    }
    assert!(svg.contains("latency (µs)"));
    // The three data series are drawn in three different strokes.
    let strokes: std::collections::BTreeSet<&str> = svg
        .split("<polyline")
        .skip(1)
        .filter_map(|p| p.split("stroke=\"").nth(1))
        .filter_map(|s| s.split('"').next())
        .collect();
    assert!(strokes.len() >= 3, "{strokes:?}");
}

#[test]
fn svg_of_empty_histograms() {
    for r in [empty_report(), Report::default()] {
        let svg = r.svg().expect("svg");
        check_svg_shape(&svg);
        assert!(svg.contains("merged"));
    }
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    std::env::temp_dir().join(format!("shunt-report-{tag}-{}-{nanos}", std::process::id()))
}

#[test]
fn write_dir_writes_the_files() {
    let r = two_workers();
    let dir = temp_dir("full").join("nested");
    let written = r.write_dir(&dir).expect("write_dir");
    let names: Vec<String> = written
        .iter()
        .map(|p| {
            assert_eq!(p.parent(), Some(dir.as_path()));
            p.file_name().expect("name").to_string_lossy().into_owned()
        })
        .collect();
    assert_eq!(names, ["latency.hgrm", "latency-w0.hgrm", "latency-w1.hgrm", "latency.json", "latency.svg"]);
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect("read back");
    assert_eq!(read("latency.hgrm"), r.hgrm(None));
    assert_eq!(read("latency-w1.hgrm"), r.hgrm(Some(1)));
    check_hgrm_against(&read("latency-w0.hgrm"), &r.workers[0].hists.latency);
    let json: serde_json::Value = serde_json::from_str(&read("latency.json")).expect("json");
    assert_eq!(json, r.json());
    check_svg_shape(&read("latency.svg"));
    // Writing again over existing files works.
    assert_eq!(r.write_dir(&dir).expect("rewrite").len(), 5);
    std::fs::remove_dir_all(dir.parent().expect("parent")).expect("clean up");
}

#[test]
fn write_dir_of_empty_report() {
    let dir = temp_dir("empty");
    let written = Report::default().write_dir(&dir).expect("write_dir");
    assert_eq!(written.len(), 3); // latency.hgrm, .json, .svg
    for p in &written {
        assert!(p.exists());
    }
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn write_dir_reports_errors() {
    // A path under a regular file cannot be created.
    let dir = temp_dir("err");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let file = dir.join("file");
    std::fs::write(&file, b"x").expect("write");
    assert!(two_workers().write_dir(&file.join("sub")).is_err());
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// The `x` attribute of the `<text>` holding exactly `label`.
fn text_x(svg: &str, label: &str) -> f64 {
    let end = svg
        .find(&format!(">\n{label}\n</text>"))
        .or_else(|| svg.find(&format!(">{label}</text>")))
        .unwrap_or_else(|| panic!("no label {label}"));
    let start = svg[..end].rfind("<text").unwrap();
    let tag = &svg[start..end];
    let x = tag.split(" x=\"").nth(1).unwrap().split('"').next().unwrap();
    x.parse().unwrap()
}

#[test]
fn svg_last_percentile_label_fits_and_a_lone_worker_stays_visible() {
    let mut w = WorkerHistograms::new(0, 1);
    for ns in 1..=100_000u64 {
        w.hists.latency.record(ns).expect("in range");
    }
    let svg = Report::new(vec![w]).svg().expect("svg");
    check_svg_shape(&svg);
    // Centred on its tick: half of "99.999%" (7 glyphs of a 14 px font,
    // ~8 px each) must end inside the 1024 px canvas.
    let x = text_x(&svg, "99.999%");
    assert!(x + 7.0 * 8.0 / 2.0 <= 1024.0, "99.999% at x={x} is cut off");
    // The worker's line is drawn after (over) the merged black one, which
    // it equals with one worker.
    let polylines: Vec<&str> = svg.split("<polyline").skip(1).collect();
    let stroke = |p: &str| {
        p.split("stroke=\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or("").to_ascii_lowercase()
    };
    let black = polylines.iter().position(|p| stroke(p) == "#000000").expect("merged line");
    let worker = polylines.iter().position(|p| stroke(p) == "#1f77b4").expect("worker line");
    assert!(worker > black, "merged at {black}, worker at {worker}");
}
