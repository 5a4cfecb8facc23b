//! NAT46, NAT64 and SIIT against real IPv4-only and IPv6-only stacks in the
//! lab: curl, ping, ping -6, a router's Time Exceeded translated back, and
//! Shunt's own errors rate limited.

mod common;

use common::*;

/// Runs each (namespace, command) in order; an empty namespace runs the
/// command on the host. Panics with the first failure's stderr.
fn setup_all(steps: &[(&str, &str)]) {
    for &(ns, cmd) in steps {
        let (ok, out) = if ns.is_empty() {
            let o = std::process::Command::new("bash").args(["-c", cmd]).output().unwrap();
            (o.status.success(), String::from_utf8_lossy(&o.stderr).to_string())
        } else {
            run(cmd, ns)
        };
        assert!(ok, "{ns}: {cmd}: {out}");
    }
}

fn run(cmd: &str, ns: &str) -> (bool, String) {
    let out = ns_exec(ns, &["bash", "-c", cmd]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Starts, on a thread, a Python UDP server in `ns` bound to `addr`:`port`:
/// it waits up to `secs` seconds for one datagram (`data` from `peer`),
/// then runs `then`. Returns once the server has had time to bind.
fn udp_server(
    ns: &'static str,
    addr: &str,
    port: u16,
    secs: u32,
    then: &str,
) -> std::thread::JoinHandle<(bool, String)> {
    let family = if addr.contains(':') { "AF_INET6" } else { "AF_INET" };
    let script = format!(
        "python3 - <<'PY'\nimport socket\ns = socket.socket(socket.{family}, socket.SOCK_DGRAM)\n\
         s.bind((\"{addr}\", {port}))\ns.settimeout({secs})\ndata, peer = s.recvfrom(65535)\n{then}\nPY"
    );
    let server = std::thread::spawn(move || run(&script, ns));
    std::thread::sleep(std::time::Duration::from_millis(300));
    server
}

#[test]
fn ipv4_client_reaches_ipv6_only_backends_through_a_nat46_vip() {
    let Some(_lab) = lab() else { return };
    let shunt = Shunt::start(&repo().join("pipelines/nat46.toml"));
    let (_, out) = run(
        "for i in $(seq 60); do curl -s -m 3 --no-keepalive http://10.0.100.1/ || echo FAIL; done",
        "shunt-client",
    );
    // Every response is intact, including 1 MiB bodies checked byte for byte.
    let expect = std::fs::read("/run/shunt-lab/big.bin").unwrap();
    for _ in 0..3 {
        let big = ns_exec(
            "shunt-client",
            &["curl", "-s", "-m", "10", "--no-keepalive", "http://10.0.100.1/big.bin"],
        );
        assert!(big.stdout == expect, "1 MiB body through NAT46 differs ({} bytes)", big.stdout.len());
    }
    let summary = shunt.stop();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 60, "{out}");
    assert!(lines.iter().all(|l| ["shunt-be1", "shunt-be2", "shunt-be6"].contains(l)), "{out}");
    assert!(lines.contains(&"shunt-be6"), "the IPv6-only backend served some: {out}");
    assert_eq!(counter(&summary, "worker 0", "untranslatable"), 0, "{summary}");
}

#[test]
fn ipv6_only_client_reaches_ipv4_only_server_through_stateful_nat64() {
    let Some(_lab) = lab() else { return };
    let shunt = Shunt::start(&repo().join("pipelines/nat64.toml"));
    let (ok, out) = run("curl -s -m 3 -g 'http://[64:ff9b::198.51.100.80]/'", "shunt-client6");
    assert!(ok && out.trim() == "shunt-v4srv", "{out}");
    let expect = std::fs::read("/run/shunt-lab/big.bin").unwrap();
    let big = ns_exec(
        "shunt-client6",
        &["curl", "-s", "-m", "10", "-g", "http://[64:ff9b::198.51.100.80]/big.bin"],
    );
    assert!(big.stdout == expect, "1 MiB body through NAT64 differs");
    // ping -6 across the translator: ICMPv6 echo ↔ ICMPv4 echo.
    let (ok, out) = run("ping -6 -c 3 -i 0.2 -W 2 64:ff9b::198.51.100.80", "shunt-client6");
    assert!(ok && out.contains("3 received"), "{out}");
    // The translator is a router: hop limit 1 expires there, and the
    // client hears about it in its own family.
    let (_, out) = run("ping -6 -c 1 -t 1 -W 2 64:ff9b::198.51.100.80", "shunt-client6");
    assert!(out.contains("Time exceeded"), "{out}");
    // The IPv4 server's Port Unreachable for a closed UDP port is an error
    // about the session: it reaches the client as ICMPv6, and the client's
    // socket reports ECONNREFUSED only if the quoted datagram matches its
    // own addresses and ports exactly (and every checksum is right).
    let probe = r#"python3 - <<'PY'
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect(("64:ff9b::198.51.100.80", 9))
s.send(b"probe")
try:
    s.recv(100)
    print("data")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
PY"#;
    let (_, out) = run(probe, "shunt-client6");
    assert_eq!(out.trim(), "refused", "{out}");
    let summary = shunt.stop();
    assert!(counter(&summary, "worker 0", "tx_packets") > 0);
}

#[test]
fn siit_translates_ping_both_ways_and_a_routers_time_exceeded() {
    let Some(_lab) = lab() else { return };
    let shunt = Shunt::start(&repo().join("pipelines/siit.toml"));
    // IPv4 client → IPv6-only host through an explicit address mapping.
    let (ok, out) = run("ping -c 3 -i 0.2 -W 2 10.0.200.21", "shunt-client");
    assert!(ok && out.contains("3 received"), "{out}");
    let (ok, out) = run("curl -s -m 3 http://10.0.200.21/", "shunt-client");
    assert!(ok && out.trim() == "shunt-be6", "{out}");
    // Traceroute-style: TTL 2 leaves Shunt as hop limit 1; shunt-be6, an IPv6
    // router towards fd00:201::/120, sends ICMPv6 Time Exceeded, which Shunt
    // translates to ICMPv4 (inner packet included) from 10.0.200.21.
    let (_, out) = run("ping -c 1 -t 2 -W 2 10.0.201.5", "shunt-client");
    assert!(out.contains("From 10.0.200.21") && out.contains("Time to live exceeded"), "{out}");
    // A 1500-byte IPv4 packet with DF grows to 1520 in IPv6: too big for the
    // 1500-byte link, so the sender gets Fragmentation Needed, MTU 1480
    // (RFC 7915 §4: 1500 − 20), and a packet that fits passes.
    let (_, out) = run("ping -c 1 -M do -s 1472 -W 2 10.0.200.21", "shunt-client");
    assert!(out.contains("Frag needed and DF set (mtu = 1480)"), "{out}");
    let (ok, out) = run("ping -c 1 -M do -s 1452 -W 2 10.0.200.21", "shunt-client");
    assert!(ok && out.contains("1 received"), "{out}");
    shunt.stop();
}

/// RFC 6791: with the IPv6 router shunt-be6 (fd00:2::21) left out of the
/// explicit mappings, its address has no IPv4 form, and its Time Exceeded
/// reaches the IPv4 client from the configured pool address 203.0.113.8,
/// in tracepath and ping alike; the hop before it is Shunt itself
/// (192.0.0.8, RFC 7600).
#[test]
fn siit_tracepath_shows_the_rfc6791_address_for_an_untranslatable_router() {
    let Some(_lab) = lab() else { return };
    let path = edited_pipeline("siit.toml", "rfc6791", |text| {
        let mapping = "  { v4 = \"10.0.200.21/32\", v6 = \"fd00:2::21/128\" },\n";
        assert!(text.contains(mapping));
        let text = text.replace(mapping, "").replace("[siit]\n", "[siit]\nrfc6791_v4 = \"203.0.113.8\"\n");
        assert!(text.contains("rfc6791_v4"));
        text
    });
    let shunt = Shunt::start(&path);
    let (_, out) = run("ping -c 1 -t 2 -W 2 10.0.201.5", "shunt-client");
    assert!(out.contains("From 203.0.113.8") && out.contains("Time to live exceeded"), "{out}");
    let (_, out) = run("tracepath -n -m 3 10.0.201.5", "shunt-client");
    // tracepath may list a hop twice: its first 1500-byte probe draws
    // Shunt's Fragmentation Needed (from 192.0.0.8, MTU 1480), the retry
    // at 1480 the router's Time Exceeded.
    let hop = |n: &str, addr: &str| out.lines().any(|l| l.trim_start().starts_with(n) && l.contains(addr));
    assert!(hop("1:", "192.0.0.8"), "{out}");
    assert!(hop("2:", "203.0.113.8"), "{out}");
    shunt.stop();
    let _ = std::fs::remove_file(&path);
}

//= https://www.rfc-editor.org/rfc/rfc4443#section-2.4
//# (f) Finally, in order to limit the bandwidth and forwarding costs
//# incurred by originating ICMPv6 error messages, an IPv6 node MUST limit
//# the rate of ICMPv6 error messages it originates.
/// The errors Shunt originates are rate limited (here to 5 a second, burst
/// 5): a second of expiring pings, 100 of them, draws the burst and about a
/// second's rate, and the rest are counted as `error_rate_limited`.
#[test]
fn siit_rate_limits_the_time_exceeded_errors_it_sends() {
    let Some(_lab) = lab() else { return };
    let path = edited_pipeline("siit.toml", "errlimit", |text| {
        let text = text.replace("[dataplane]\n", "[dataplane]\nerror_rate = 5\nerror_burst = 5\n");
        assert!(text.contains("error_rate = 5"));
        text
    });
    let shunt = Shunt::start(&path);
    let (_, out) = run("ping -n -c 100 -i 0.01 -t 1 -W 1 10.0.200.21", "shunt-client");
    let errors = out.lines().filter(|l| l.contains("Time to live exceeded")).count() as u64;
    // 5 at once, then 5 at each of the (at most two) second boundaries the
    // flood spans.
    assert!((5..=15).contains(&errors), "{errors} errors:\n{out}");
    let summary = shunt.stop();
    assert_eq!(counter(&summary, "worker 0", "error_rate_limited"), 100 - errors, "{summary}");
    let _ = std::fs::remove_file(&path);
}

/// `pipelines/<file>` with its own control socket and no Prometheus
/// listener, `edit`ed, written to a fresh file named after `tag`.
fn edited_pipeline(file: &str, tag: &str, edit: impl FnOnce(String) -> String) -> std::path::PathBuf {
    let id = rand_u32();
    let sock = std::env::temp_dir().join(format!("shunt-{tag}-{id}.sock"));
    let text = edit(std::fs::read_to_string(repo().join("pipelines").join(file)).unwrap())
        .replace("/run/shunt/control.sock", sock.to_str().unwrap())
        .replace("prometheus = \"127.0.0.1:9464\"", "");
    let path = std::env::temp_dir().join(format!("shunt-{tag}-{id}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Sets `dev`'s MTU inside `ns`.
fn mtu(ns: &str, dev: &str, mtu: u32) {
    let (ok, out) = run(&format!("ip link set dev {dev} mtu {mtu}"), ns);
    assert!(ok, "mtu {mtu} on {ns}/{dev}: {out}");
}

//= https://www.rfc-editor.org/rfc/rfc7915#section-4
// (paraphrase) An IPv4 packet without DF that would translate larger than
// lowest-ipv6-mtu (1280 here) is sent as IPv6 fragments of at most that size.
#[test]
fn siit_fragments_df_clear_ipv4_and_real_stacks_reassemble() {
    let Some(_lab) = lab() else { return };
    // The IPv4 link carries 3000-byte packets; the IPv6 side stays at 1500.
    mtu("shunt-client", "cli0", 3000);
    mtu("shunt", "sh-cli", 3000);
    let shunt = Shunt::start(&repo().join("pipelines/siit.toml"));
    // A 2000-byte UDP datagram, DF clear: Shunt sends it as IPv6 fragments
    // of at most 1280 bytes; the IPv6-only host's kernel reassembles it and
    // echoes it, fragmented at its own 1500-byte link; those IPv6 fragments
    // come back as IPv4 fragments that the client's kernel reassembles.
    let server = udp_server("shunt-be6", "fd00:2::21", 7010, 5, "s.sendto(data, peer)\nprint(len(data))");
    let client = r#"python3 - <<'PY'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_MTU_DISCOVER = IP_PMTUDISC_DONT: DF clear
s.settimeout(5)
msg = bytes(i * 7 % 251 for i in range(2000))
s.sendto(msg, ("10.0.200.21", 7010))
print("echoed" if s.recv(65535) == msg else "differs")
PY"#;
    let (_, out) = run(client, "shunt-client");
    assert_eq!(out.trim(), "echoed", "{out}");
    let (_, got) = server.join().unwrap();
    assert_eq!(got.trim(), "2000", "the IPv6 host got the whole datagram: {got}");
    // ping -s 2000 with DF clear reaches the host as fragments; its
    // 2048-byte reply would be fragmented at the 1500-byte IPv6 link, and
    // fragmented ICMP is never translated (RFC 7915 §1.2): widen that link
    // so the reply comes back whole.
    let v6_side =
        [("shunt", "sh-be"), ("shunt-switch", "sw-sh"), ("shunt-switch", "sw-be6"), ("shunt-be6", "be0")];
    for (ns, dev) in v6_side {
        mtu(ns, dev, 3000);
    }
    std::thread::sleep(std::time::Duration::from_millis(1500)); // Shunt re-reads MTUs each second
    let (ok, out) = run("ping -c 3 -i 0.3 -M dont -s 2000 -W 2 10.0.200.21", "shunt-client");
    assert!(ok && out.contains("3 received") && out.contains("2008 bytes from 10.0.200.21"), "{out}");
    // DF set and too big for the (again 1500-byte) IPv6 link: Fragmentation
    // Needed with that MTU less the 20 bytes the header grows by (no
    // Fragment header is added to a DF packet).
    for (ns, dev) in v6_side {
        mtu(ns, dev, 1500);
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (_, out) = run("ping -c 1 -M do -s 1600 -W 2 10.0.200.21", "shunt-client");
    assert!(out.contains("Frag needed and DF set (mtu = 1480)"), "{out}");
    let summary = shunt.stop();
    assert_eq!(counter(&summary, "worker 0", "frame_too_large"), 0, "{summary}");
}

/// A temporary IPv6-only host, namespace `shunt-hp6`, behind the lab
/// namespace `router` on a veth pair (`hp0` in the host, `hpr` in the
/// router); removed on drop, with `undo` run in the router.
struct Hp6 {
    router: &'static str,
    undo: &'static str,
}

impl Hp6 {
    /// The host at `addr` (with its prefix length) routing through
    /// `gateway`; `hpr` gets `mac`, and `router_setup` finishes the
    /// router's side.
    fn add(
        router: &'static str,
        mac: &str,
        addr: &str,
        gateway: &str,
        router_setup: &[&str],
        undo: &'static str,
    ) -> Hp6 {
        let host = Hp6 { router, undo };
        let link = format!("ip link add hpr address {mac} type veth peer name hp0 netns shunt-hp6");
        let host_addr = format!("ip -6 addr add {addr} dev hp0 nodad");
        let route = format!("ip -6 route add default via {gateway}");
        let mut steps = vec![
            ("", "ip netns del shunt-hp6 2>/dev/null; ip netns add shunt-hp6"),
            ("shunt-hp6", "ip link set lo up"),
            (router, link.as_str()),
            ("shunt-hp6", host_addr.as_str()),
            ("shunt-hp6", "ip link set hp0 up"),
            ("shunt-hp6", route.as_str()),
            ("shunt-hp6", "ethtool -K hp0 tx off"),
        ];
        steps.extend(router_setup.iter().map(|cmd| (router, *cmd)));
        setup_all(&steps);
        host
    }

    /// `shunt-hp6` at fd00:201::5, in the EAM fd00:201::/120 ↔
    /// 10.0.201.0/24, behind shunt-be6, which routes to it.
    fn behind_be6() -> Hp6 {
        Hp6::add(
            "shunt-be6",
            "02:00:00:00:20:01",
            "fd00:201::5/120",
            "fd00:201::1",
            &[
                "ip -6 addr add fd00:201::1/120 dev hpr nodad noprefixroute",
                "ip link set hpr up",
                "ip -6 route replace fd00:201::/120 dev hpr",
                "ethtool -K hpr tx off",
            ],
            "ip -6 route replace fd00:201::/120 via fd00:2::99",
        )
    }

    /// `shunt-hp6` at fd00:601::5 behind shunt-client6, which routes to it.
    fn behind_client6() -> Hp6 {
        Hp6::add(
            "shunt-client6",
            "02:00:00:00:60:01",
            "fd00:601::5/64",
            "fd00:601::1",
            &[
                "ip -6 addr add fd00:601::1/64 dev hpr nodad",
                "ip link set hpr up",
                "ethtool -K hpr tx off",
                "sysctl -qw net.ipv6.conf.all.forwarding=1",
            ],
            "sysctl -qw net.ipv6.conf.all.forwarding=0; ip link del hpr 2>/dev/null",
        )
    }
}

impl Drop for Hp6 {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "del", "shunt-hp6"]).status();
        let _ = run(self.undo, self.router);
    }
}

//= https://www.rfc-editor.org/rfc/rfc7757#section-4
// (paraphrase) Two IPv6 hosts reach each other through their IPv4 (EAM)
// addresses: the translator hairpins the packets back to IPv6.
#[test]
fn siit_hairpins_two_ipv6_only_hosts_through_their_ipv4_addresses() {
    let Some(_lab) = lab() else { return };
    let _hp6 = Hp6::behind_be6();
    let shunt = Shunt::start(&repo().join("pipelines/siit.toml"));
    // shunt-be6 is fd00:2::21 = 10.0.200.21; shunt-hp6 is fd00:201::5 =
    // 10.0.201.5. Each reaches the other at pool6 + the other's IPv4 address,
    // and sees the other's packets coming from there.
    let (ok, out) = run("ping -6 -c 3 -i 0.2 -W 2 64:ff9b:1::10.0.201.5", "shunt-be6");
    assert!(ok && out.contains("3 received"), "{out}");
    let (ok, out) = run("ping -6 -c 3 -i 0.2 -W 2 64:ff9b:1::10.0.200.21", "shunt-hp6");
    assert!(ok && out.contains("3 received"), "{out}");
    // A real TCP transfer both stacks check the checksums of: 1 MiB byte for
    // byte from a server on shunt-hp6.
    let mut server = std::process::Command::new("ip")
        .args(["netns", "exec", "shunt-hp6", "python3", "-m", "http.server", "8080"])
        .args(["--bind", "fd00:201::5", "--directory", "/run/shunt-lab"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (ok, _) = run(
        "for i in $(seq 50); do curl -s -o /dev/null -m 1 -g 'http://[fd00:201::5]:8080/' && exit 0; sleep 0.1; done; exit 1",
        "shunt-hp6",
    );
    let expect = std::fs::read("/run/shunt-lab/big.bin").unwrap();
    let big = ns_exec(
        "shunt-be6",
        &["curl", "-s", "-m", "10", "-g", "http://[64:ff9b:1::10.0.201.5]:8080/big.bin"],
    );
    let _ = server.kill();
    let _ = server.wait();
    assert!(ok, "the HTTP server on shunt-hp6 did not start");
    assert!(big.stdout == expect, "1 MiB body across the hairpin differs ({} bytes)", big.stdout.len());
    let summary = shunt.stop();
    assert_eq!(counter(&summary, "worker 0", "untranslatable"), 0, "{summary}");
}

//= https://www.rfc-editor.org/rfc/rfc6146#section-3.8
// (paraphrase) An IPv6 client reaches another at the prefix + that
// client's pool transport address; the NAT64 hairpins the packets.
/// Host B (shunt-client6) talks to an IPv4 server, which reads B's pool
/// address and port off the datagram; host A (shunt-hp6) sends to the
/// prefix + that address and port, B gets it from the prefix + A's own
/// pool address and port and answers there, and A gets the answer from
/// the address it sent to. Real UDP sockets check every checksum.
#[test]
fn nat64_hairpins_between_two_ipv6_only_hosts() {
    let Some(_lab) = lab() else { return };
    let _hp6 = Hp6::behind_client6();
    let shunt = Shunt::start(&repo().join("pipelines/nat64.toml"));
    let server = udp_server("shunt-v4srv", "198.51.100.80", 7013, 8, "print(peer[0], peer[1])");
    let b = r#"python3 - <<'PY'
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("fd00:6::2", 7100))
s.settimeout(8)
s.sendto(b"binding", ("64:ff9b::198.51.100.80", 7013))
data, peer = s.recvfrom(100)
s.sendto(b"hello A", peer)
print(data.decode(), peer[0], peer[1])
PY"#;
    let b = std::thread::spawn(move || run(b, "shunt-client6"));
    let (ok, seen) = server.join().unwrap();
    assert!(ok, "the IPv4 server got nothing: {seen}");
    let mut it = seen.split_whitespace();
    let (pool_addr, pool_port) = (it.next().unwrap().to_string(), it.next().unwrap().to_string());
    let a = format!(
        r#"python3 - <<'PY'
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.settimeout(3)
for i in range(5):
    s.sendto(b"hello B", ("64:ff9b::{pool_addr}", {pool_port}))
    try:
        data, peer = s.recvfrom(100)
        print(data.decode(), peer[0], peer[1])
        break
    except socket.timeout:
        pass
PY"#
    );
    let (_, got_a) = run(&a, "shunt-hp6");
    let (_, got_b) = b.join().unwrap();
    // B's socket is closed now: B's stack refuses A's next datagram with
    // Port Unreachable. A's stack must take the error as its own (a
    // connected socket then reports ECONNREFUSED: quote and checksums
    // right), and see it come from the address it sent to, never B's.
    let refused = format!(
        r#"python3 - <<'PY'
import socket
raw = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
raw.settimeout(3)
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.connect(("64:ff9b::{pool_addr}", {pool_port}))
s.settimeout(2)
refused = False
for i in range(3):
    s.send(b"anyone?")
    try:
        s.recv(100)
    except ConnectionRefusedError:
        refused = True
        break
    except socket.timeout:
        pass
src = None
try:
    while src is None:
        data, peer = raw.recvfrom(2000)
        if data[0] == 1 and data[1] == 4:
            src = peer[0]
except socket.timeout:
    pass
print(refused, src)
PY"#
    );
    let (_, got_refused) = run(&refused, "shunt-hp6");
    let summary = shunt.stop();
    let prefixed = |a: &str| {
        let v4: std::net::Ipv4Addr = a.parse().unwrap();
        let mut v6 = [0u8; 16];
        v6[..4].copy_from_slice(&[0, 0x64, 0xff, 0x9b]);
        v6[12..].copy_from_slice(&v4.octets());
        std::net::Ipv6Addr::from(v6).to_string()
    };
    let want_a = format!("hello A {} {pool_port}", prefixed(&pool_addr));
    assert_eq!(got_a.trim(), want_a, "A's answer came from where it sent\nB: {got_b}\n{summary}");
    let mut bw = got_b.split_whitespace();
    assert_eq!((bw.next(), bw.next()), (Some("hello"), Some("B")), "B: {got_b}");
    let from: std::net::Ipv6Addr = bw.next().unwrap().parse().unwrap();
    assert!(
        from.octets()[..12] == [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0]
            && from.octets()[12..15] == [10, 0, 4],
        "B saw A at the prefix + a pool address: {got_b}"
    );
    let want = format!("True {}", prefixed(&pool_addr));
    assert_eq!(got_refused.trim(), want, "A's port unreachable from B\n{summary}");
    assert_eq!(counter(&summary, "worker 0", "untranslatable"), 0, "{summary}");
}

//= https://www.rfc-editor.org/rfc/rfc6146#section-3.4
// (paraphrase) An ICMPv6 error about a session is translated with that
// session's state.
/// Two workers, two queues per Shunt-facing veth. The client's UDP
/// sessions spread over both workers (each socket's packets take their own
/// queue), while its kernel's ICMPv6 errors, all to one address and with no
/// ports to hash, arrive on one: about half of them on the worker without
/// the session. Every one must reach the IPv4 server as ICMPv4 Port
/// Unreachable about the very datagram the server sent, checksum valid.
#[test]
fn nat64_with_two_workers_translates_every_icmpv6_error_with_its_session() {
    let Some(_lab) = lab_with_queues(2) else { return };
    let one = "[[worker]]\ncore = 1\nqueues = [{ interface = \"sh-c6\", queue = 0 }, { interface = \"sh-be\", queue = 0 }]";
    let two = "[[worker]]\ncore = 0\nqueues = [{ interface = \"sh-c6\", queue = 0 }, { interface = \"sh-be\", queue = 0 }]\n\n\
               [[worker]]\ncore = 1\nqueues = [{ interface = \"sh-c6\", queue = 1 }, { interface = \"sh-be\", queue = 1 }]";
    let path = edited_pipeline("nat64.toml", "nat64w", |text| {
        assert!(text.contains(one));
        text.replace(one, two)
    });
    // The client's kernel would rate-limit errors to one destination.
    let (ok, out) = run("sysctl -qw net.ipv6.icmp.ratelimit=0", "shunt-client6");
    assert!(ok, "{out}");
    let shunt = Shunt::start(&path);
    // The server takes 16 datagrams and the client's "go" (sent once every
    // probing socket is closed), then answers each probe; a raw socket sees
    // the ICMPv4 errors that come back and keeps those quoting an answer
    // it sent (source 198.51.100.80:7011) whose ICMP checksum is right.
    let server = r#"python3 - <<'PY'
import socket, struct, time
N = 16
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
raw.settimeout(0.2)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.51.100.80", 7011))
s.settimeout(5)
peers = []
go = False
while len(peers) < N or not go:
    data, peer = s.recvfrom(100)
    if data == b"go":
        go = True
    else:
        peers.append(peer)
for p in peers:
    s.sendto(b"answer", p)
def valid(b):
    b = b + b"\0" * (len(b) % 2)
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t > 0xFFFF:
        t = (t & 0xFFFF) + (t >> 16)
    return t == 0xFFFF
errs = set()
end = time.time() + 4
while time.time() < end and len(errs) < N:
    try:
        pkt = raw.recv(2000)
    except socket.timeout:
        continue
    icmp = pkt[(pkt[0] & 15) * 4:]
    if icmp[:2] != b"\x03\x03" or not valid(icmp):
        continue
    inner = icmp[8:]
    l4 = inner[(inner[0] & 15) * 4:]
    sport, dport = struct.unpack("!HH", l4[:4])
    if socket.inet_ntoa(inner[12:16]) == "198.51.100.80" and sport == 7011:
        errs.add((socket.inet_ntoa(inner[16:20]), dport))
print(len(set(peers)), len(errs & set(peers)))
PY"#;
    let server = std::thread::spawn(move || run(server, "shunt-v4srv"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    // 16 sockets, one datagram each, all closed before the answers come.
    let client = r#"python3 - <<'PY'
import socket
server = ("64:ff9b::198.51.100.80", 7011)
socks = []
for i in range(16):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.sendto(b"probe", server)
    socks.append(s)
for s in socks:
    s.close()
with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
    s.sendto(b"go", server)
PY"#;
    let (ok, out) = run(client, "shunt-client6");
    assert!(ok, "{out}");
    let (_, got) = server.join().unwrap();
    let summary = shunt.stop();
    let _ = std::fs::remove_file(&path);
    assert_eq!(got.trim(), "16 16", "sessions, errors about them that arrived:\n{got}\n{summary}");
    for w in ["worker 0", "worker 1"] {
        assert!(counter(&summary, w, "rx_packets") > 0, "both workers served: {summary}");
    }
}
