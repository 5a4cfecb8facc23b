//! Runtime changes as edits of the config text, so a change through the
//! control socket passes exactly the validation a config file does
//! (firecracker's "one path for configuration").

use toml_edit::{Array, DocumentMut, InlineTable, Item, Table, Value};

use super::protocol::Request;

/// Why a change request does not fit the config text.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("running config does not parse: {0}")]
    Unparsable(#[source] toml_edit::TomlError),
    #[error("no service `{0}`")]
    NoService(String),
    #[error("service `{0}` already exists")]
    ServiceExists(String),
    #[error("service.add needs `name`")]
    Unnamed,
    #[error("service `{service}` already has backend {addr}:{port}")]
    BackendExists { service: String, addr: String, port: u16 },
    #[error("service `{service}` has no backend {addr}:{port}")]
    NoBackend { service: String, addr: String, port: u16 },
    #[error("service `{0}` has no inline `backends = [...]` array")]
    NoBackendList(String),
    /// The text's `service` key, or a backend in the list, has another shape
    /// than the one the edit writes.
    #[error("{0} is not {1}")]
    Shape(&'static str, &'static str),
    #[error("bad number")]
    BadNumber,
    #[error("null is not a config value")]
    Null,
    #[error("not a config change")]
    NotAChange,
}

/// Applies a change request to config text; returns the new text.
pub fn apply(text: &str, req: &Request) -> Result<String, EditError> {
    let mut doc: DocumentMut = text.parse().map_err(EditError::Unparsable)?;
    match req {
        Request::BackendAdd { service, addr, port, weight, mac } => {
            let backends = backends_of(&mut doc, service)?;
            if find(backends, addr, *port).is_some() {
                return Err(EditError::BackendExists {
                    service: service.clone(),
                    addr: addr.clone(),
                    port: *port,
                });
            }
            let mut t = InlineTable::new();
            t.insert("addr", addr.as_str().into());
            t.insert("port", i64::from(*port).into());
            t.insert("weight", i64::from(*weight).into());
            if let Some(mac) = mac {
                t.insert("mac", mac.as_str().into());
            }
            backends.push(t);
        }
        Request::BackendRemove { service, addr, port } => {
            let backends = backends_of(&mut doc, service)?;
            let i = find(backends, addr, *port).ok_or_else(|| no_backend(service, addr, *port))?;
            backends.remove(i);
        }
        Request::BackendDrain { service, addr, port } => set_weight(&mut doc, service, addr, *port, 0)?,
        Request::BackendWeight { service, addr, port, weight } => {
            set_weight(&mut doc, service, addr, *port, *weight)?
        }
        Request::ServiceAdd { service } => {
            let name = service.get("name").and_then(|n| n.as_str()).ok_or(EditError::Unnamed)?;
            if service_index(&doc, name).is_some() {
                return Err(EditError::ServiceExists(name.to_string()));
            }
            let mut t = Table::new();
            for (k, v) in service {
                t.insert(k, Item::Value(json_to_toml(v)?));
            }
            services_mut(&mut doc)?.push(t);
        }
        Request::ServiceRemove { name } => {
            let i = service_index(&doc, name).ok_or_else(|| EditError::NoService(name.clone()))?;
            services_mut(&mut doc)?.remove(i);
        }
        _ => return Err(EditError::NotAChange),
    }
    Ok(doc.to_string())
}

fn services_mut(doc: &mut DocumentMut) -> Result<&mut toml_edit::ArrayOfTables, EditError> {
    if doc.get("service").is_none() {
        doc.insert("service", Item::ArrayOfTables(Default::default()));
    }
    doc.get_mut("service")
        .and_then(Item::as_array_of_tables_mut)
        .ok_or(EditError::Shape("`service`", "[[service]]"))
}

fn service_index(doc: &DocumentMut, name: &str) -> Option<usize> {
    doc.get("service")?
        .as_array_of_tables()?
        .iter()
        .position(|t| t.get("name").and_then(Item::as_str) == Some(name))
}

