//! The load balancer's view of the config: an immutable snapshot of
//! services, their Maglev tables and next hops. Built off the fast path and
//! swapped into workers whole, at a batch boundary (VPP's lb.c builds in
//! place; swapping a whole snapshot removes its admitted race).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use super::flow::BackendId;
use super::maglev::{backend_key, Maglev, MaglevBackend, MaglevError};
use super::stats::{MAX_BACKENDS, MAX_SERVICES};
use crate::config::{Config, Prefix};
use crate::nat46::{EamTable, Prefix64};
use crate::xdp::maps::addr16;

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Why a services snapshot could not be built (the running one stays).
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    /// Ids are never reused within a process (counters keep their meaning),
    /// so services added and removed over many reloads can run out of them.
    #[error("service `{service}`: more than {MAX_SERVICES} distinct services in this process's life: restart Shunt")]
    TooManyServices { service: String },
    /// As [`ServicesError::TooManyServices`], for backends.
    #[error("service `{service}`, backend {backend}: more than {MAX_BACKENDS} distinct backends in this process's life: restart Shunt")]
    TooManyBackends { service: String, backend: String },
    /// The service's Maglev table size does not suit its backends.
    #[error("building the Maglev table of service `{service}`")]
    Maglev {
        service: String,
        #[source]
        source: MaglevError,
    },
}

pub struct Services {
    pub list: Vec<ServiceRt>,
    /// (VIP, protocol, port) → service index.
    vips: FastMap<([u8; 16], u8, u16), u16>,
    /// (VIP, protocol) → pipeline, for later fragments, which carry no
    /// port: the first service in config order on that address and
    /// protocol decides (the XDP program redirects them by the same pair).
    fragments: FastMap<([u8; 16], u8), u8>,
    /// Backend address → MAC, resolved when the snapshot was built.
    next_hops: FastMap<[u8; 16], [u8; 6]>,
    /// Backend stable id → MAC: the next hop of a DSR flow, whose packets
    /// keep the VIP as destination.
    backend_hops: FastMap<u16, [u8; 6]>,
    /// Distinct SNAT pools; services refer to them by index.
    pub pools: Vec<Prefix>,
    /// The pools as (network, mask) over the 16-byte address form, for a
    /// branch-light membership test per packet.
    pool_masks: Vec<(u128, u128)>,
    /// Every prefix the XDP program redirects (pools, NAT46/64 and SIIT
    /// prefixes) with the pipeline that handles it.
    owned: Vec<((u128, u128), u8)>,
    /// Every VIP address (no client may send from one).
    vip_addrs: Vec<[u8; 16]>,
    /// NAT46/NAT64/SIIT settings.
    pub xlat: XlatRt,
    /// Bumped on every rebuild; workers compare it to spot a new snapshot.
    pub generation: u64,
    /// Backend ids whose flows are expired: a conntrack hit on one of them
    /// is removed and the packet scheduled afresh. Bit per stable id.
    expired: Box<[u64]>,
    /// Whether any bit of `expired` is set.
    any_expired: bool,
}

/// Whether a backend enters the Maglev table (health, admin state; the
/// control plane decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// In the table with its weight.
    In,
    /// Out of the table; its flows keep their backend.
    Out,
    /// Out of the table, and its flows are expired.
    Expire,
}

/// Multiply-rotate hasher for fixed-size keys; SipHash is needlessly slow
/// for a table that only holds configured routes.
#[derive(Default)]
pub struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0 ^ u64::from_le_bytes(w)).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
        }
    }
}

/// Stable ids for services and backends over the life of the process, so
/// per-service stats and conntrack entries survive reloads that reorder,
/// add or remove them. Ids are never reused.
#[derive(Default)]
pub struct IdRegistry {
    services: HashMap<String, u16>,
    backends: HashMap<(String, IpAddr, u16), u16>,
}

/// A backend's saved id: (service name, address, port, id).
pub type SavedBackendId = (String, IpAddr, u16, u16);

impl IdRegistry {
    /// Every id handed out: services by name, backends by (service,
    /// address, port); what `crate::state` keeps across restarts.
    pub fn export(&self) -> (Vec<(String, u16)>, Vec<SavedBackendId>) {
        let mut s: Vec<(String, u16)> = self.services.iter().map(|(k, &v)| (k.clone(), v)).collect();
        let mut b: Vec<SavedBackendId> =
            self.backends.iter().map(|((n, a, p), &v)| (n.clone(), *a, *p, v)).collect();
        s.sort_by_key(|x| x.1);
        b.sort_by_key(|x| x.3);
        (s, b)
    }

