//! IP fragments through the full-NAT VIP with real stacks: a UDP service
//! whose backends answer with 4000-8000-byte datagrams, which their kernels
//! fragment on the 1500-byte backend link, and clients whose 4000-8000-byte
//! requests their own kernel fragments (each request opens its flow, so
//! its later fragments usually share a receive batch with the first).
//! Shunt rewrites every fragment without reassembling; the backend's kernel
//! reassembles the request (and checks its UDP checksum), the client's the
//! reply, which the Python client checks byte for byte.

mod common;

use std::process::{Child, Command, Stdio};

use common::*;

const PORT: u16 = 9100;
const BACKENDS4: [&str; 3] = ["10.0.2.11", "10.0.2.12", "10.0.2.13"];
const BACKENDS6: [&str; 3] = ["fd00:2::11", "fd00:2::12", "fd00:2::13"];

fn script() -> String {
    repo().join("tests/lab/big_udp.py").display().to_string()
}

/// config.toml plus a UDP service on port 9100 of both VIPs.
fn config() -> std::path::PathBuf {
    let base = std::fs::read_to_string(repo().join("config.toml")).unwrap();
    let service = |name: &str, vip: &str, pool: &str, addrs: [&str; 3]| {
        let backends: String = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                format!("  {{ addr = \"{a}\", port = {PORT}, mac = \"02:00:00:00:02:{:02x}\" }},\n", 11 + i)
            })
            .collect();
        format!(
            "\n[[service]]\nname = \"{name}\"\nvip = \"{vip}\"\nport = {PORT}\nprotocol = \"udp\"\n\
             pipeline = \"l4lb\"\nsnat_pool = \"{pool}\"\nbackends = [\n{backends}]\nhealth = {{ kind = \"none\" }}\n"
        )
    };
    let (head, tail) = base.split_at(base.find("[conntrack]").unwrap());
    let text = format!(
        "{head}{}{}\n{tail}",
        service("big4", "10.0.100.1", "10.0.3.0/28", BACKENDS4),
        service("big6", "fd00:100::1", "fd00:3::/124", BACKENDS6)
    );
    let path = std::env::temp_dir().join(format!("shunt-frag-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// The backends' UDP servers, stopped on drop.
struct Servers(Vec<Child>);

impl Servers {
    fn start() -> Servers {
        let children = (0..3)
            .map(|i| {
                Command::new("ip")
                    .args(["netns", "exec", &format!("shunt-be{}", i + 1), "python3", &script(), "server"])
                    .args([BACKENDS4[i], BACKENDS6[i], &PORT.to_string()])
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(500));
        Servers(children)
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
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
    let _servers = Servers::start();
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