fn backends_of<'a>(doc: &'a mut DocumentMut, service: &str) -> Result<&'a mut Array, EditError> {
    let no_service = || EditError::NoService(service.to_string());
    let i = service_index(doc, service).ok_or_else(no_service)?;
    let t = services_mut(doc)?.get_mut(i).ok_or_else(no_service)?;
    t.get_mut("backends")
        .and_then(Item::as_array_mut)
        .ok_or_else(|| EditError::NoBackendList(service.to_string()))
}

fn find(backends: &Array, addr: &str, port: u16) -> Option<usize> {
    backends.iter().position(|b| {
        let Some(t) = b.as_inline_table() else { return false };
        let same_addr =
            t.get("addr").and_then(Value::as_str).and_then(|a| a.parse::<std::net::IpAddr>().ok())
                == addr.parse::<std::net::IpAddr>().ok()
                || t.get("addr").and_then(Value::as_str) == Some(addr);
        same_addr && t.get("port").and_then(Value::as_integer) == Some(i64::from(port))
    })
}

fn no_backend(service: &str, addr: &str, port: u16) -> EditError {
    EditError::NoBackend { service: service.to_string(), addr: addr.to_string(), port }
}

fn set_weight(
    doc: &mut DocumentMut,
    service: &str,
    addr: &str,
    port: u16,
    weight: u32,
) -> Result<(), EditError> {
    let backends = backends_of(doc, service)?;
    let i = find(backends, addr, port).ok_or_else(|| no_backend(service, addr, port))?;
    let t = backends
        .get_mut(i)
        .and_then(Value::as_inline_table_mut)
        .ok_or(EditError::Shape("backend", "an inline table"))?;
    t.insert("weight", i64::from(weight).into());
    Ok(())
}

fn json_to_toml(v: &serde_json::Value) -> Result<Value, EditError> {
    Ok(match v {
        serde_json::Value::Bool(b) => (*b).into(),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64().ok_or(EditError::BadNumber)?.into(),
        },
        serde_json::Value::String(s) => s.as_str().into(),
        serde_json::Value::Array(a) => {
            let mut arr = Array::new();
            for x in a {
                arr.push(json_to_toml(x)?);
            }
            Value::Array(arr)
        }
        serde_json::Value::Object(o) => {
            let mut t = InlineTable::new();
            for (k, x) in o {
                t.insert(k, json_to_toml(x)?);
            }
            Value::InlineTable(t)
        }
        serde_json::Value::Null => return Err(EditError::Null),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
[[service]]
name = "web"
backends = [
  { addr = "10.0.2.11", port = 80, weight = 100 },
]
"#;

    #[test]
    fn backend_changes_edit_the_text() {
        let add = Request::BackendAdd {
            service: "web".into(),
            addr: "10.0.2.12".into(),
            port: 80,
            weight: 50,
            mac: None,
        };
        let t = apply(TEXT, &add).unwrap();
        assert!(t.contains(r#"{ addr = "10.0.2.12", port = 80, weight = 50 }"#), "{t}");
        let drain = Request::BackendDrain { service: "web".into(), addr: "10.0.2.11".into(), port: 80 };
        let t = apply(&t, &drain).unwrap();
        assert!(t.contains(r#"{ addr = "10.0.2.11", port = 80, weight = 0 }"#), "{t}");
        let rm = Request::BackendRemove { service: "web".into(), addr: "10.0.2.11".into(), port: 80 };
        let t = apply(&t, &rm).unwrap();
        assert!(!t.contains("10.0.2.11"), "{t}");
        let e = apply(&t, &rm).unwrap_err();
        assert!(matches!(e, EditError::NoBackend { port: 80, .. }), "{e:?}");
        assert_eq!(e.to_string(), "service `web` has no backend 10.0.2.11:80");
        let e = apply(&t, &Request::ServiceRemove { name: "nope".into() }).unwrap_err();
        assert_eq!(e.to_string(), "no service `nope`");
        let e = apply(&t, &add).unwrap_err();
        assert_eq!(e.to_string(), "service `web` already has backend 10.0.2.12:80");
    }
}
