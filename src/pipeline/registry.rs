//! The stage registry: one descriptor per stage a pipeline may list, saying
//! what the stage needs done before it, what it guarantees after it, why it
//! drops packets, and how a worker builds it (VPP's `VLIB_REGISTER_NODE`).
//!
//! The config names stages and carries their keys; this table is the one
//! place that knows what each name means. [`check`] refuses an order that
//! cannot work (a stage whose needs nothing before it meets, or one after a
//! stage that has already sent every packet) at the stage's line and column.

use super::l2::L2Stage;
use super::l2fwd::L2Fwd;
use super::lb::{ConntrackStage, MaglevStage};
use super::nat::NatStage;
use super::rewrite::xlat::EgressMtu;
use super::xlat::SiitStage;
use super::{DropReason, Stage};
use crate::config::{Config, ConfigError, StageConfig};

/// What a stage guarantees about every packet it passes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    /// Headers parsed: flow key, offsets and family known.
    Parsed,
    /// Looked up in conntrack: each packet belongs to a known flow or is new.
    Tracked,
    /// Every packet still going has a binding (new flows were given one).
    Bound,
    /// Rewritten to its binding (or translated) and ready for the wire.
    Rewritten,
    /// Given an egress port: the packet has left the pipeline.
    Sent,
}

impl Fact {
    fn describe(self) -> &'static str {
        match self {
            Fact::Parsed => "parsed headers",
            Fact::Tracked => "a conntrack lookup",
            Fact::Bound => "a binding for new flows",
            Fact::Rewritten => "rewritten packets",
            Fact::Sent => "packets sent",
        }
    }
}

/// Why a worker's pipelines could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A pipeline's stage order cannot work (line, column and the need).
    #[error(transparent)]
    Order(#[from] ConfigError),
    /// A stage sends on an interface the worker has no socket on (its
    /// `[[worker]] queues` name no queue of that interface).
    #[error("worker has no socket on {interface}")]
    NoSocket { interface: String },
    /// A stage's descriptor was handed another stage's config.
    #[error("stage `{stage}` built from the config of `{config}`")]
    Mismatch { stage: &'static str, config: &'static str },
    /// The config names a stage the registry does not hold.
    #[error("no stage `{0}` in the registry")]
    Unregistered(&'static str),
}

/// Everything a stage's constructor may need from the worker.
pub struct BuildEnv<'a> {
    /// Worker port index and MAC of an interface (by config index).
    pub port_of: &'a dyn Fn(usize) -> Result<(u8, [u8; 6]), BuildError>,
    /// Every worker port's MAC, by port index.
    pub port_macs: &'a [[u8; 6]],
    /// The pipeline's egress MTUs (from its `l2` stage's ports).
    pub mtus: EgressMtu,
    /// The port of the pipeline's `l2` egress (towards backends), if any.
    pub backend_port: Option<u8>,
    /// Whether the stage is its pipeline's first: no stage before it has
    /// parsed the packet or built an answer to it.
    pub first: bool,
}

