//! Configs for tests, benches and fuzz targets, loaded from the ready-made
//! `pipelines/*.toml` and edited in code, so there is one copy of each
//! pipeline and a test states only how its config differs.
//!
//! Keys are dotted paths. In an array, a segment selects by index (`0`), by
//! `name` (`service.web`), or every element (`*`):
//!
//! ```
//! use shunt_testkit::fixtures::Fixture;
//! let config = Fixture::load("l4lb")
//!     .set("service.*.maglev_table_size", 251)
//!     .set("conntrack.entries_per_worker", 4096)
//!     .remove("service.web6")
//!     .config();
//! # let _ = config;
//! ```

use std::path::{Path, PathBuf};

use shunt::config::Config;
use toml::{Table, Value};

use crate::harness::Harness;

/// The repository root (where `pipelines/` and `config.toml` live).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// A pipeline file being edited for a test.
#[derive(Clone, Debug)]
pub struct Fixture {
    name: String,
    doc: Table,
}

impl Fixture {
    /// `pipelines/<name>.toml`.
    pub fn load(name: &str) -> Fixture {
        let path = repo().join("pipelines").join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let doc = text.parse().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Fixture { name: name.to_string(), doc }
    }

    /// `pipelines/l4lb.toml` cut down for golden tests: one backend per
    /// service (its MAC pinned), Maglev tables of 251 slots, SNAT to one
    /// address per family (10.0.3.7, fd00:3::7: [`crate::addrs::SNAT`]),
    /// 4096 conntrack entries.
    pub fn small_lb() -> Fixture {
        Fixture::load("l4lb")
            .truncate("service.*.backends", 1)
            .set("service.*.maglev_table_size", 251)
            .set("service.web.snat_pool", "10.0.3.7/32")
            .set("service.web6.snat_pool", "fd00:3::7/128")
            .pin_backend_macs()
            .set("conntrack.entries_per_worker", 4096)
    }

    /// [`Fixture::small_lb`] serving DNS: UDP port 53 on both VIPs, the
    /// backends on port 5353.
    pub fn small_dns_lb() -> Fixture {
        Fixture::small_lb()
            .set("service.*.protocol", "udp")
            .set("service.*.port", 53)
            .set("service.*.backends.0.port", 5353)
    }

    /// Sets `key` on every place the path's parent selects (creating the
    /// last key).
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Fixture {
        let value = value.into();
        let (parent, last) = split(key);
        let n = self.each(parent, &mut |v| {
            if let Value::Table(t) = v {
                t.insert(last.to_string(), value.clone());
            }
        });
        assert!(n > 0, "{}: nothing at `{parent}` to set `{last}` on", self.name);
        self
    }

    /// Removes `key`: a table key, or the elements an array segment selects.
    pub fn remove(mut self, key: &str) -> Fixture {
        let (parent, last) = split(key);
        let mut removed = 0;
        self.each(parent, &mut |v| match v {
            Value::Table(t) => removed += usize::from(t.remove(last).is_some()),
            Value::Array(a) => {
                let before = a.len();
                let mut i = 0;
                a.retain(|e| {
                    let keep = !selects(e, i, last);
                    i += 1;
                    keep
                });
                removed += before - a.len();
            }
            _ => {}
        });
        assert!(removed > 0, "{}: nothing at `{key}` to remove", self.name);
        self
    }

    /// Keeps the first `n` elements of each array at `key`.
    pub fn truncate(mut self, key: &str, n: usize) -> Fixture {
        let found = self.each(key, &mut |v| {
            if let Value::Array(a) = v {
                a.truncate(n);
            }
        });
        assert!(found > 0, "{}: no array at `{key}`", self.name);
        self
    }

    /// Appends a copy of service `from`, renamed `to`.
    pub fn copy_service(mut self, from: &str, to: &str) -> Fixture {
        let services = self.doc.get_mut("service").and_then(Value::as_array_mut).expect("[[service]]");
        let mut copy = services.iter().find(|s| name_of(s) == Some(from)).cloned().expect("service to copy");
        copy.as_table_mut().expect("service table").insert("name".into(), to.into());
        services.push(copy);
        self
    }

    /// Adds services `dns` and `dns6`: copies of `web` and `web6` for UDP
    /// port 53, their backends on `backend_port`.
    pub fn dns_services(self, backend_port: u16) -> Fixture {
        let mut f = self.copy_service("web", "dns").copy_service("web6", "dns6");
        for s in ["dns", "dns6"] {
            f = f
                .set(&format!("service.{s}.protocol"), "udp")
                .set(&format!("service.{s}.port"), 53)
                .set(&format!("service.{s}.backends.*.port"), i64::from(backend_port));
        }
        f
    }

    /// Copies table `key` of `pipelines/<file>.toml` to `to` here.
    pub fn adopt(mut self, file: &str, key: &str, to: &str) -> Fixture {
        let mut other = Fixture::load(file);
        let mut found = None;
        other.each(key, &mut |v| found = Some(v.clone()));
        let value = found.unwrap_or_else(|| panic!("{file}: no `{key}`"));
        let (parent, last) = split(to);
        self.ensure_table(parent).insert(last.to_string(), value);
        self
    }