    /// The registry `export` gave; `None` unless the ids of each kind are
    /// exactly 0..n (new ids are handed out from n on) and the keys distinct.
    pub fn import(services: Vec<(String, u16)>, backends: Vec<SavedBackendId>) -> Option<IdRegistry> {
        let dense = |mut ids: Vec<u16>, max: usize| {
            ids.sort_unstable();
            ids.len() <= max && ids.iter().enumerate().all(|(i, &id)| usize::from(id) == i)
        };
        if !dense(services.iter().map(|x| x.1).collect(), MAX_SERVICES)
            || !dense(backends.iter().map(|x| x.3).collect(), MAX_BACKENDS)
        {
            return None;
        }
        let r = IdRegistry {
            services: services.iter().map(|(n, id)| (n.clone(), *id)).collect(),
            backends: backends.iter().map(|(n, a, p, id)| ((n.clone(), *a, *p), *id)).collect(),
        };
        (r.services.len() == services.len() && r.backends.len() == backends.len()).then_some(r)
    }

    fn service(&mut self, name: &str) -> Result<u16, ServicesError> {
        let n = self.services.len();
        if let Some(&id) = self.services.get(name) {
            return Ok(id);
        }
        if n >= MAX_SERVICES {
            return Err(ServicesError::TooManyServices { service: name.to_string() });
        }
        self.services.insert(name.to_string(), n as u16);
        Ok(n as u16)
    }

    fn backend(&mut self, service: &str, addr: IpAddr, port: u16) -> Result<u16, ServicesError> {
        let n = self.backends.len();
        let key = (service.to_string(), addr, port);
        if let Some(&id) = self.backends.get(&key) {
            return Ok(id);
        }
        if n >= MAX_BACKENDS {
            let backend = std::net::SocketAddr::new(addr, port).to_string();
            return Err(ServicesError::TooManyBackends { service: service.to_string(), backend });
        }
        self.backends.insert(key, n as u16);
        Ok(n as u16)
    }
}

/// Translator settings of a snapshot.
#[derive(Default)]
pub struct XlatRt {
    /// How IPv4 clients appear to IPv6 backends of NAT46 services.
    pub nat46: Option<Prefix64>,
    pub nat64: Option<Nat64Rt>,
    pub siit: Option<SiitRt>,
}

pub struct Nat64Rt {
    pub prefix: Prefix64,
    /// The prefix as (network, mask) over 16-byte addresses, in their own
    /// byte order (see `mask16`).
    pub mask: (u128, u128),
    /// Index of the IPv4 pool in `Services::pools`.
    pub pool: u16,
}

impl Nat64Rt {
    #[inline]
    pub fn contains(&self, addr: &[u8; 16]) -> bool {
        wide(addr) & self.mask.1 == self.mask.0
    }
}

pub struct SiitRt {
    pub prefix: Option<Prefix64>,
    pub eam: EamTable,
    /// Sources of translated errors from untranslatable routers (RFC 6791).
    pub rfc6791: crate::nat46::Rfc6791,
    /// IPv4 UDP without checksum (RFC 7915 §4.5).
    pub udp_zero_checksum: crate::nat46::UdpZeroChecksum,
    /// RFC 7915 §4 "lowest-ipv6-mtu" (`[siit] lowest_ipv6_mtu`).
    pub lowest_ipv6_mtu: u16,
}

pub struct ServiceRt {
    /// Stable id: indexes per-service stats; stored in conntrack entries.
    pub id: u16,
    pub name: String,
    pub vip: [u8; 16],
    pub port: u16,
    pub protocol: u8,
    pub pipeline: u8,
    pub affinity: bool,
    pub snat_pool: Option<u16>,
    /// L2 direct server return (no address rewrite; see `lb::create_flow`).
    pub dsr: bool,
    pub backends: Vec<BackendRt>,
    pub maglev: Maglev,
}

#[derive(Debug, Clone, Copy)]
pub struct BackendRt {
    /// Stable id: indexes per-backend stats; stored in conntrack entries.
    pub id: u16,
    pub addr: [u8; 16],
    pub port: u16,
    pub weight: u32,
    /// Its next hop's MAC, when known at build time (as `next_hop` finds
    /// it): a new flow takes it from here, not from a map.
    pub mac: Option<[u8; 6]>,
}

