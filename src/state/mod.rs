//! State that outlives the process, so flows survive a restart, an upgrade
//! and a crash (`shunt run --state-dir`, default off; the systemd unit
//! sets `/run/shunt/state`).
//!
//! Each worker's conntrack table (which also holds the SNAT bindings and
//! NAT64 sessions) lives in a file-backed `MAP_SHARED` mapping on tmpfs,
//! `conntrack-w<N>.state`: a 4 KiB header, then the table's tag lines and
//! entries exactly as the fast path uses them. Nothing is copied or
//! written back: the kernel keeps the pages when the process dies, even
//! by `kill -9`. A worker holds an exclusive `flock` on its file while it
//! runs, so two processes never share a table.
//!
//! The header is checked before a byte of the table is trusted: magic,
//! version, entry layout fingerprint, slot count, worker index and count,
//! boot id (ticks are CLOCK_MONOTONIC seconds), a checksum of the header,
//! and the file length. Any mismatch: one log line naming it, and the
//! worker starts empty. Entries that pass are checked one by one
//! (`ConnTable::in_mapping`), then against the new config ([`restore`]):
//! a flow whose service, backend or SNAT pool is gone is dropped; a
//! backend with a new weight keeps its flows. SNAT ports of the surviving
//! flows are taken out of the free lists, so none is handed out twice.
//!
//! Service and backend ids (stored in entries) are kept in `ids.json`, and
//! the snapshot generation with them, so ids mean the same after a restart.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::pipeline::conntrack::{ConnTable, EntryFlags, MemoryLayout, Tick, LAYOUT};
use crate::pipeline::flow::Xlat;
use crate::pipeline::rewrite::nat::to4_header_sum;
use crate::pipeline::services::{IdRegistry, Services};
use crate::pipeline::slots::Region;
use crate::pipeline::snat::{self, Client};
use crate::pipeline::Ctx;

pub mod gap;

/// First bytes of a conntrack state file.
pub const MAGIC: [u8; 8] = *b"SHUNTCT\0";
/// Bump when the meaning of stored entries changes without their layout
/// changing (a new state, a new flag bit, another hash).
pub const VERSION: u32 = 1;
/// Bytes before the table (a page, so the table is page aligned).
pub const HEADER: usize = 4096;
/// Bytes of the header that carry fields (the rest is zero).
const HEADER_FIELDS: usize = 72;
/// How long a starting worker waits for the previous process to let go
/// of its file (a planned restart overlaps the old process's exit).
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// The directory holding the state files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    pub path: PathBuf,
}

/// The parsed header of a state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub worker: u32,
    pub workers: u32,
    pub layout: u64,
    pub slots: u64,
    pub generation: u64,
    pub boot_id: [u8; 16],
}

/// Why a state file's contents are not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("shorter than its header ({0} bytes)")]
    Truncated(usize),
    #[error("not a Shunt state file (bad magic)")]
    Magic,
    #[error("header checksum mismatch (corrupt)")]
    Checksum,
    #[error("state version {found}, this build reads version {VERSION}")]
    Version { found: u32 },
    #[error("entry layout {found:#x} differs from this build's {LAYOUT:#x}")]
    Layout { found: u64 },
    #[error("written before the last reboot")]
    Boot,
    #[error("written for worker {found} of {found_of}, this is worker {worker} of {workers}: the worker count changed, SNAT port ownership with it")]
    Workers { found: u32, found_of: u32, worker: u32, workers: u32 },
    #[error("table of {found} slots, the config asks for {want} (conntrack.entries_per_worker changed)")]
    Slots { found: u64, want: u64 },
    #[error("file is {found} bytes, a table of this size needs {want}")]
    Length { found: u64, want: u64 },
}

/// Why a worker's state file cannot back its conntrack table (the worker
/// then runs on a heap table: flows do not survive a restart).
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// Creating the directory, or opening, reading, sizing or mapping the file.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is locked by another running Shunt", path.display())]
    Locked { path: PathBuf },
    /// The mapping does not fit a table of the configured size.
    #[error("{}: state file layout", path.display())]
    Layout { path: PathBuf },
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

