//! IP fragments through the full-NAT VIP with real stacks: a UDP service
//! whose backends answer with 4000-8000-byte datagrams, which their kernels
//! fragment on the 1500-byte backend link, and clients whose 4000-8000-byte
//! requests their own kernel fragments (each request opens its flow, so
//! its later fragments usually share a receive batch with the first).
//! Shunt rewrites every fragment without reassembling; the backend's kernel
//! reassembles the request (and checks its UDP checksum), the client's the
//! reply, which the Python client checks byte for byte.

mod common;

use common::*;

const PORT: u16 = 9100;

fn script() -> String {
    repo().join("tests/lab/big_udp.py").display().to_string()
}

/// config.toml plus a UDP service on port 9100 of both VIPs.
fn config() -> std::path::PathBuf {
    let base = default_config();
    let services = [
        service("big4", "10.0.100.1", PORT, "udp", "10.0.3.0/28", &BACKENDS4),
        service("big6", "fd00:100::1", PORT, "udp", "fd00:3::/124", &BACKENDS6),
    ];
    config_with_services(&base, &services, "frag")
}

/// The backends' UDP servers.
fn servers() -> Peers {
    Peers::start(|i| {
        ["python3", &script(), "server", BACKENDS4[i], BACKENDS6[i], &PORT.to_string()]
            .map(String::from)
            .to_vec()
    })
}

/// One exchange from the client: a `req`-byte request, a `size`-byte reply.
fn exchange(vip: &str, req: usize, size: usize, seed: usize) -> Result<(), String> {
    let out = ns_exec(
        "shunt-client",
        &[
            "python3",
            &script(),
            "client",
            vip,
            &PORT.to_string(),
            &req.to_string(),
            &size.to_string(),
            &seed.to_string(),
        ],
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{vip} req {req} reply {size}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

#[test]
fn fragmented_udp_both_ways_through_full_nat_v4_and_v6() {
    let Some(_lab) = lab() else { return };
    for ns in ["shunt-be1", "shunt-be2", "shunt-be3", "shunt-client"] {
        let mtu = ns_exec(ns, &["bash", "-c", "cat /sys/class/net/[!l]*/mtu | sort -n | tail -1"]);
        assert_eq!(String::from_utf8_lossy(&mtu.stdout).trim(), "1500", "{ns}: links at MTU 1500");
    }
    let shunt = Shunt::start(&config());
    let _servers = servers();
    let mut failures = Vec::new();
    for (i, vip) in ["10.0.100.1", "fd00:100::1"].iter().enumerate() {
        for (j, (req, size)) in
            [(100, 4000), (100, 8000), (1400, 1400), (4000, 100), (8000, 8000)].iter().enumerate()
        {
            if let Err(e) = exchange(vip, *req, *size, i * 10 + j) {
                failures.push(e);
            }
        }
    }
    let summary = shunt.stop();
    assert!(failures.is_empty(), "{failures:#?}\n{summary}");
    for bad in ["fragment", "fragment_bogus", "fragment_table_full", "fragment_held_full", "malformed"] {
        assert_eq!(counter(&summary, "worker 0", bad), 0, "{bad}\n{summary}");
    }
}
