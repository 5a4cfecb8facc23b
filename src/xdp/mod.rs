//! The kernel side from userspace: load the embedded XDP program once per
//! interface, fill its maps from the config, attach it through a bpf_link.
//!
//! One program instance per interface because XSKMAP is indexed by
//! rx_queue_index alone: two interfaces sharing one map would collide on
//! queue 0.

pub mod maps;

use std::os::fd::RawFd;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, MapData, MapError, PerCpuArray, XskMap};
use aya::programs::{ProgramError, Xdp, XdpMode as AyaMode};
use aya::{Ebpf, EbpfError};

use crate::config::{Config, XdpMode};
use maps::{LpmAddr, LpmValue, MatchKey, MatchValue, RouteKeyData, XdpCounter};

/// The compiled `xdp-redirect/xdp_redirect.c`, embedded at build time.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_redirect.o"));

const PROGRAM: &str = "shunt_redirect";

/// Why loading, attaching or updating the XDP program failed.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The kernel refused the embedded object (BPF support, memlock, BTF).
    #[error("loading the embedded XDP object into the kernel")]
    Load(#[source] Box<EbpfError>),
    /// The embedded object lacks a map Shunt needs (a build mismatch).
    #[error("map {0} missing from the XDP object")]
    MissingMap(&'static str),
    /// The embedded object lacks the program (a build mismatch).
    #[error("program {PROGRAM} missing from the XDP object")]
    MissingProgram,
    /// A map could not be opened, read or changed.
    #[error("{what} in map {map}")]
    Map {
        map: &'static str,
        what: String,
        #[source]
        source: MapError,
    },
    /// The object's program is not an XDP program.
    #[error("program {PROGRAM}")]
    Program(#[source] ProgramError),
    /// The verifier rejected the program.
    #[error("the verifier rejected the XDP program")]
    Verifier(#[source] ProgramError),
    /// Attaching to the interface failed.
    #[error("attaching XDP in {mode} mode to {interface}")]
    Attach {
        interface: String,
        mode: &'static str,
        #[source]
        source: ProgramError,
    },
    /// An AF_XDP queue beyond the XSKMAP's slots.
    #[error("queue {queue} exceeds the XSKMAP size {size}")]
    QueueOutOfRange { queue: u32, size: u32 },
}

fn map_err(map: &'static str, what: impl Into<String>) -> impl FnOnce(MapError) -> XdpError {
    let what = what.into();
    move |source| XdpError::Map { map, what, source }
}

/// What `shunt_match` holds for `config`: its routes, and for each service
/// the key that redirects later fragments to its VIP and protocol (they
/// carry no port to match on).
fn match_map(config: &Config) -> Vec<(MatchKey, MatchValue)> {
    let routes = config.match_entries().into_iter().map(|r| {
        (MatchKey::new(r.dst.net, r.protocol, r.port), MatchValue { pipeline: r.pipeline as u32, flags: 0 })
    });
    let fragments = config.services.iter().map(|s| {
        (MatchKey::fragments(s.vip, s.protocol), MatchValue { pipeline: s.pipeline as u32, flags: 0 })
    });
    let mut v: Vec<(MatchKey, MatchValue)> = routes.chain(fragments).collect();
    v.dedup_by(|a, b| a.0 == b.0);
    v
}

/// (prefixlen, key data, pipeline) of every prefix route.
fn route_prefix_entries(config: &Config) -> Vec<(u32, RouteKeyData, u32)> {
    config
        .prefix_routes()
        .map(|r| {
            let (len, data) = maps::route_key(r.dst.net, r.dst.len, r.protocol, r.port);
            (len, data, r.pipeline as u32)
        })
        .collect()
}

/// One loaded and attached program. Dropping it detaches the program; so does
/// the process dying, because the attachment is a bpf_link owned by an fd.
pub struct Attached {
    pub interface: String,
    pub mode: AyaMode,
    ebpf: Ebpf,
}

impl Attached {
    /// Loads the program for `interface`, fills the match map, attaches.
    pub fn load(interface: &str, mode: XdpMode, config: &Config) -> Result<Attached, XdpError> {
        let mut ebpf = Ebpf::load(XDP_OBJECT).map_err(|e| XdpError::Load(Box::new(e)))?;
        {
            let map = ebpf.map_mut("shunt_match").ok_or(XdpError::MissingMap("shunt_match"))?;
            let mut matches: HashMap<&mut MapData, MatchKey, MatchValue> =
                HashMap::try_from(map).map_err(map_err("shunt_match", "opening"))?;
            for (key, value) in match_map(config) {
                matches
                    .insert(key, value, 0)
                    .map_err(map_err("shunt_match", format!("adding route {:?}", key.addr)))?;
            }
        }
        {
            let map = ebpf.map_mut("shunt_route_prefix").ok_or(XdpError::MissingMap("shunt_route_prefix"))?;
            let mut lpm: LpmTrie<&mut MapData, RouteKeyData, LpmValue> =
                LpmTrie::try_from(map).map_err(map_err("shunt_route_prefix", "opening"))?;
            for (len, data, pipeline) in route_prefix_entries(config) {
                lpm.insert(&Key::new(len, data), MatchValue { pipeline, flags: 0 }, 0)
                    .map_err(map_err("shunt_route_prefix", "adding a prefix route"))?;
            }
        }
        {
            let map = ebpf.map_mut("shunt_prefix").ok_or(XdpError::MissingMap("shunt_prefix"))?;
            let mut lpm: LpmTrie<&mut MapData, LpmAddr, LpmValue> =
                LpmTrie::try_from(map).map_err(map_err("shunt_prefix", "opening"))?;
            for (p, pipeline) in config.owned_prefixes() {
                let (len, addr) = maps::lpm_key(p.net, p.len);
                lpm.insert(&Key::new(len, addr), MatchValue { pipeline: pipeline as u32, flags: 0 }, 0)
                    .map_err(map_err("shunt_prefix", format!("adding prefix {p}")))?;
            }
        }

        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or(XdpError::MissingProgram)?
            .try_into()
            .map_err(XdpError::Program)?;
        prog.load().map_err(XdpError::Verifier)?;
        let attach_err = |mode: &'static str| {
            move |source| XdpError::Attach { interface: interface.to_string(), mode, source }
        };
        let mode = match mode {
            XdpMode::Driver => {
                prog.attach(interface, AyaMode::Driver).map_err(attach_err("driver"))?;
                AyaMode::Driver
            }
            XdpMode::Skb => {
                prog.attach(interface, AyaMode::Skb).map_err(attach_err("skb"))?;
                AyaMode::Skb
            }
            XdpMode::Auto => match prog.attach(interface, AyaMode::Driver) {
                Ok(_) => AyaMode::Driver,
                Err(e) => {
                    tracing::warn!(
                        interface,
                        error = %e,
                        "driver-mode XDP attach failed; falling back to skb (generic) mode, which is much slower"
                    );
                    prog.attach(interface, AyaMode::Skb).map_err(attach_err("skb"))?;
                    AyaMode::Skb
                }
            },
        };
        Ok(Attached { interface: interface.to_string(), mode, ebpf })
    }

    /// Brings the match and prefix maps in line with `config`: adds what is
    /// missing, and with `prune` removes what the config no longer has.
    pub fn sync_maps(&mut self, config: &Config, prune: bool) -> Result<(), XdpError> {
        let want = match_map(config);
        let map = self.ebpf.map_mut("shunt_match").ok_or(XdpError::MissingMap("shunt_match"))?;
        let mut matches: HashMap<&mut MapData, MatchKey, MatchValue> =
            HashMap::try_from(map).map_err(map_err("shunt_match", "opening"))?;
        for (k, v) in &want {
            matches.insert(*k, *v, 0).map_err(map_err("shunt_match", "updating"))?;
        }
        if prune {
            let stale: Vec<MatchKey> =
                matches.keys().filter_map(|k| k.ok()).filter(|k| !want.iter().any(|(w, _)| w == k)).collect();
            for k in stale {
                matches.remove(&k).map_err(map_err("shunt_match", "pruning"))?;
            }
        }
        let want = route_prefix_entries(config);
        let map =
            self.ebpf.map_mut("shunt_route_prefix").ok_or(XdpError::MissingMap("shunt_route_prefix"))?;
        let mut lpm: LpmTrie<&mut MapData, RouteKeyData, LpmValue> =
            LpmTrie::try_from(map).map_err(map_err("shunt_route_prefix", "opening"))?;
        for (len, data, pipeline) in &want {
            lpm.insert(&Key::new(*len, *data), MatchValue { pipeline: *pipeline, flags: 0 }, 0)
                .map_err(map_err("shunt_route_prefix", "updating"))?;
        }
        if prune {
            let stale: Vec<Key<RouteKeyData>> = lpm
                .keys()
                .filter_map(|k| k.ok())
                .filter(|k| !want.iter().any(|(l, d, _)| *l == k.prefix_len() && *d == k.data()))
                .collect();
            for k in stale {
                lpm.remove(&k).map_err(map_err("shunt_route_prefix", "pruning"))?;
            }
        }
        let want: Vec<(u32, LpmAddr, u32)> = config
            .owned_prefixes()
            .iter()
            .map(|(p, pipe)| {
                let (len, addr) = maps::lpm_key(p.net, p.len);
                (len, addr, *pipe as u32)
            })
            .collect();
        let map = self.ebpf.map_mut("shunt_prefix").ok_or(XdpError::MissingMap("shunt_prefix"))?;
        let mut lpm: LpmTrie<&mut MapData, LpmAddr, LpmValue> =
            LpmTrie::try_from(map).map_err(map_err("shunt_prefix", "opening"))?;
        for (len, addr, pipeline) in &want {
            lpm.insert(&Key::new(*len, *addr), MatchValue { pipeline: *pipeline, flags: 0 }, 0)
                .map_err(map_err("shunt_prefix", "updating"))?;
        }
        if prune {
            let stale: Vec<Key<LpmAddr>> = lpm
                .keys()
                .filter_map(|k| k.ok())
                .filter(|k| !want.iter().any(|(l, a, _)| *l == k.prefix_len() && *a == k.data()))
                .collect();
            for k in stale {
                lpm.remove(&k).map_err(map_err("shunt_prefix", "pruning"))?;
            }
        }
        Ok(())
    }

    /// Points XSKMAP[queue] at an AF_XDP socket.
    pub fn register_socket(&mut self, queue: u32, fd: RawFd) -> Result<(), XdpError> {
        let map = self.ebpf.map_mut("shunt_xsks").ok_or(XdpError::MissingMap("shunt_xsks"))?;
        let mut xsks: XskMap<&mut MapData> =
            XskMap::try_from(map).map_err(map_err("shunt_xsks", "opening"))?;
        if queue >= xsks.len() {
            return Err(XdpError::QueueOutOfRange { queue, size: xsks.len() });
        }
        xsks.set(queue, fd, 0).map_err(map_err(
            "shunt_xsks",
            format!("registering the AF_XDP socket of {} queue {queue}", self.interface),
        ))?;
        Ok(())
    }

    /// Sums of the per-CPU counters, indexed by [`XdpCounter`].
    pub fn counters(&self) -> Result<[u64; 4], XdpError> {
        let map = self.ebpf.map("shunt_counters").ok_or(XdpError::MissingMap("shunt_counters"))?;
        let arr: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(map_err("shunt_counters", "opening"))?;
        let mut out = [0u64; 4];
        for c in XdpCounter::ALL {
            out[c as usize] =
                arr.get(&(c as u32), 0).map_err(map_err("shunt_counters", "reading"))?.iter().sum();
        }
        Ok(out)
    }
}