impl Services {
    /// Builds the snapshot; `resolve` finds a backend's MAC when the config
    /// gives none (the kernel's neighbour table in `shunt run`).
    pub fn build(
        config: &Config,
        generation: u64,
        ids: &mut IdRegistry,
        resolve: impl Fn(IpAddr) -> Option<[u8; 6]>,
    ) -> Result<Services, ServicesError> {
        Self::build_with(config, generation, ids, resolve, |_, _| Admission::In)
    }

    /// [`Services::build`], with `admit(service, backend)` deciding which
    /// backends the Maglev tables hold. Every backend keeps its place in
    /// the table's key list (weight 0 when out), so only its flows move.
    pub fn build_with(
        config: &Config,
        generation: u64,
        ids: &mut IdRegistry,
        resolve: impl Fn(IpAddr) -> Option<[u8; 6]>,
        admit: impl Fn(&crate::config::Service, &crate::config::Backend) -> Admission,
    ) -> Result<Services, ServicesError> {
        let mut expired = vec![0u64; MAX_BACKENDS.div_ceil(64)].into_boxed_slice();
        let mut list = Vec::new();
        let mut vips = FastMap::default();
        let mut fragments = FastMap::default();
        let mut next_hops = FastMap::default();
        let mut backend_hops = FastMap::default();
        let mut pools: Vec<Prefix> = Vec::new();
        for (i, s) in config.services.iter().enumerate() {
            let keys: Vec<MaglevBackend<[u8; 18]>> = s
                .backends
                .iter()
                .map(|b| MaglevBackend {
                    key: backend_key(&addr16(b.addr), b.port),
                    weight: if admit(s, b) == Admission::In { b.weight } else { 0 },
                })
                .collect();
            let maglev = Maglev::new(s.maglev_table_size, &keys)
                .map_err(|source| ServicesError::Maglev { service: s.name.clone(), source })?;
            for b in &s.backends {
                if let Some(mac) = b.mac.or_else(|| resolve(b.addr)) {
                    next_hops.insert(addr16(b.addr), mac);
                }
            }
            let snat_pool = s.snat_pool.map(|p| match pools.iter().position(|x| *x == p) {
                Some(i) => i as u16,
                None => {
                    pools.push(p);
                    (pools.len() - 1) as u16
                }
            });
            vips.insert((addr16(s.vip), s.protocol, s.port), i as u16);
            fragments.entry((addr16(s.vip), s.protocol)).or_insert(s.pipeline as u8);
            let mut backends = Vec::with_capacity(s.backends.len());
            for b in &s.backends {
                let id = ids.backend(&s.name, b.addr, b.port)?;
                let mac = next_hops.get(&addr16(b.addr)).copied();
                if let Some(mac) = mac {
                    backend_hops.insert(id, mac);
                }
                if admit(s, b) == Admission::Expire {
                    expired[usize::from(id) / 64] |= 1 << (id % 64);
                }
                backends.push(BackendRt { id, addr: addr16(b.addr), port: b.port, weight: b.weight, mac });
            }
            list.push(ServiceRt {
                id: ids.service(&s.name)?,
                name: s.name.clone(),
                vip: addr16(s.vip),
                port: s.port,
                protocol: s.protocol,
                pipeline: s.pipeline as u8,
                affinity: s.affinity,
                snat_pool,
                dsr: s.dsr,
                backends,
                maglev,
            });
        }
        let mut xlat = XlatRt { nat46: config.xlat.nat46.map(|p| p.prefix), ..XlatRt::default() };
        if let Some(n) = &config.xlat.nat64 {
            let pool = match pools.iter().position(|x| *x == n.pool) {
                Some(i) => i,
                None => {
                    pools.push(n.pool);
                    pools.len() - 1
                }
            };
            xlat.nat64 = Some(Nat64Rt {
                prefix: n.prefix.prefix,
                mask: mask16(&n.prefix.as_prefix),
                pool: pool as u16,
            });
        }
        if let Some(t) = &config.xlat.siit {
            xlat.siit = Some(SiitRt {
                prefix: t.prefix.map(|p| p.prefix),
                eam: t.table(),
                rfc6791: t.rfc6791,
                udp_zero_checksum: t.udp_zero_checksum,
                lowest_ipv6_mtu: t.lowest_ipv6_mtu,
            });
        }
        let pool_masks = pools.iter().map(mask16).collect();
        let owned = config.owned_prefixes().iter().map(|(p, pipe)| (mask16(p), *pipe as u8)).collect();
        let mut vip_addrs: Vec<[u8; 16]> = vips.keys().map(|k: &([u8; 16], u8, u16)| k.0).collect();
        vip_addrs.sort_unstable();
        vip_addrs.dedup();
        Ok(Services {
            list,
            vips,
            fragments,
            next_hops,
            backend_hops,
            pools,
            pool_masks,
            owned,
            vip_addrs,
            xlat,
            generation,
            any_expired: expired.iter().any(|&w| w != 0),
            expired,
        })
    }

