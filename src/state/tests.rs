use super::*;
use crate::pipeline::conntrack::{FlowKey, FlowValue};
use crate::pipeline::flow::proto;

fn config(workers: usize, entries: u32) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let mut c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    c.conntrack.entries_per_worker = entries;
    c.workers.truncate(1);
    while c.workers.len() < workers {
        let w = c.workers[0].clone();
        c.workers.push(w);
    }
    c
}

fn tmp_dir(name: &str) -> StateDir {
    let p = std::env::temp_dir().join(format!("shunt-state-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    StateDir::new(p)
}

fn key(i: u32) -> FlowKey {
    let mut src = [0u8; 16];
    src[10] = 0xff;
    src[11] = 0xff;
    src[12..].copy_from_slice(&(0x0a00_0000 + i).to_be_bytes());
    FlowKey::new(src, [9; 16], 1024 + i as u16, 80, proto::TCP)
}

/// A table of 200 flows written by one "process", the file left behind.
fn write_flows(dir: &StateDir, cfg: &Config) {
    let mut t = dir.conntrack(cfg, 0, 100);
    assert!(t.is_mapped());
    for i in 0..200 {
        let k = key(i);
        t.insert(k, k.hash(), FlowValue::default(), 100).unwrap();
    }
}

fn live(t: &mut ConnTable) -> usize {
    (0..200).filter(|&i| t.lookup(&key(i), key(i).hash(), 101).is_some()).count()
}

#[test]
fn flows_survive_the_process_and_the_generation_counts_up() {
    let dir = tmp_dir("survive");
    let cfg = config(1, 4096);
    write_flows(&dir, &cfg);
    let mut t = dir.conntrack(&cfg, 0, 101);
    assert_eq!(live(&mut t), 200);
    assert_eq!(t.len(), 200);
    drop(t);
    let bytes = std::fs::read(dir.conntrack_file(0)).unwrap();
    assert_eq!(Header::decode(&bytes).unwrap().generation, 2);
    let _ = std::fs::remove_dir_all(&dir.path);
}

/// Every way a file can be unusable: the table starts empty, nothing panics.
#[test]
fn unusable_state_starts_empty() {
    let cfg = config(1, 4096);
    type Damage = fn(&mut Vec<u8>);
    let cases: [(&str, Damage); 6] = [
        ("truncated", |b| b.truncate(b.len() / 2)),
        ("header-only", |b| b.truncate(40)),
        ("wrong-version", |b| {
            let mut h = Header::decode(b).unwrap();
            h.version = VERSION + 1;
            let e = h.encode();
            b[..e.len()].copy_from_slice(&e);
        }),
        ("random", |b| {
            let mut x = 0x2545_f491_4f6c_dd1du64;
            for byte in b.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *byte = x as u8;
            }
        }),
        ("checksum", |b| b[33] ^= 1),
        ("other-boot", |b| {
            let mut h = Header::decode(b).unwrap();
            h.boot_id[0] ^= 0xff;
            let e = h.encode();
            b[..e.len()].copy_from_slice(&e);
        }),
    ];
    for (name, damage) in cases {
        let dir = tmp_dir(name);
        write_flows(&dir, &cfg);
        let path = dir.conntrack_file(0);
        let mut bytes = std::fs::read(&path).unwrap();
        damage(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        let mut t = dir.conntrack(&cfg, 0, 101);
        assert!(t.is_mapped(), "{name}: the file is reused");
        assert_eq!((live(&mut t), t.len()), (0, 0), "{name}: starts empty");
        let _ = std::fs::remove_dir_all(&dir.path);
    }
}

#[test]
fn a_changed_worker_count_or_table_size_starts_empty() {
    let dir = tmp_dir("workers");
    write_flows(&dir, &config(1, 4096));
    let mut t = dir.conntrack(&config(2, 4096), 0, 101);
    assert_eq!(live(&mut t), 0, "worker count changed");
    drop(t);
    write_flows(&dir, &config(1, 4096));
    let mut t = dir.conntrack(&config(1, 8192), 0, 101);
    assert_eq!(live(&mut t), 0, "table size changed");
    let _ = std::fs::remove_dir_all(&dir.path);
}

/// Damaged entries go one by one; the others stay.
#[test]
fn entries_that_fail_the_per_entry_rule_are_dropped() {
    let dir = tmp_dir("entries");
    let cfg = config(1, 4096);
    write_flows(&dir, &cfg);
    let path = dir.conntrack_file(0);
    let mut bytes = std::fs::read(&path).unwrap();
    let layout = MemoryLayout::new(4096, HEADER);
    let entry = (layout.end - layout.entries_at) / layout.slots;
    // Flip a byte of every occupied slot's key among the first 64 slots,
    // and write an impossible state into the next 64.
    let mut damaged = 0;
    for i in 0..128 {
        let tag = &bytes[layout.tags_at + i * 4..layout.tags_at + i * 4 + 4];
        if tag == [0; 4] {
            continue;
        }
        let at = layout.entries_at + i * entry;
        if i < 64 {
            bytes[at + 1] ^= 0x40;
        } else {
            bytes[at + core::mem::size_of::<FlowKey>() + 8] = 0xee;
        }
        damaged += 1;
    }
    assert!(damaged > 0);
    std::fs::write(&path, &bytes).unwrap();
    let mut t = dir.conntrack(&cfg, 0, 101);
    let kept = live(&mut t);
    assert!(kept >= 200 - damaged && kept < 200, "kept {kept} of 200 with {damaged} damaged");
    let _ = std::fs::remove_dir_all(&dir.path);
}

#[test]
fn a_locked_file_is_not_shared() {
    let dir = tmp_dir("locked");
    let cfg = config(1, 4096);
    let t = dir.conntrack(&cfg, 0, 100);
    assert!(t.is_mapped());
    let other = File::open(dir.conntrack_file(0)).unwrap();
    assert!(other.try_lock().is_err(), "held while the table lives");
    drop(t);
    assert!(other.try_lock().is_ok(), "released with the table");
    let _ = std::fs::remove_dir_all(&dir.path);
}