impl Header {
    /// The header bytes, checksum included.
    pub fn encode(&self) -> [u8; HEADER_FIELDS] {
        let mut b = [0u8; HEADER_FIELDS];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.worker.to_le_bytes());
        b[16..20].copy_from_slice(&self.workers.to_le_bytes());
        b[24..32].copy_from_slice(&self.layout.to_le_bytes());
        b[32..40].copy_from_slice(&self.slots.to_le_bytes());
        b[40..48].copy_from_slice(&self.generation.to_le_bytes());
        b[48..64].copy_from_slice(&self.boot_id);
        let sum = fnv(&b[..64]);
        b[64..72].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Parses and checks magic, checksum and version (anything else is
    /// compared by [`check`]). Never panics, whatever the bytes.
    pub fn decode(b: &[u8]) -> Result<Header, Refused> {
        let Some(b) = b.get(..HEADER_FIELDS) else { return Err(Refused::Truncated(b.len())) };
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(x)
        };
        if b[0..8] != MAGIC {
            return Err(Refused::Magic);
        }
        if u64_at(64) != fnv(&b[..64]) {
            return Err(Refused::Checksum);
        }
        let version = u32_at(8);
        if version != VERSION {
            return Err(Refused::Version { found: version });
        }
        let mut boot_id = [0u8; 16];
        boot_id.copy_from_slice(&b[48..64]);
        Ok(Header {
            version,
            worker: u32_at(12),
            workers: u32_at(16),
            layout: u64_at(24),
            slots: u64_at(32),
            generation: u64_at(40),
            boot_id,
        })
    }
}

/// Checks a decoded header against what this process wants.
pub fn check(h: &Header, want: &Header, file_len: u64) -> Result<(), Refused> {
    if h.layout != want.layout {
        return Err(Refused::Layout { found: h.layout });
    }
    if h.boot_id != want.boot_id {
        return Err(Refused::Boot);
    }
    if (h.worker, h.workers) != (want.worker, want.workers) {
        return Err(Refused::Workers {
            found: h.worker,
            found_of: h.workers,
            worker: want.worker,
            workers: want.workers,
        });
    }
    if h.slots != want.slots {
        return Err(Refused::Slots { found: h.slots, want: want.slots });
    }
    let need = MemoryLayout::new(want.slots as usize, HEADER).end as u64;
    if file_len != need {
        return Err(Refused::Length { found: file_len, want: need });
    }
    Ok(())
}

/// This boot's id (all zero where the kernel does not say).
pub fn boot_id() -> [u8; 16] {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let hex: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    let mut id = [0u8; 16];
    for (i, pair) in hex.chunks(2).take(16).enumerate() {
        let s = std::str::from_utf8(pair).unwrap_or("0");
        id[i] = u8::from_str_radix(s, 16).unwrap_or(0);
    }
    id
}

/// The ids file: stable service/backend ids and the snapshot generation.
#[derive(Serialize, Deserialize)]
struct IdsFile {
    version: u32,
    generation: u64,
    services: Vec<(String, u16)>,
    backends: Vec<(String, IpAddr, u16, u16)>,
}

impl StateDir {
    pub fn new(path: impl Into<PathBuf>) -> StateDir {
        StateDir { path: path.into() }
    }

    pub fn conntrack_file(&self, worker: usize) -> PathBuf {
        self.path.join(format!("conntrack-w{worker}.state"))
    }

    fn ids_file(&self) -> PathBuf {
        self.path.join("ids.json")
    }