    /// An empty snapshot (no services).
    pub fn empty() -> Services {
        Services {
            list: Vec::new(),
            vips: FastMap::default(),
            fragments: FastMap::default(),
            vip_addrs: Vec::new(),
            next_hops: FastMap::default(),
            backend_hops: FastMap::default(),
            pools: Vec::new(),
            pool_masks: Vec::new(),
            owned: Vec::new(),
            xlat: XlatRt::default(),
            generation: 0,
            expired: Box::new([]),
            any_expired: false,
        }
    }

    #[inline]
    pub fn service_for(&self, dst: &[u8; 16], proto: u8, port: u16) -> Option<u16> {
        self.vips.get(&(*dst, proto, port)).copied()
    }

    /// Whether `addr` belongs to one of the SNAT pools.
    #[inline]
    pub fn in_pool(&self, addr: &[u8; 16]) -> bool {
        self.pool_of(addr).is_some()
    }

    #[inline]
    fn pool_of(&self, addr: &[u8; 16]) -> Option<usize> {
        let a = wide(addr);
        self.pool_masks.iter().position(|&(net, mask)| a & mask == net)
    }

    /// Whether `addr` is one of our VIPs or SNAT-pool addresses.
    #[inline]
    pub fn owns(&self, addr: &[u8; 16]) -> bool {
        let a = wide(addr);
        self.vip_addrs.contains(addr) || self.owned.iter().any(|((net, mask), _)| a & mask == *net)
    }

    /// Pipeline for a later fragment (no port) to a service's VIP.
    #[inline]
    pub fn pipeline_for_fragment(&self, dst: &[u8; 16], proto: u8) -> Option<u8> {
        self.fragments.get(&(*dst, proto)).copied()
    }

    /// Pipeline for a packet to a VIP or into an SNAT pool.
    pub fn pipeline_for(&self, dst: &[u8; 16], proto: u8, port: u16) -> Option<u8> {
        if let Some(&s) = self.vips.get(&(*dst, proto, port)) {
            return self.list.get(usize::from(s)).map(|s| s.pipeline);
        }
        let a = wide(dst);
        self.owned.iter().find(|((net, mask), _)| a & mask == *net).map(|&(_, p)| p)
    }

    /// Whether flows of backend `id` are to be expired.
    #[inline]
    pub fn is_expired(&self, id: Option<BackendId>) -> bool {
        if !self.any_expired {
            return false; // the usual snapshot: no bitmap read per packet
        }
        let Some(i) = id.map(BackendId::index) else { return false };
        self.expired.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    #[inline]
    pub fn next_hop(&self, addr: &[u8; 16]) -> Option<[u8; 6]> {
        self.next_hops.get(addr).copied()
    }

    /// The MAC of the backend with this stable id.
    #[inline]
    pub fn backend_hop(&self, id: Option<crate::pipeline::flow::BackendId>) -> Option<[u8; 6]> {
        self.backend_hops.get(&(id?.index() as u16)).copied()
    }

    /// Backends whose MAC could not be resolved, for a startup warning.
    pub fn unresolved(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self
            .list
            .iter()
            .flat_map(|s| s.backends.iter())
            .filter(|b| !self.next_hops.contains_key(&b.addr))
            .map(|b| ip_of(&b.addr))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// A prefix as (network, mask) over 16-byte addresses (IPv4 mapped).
/// A prefix as (network, mask) over the 16-byte form read in native byte
/// order ([`wide`]): a membership test is an AND and a compare, with no
/// byte swap per packet.
fn mask16(p: &Prefix) -> (u128, u128) {
    let len = if p.net.is_ipv4() { 96 + u32::from(p.len) } else { u32::from(p.len) };
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0).to_be();
    (wide(&addr16(p.net)) & mask, mask)
}

/// An address in the byte order of [`mask16`]'s prefixes.
#[inline(always)]
fn wide(a: &[u8; 16]) -> u128 {
    u128::from_ne_bytes(*a)
}

/// 16-byte form back to an address (IPv4-mapped → IPv4).
pub fn ip_of(a: &[u8; 16]) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(*a);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}