type Build = fn(&StageConfig, &BuildEnv<'_>) -> Result<Box<dyn Stage>, BuildError>;

pub struct StageDescriptor {
    /// The name pipelines list it by (and `shunt check` reports it by).
    pub name: &'static str,
    pub doc: &'static str,
    pub requires: &'static [Fact],
    pub provides: &'static [Fact],
    /// The reasons it drops packets for.
    pub drops: &'static [DropReason],
    /// Whether it handles frames of several buffers (`Batch::more`): reads
    /// headers from the first buffer only and, when it rewrites, updates
    /// checksums without reading the payload. A pipeline with a stage that
    /// does not refuses such frames (`chain_unsupported`).
    pub chains: bool,
    pub build: Build,
}

use DropReason as D;
use Fact as F;

/// What the flow-creation stage drops for; `NoBackend` first, the one a
/// NAT64 session cannot meet.
const FLOW_CREATION_DROPS: &[DropReason] = &[
    D::NoBackend,
    D::NoFlow,
    D::SnatExhausted,
    D::ConntrackFull,
    D::Untranslatable,
    D::SynUnverified,
    D::RateLimited,
    D::ErrorRateLimited,
];

/// The flow-creation stage (maglev; nat64 is the same stage under its own
/// name, with no backends to run out of): after conntrack, before the rewrite.
const fn flow_creation(
    name: &'static str,
    doc: &'static str,
    drops: &'static [DropReason],
) -> StageDescriptor {
    StageDescriptor {
        name,
        doc,
        requires: &[F::Tracked],
        provides: &[F::Bound],
        drops,
        chains: true,
        build: |_, _| Ok(Box::new(MaglevStage)),
    }
}

pub static STAGES: &[StageDescriptor] = &[
    StageDescriptor {
        name: "l2fwd",
        doc: "Rewrite MACs to the next hop and transmit on `egress`; answers go back out their ingress.",
        requires: &[],
        provides: &[F::Sent],
        drops: &[D::Malformed, D::ErrorRateLimited],
        // Writes MAC addresses only: the first buffer holds them.
        chains: true,
        build: |s, env| {
            let StageConfig::L2Fwd { egress, next_hop_mac } = s else { return mismatch(s, "l2fwd") };
            let (port, mac) = (env.port_of)(*egress)?;
            let fwd = L2Fwd::new(port, mac, *next_hop_mac);
            Ok(Box::new(if env.first { fwd } else { fwd.answering(env.port_macs.to_vec()) }))
        },
    },
    StageDescriptor {
        name: "conntrack",
        doc: "Parse, find the flow in conntrack, track TCP/UDP state.",
        requires: &[],
        provides: &[F::Parsed, F::Tracked],
        drops: &[
            D::ChainUnsupported,
            D::Malformed,
            D::Fragment,
            D::FragmentBogus,
            D::FragmentTableFull,
            D::FragmentHeldFull,
            D::NoFlow,
            D::Martian,
            D::WrongSide,
            D::Untranslatable,
        ],
        // A frame of several buffers takes the short parser only: plain TCP
        // or UDP whose headers lie in the first buffer.
        chains: true,
        build: |_, env| Ok(Box::new(ConntrackStage::new(env.port_macs.to_vec(), env.backend_port))),
    },
    flow_creation(
        "maglev",
        "New flows: pick a backend with Maglev, allocate SNAT, create the flow.",
        FLOW_CREATION_DROPS,
    ),
    flow_creation(
        "nat64",
        "New NAT64 sessions (RFC 6146); the same flow-creation stage as maglev.",
        // No backend to run out of: a session's peer is in its address.
        FLOW_CREATION_DROPS.split_at(1).1,
    ),
    StageDescriptor {
        name: "nat",
        doc: "Rewrite addresses and ports; incremental checksums; NAT46/64 translation.",
        requires: &[F::Bound],
        provides: &[F::Rewritten],
        drops: &[D::Malformed, D::Untranslatable, D::ChainUnsupported, D::ErrorRateLimited],
        // The NAT rewrite reads and writes headers only, and updates the L4
        // checksum incrementally (RFC 1624), so a frame of several buffers
        // is rewritten in its first one. Translation changes the header size
        // and refuses such frames; ICMP errors never arrive as one
        // (conntrack).
        chains: true,
        build: |_, env| Ok(Box::new(NatStage { mtus: env.mtus.clone() })),
    },
    StageDescriptor {
        name: "siit",
        doc: "Stateless IPv4/IPv6 translation (RFC 7915).",
        requires: &[],
        provides: &[F::Parsed, F::Rewritten],
        drops: &[D::Malformed, D::Untranslatable, D::ErrorRateLimited],
        // Translation changes the header size.
        chains: false,
        build: |_, env| Ok(Box::new(SiitStage { mtus: env.mtus.clone() })),
    },
    StageDescriptor {
        name: "l2",
        doc: "Next-hop MAC and egress port: towards backends, or back to clients.",
        requires: &[F::Rewritten],
        provides: &[F::Sent],
        drops: &[D::Malformed, D::NextHopUnresolved, D::ErrorRateLimited],
        // Writes MAC addresses only: the first buffer holds them.
        chains: true,
        build: |s, env| {
            let StageConfig::L2(l2) = s else { return mismatch(s, "l2") };
            Ok(Box::new(L2Stage::new(
                (env.port_of)(l2.egress)?,
                l2.next_hop_mac,
                (env.port_of)(l2.return_egress)?,
                l2.return_next_hop_mac,
                env.port_macs.to_vec(),
            )))
        },
    },
];

fn mismatch(s: &StageConfig, stage: &'static str) -> Result<Box<dyn Stage>, BuildError> {
    Err(BuildError::Mismatch { stage, config: s.name() })
}

/// The descriptor of the stage named `name`.
pub fn descriptor(name: &str) -> Option<&'static StageDescriptor> {
    STAGES.iter().find(|d| d.name == name)
}

