//! The kernel side from userspace: load the embedded XDP program once per
//! interface, fill its maps from the config, attach it through a bpf_link.
//!
//! One program instance per interface because XSKMAP is indexed by
//! rx_queue_index alone: two interfaces sharing one map would collide on
//! queue 0.

pub mod maps;

use std::os::fd::RawFd;

use anyhow::{bail, Context, Result};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, MapData, PerCpuArray, XskMap};
use aya::programs::{Xdp, XdpMode as AyaMode};
use aya::Ebpf;

use crate::config::{Config, XdpMode};
use maps::{LpmAddr, LpmValue, MatchKey, MatchValue, XdpCounter};

/// The compiled `xdp-redirect/xdp_redirect.c`, embedded at build time.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_redirect.o"));

const PROGRAM: &str = "shunt_redirect";

/// One loaded and attached program. Dropping it detaches the program; so does
/// the process dying, because the attachment is a bpf_link owned by an fd.
pub struct Attached {
    pub interface: String,
    pub mode: AyaMode,
    ebpf: Ebpf,
}

impl Attached {
    /// Loads the program for `interface`, fills the match map, attaches.
    pub fn load(interface: &str, mode: XdpMode, config: &Config) -> Result<Attached> {
        let mut ebpf = Ebpf::load(XDP_OBJECT).context("loading the embedded XDP object into the kernel")?;
        {
            let mut matches: HashMap<&mut MapData, MatchKey, MatchValue> =
                HashMap::try_from(ebpf.map_mut("shunt_match").context("map shunt_match")?)?;
            for r in &config.match_entries() {
                let key = MatchKey::new(r.dst, r.protocol, r.port);
                matches
                    .insert(key, MatchValue { pipeline: r.pipeline as u32, flags: 0 }, 0)
                    .with_context(|| format!("adding route {} to shunt_match", r.dst))?;
            }
        }
        {
            let mut lpm: LpmTrie<&mut MapData, LpmAddr, LpmValue> =
                LpmTrie::try_from(ebpf.map_mut("shunt_prefix").context("map shunt_prefix")?)?;
            for (p, pipeline) in config.owned_prefixes() {
                let (len, addr) = maps::lpm_key(p.net, p.len);
                lpm.insert(&Key::new(len, addr), MatchValue { pipeline: pipeline as u32, flags: 0 }, 0)
                    .with_context(|| format!("adding prefix {p} to shunt_prefix"))?;
            }
        }

        let prog: &mut Xdp =
            ebpf.program_mut(PROGRAM).context("program shunt_redirect in object")?.try_into()?;
        prog.load().context("verifier rejected the XDP program")?;
        let mode = match mode {
            XdpMode::Driver => {
                prog.attach(interface, AyaMode::Driver)
                    .with_context(|| format!("attaching XDP in driver mode to {interface}"))?;
                AyaMode::Driver
            }
            XdpMode::Skb => {
                prog.attach(interface, AyaMode::Skb)
                    .with_context(|| format!("attaching XDP in skb mode to {interface}"))?;
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
                    prog.attach(interface, AyaMode::Skb)
                        .with_context(|| format!("attaching XDP in skb mode to {interface}"))?;
                    AyaMode::Skb
                }
            },
        };
        Ok(Attached { interface: interface.to_string(), mode, ebpf })
    }

    /// Brings the match and prefix maps in line with `config`: adds what is
    /// missing, and with `prune` removes what the config no longer has.
    pub fn sync_maps(&mut self, config: &Config, prune: bool) -> Result<()> {
        let want: Vec<(MatchKey, MatchValue)> = config
            .match_entries()
            .iter()
            .map(|r| {
                (
                    MatchKey::new(r.dst, r.protocol, r.port),
                    MatchValue { pipeline: r.pipeline as u32, flags: 0 },
                )
            })
            .collect();
        let mut matches: HashMap<&mut MapData, MatchKey, MatchValue> =
            HashMap::try_from(self.ebpf.map_mut("shunt_match").context("map shunt_match")?)?;
        for (k, v) in &want {
            matches.insert(*k, *v, 0).context("updating shunt_match")?;
        }
        if prune {
            let stale: Vec<MatchKey> =
                matches.keys().filter_map(|k| k.ok()).filter(|k| !want.iter().any(|(w, _)| w == k)).collect();
            for k in stale {
                matches.remove(&k).context("pruning shunt_match")?;
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
        let mut lpm: LpmTrie<&mut MapData, LpmAddr, LpmValue> =
            LpmTrie::try_from(self.ebpf.map_mut("shunt_prefix").context("map shunt_prefix")?)?;
        for (len, addr, pipeline) in &want {
            lpm.insert(&Key::new(*len, *addr), MatchValue { pipeline: *pipeline, flags: 0 }, 0)
                .context("updating shunt_prefix")?;
        }
        if prune {
            let stale: Vec<Key<LpmAddr>> = lpm
                .keys()
                .filter_map(|k| k.ok())
                .filter(|k| !want.iter().any(|(l, a, _)| *l == k.prefix_len() && *a == k.data()))
                .collect();
            for k in stale {
                lpm.remove(&k).context("pruning shunt_prefix")?;
            }
        }
        Ok(())
    }

    /// Points XSKMAP[queue] at an AF_XDP socket.
    pub fn register_socket(&mut self, queue: u32, fd: RawFd) -> Result<()> {
        let mut xsks: XskMap<&mut MapData> =
            XskMap::try_from(self.ebpf.map_mut("shunt_xsks").context("map shunt_xsks")?)?;
        if queue >= xsks.len() {
            bail!("queue {queue} exceeds the XSKMAP size {}", xsks.len());
        }
        xsks.set(queue, fd, 0)
            .with_context(|| format!("registering AF_XDP socket for {} queue {queue}", self.interface))?;
        Ok(())
    }

    /// Sums of the per-CPU counters, indexed by [`XdpCounter`].
    pub fn counters(&self) -> Result<[u64; 4]> {
        let map = self.ebpf.map("shunt_counters").context("map shunt_counters")?;
        let arr: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        let mut out = [0u64; 4];
        for c in XdpCounter::ALL {
            out[c as usize] = arr.get(&(c as u32), 0)?.iter().sum();
        }
        Ok(out)
    }
}
