//! The kernel side from userspace: load the embedded XDP program once per
//! interface, fill its maps from the config, attach it through a bpf_link.
//!
//! One program instance per interface because XSKMAP is indexed by
//! rx_queue_index alone: two interfaces sharing one map would collide on
//! queue 0.

pub mod maps;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray, XskMap};
use aya::programs::{ProgramError, Xdp, XdpMode as AyaMode};
use aya::{Ebpf, EbpfError};

use crate::config::{Config, XdpMode};
use crate::sys::bpf_link;
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
        source: std::io::Error,
    },
    /// The interface does not exist.
    #[error("no interface {0}")]
    NoInterface(String),
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

/// An XDP link the previous image left open across `execve` (a planned
/// restart): the next image points it at its own program instead of
/// attaching anew, so the interface never runs without a Shunt program.
#[derive(Debug)]
pub struct Inherited {
    pub ifindex: u32,
    pub mode: AyaMode,
    pub link: OwnedFd,
}

/// The environment variable that names inherited links to the next image:
/// `ifindex:mode:fd` (mode `d` driver, `s` skb), comma separated.
pub const HANDOVER_ENV: &str = "SHUNT_HANDOVER_LINKS";

impl Inherited {
    /// Reads and checks the links named in [`HANDOVER_ENV`]; one that is not
    /// an open XDP link on the interface it names is logged and skipped.
    pub fn from_env() -> Vec<Inherited> {
        let Some(v) = std::env::var_os(HANDOVER_ENV) else { return Vec::new() };
        let mut out = Vec::new();
        for item in v.to_string_lossy().split(',').filter(|s| !s.is_empty()) {
            let parsed = (|| {
                let mut f = item.split(':');
                let ifindex: u32 = f.next()?.parse().ok()?;
                let mode = match f.next()? {
                    "d" => AyaMode::Driver,
                    "s" => AyaMode::Skb,
                    _ => return None,
                };
                let fd: RawFd = f.next()?.parse().ok()?;
                Some((ifindex, mode, fd))
            })();
            let Some((ifindex, mode, fd)) = parsed else {
                tracing::warn!(item, "{HANDOVER_ENV}: not ifindex:mode:fd; ignored");
                continue;
            };
            let link = match crate::sys::bpf_link::adopt(fd) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(fd, error = %e, "inherited XDP link ignored");
                    continue;
                }
            };
            match crate::sys::bpf_link::xdp_ifindex(link.as_fd()) {
                Ok(i) if i == ifindex => out.push(Inherited { ifindex, mode, link }),
                Ok(i) => tracing::warn!(
                    fd,
                    ifindex,
                    actual = i,
                    "inherited XDP link is on another interface; closed"
                ),
                Err(e) => tracing::warn!(fd, error = %e, "inherited descriptor is not an XDP link; closed"),
            }
        }
        out
    }

    /// Leaves the link open across `execve`; returns its [`HANDOVER_ENV`] item.
    pub fn keep_across_exec(&self) -> std::io::Result<String> {
        crate::sys::bpf_link::keep_across_exec(self.link.as_fd())?;
        let mode = if self.mode == AyaMode::Driver { "d" } else { "s" };
        Ok(format!("{}:{mode}:{}", self.ifindex, self.link.as_raw_fd()))
    }
}

/// One loaded program, attached by [`Attached::attach`]. Dropping it
/// detaches the program; so does the process dying, because the attachment
/// is a bpf_link owned by an fd (see [`Attached::into_inherited`] for the
/// one way it outlives this image).
pub struct Attached {
    pub interface: String,
    pub mode: AyaMode,
    ifindex: u32,
    wanted: XdpMode,
    ebpf: Ebpf,
    /// The bpf_link, once attached.
    link: Option<OwnedFd>,
    /// The previous image's link, which [`Attached::attach`] updates.
    inherited: Option<OwnedFd>,
}

