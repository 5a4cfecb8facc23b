//! The module graph has no cycles: none between top-level modules of the
//! crate, none between the modules of `src/pipeline/`. Edges are read from
//! the source (`crate::m`, and `super::m` inside the pipeline), test code
//! and comments left out. A cycle is reported with every module in it.
//! Read the same way: no library module uses `anyhow`, and none returns
//! a `String` (or a boxed `dyn Error`) as its error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The file's code without its `#[cfg(test)]` tail and `//` comments.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Module names that follow `prefix` in `text` (`crate::` → `config`, …).
fn refs(text: &str, prefix: &str) -> BTreeSet<String> {
    text.match_indices(prefix)
        .filter(|(i, _)| !text[..*i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':'))
        .map(|(i, _)| {
            text[i + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect::<String>()
        })
        .filter(|m| !m.is_empty())
        .collect()
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct S<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut S<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        for w in s.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.stack.contains(&w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let at = s.stack.iter().rposition(|x| *x == v).unwrap();
            let scc: Vec<String> = s.stack.split_off(at).into_iter().map(String::from).collect();
            if scc.len() > 1 {
                s.out.push(scc);
            }
        }
    }
    let mut s = S { g, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), out: Vec::new() };
    for v in g.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// The crate's `src/`; MODCYCLES_SRC points the tests at another tree (to
/// see them fail there).
fn src() -> PathBuf {
    std::env::var_os("MODCYCLES_SRC")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), PathBuf::from)
}

fn graphs() -> (Graph, Graph) {
    let src = src();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let (mut top, mut pipeline) = (Graph::new(), Graph::new());
    let pipeline_mods: BTreeSet<String> = std::fs::read_dir(src.join("pipeline"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_string()))
        .filter(|m| m != "mod")
        .collect();
    for f in files {
        let rel: Vec<String> = f
            .strip_prefix(&src)
            .unwrap()
            .with_extension("")
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .filter(|c| c != "mod")
            .collect();
        let Some(first) = rel.first() else { continue };
        if first == "lib" || first == "main" {
            continue;
        }
        let text = code(&std::fs::read_to_string(&f).unwrap());
        let edges = top.entry(first.clone()).or_default();
        edges.extend(refs(&text, "crate::").into_iter().filter(|m| m != first));
        if first == "pipeline" && rel.len() >= 2 {
            let me = rel[1].clone();
            let mut r = refs(&text, "crate::pipeline::");
            // `super::` of a pipeline/x.rs is pipeline; of pipeline/x/y.rs it is x.
            if rel.len() == 2 {
                r.extend(refs(&text, "super::"));
            } else {
                r.extend(refs(&text, "super::super::"));
            }
            let e = pipeline.entry(me.clone()).or_default();
            e.extend(r.into_iter().filter(|m| *m != me && pipeline_mods.contains(m)));
        }
    }
    (top, pipeline)
}

#[test]
fn top_level_modules_form_no_cycle() {
    let (top, _) = graphs();
    assert!(top.contains_key("pipeline") && top["pipeline"].contains("wire"), "graph read: {top:?}");
    assert_eq!(cycles(&top), Vec::<Vec<String>>::new(), "edges: {top:#?}");
}

#[test]
fn pipeline_modules_form_no_cycle() {
    let (_, pipeline) = graphs();
    assert!(pipeline.contains_key("lb"), "graph read: {pipeline:?}");
    assert_eq!(cycles(&pipeline), Vec::<Vec<String>>::new(), "edges: {pipeline:#?}");
}

/// The library's errors are thiserror types that name what failed;
/// `anyhow` is for `main.rs` alone.
#[test]
fn only_main_uses_anyhow() {
    let src = src();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let users: Vec<&PathBuf> = files
        .iter()
        .filter(|f| {
            **f != src.join("main.rs") && code(&std::fs::read_to_string(f).unwrap()).contains("anyhow")
        })
        .collect();
    assert!(files.len() > 50, "files read: {}", files.len());
    assert!(users.is_empty(), "library files using anyhow: {users:?}");
}

/// The error types of every `Result<T, E>` written in `text`.
fn result_errors(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("Result<") {
        let args = &text[at + "Result<".len()..];
        let (mut depth, mut comma, mut end) = (0usize, None, None);
        let mut after_dash = false;
        for (i, c) in args.char_indices() {
            let arrow = std::mem::replace(&mut after_dash, c == '-') && c == '>';
            match c {
                // A function type's `->` closes nothing.
                _ if arrow => {}
                '<' | '(' | '[' => depth += 1,
                '>' | ')' | ']' if depth == 0 => {
                    end = Some(i);
                    break;
                }
                '>' | ')' | ']' => depth -= 1,
                ',' if depth == 0 => comma = Some(i),
                _ => {}
            }
        }
        if let (Some(c), Some(e)) = (comma, end) {
            out.push(args[c + 1..e].split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    out
}

/// The library's errors are types: a caller matches on what failed
/// instead of parsing a message.
#[test]
fn library_errors_are_not_strings() {
    let src = src();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let untyped: Vec<(PathBuf, String)> = files
        .iter()
        .filter(|f| **f != src.join("main.rs"))
        .flat_map(|f| {
            let errors = result_errors(&code(&std::fs::read_to_string(f).unwrap()));
            errors
                .into_iter()
                .filter(|e| e == "String" || e.starts_with("Box<dyn"))
                .map(|e| (f.clone(), e))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(untyped.is_empty(), "library functions with untyped errors: {untyped:#?}");
}

#[test]
fn the_error_reader_reads_results() {
    let text = "fn a() -> Result<HashMap<String, String>, ConfigError> {}\n\
                fn b(x: &str) -> Result<(u8, Vec<u16>), String> {}\n\
                fn c() -> io::Result<()> {}\n\
                fn d() -> Result<Box<dyn Fn(u8) -> u8>, String> {}";
    assert_eq!(result_errors(text), ["ConfigError", "String", "String"]);
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let g: Graph =
        [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")].into_iter().fold(Graph::new(), |mut g, (x, y)| {
            g.entry(x.into()).or_default().insert(y.into());
            g
        });
    assert_eq!(cycles(&g), vec![vec!["a".to_string(), "b".into(), "c".into()]]);
}