    /// The ids and generation the previous process left; fresh ones (and
    /// one log line) when there are none or they are unreadable.
    pub fn load_ids(&self) -> (IdRegistry, u64) {
        let path = self.ids_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (IdRegistry::default(), 0),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "state: ids unreadable; starting with fresh ids");
                return (IdRegistry::default(), 0);
            }
        };
        let parsed = serde_json::from_str::<IdsFile>(&text)
            .ok()
            .filter(|f| f.version == VERSION)
            .and_then(|f| Some((IdRegistry::import(f.services, f.backends)?, f.generation)));
        match parsed {
            Some(x) => x,
            None => {
                tracing::warn!(path = %path.display(), "state: ids file invalid; starting with fresh ids");
                (IdRegistry::default(), 0)
            }
        }
    }

    /// Writes the ids and generation (temporary file, then rename: a
    /// crash leaves the old file or the new one).
    pub fn save_ids(&self, ids: &IdRegistry, generation: u64) {
        let (services, backends) = ids.export();
        let f = IdsFile { version: VERSION, generation, services, backends };
        let path = self.ids_file();
        let tmp = self.path.join("ids.json.tmp");
        let res = std::fs::create_dir_all(&self.path)
            .and_then(|()| std::fs::write(&tmp, serde_json::to_vec(&f).unwrap_or_default()))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = res {
            tracing::warn!(path = %path.display(), error = %e, "state: could not save ids");
        }
    }

    /// Worker `worker`'s conntrack table over its state file, keeping what
    /// the previous process left when the header allows it. Falls back to
    /// a heap table (not persistent; one warning) when the file cannot be
    /// opened, locked or mapped.
    pub fn conntrack(&self, config: &Config, worker: usize, now: Tick) -> ConnTable {
        match self.open_conntrack(config, worker, now) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(worker, error = %e, "state: conntrack not persistent (flows will not survive a restart)");
                crate::pipeline::build::conntrack(config)
            }
        }
    }

    fn open_conntrack(&self, config: &Config, worker: usize, now: Tick) -> Result<ConnTable, StateFileError> {
        let io = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| StateFileError::Io { what, path, source }
        };
        std::fs::create_dir_all(&self.path).map_err(io("creating", &self.path))?;
        let path = self.conntrack_file(worker);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("opening", &path))?;
        lock(&file, &path)?;
        let want = Header {
            version: VERSION,
            worker: worker as u32,
            workers: config.workers.len() as u32,
            layout: LAYOUT,
            slots: crate::pipeline::conntrack::slots_for(config.conntrack.entries_per_worker as usize) as u64,
            generation: 0,
            boot_id: boot_id(),
        };
        let len = file.metadata().map_err(io("reading", &path))?.len();
        let mut head = Vec::with_capacity(HEADER_FIELDS);
        (&mut file).take(HEADER_FIELDS as u64).read_to_end(&mut head).map_err(io("reading", &path))?;
        let found = if len == 0 {
            None
        } else {
            match Header::decode(&head).and_then(|h| check(&h, &want, len).map(|()| h)) {
                Ok(h) => Some(h),
                Err(why) => {
                    tracing::warn!(path = %path.display(), "state: {why}; starting with an empty table");
                    None
                }
            }
        };
        let layout = MemoryLayout::new(want.slots as usize, HEADER);
        file.set_len(layout.end as u64).map_err(io("sizing", &path))?;
        // SAFETY: a shared mapping of a file we hold an exclusive flock on;
        // no other Shunt process maps it while we hold the lock (a truncation by
        // another program would fault, as for any mapped file).
        let mut map = unsafe { memmap2::MmapOptions::new().len(layout.end).map_mut(&file) }
            .map_err(io("mapping", &path))?;
        // Huge pages for the table, as on the heap (`Slots::heap`); on tmpfs
        // only where `shmem_enabled` allows it, else the advice is ignored.
        let _ = map.advise(memmap2::Advice::HugePage);
        let generation = found.map_or(1, |h| h.generation + 1);
        map[..HEADER_FIELDS].copy_from_slice(&Header { generation, ..want }.encode());
        let (mut table, adopted) = ConnTable::in_mapping(
            Region::new(map, Some(file)),
            layout,
            found.is_some(),
            now,
            config.conntrack.timeouts,
            config.conntrack.full,
        )
        .ok_or_else(|| StateFileError::Layout { path: path.clone() })?;
        crate::pipeline::build::configure_conntrack(&mut table, config);
        if found.is_some() {
            tracing::info!(
                worker,
                path = %path.display(),
                generation,
                entries = adopted.kept,
                invalid = adopted.invalid,
                "state: conntrack restored"
            );
        }
        Ok(table)
    }
}

/// Takes the file's exclusive lock, waiting a little for a process on its
/// way out.
fn lock(file: &File, path: &Path) -> Result<(), StateFileError> {
    use std::os::fd::AsRawFd;
    let until = Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: flock on a descriptor this `File` owns for the call; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) if Instant::now() < until => std::thread::sleep(Duration::from_millis(2)),
            Some(libc::EWOULDBLOCK) => return Err(StateFileError::Locked { path: path.to_path_buf() }),
            Some(libc::EINTR) => {}
            _ => return Err(StateFileError::Io { what: "locking", path: path.to_path_buf(), source: e }),
        }
    }
}

/// What [`restore`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Restored {
    pub kept: usize,
    /// Entries whose service, backend or SNAT pool the config no longer has.
    pub dropped: usize,
    /// SNAT (and NAT64) ports taken back out of the free lists.
    pub ports: usize,
}