impl Attached {
    /// Loads the program for `interface` and fills the match maps; attaching
    /// waits for [`Attached::attach`], once the sockets are registered.
    /// With `inherited`, attaching takes over that link.
    pub fn load(
        interface: &str,
        mode: XdpMode,
        config: &Config,
        inherited: Option<Inherited>,
    ) -> Result<Attached, XdpError> {
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
        let ifindex =
            crate::sys::ifindex(interface).ok_or_else(|| XdpError::NoInterface(interface.to_string()))?;
        let (granted, inherited) = match inherited {
            Some(i) if i.ifindex == ifindex => (i.mode, Some(i.link)),
            _ => (AyaMode::Driver, None),
        };
        Ok(Attached {
            interface: interface.to_string(),
            mode: granted,
            ifindex,
            wanted: mode,
            ebpf,
            link: None,
            inherited,
        })
    }

    fn prog_fd(&self) -> Result<BorrowedFd<'_>, XdpError> {
        let prog: &Xdp = self
            .ebpf
            .program(PROGRAM)
            .ok_or(XdpError::MissingProgram)?
            .try_into()
            .map_err(XdpError::Program)?;
        Ok(prog.fd().map_err(XdpError::Program)?.as_fd())
    }

    /// Attaches the loaded program: replaces the program on the inherited
    /// link in one step (true), or creates a link in the configured mode
    /// (driver, with `auto` falling back to skb).
    pub fn attach(&mut self) -> Result<bool, XdpError> {
        if let Some(link) = self.inherited.take() {
            match crate::sys::bpf_link::update(link.as_fd(), self.prog_fd()?) {
                Ok(()) => {
                    self.link = Some(link);
                    return Ok(true);
                }
                // Closing the old link detaches the old program; a fresh
                // link follows at once.
                Err(e) => tracing::warn!(
                    interface = %self.interface,
                    error = %e,
                    "could not take over the inherited XDP link; attaching anew"
                ),
            }
        }
        let prog = self.prog_fd()?;
        let ifindex = self.ifindex;
        let create = |flags: u32, mode: &'static str| {
            crate::sys::bpf_link::create_xdp(prog, ifindex, flags).map_err(|source| XdpError::Attach {
                interface: self.interface.clone(),
                mode,
                source,
            })
        };
        let (link, mode) = match self.wanted {
            XdpMode::Driver => (create(bpf_link::XDP_FLAGS_DRV_MODE, "driver")?, AyaMode::Driver),
            XdpMode::Skb => (create(bpf_link::XDP_FLAGS_SKB_MODE, "skb")?, AyaMode::Skb),
            XdpMode::Auto => match create(bpf_link::XDP_FLAGS_DRV_MODE, "driver") {
                Ok(l) => (l, AyaMode::Driver),
                Err(e) => {
                    tracing::warn!(
                        interface = %self.interface,
                        error = %e,
                        "driver-mode XDP attach failed; falling back to skb (generic) mode, which is much slower"
                    );
                    (create(bpf_link::XDP_FLAGS_SKB_MODE, "skb")?, AyaMode::Skb)
                }
            },
        };
        self.link = Some(link);
        self.mode = mode;
        Ok(false)
    }

    /// What a packet of ours meets on a queue without a socket: the kernel
    /// (`drop` false, fail-open) or nothing (`drop` true, while a planned
    /// restart has no sockets bound).
    pub fn set_no_socket_drop(&mut self, drop: bool) -> Result<(), XdpError> {
        let map = self.ebpf.map_mut("shunt_no_socket").ok_or(XdpError::MissingMap("shunt_no_socket"))?;
        let mut arr: Array<&mut MapData, u32> =
            Array::try_from(map).map_err(map_err("shunt_no_socket", "opening"))?;
        let v = if drop { maps::NO_SOCKET_DROP } else { maps::NO_SOCKET_PASS };
        arr.set(0, v, 0).map_err(map_err("shunt_no_socket", "setting"))
    }

    /// The link, for the next image to take over; None when never attached.
    /// The program and its maps live on behind the link once this image's
    /// descriptors close.
    pub fn into_inherited(mut self) -> Option<Inherited> {
        let link = self.link.take()?;
        Some(Inherited { ifindex: self.ifindex, mode: self.mode, link })
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