/// Whether the stage `s` configures handles frames of several buffers
/// ([`StageDescriptor::chains`]); an unregistered one does not.
pub fn chains(s: &StageConfig) -> bool {
    descriptor(s.name()).is_some_and(|d| d.chains)
}

/// Names of every stage, for messages.
pub fn names() -> impl Iterator<Item = &'static str> {
    STAGES.iter().map(|d| d.name)
}

/// Why a stage order cannot work: the position of the offending stage and
/// what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderError {
    pub index: usize,
    pub message: String,
}

/// Checks that every stage of `order` has what it requires from the stages
/// before it, and that none comes after a stage that sends every packet.
pub fn check_order(order: &[&str]) -> Result<(), OrderError> {
    let mut have: Vec<Fact> = Vec::new();
    let mut sender: Option<&str> = None;
    for (index, name) in order.iter().enumerate() {
        let err = |message: String| Err(OrderError { index, message });
        let Some(d) = descriptor(name) else {
            return err(format!(
                "unknown stage `{name}` (known: {})",
                names().collect::<Vec<_>>().join(", ")
            ));
        };
        if let Some(s) = sender {
            return err(format!(
                "stage `{name}` comes after `{s}`, which has already sent every packet: it would see none"
            ));
        }
        if let Some(missing) = d.requires.iter().find(|f| !have.contains(f)) {
            let by: Vec<String> = STAGES
                .iter()
                .filter(|s| s.provides.contains(missing))
                .map(|s| format!("`{}`", s.name))
                .collect();
            return err(format!(
                "stage `{name}` needs {} before it (from {}), and no earlier stage provides it",
                missing.describe(),
                by.join(" or ")
            ));
        }
        have.extend_from_slice(d.provides);
        if d.provides.contains(&Fact::Sent) {
            sender = Some(d.name);
        }
    }
    Ok(())
}

/// [`check_order`] over every pipeline of the config, with the offending
/// stage's file, line and column.
pub fn check(config: &Config) -> Result<(), ConfigError> {
    for p in &config.pipelines {
        let order: Vec<&str> = p.stages.iter().map(StageConfig::name).collect();
        if let Err(e) = check_order(&order) {
            let span = p.stage_spans.get(e.index).cloned().unwrap_or(0..0);
            return Err(config.error_at(span, format!("pipeline `{}`: {}", p.name, e.message)));
        }
    }
    Ok(())
}

