//! The fuzz corpora as regression tests: every file under
//! `fuzz/corpus/<target>/` runs through the matching `shunt_testkit::fuzz`
//! function in a plain `cargo test`, so an input that once crashed a fuzzer
//! (committed there once fixed) keeps being checked without libFuzzer.
//! See docs/ROBUSTNESS.md.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shunt_testkit::fuzz;

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str, run: fn(&[u8])) {
    let files = corpus(target);
    assert!(!files.is_empty(), "fuzz/corpus/{target} has no seeds");
    let start = Instant::now();
    for f in &files {
        let data = fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        // Name the input on failure: the panic message alone would not.
        let r = std::panic::catch_unwind(|| run(&data));
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("fuzz target `{target}` failed on {}: {msg}", f.display());
        }
    }
    let took = start.elapsed();
    eprintln!("{target}: {} inputs in {took:?}", files.len());
    assert!(took < Duration::from_secs(10), "{target} corpus took {took:?}; keep it small");
}

/// One test per fuzz target, `<target>_corpus`, replaying its corpus.
macro_rules! corpus_tests {
    ($($test:ident: $target:ident,)*) => {$(
        #[test]
        fn $test() {
            replay(stringify!($target), fuzz::$target);
        }
    )*};
}

corpus_tests! {
    wire_corpus: wire,
    pipeline_corpus: pipeline,
    config_corpus: config,
    nat46_corpus: nat46,
    control_corpus: control,
    state_corpus: state,
    fragments_corpus: fragments,
    xlat_corpus: xlat,
}

#[test]
fn every_target_has_a_corpus() {
    for t in fuzz::TARGETS {
        assert!(!corpus(t).is_empty(), "fuzz/corpus/{t} is empty");
    }
}

/// `fuzz/corpus/pipeline/<name>`.
fn pipeline_seed(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/pipeline").join(name);
    fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The pipeline target is not vacuous: its seed SYNs are forwarded (so the
/// second-packet and reflected-reply checks in `fuzz::pipeline` run).
#[test]
fn pipeline_seeds_reach_forwarding() {
    use shunt::pipeline::Verdict;
    let mut h = fuzz::pipeline_fixture().harness();
    for seed in
        ["seed-v4_tcp_syn", "seed-v6_tcp_syn", "seed-v4_udp_dns", "seed-v6_udp_dns", "seed-v4_vlan_tcp"]
    {
        let data = pipeline_seed(seed);
        let (v, _) = h.run_one(&data);
        assert_eq!(v, Verdict::Forward(1), "{seed}");
    }
}

/// The chain seeds reach the chain code's outcomes when `pipeline` cuts
/// them (`fuzz::chain_pieces`): forwarded whole, answered with
/// Fragmentation Needed / Packet Too Big built over the first buffer,
/// dropped for want of DF, too many buffers, headers cut.
#[test]
fn pipeline_chain_seeds_take_the_chain_paths() {
    use shunt::pipeline::{DropReason, Verdict};
    let mut h = fuzz::pipeline_fixture().harness();
    let bounce = |icmp: (u8, u8)| (Verdict::Forward(0), Some(icmp));
    for (seed, want) in [
        ("seed-chain-v6_udp_600", (Verdict::Forward(1), None)),
        ("seed-chain-v4_udp_1400", (Verdict::Forward(1), None)),
        ("seed-chain-v4_tcp_1400", (Verdict::Forward(1), None)),
        ("seed-chain-v4_tcp_9014_df", bounce((3, 4))),
        ("seed-chain-v6_udp_9000", bounce((2, 0))),
        ("seed-chain-v4_udp_3000_no_df", (Verdict::Drop(DropReason::FrameTooLarge), None)),
        ("seed-chain-too_long", (Verdict::Drop(DropReason::ChainTooLong), None)),
        ("seed-chain-cut_in_ip_header", (Verdict::Drop(DropReason::ChainUnsupported), None)),
    ] {
        let data = pipeline_seed(seed);
        let pieces = fuzz::chain_pieces(&data).unwrap_or_else(|| panic!("{seed}: one buffer"));
        assert!(pieces.len() > 1, "{seed}");
        let c = h.run_chain(&pieces);
        // The ICMP type and code of an error built in the first buffer.
        let icmp = (c.more == 0).then(|| {
            let at = if c.bytes[12..14] == [0x86, 0xdd] { 54 } else { 34 };
            (c.bytes[at], c.bytes[at + 1])
        });
        assert_eq!((c.verdict, icmp), want, "{seed}: {} buffers", pieces.len());
        fuzz::pipeline(&data);
    }
}