/// Checks a restored table against the config in force (`ctx.services`)
/// and takes the ports of surviving flows out of the SNAT pools. Call once
/// the context holds its first snapshot, before any packet.
pub fn restore(ctx: &mut Ctx) -> Restored {
    if ctx.conntrack.is_empty() {
        return Restored::default();
    }
    let services = ctx.services.clone();
    let (worker, workers) = (ctx.worker, ctx.workers);
    let dropped = ctx.conntrack.retain(|e| {
        // A flow translated to IPv4 keeps its header's address sum; a file
        // written before entries kept it holds zero there.
        if e.flags.xlat() == Xlat::To4 {
            e.sums.l3 = to4_header_sum(&e.nat);
        }
        still_valid(e, &services, worker, workers)
    });
    let mut taken = std::collections::HashSet::new();
    let mut replies = Vec::new();
    let mut bound = Vec::new();
    ctx.conntrack.for_each_live(ctx.now, |e| {
        if e.flags.contains(EntryFlags::REPLY) {
            let hairpin = e.flags.contains(EntryFlags::HAIRPIN);
            if let (true, Some(n)) = (hairpin, services.xlat.nat64.as_ref()) {
                for (addr, port, client) in
                    crate::pipeline::lb::hairpin_pairs(e, &n.prefix).into_iter().flatten()
                {
                    taken.insert((addr, port));
                    bound.push((addr, port, client));
                }
            } else if e.flags.contains(EntryFlags::SNAT) {
                taken.insert((e.key().dst, e.key().dport));
                // A NAT64 session's reply entry: (server -> pool pair), whose
                // binding leads back to the client (address, port).
                if e.flags.contains(EntryFlags::TO6) && e.service.is_none() {
                    let proto = match e.key().proto {
                        crate::pipeline::flow::proto::ICMP => crate::pipeline::flow::proto::ICMPV6,
                        p => p,
                    };
                    let client = Client { addr: e.nat.dst, port: e.nat.dport, proto };
                    bound.push((e.key().dst, e.key().dport, client));
                }
            }
            replies.push((e.service, e.backend, e.state));
        }
    });
    // The binding table is not stored: every binding is some session's, so
    // the restored sessions rebuild it, each taking its reference.
    if let Some(pool) = services.xlat.nat64.as_ref().and_then(|n| ctx.snat.get_mut(usize::from(n.pool))) {
        for (addr, port, client) in &bound {
            pool.rebind(addr, *port, client);
        }
    }
    // A free list holds every pair of the worker's share (a million for a
    // /28): a bitmap of the ports in use skips the hash lookup for almost
    // all of them, and a pool no surviving flow uses is not walked at all.
    let mut in_use = vec![0u64; 1024];
    for &(_, port) in &taken {
        in_use[usize::from(port / 64)] |= 1 << (port % 64);
    }
    let ports = ctx
        .snat
        .iter_mut()
        .filter(|p| taken.iter().any(|(a, _)| p.contains(a)))
        .map(|p| {
            p.reserve(|a, port| {
                in_use[usize::from(port / 64)] >> (port % 64) & 1 == 1 && taken.contains(&(*a, port))
            })
        })
        .sum();
    for (service, backend, state) in replies {
        ctx.stats.flow_restored(service, backend, crate::pipeline::lb::is_closing(state));
    }
    Restored { kept: ctx.conntrack.len(), dropped, ports }
}

/// Whether a restored entry still fits `services`: its service and backend
/// exist (by stable id; a new weight does not matter), its backend's flows
/// are not being expired, and its SNAT address and port belong to a pool of
/// this worker.
fn still_valid(
    e: &crate::pipeline::conntrack::Entry,
    services: &Services,
    worker: u16,
    workers: u16,
) -> bool {
    if let Some(s) = e.service {
        let Some(svc) = services.list.iter().find(|x| usize::from(x.id) == s.index()) else { return false };
        if let Some(b) = e.backend {
            if !svc.backends.iter().any(|x| usize::from(x.id) == b.index()) || services.is_expired(e.backend)
            {
                return false;
            }
        }
    } else if e.backend.is_some() {
        return false;
    }
    if e.flags.contains(EntryFlags::SNAT) {
        let (addr, port) = if e.flags.contains(EntryFlags::REPLY) {
            (e.key().dst, e.key().dport)
        } else {
            (e.nat.src, e.nat.sport)
        };
        // A hairpinned session's pool address is under the NAT64 prefix.
        let addr = if e.flags.contains(EntryFlags::HAIRPIN) {
            match services.xlat.nat64.as_ref().and_then(|n| n.prefix.extract(&addr)) {
                Some(a) => crate::wire::addr::mapped(a),
                None => return false,
            }
        } else {
            addr
        };
        if !services.in_pool(&addr) || snat::owner(port, workers) != worker {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests;