/// Builds one stage through its descriptor.
pub fn build(s: &StageConfig, env: &BuildEnv<'_>) -> Result<Box<dyn Stage>, BuildError> {
    let d = descriptor(s.name()).ok_or(BuildError::Unregistered(s.name()))?;
    (d.build)(s, env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_orders_pass() {
        for order in [
            &["conntrack", "maglev", "nat", "l2"][..],
            &["conntrack", "nat64", "nat", "l2"],
            &["conntrack", "maglev", "nat", "l2fwd"],
            &["siit", "l2"],
            &["l2fwd"],
        ] {
            assert_eq!(check_order(order), Ok(()), "{order:?}");
        }
    }

    #[test]
    fn broken_orders_name_the_stage_and_its_need() {
        let e = check_order(&["l2", "nat", "maglev", "conntrack"]).unwrap_err();
        assert_eq!(e.index, 0);
        assert!(e.message.contains("stage `l2` needs rewritten packets"), "{}", e.message);
        assert!(e.message.contains("`nat` or `siit`"), "{}", e.message);
        let e = check_order(&["conntrack", "nat", "maglev", "l2"]).unwrap_err();
        assert_eq!(e.index, 1);
        assert!(e.message.contains("a binding for new flows"), "{}", e.message);
        let e = check_order(&["l2fwd", "conntrack"]).unwrap_err();
        assert_eq!(e.index, 1);
        assert!(e.message.contains("after `l2fwd`"), "{}", e.message);
        let e = check_order(&["conntrack", "teleport"]).unwrap_err();
        assert!(e.message.contains("unknown stage `teleport`"), "{}", e.message);
    }

    #[test]
    fn every_stage_the_config_knows_is_registered_and_builds() {
        let port_of = |_: usize| Ok((0u8, [0u8; 6]));
        let env = BuildEnv {
            port_of: &port_of,
            port_macs: &[[0; 6]],
            mtus: EgressMtu::default(),
            backend_port: None,
            first: true,
        };
        let l2 = crate::config::L2Config {
            egress: 0,
            next_hop_mac: None,
            return_egress: 0,
            return_next_hop_mac: [0; 6],
        };
        for s in [
            StageConfig::L2Fwd { egress: 0, next_hop_mac: [0; 6] },
            StageConfig::Conntrack,
            StageConfig::Maglev,
            StageConfig::Nat64,
            StageConfig::Nat,
            StageConfig::Siit,
            StageConfig::L2(l2),
        ] {
            assert!(build(&s, &env).is_ok(), "{}", s.name());
            // Only translation changes the header size: siit alone refuses
            // frames of several buffers.
            assert_eq!(chains(&s), !matches!(s, StageConfig::Siit), "{}", s.name());
        }
        let mut known: Vec<&str> = crate::config::STAGES.to_vec();
        let mut registered: Vec<&str> = names().collect();
        known.sort_unstable();
        registered.sort_unstable();
        assert_eq!(known, registered, "the config parses the keys of exactly the registered stages");
    }

    #[test]
    fn a_stage_sending_where_the_worker_has_no_socket_names_the_interface() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
        let config = Config::parse(std::path::Path::new("config.toml"), &text).unwrap();
        // A socket on sh-cli only: `l2` sends towards backends on sh-be.
        let ports = [crate::pipeline::build::PortInfo { interface: 0, mac: [2, 0, 0, 0, 0, 1], mtu: 1500 }];
        let e = crate::pipeline::build::pipelines(&config, &ports).err().expect("no socket on sh-be");
        assert!(matches!(e, BuildError::NoSocket { .. }), "{e:?}");
        assert_eq!(e.to_string(), "worker has no socket on sh-be");
        let env = BuildEnv {
            port_of: &|_| Ok((0, [0; 6])),
            port_macs: &[],
            mtus: EgressMtu::default(),
            backend_port: None,
            first: true,
        };
        let e = (descriptor("l2").unwrap().build)(&StageConfig::Nat, &env).err().expect("a mismatch");
        assert_eq!(e.to_string(), "stage `l2` built from the config of `nat`");
    }

    #[test]
    fn every_packet_drop_reason_belongs_to_a_stage() {
        // Dropped by the worker around the pipeline, not by a stage.
        let worker = [
            D::NoRoute,
            D::TxRingFull,
            D::FrameTooLarge,
            D::HandoffFull,
            D::LinkDown,
            D::FragmentTimeout,
            D::ChainTooLong,
        ];
        for r in DropReason::ALL {
            assert!(
                worker.contains(r) || STAGES.iter().any(|s| s.drops.contains(r)),
                "{} is declared by no stage",
                r.name()
            );
        }
    }
}