    /// Appends a `[[route]]`.
    pub fn route(mut self, dst: &str, protocol: &str, pipeline: &str) -> Fixture {
        let mut r = Table::new();
        r.insert("dst".into(), dst.into());
        r.insert("protocol".into(), protocol.into());
        r.insert("pipeline".into(), pipeline.into());
        let routes = self.doc.entry("route").or_insert_with(|| Value::Array(Vec::new()));
        routes.as_array_mut().expect("[[route]]").push(Value::Table(r));
        self
    }

    /// Pins every backend without a MAC to the lab's: host N of
    /// `10.0.2.N` / `fd00:2::N` is `02:00:00:00:02:NN` (N in hex), as
    /// `scripts/lab.sh` assigns them. The harness has no neighbour table.
    pub fn pin_backend_macs(mut self) -> Fixture {
        self.each("service.*.backends.*", &mut |b| {
            let Value::Table(t) = b else { return };
            if t.contains_key("mac") {
                return;
            }
            let addr = t.get("addr").and_then(Value::as_str).unwrap_or_default();
            let host: u8 = addr.rsplit(['.', ':']).next().and_then(|h| h.parse().ok()).unwrap_or(0);
            t.insert("mac".into(), format!("02:00:00:00:02:{host:02x}").into());
        });
        self
    }

    /// The edited file as TOML text.
    pub fn text(&self) -> String {
        toml::to_string(&self.doc).expect("serialise fixture")
    }

    /// The validated config; panics with the config error if it is invalid.
    pub fn config(&self) -> Config {
        let path = PathBuf::from(format!("{}.toml", self.name));
        Config::parse(&path, &self.text()).unwrap_or_else(|e| panic!("fixture {}: {e:#}", self.name))
    }

    /// A harness over this config, ports in interface order.
    pub fn harness(&self) -> Harness {
        Harness::new(&self.config(), None).unwrap_or_else(|e| panic!("fixture {}: {e:#}", self.name))
    }

    /// Runs `f` on every value `path` selects; returns how many.
    fn each(&mut self, path: &str, f: &mut dyn FnMut(&mut Value)) -> usize {
        let segs: Vec<&str> = if path.is_empty() { Vec::new() } else { path.split('.').collect() };
        let mut root = Value::Table(std::mem::take(&mut self.doc));
        let n = walk(&mut root, &segs, f);
        let Value::Table(t) = root else { unreachable!() };
        self.doc = t;
        n
    }

    fn ensure_table(&mut self, path: &str) -> &mut Table {
        let mut t = &mut self.doc;
        for seg in path.split('.').filter(|s| !s.is_empty()) {
            let v = t.entry(seg.to_string()).or_insert_with(|| Value::Table(Table::new()));
            t = v.as_table_mut().unwrap_or_else(|| panic!("`{seg}` is not a table"));
        }
        t
    }
}

fn split(key: &str) -> (&str, &str) {
    key.rsplit_once('.').unwrap_or(("", key))
}

fn name_of(v: &Value) -> Option<&str> {
    v.get("name").and_then(Value::as_str)
}

fn selects(v: &Value, index: usize, seg: &str) -> bool {
    seg == "*" || seg.parse() == Ok(index) || name_of(v) == Some(seg)
}

fn walk(v: &mut Value, segs: &[&str], f: &mut dyn FnMut(&mut Value)) -> usize {
    let Some((seg, rest)) = segs.split_first() else {
        f(v);
        return 1;
    };
    match v {
        Value::Table(t) => t.get_mut(*seg).map_or(0, |v| walk(v, rest, f)),
        Value::Array(a) => {
            a.iter_mut().enumerate().filter(|(i, e)| selects(e, *i, seg)).map(|(_, e)| walk(e, rest, f)).sum()
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pipeline_file_loads_and_validates() {
        for name in ["l4lb", "l2fwd", "nat46", "nat64", "siit"] {
            Fixture::load(name).config();
        }
    }

    #[test]
    fn paths_select_by_name_index_and_star() {
        let f = Fixture::load("l4lb")
            .set("service.web.port", 8080)
            .set("service.*.maglev_table_size", 251)
            .truncate("service.*.backends", 2)
            .set("service.web6.backends.1.port", 81)
            .copy_service("web", "dns")
            .set("service.dns.protocol", "udp");
        f.config();
        let doc: Table = f.text().parse().unwrap();
        let services = doc["service"].as_array().unwrap();
        let names: Vec<_> = services.iter().filter_map(name_of).collect();
        assert_eq!(names, ["web", "web6", "dns"]);
        assert_eq!(services[0]["port"].as_integer(), Some(8080));
        assert!(services.iter().all(|s| s["backends"].as_array().unwrap().len() == 2));
        assert_eq!(services[1]["backends"][1]["port"].as_integer(), Some(81));
        let f = f.remove("service.web6").remove("conntrack.full");
        f.config();
        assert_eq!(f.text().matches("[[service]]").count(), 2);
        assert!(!f.text().contains("full ="));
    }

    #[test]
    fn backend_macs_follow_the_lab() {
        let t = Fixture::load("l4lb").pin_backend_macs().text();
        assert!(t.contains("02:00:00:00:02:0b") && t.contains("02:00:00:00:02:0d"), "{t}");
    }

    #[test]
    #[should_panic(expected = "nothing at `service.nope`")]
    fn a_path_that_selects_nothing_is_an_error() {
        let _ = Fixture::load("l4lb").set("service.nope.port", 1);
    }
}
