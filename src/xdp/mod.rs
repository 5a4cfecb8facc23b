//! The kernel side from userspace: load the embedded XDP program once per
//! interface, fill its maps from the config, attach it through a bpf_link.
//!
//! One program instance per interface because XSKMAP is indexed by
//! rx_queue_index alone: two interfaces sharing one map would collide on
//! queue 0.

pub mod maps;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, XskMap};
use aya::programs::{ProgramError, Xdp, XdpMode as AyaMode};
use aya::{Ebpf, EbpfError};

use crate::config::{Config, XdpMode};
use crate::sys::bpf_link;
use maps::{LpmAddr, LpmValue, MatchKey, MatchValue, RouteKeyData, XdpCounter};

/// The compiled `xdp-redirect/xdp_redirect.c`, embedded at build time.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_redirect.o"));

const PROGRAM: &str = "shunt_redirect";

/// The object's maps, in the order a handover names their descriptors.
const MAPS: [&str; 6] =
    ["shunt_xsks", "shunt_match", "shunt_prefix", "shunt_route_prefix", "shunt_counters", "shunt_no_socket"];

/// FNV-1a of the embedded object: two builds whose XDP programs and maps
/// are the same byte for byte share it, and a planned restart between them
/// keeps the running program (no load, no verifier) and adopts its maps.
pub fn object_fingerprint() -> u64 {
    static FP: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *FP.get_or_init(|| {
        XDP_OBJECT
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    })
}

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
    /// A map handed over by the previous process cannot be used.
    #[error("{map}: {source}")]
    Inherited {
        map: &'static str,
        #[source]
        source: MapError,
    },
    /// A descriptor handed over in a map's place is another map.
    #[error("{map}: the descriptor is map `{found}`")]
    NotOurMap { map: &'static str, found: String },
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

/// (prefixlen, key data, pipeline) of every prefix the config owns.
fn owned_prefix_entries(config: &Config) -> Vec<(u32, LpmAddr, u32)> {
    config
        .owned_prefixes()
        .iter()
        .map(|(p, pipe)| {
            let (len, addr) = maps::lpm_key(p.net, p.len);
            (len, addr, *pipe as u32)
        })
        .collect()
}

/// An XDP link the previous image left open across `execve` (a planned
/// restart): the next image points it at its own program instead of
/// attaching anew, so the interface never runs without a Shunt program.
/// With `maps` (the program's maps, handed over too) and an object of the
/// same fingerprint, the next image keeps the running program and adopts
/// its maps instead: no load and no verifier inside the restart's gap.
#[derive(Debug)]
pub struct Inherited {
    pub ifindex: u32,
    pub mode: AyaMode,
    pub link: OwnedFd,
    pub maps: Option<HandedMaps>,
}

/// The maps of the program behind an inherited link, in `MAPS` order.
#[derive(Debug)]
pub struct HandedMaps {
    /// [`object_fingerprint`] of the image that loaded the program.
    pub fingerprint: u64,
    pub fds: Vec<OwnedFd>,
}

/// The environment variable that names inherited links to the next image:
/// `ifindex:mode:fd` (mode `d` driver, `s` skb), comma separated.
pub const HANDOVER_ENV: &str = "SHUNT_HANDOVER_LINKS";

/// The environment variable that names the maps behind the inherited
/// links: `ifindex:fingerprint:fd/fd/…` (hex fingerprint, `MAPS` order),
/// comma separated.
pub const HANDOVER_MAPS_ENV: &str = "SHUNT_HANDOVER_MAPS";

/// `ifindex:fingerprint:fd/fd/…` parsed; None when malformed.
fn parse_maps_item(item: &str) -> Option<(u32, u64, Vec<RawFd>)> {
    let mut f = item.split(':');
    let ifindex = f.next()?.parse().ok()?;
    let fingerprint = u64::from_str_radix(f.next()?, 16).ok()?;
    let fds: Option<Vec<RawFd>> = f.next()?.split('/').map(|x| x.parse().ok()).collect();
    let fds = fds.filter(|v| v.len() == MAPS.len())?;
    f.next().is_none().then_some((ifindex, fingerprint, fds))
}

impl Inherited {
    /// Reads and checks the links named in [`HANDOVER_ENV`] and the maps in
    /// [`HANDOVER_MAPS_ENV`]; a link that is not an open XDP link on the
    /// interface it names is logged and skipped (maps that do not check out
    /// are closed, and the link then gets a newly loaded program).
    pub fn from_env() -> Vec<Inherited> {
        let Some(v) = std::env::var_os(HANDOVER_ENV) else { return Vec::new() };
        let mut maps: Vec<(u32, u64, Vec<RawFd>)> = Vec::new();
        if let Some(m) = std::env::var_os(HANDOVER_MAPS_ENV) {
            for item in m.to_string_lossy().split(',').filter(|s| !s.is_empty()) {
                match parse_maps_item(item) {
                    Some(x) => maps.push(x),
                    None => {
                        tracing::warn!(item, "{HANDOVER_MAPS_ENV}: not ifindex:fingerprint:fd/…; ignored")
                    }
                }
            }
        }
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
            let handed = maps.iter().position(|m| m.0 == ifindex).map(|i| maps.swap_remove(i)).and_then(
                |(_, fingerprint, fds)| {
                    let fds: std::io::Result<Vec<OwnedFd>> =
                        fds.into_iter().map(crate::sys::bpf_link::adopt).collect();
                    match fds {
                        Ok(fds) => Some(HandedMaps { fingerprint, fds }),
                        Err(e) => {
                            tracing::warn!(ifindex, error = %e, "inherited XDP maps ignored");
                            None
                        }
                    }
                },
            );
            match crate::sys::bpf_link::xdp_ifindex(link.as_fd()) {
                Ok(i) if i == ifindex => out.push(Inherited { ifindex, mode, link, maps: handed }),
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

    /// Leaves the link (and its maps) open across `execve`; returns its
    /// [`HANDOVER_ENV`] item and, with maps, its [`HANDOVER_MAPS_ENV`] item.
    pub fn keep_across_exec(&self) -> std::io::Result<(String, Option<String>)> {
        crate::sys::bpf_link::keep_across_exec(self.link.as_fd())?;
        let mode = if self.mode == AyaMode::Driver { "d" } else { "s" };
        let link = format!("{}:{mode}:{}", self.ifindex, self.link.as_raw_fd());
        let Some(m) = &self.maps else { return Ok((link, None)) };
        let mut fds = Vec::with_capacity(m.fds.len());
        for fd in &m.fds {
            crate::sys::bpf_link::keep_across_exec(fd.as_fd())?;
            fds.push(fd.as_raw_fd().to_string());
        }
        Ok((link, Some(format!("{}:{:x}:{}", self.ifindex, m.fingerprint, fds.join("/")))))
    }
}

/// How [`Attached::attach`] put the program in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// A new bpf_link.
    New,
    /// The inherited link now runs this image's program (`BPF_LINK_UPDATE`).
    Replaced,
    /// The inherited link keeps running the same program, whose maps this
    /// image adopted.
    Kept,
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
    /// The loaded program; None when the inherited link's program is kept.
    ebpf: Option<Ebpf>,
    /// The program's maps by name ([`MAPS`]).
    maps: Vec<(&'static str, Map)>,
    /// The bpf_link, once attached (at once when the program is kept).
    link: Option<OwnedFd>,
    /// The previous image's link, which [`Attached::attach`] updates.
    inherited: Option<OwnedFd>,
}

/// The map data behind the map kinds the object has.
fn map_data(map: &Map) -> Option<&MapData> {
    match map {
        Map::XskMap(d) | Map::HashMap(d) | Map::LpmTrie(d) | Map::PerCpuArray(d) | Map::Array(d) => Some(d),
        _ => None,
    }
}

/// The handed-over maps as this build's [`MAPS`], each checked by name and
/// kind.
fn adopt_maps(fds: Vec<OwnedFd>) -> Result<Vec<(&'static str, Map)>, XdpError> {
    let mut maps = Vec::with_capacity(MAPS.len());
    for (name, fd) in MAPS.iter().zip(fds) {
        let unusable = |source| XdpError::Inherited { map: name, source };
        let data = MapData::from_fd(fd).map_err(unusable)?;
        let found = data.info().ok().and_then(|i| i.name_as_str().map(str::to_string)).unwrap_or_default();
        // The kernel keeps the first 15 bytes of a map's name.
        if found.is_empty() || !name.starts_with(&found) {
            return Err(XdpError::NotOurMap { map: name, found });
        }
        let map = Map::from_map_data(data).map_err(unusable)?;
        maps.push((*name, map));
    }
    Ok(maps)
}

impl Attached {
    /// Loads the program for `interface` and fills the match maps; attaching
    /// waits for [`Attached::attach`], once the sockets are registered.
    /// With `inherited`, attaching takes over that link; when it came with
    /// the maps of a program built from the same object, that program is
    /// kept: its maps are adopted and brought in line with `config`.
    pub fn load(
        interface: &str,
        mode: XdpMode,
        config: &Config,
        inherited: Option<Inherited>,
    ) -> Result<Attached, XdpError> {
        let ifindex =
            crate::sys::ifindex(interface).ok_or_else(|| XdpError::NoInterface(interface.to_string()))?;
        let (granted, inherited, handed) = match inherited {
            Some(i) if i.ifindex == ifindex => (i.mode, Some(i.link), i.maps),
            _ => (AyaMode::Driver, None, None),
        };
        let adopted = match handed {
            Some(h) if h.fingerprint == object_fingerprint() => match adopt_maps(h.fds) {
                Ok(maps) => Some(maps),
                Err(e) => {
                    tracing::warn!(interface, "inherited XDP maps not usable ({e}); loading the program");
                    None
                }
            },
            Some(_) => {
                tracing::info!(interface, "the XDP program of this build differs: loading it");
                None
            }
            None => None,
        };
        let mut a = Attached {
            interface: interface.to_string(),
            mode: granted,
            ifindex,
            wanted: mode,
            ebpf: None,
            maps: Vec::new(),
            link: None,
            inherited,
        };
        match adopted {
            Some(maps) => {
                a.maps = maps;
                a.link = a.inherited.take();
                a.sync_maps(config, true)?;
            }
            None => {
                let mut ebpf = Ebpf::load(XDP_OBJECT).map_err(|e| XdpError::Load(Box::new(e)))?;
                for name in MAPS {
                    let map = ebpf.take_map(name).ok_or(XdpError::MissingMap(name))?;
                    a.maps.push((name, map));
                }
                let prog: &mut Xdp = ebpf
                    .program_mut(PROGRAM)
                    .ok_or(XdpError::MissingProgram)?
                    .try_into()
                    .map_err(XdpError::Program)?;
                prog.load().map_err(XdpError::Verifier)?;
                a.ebpf = Some(ebpf);
                a.sync_maps(config, false)?;
            }
        }
        Ok(a)
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, XdpError> {
        self.maps.iter_mut().find(|(n, _)| *n == name).map(|(_, m)| m).ok_or(XdpError::MissingMap(name))
    }

    fn map(&self, name: &'static str) -> Result<&Map, XdpError> {
        self.maps.iter().find(|(n, _)| *n == name).map(|(_, m)| m).ok_or(XdpError::MissingMap(name))
    }

    fn prog_fd(&self) -> Result<BorrowedFd<'_>, XdpError> {
        let prog: &Xdp = self
            .ebpf
            .as_ref()
            .and_then(|e| e.program(PROGRAM))
            .ok_or(XdpError::MissingProgram)?
            .try_into()
            .map_err(XdpError::Program)?;
        Ok(prog.fd().map_err(XdpError::Program)?.as_fd())
    }

    /// Attaches the loaded program: replaces the program on the inherited
    /// link in one step, or creates a link in the configured mode (driver,
    /// with `auto` falling back to skb). A kept program (its maps adopted)
    /// is already attached: it only stops dropping packets that find no
    /// socket, as every socket is registered by now.
    pub fn attach(&mut self) -> Result<Attach, XdpError> {
        if self.ebpf.is_none() {
            self.set_no_socket_drop(false)?;
            return Ok(Attach::Kept);
        }
        if let Some(link) = self.inherited.take() {
            match crate::sys::bpf_link::update(link.as_fd(), self.prog_fd()?) {
                Ok(()) => {
                    self.link = Some(link);
                    return Ok(Attach::Replaced);
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
        Ok(Attach::New)
    }

    /// What a packet of ours meets on a queue without a socket: the kernel
    /// (`drop` false, fail-open) or nothing (`drop` true, while a planned
    /// restart has no sockets bound).
    pub fn set_no_socket_drop(&mut self, drop: bool) -> Result<(), XdpError> {
        let map = self.map_mut("shunt_no_socket")?;
        let mut arr: Array<&mut MapData, u32> =
            Array::try_from(map).map_err(map_err("shunt_no_socket", "opening"))?;
        let v = if drop { maps::NO_SOCKET_DROP } else { maps::NO_SOCKET_PASS };
        arr.set(0, v, 0).map_err(map_err("shunt_no_socket", "setting"))
    }

    /// The link and the program's maps, for the next image to take over;
    /// None when never attached. The program and its maps live on behind
    /// the link once this image's descriptors close. Maps whose descriptors
    /// cannot be duplicated are left behind: the next image then loads its
    /// program.
    pub fn into_inherited(mut self) -> Option<Inherited> {
        let link = self.link.take()?;
        let fds: Option<Vec<OwnedFd>> = MAPS
            .iter()
            .map(|name| map_data(self.map(name).ok()?)?.fd().as_fd().try_clone_to_owned().ok())
            .collect();
        let maps = fds.map(|fds| HandedMaps { fingerprint: object_fingerprint(), fds });
        Some(Inherited { ifindex: self.ifindex, mode: self.mode, link, maps })
    }

    /// Brings the match and prefix maps in line with `config`: adds what is
    /// missing, and with `prune` removes what the config no longer has.
    pub fn sync_maps(&mut self, config: &Config, prune: bool) -> Result<(), XdpError> {
        let want = match_map(config);
        let map = self.map_mut("shunt_match")?;
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
        self.sync_lpm("shunt_route_prefix", &route_prefix_entries(config), prune)?;
        self.sync_lpm("shunt_prefix", &owned_prefix_entries(config), prune)
    }

    /// Sets every (prefix length, key, pipeline) of `want` in the LPM map
    /// `name`; with `prune`, removes the prefixes not in `want`.
    fn sync_lpm<K: aya::Pod + PartialEq>(
        &mut self,
        name: &'static str,
        want: &[(u32, K, u32)],
        prune: bool,
    ) -> Result<(), XdpError> {
        let map = self.map_mut(name)?;
        let mut lpm: LpmTrie<&mut MapData, K, LpmValue> =
            LpmTrie::try_from(map).map_err(map_err(name, "opening"))?;
        for (len, data, pipeline) in want {
            lpm.insert(&Key::new(*len, *data), MatchValue { pipeline: *pipeline, flags: 0 }, 0)
                .map_err(map_err(name, "updating"))?;
        }
        if prune {
            let stale: Vec<Key<K>> = lpm
                .keys()
                .filter_map(|k| k.ok())
                .filter(|k| !want.iter().any(|(l, d, _)| *l == k.prefix_len() && *d == k.data()))
                .collect();
            for k in stale {
                lpm.remove(&k).map_err(map_err(name, "pruning"))?;
            }
        }
        Ok(())
    }

    /// Points `XSKMAP[queue]` at an AF_XDP socket.
    pub fn register_socket(&mut self, queue: u32, fd: RawFd) -> Result<(), XdpError> {
        let map = self.map_mut("shunt_xsks")?;
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
        let map = self.map("shunt_counters")?;
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
