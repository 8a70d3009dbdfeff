//! The layering of `src/`, checked: a module may import only from its own
//! floor or the floors below it, no two modules import each other (directly
//! or around a circle), and no two files of one module do either. The
//! floors are written here and in ARCHITECTURE.md ("Floors"); this test
//! reads the `crate::` and `super::` paths of every file and fails on an
//! import that climbs a floor or closes a circle.
//!
//! Test modules (`#[cfg(test)] mod tests`) are not read: a unit test may
//! build its fixture from any floor. A parent module's imports of its own
//! children (its `mod` lines and re-exports) are containment, not imports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The floors, bottom first. A top-level module of `src/` that is not
/// listed here fails the test, so a new module must be placed.
const FLOORS: &[(&str, &[&str])] = &[
    ("ground: the shared vocabulary", &["vocab"]),
    (
        "building blocks",
        &[
            "platform",
            "perf",
            "supervisor",
            "guard",
            "storage",
            "pacing",
            "sensors",
            "systemd",
        ],
    ),
    ("coordinators", &["alerts", "mqtt", "web", "shed"]),
    ("assembly", &["app"]),
    ("tools", &["bench"]),
];

/// A source file: its module path (`["storage", "writer"]`) and text.
struct File {
    module: Vec<String>,
    text: String,
}

fn module_path(rel: &Path) -> Option<Vec<String>> {
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?;
    if parts.is_empty() && (stem == "lib" || stem == "main")
        || parts.first().is_some_and(|p| p == "bin")
    {
        return None; // the crate root re-exports; binaries are the top
    }
    if stem != "mod" {
        parts.push(stem.to_owned());
    }
    Some(parts)
}

fn read_tree(root: &Path) -> Vec<File> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    walk(root, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| {
            let module = module_path(p.strip_prefix(root).ok()?)?;
            let text = std::fs::read_to_string(&p).expect("read source file");
            Some(File { module, text })
        })
        .collect()
}

/// The text outside comments, string literals and test modules.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|n| n.trim_start().starts_with("mod tests"))
        {
            break; // by convention the test module closes the file
        }
        let mut kept = String::new();
        let mut chars = line.chars().peekable();
        let mut in_str = false;
        while let Some(c) = chars.next() {
            if in_str {
                if c == '\\' {
                    chars.next();
                } else if c == '"' {
                    in_str = false;
                }
                continue;
            }
            if c == '/' && chars.peek() == Some(&'/') {
                break;
            }
            if c == '"' {
                in_str = true;
                continue;
            }
            kept.push(c);
        }
        out.push_str(&kept);
        out.push('\n');
    }
    out
}

/// Every path that starts with `crate::` or `super::`, with brace groups
/// expanded: `crate::a::{b, c::{d, e}}` gives `a::b`, `a::c::d`, `a::c::e`.
fn paths_in(code: &str) -> Vec<(String, Vec<String>)> {
    let bytes: Vec<char> = code.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let rest: String = bytes[i..bytes.len().min(i + 7)].iter().collect();
        let boundary = i == 0 || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_');
        let start = if !boundary {
            None
        } else if rest.starts_with("crate::") {
            Some(("crate", 7))
        } else if rest.starts_with("super::") {
            Some(("super", 7))
        } else {
            None
        };
        match start {
            Some((anchor, len)) => {
                let mut j = i + len;
                let mut tails = Vec::new();
                parse_tree(&bytes, &mut j, Vec::new(), &mut tails);
                for t in tails {
                    found.push((anchor.to_owned(), t));
                }
                i = j.max(i + 1);
            }
            None => i += 1,
        }
    }
    found
}

fn parse_tree(b: &[char], j: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    loop {
        while *j < b.len() && b[*j].is_whitespace() {
            *j += 1;
        }
        if *j < b.len() && b[*j] == '{' {
            *j += 1;
            loop {
                parse_tree(b, j, path.clone(), out);
                while *j < b.len() && b[*j].is_whitespace() {
                    *j += 1;
                }
                match b.get(*j) {
                    Some(',') => *j += 1,
                    Some('}') => {
                        *j += 1;
                        return;
                    }
                    _ => return,
                }
                while *j < b.len() && b[*j].is_whitespace() {
                    *j += 1;
                }
                if b.get(*j) == Some(&'}') {
                    *j += 1;
                    return;
                }
            }
        }
        let s = *j;
        while *j < b.len() && (b[*j].is_alphanumeric() || b[*j] == '_') {
            *j += 1;
        }
        if *j == s {
            out.push(path);
            return;
        }
        path.push(b[s..*j].iter().collect());
        if b.get(*j) == Some(&':') && b.get(*j + 1) == Some(&':') {
            *j += 2;
        } else {
            out.push(path);
            return;
        }
    }
}

/// Import edges between module files: (importer, imported).
fn edges(files: &[File]) -> BTreeSet<(Vec<String>, Vec<String>)> {
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| f.module.clone()).collect();
    let mut out = BTreeSet::new();
    for f in files {
        // `super` in a/b.rs is `a`; in a/mod.rs (module `a`) it is the root.
        for (anchor, tail) in paths_in(&code_of(&f.text)) {
            let mut full: Vec<String> = if anchor == "crate" {
                Vec::new()
            } else {
                f.module[..f.module.len().saturating_sub(1)].to_vec()
            };
            let mut tail = tail.into_iter().peekable();
            while tail.peek().is_some_and(|s| s == "super") {
                tail.next();
                full.pop();
            }
            full.extend(tail.filter(|s| s != "self"));
            // The longest prefix that is a module file.
            let target = (1..=full.len())
                .rev()
                .map(|n| full[..n].to_vec())
                .find(|p| modules.contains(p));
            let Some(target) = target else { continue };
            if target == f.module || target.starts_with(&f.module) {
                continue; // itself, or its own child: containment
            }
            out.insert((f.module.clone(), target));
        }
    }
    out
}

fn floor_of(top: &str) -> Option<usize> {
    FLOORS.iter().position(|(_, mods)| mods.contains(&top))
}

/// The circles of a directed graph (its strongly connected components with
/// more than one node), found by Tarjan's algorithm.
fn circles<N: Ord + Clone>(edges: &BTreeSet<(N, N)>) -> Vec<Vec<N>> {
    let mut next: BTreeMap<N, Vec<N>> = BTreeMap::new();
    for (a, b) in edges {
        next.entry(a.clone()).or_default().push(b.clone());
        next.entry(b.clone()).or_default();
    }
    struct St<N> {
        index: BTreeMap<N, usize>,
        low: BTreeMap<N, usize>,
        stack: Vec<N>,
        on: BTreeSet<N>,
        n: usize,
        out: Vec<Vec<N>>,
    }
    fn visit<N: Ord + Clone>(v: &N, next: &BTreeMap<N, Vec<N>>, st: &mut St<N>) {
        st.index.insert(v.clone(), st.n);
        st.low.insert(v.clone(), st.n);
        st.n += 1;
        st.stack.push(v.clone());
        st.on.insert(v.clone());
        for w in &next[v] {
            if !st.index.contains_key(w) {
                visit(w, next, st);
                let l = st.low[w].min(st.low[v]);
                st.low.insert(v.clone(), l);
            } else if st.on.contains(w) {
                let l = st.index[w].min(st.low[v]);
                st.low.insert(v.clone(), l);
            }
        }
        if st.low[v] == st.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = st.stack.pop() {
                st.on.remove(&w);
                let done = &w == v;
                comp.push(w);
                if done {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                st.out.push(comp);
            }
        }
    }
    let mut st = St {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        n: 0,
        out: Vec::new(),
    };
    for v in next.keys() {
        if !st.index.contains_key(v) {
            visit(v, &next, &mut st);
        }
    }
    st.out
}

/// Everything wrong with the layering of `files`, one line each.
fn violations(files: &[File]) -> Vec<String> {
    let mut out = Vec::new();
    let file_edges = edges(files);
    let show = |m: &[String]| m.join("::");
    for top in files
        .iter()
        .map(|f| f.module[0].as_str())
        .collect::<BTreeSet<_>>()
    {
        if floor_of(top).is_none() {
            out.push(format!("module `{top}` is on no floor: add it to FLOORS"));
        }
    }
    let mut top_edges = BTreeSet::new();
    for (from, to) in &file_edges {
        let (a, b) = (&from[0], &to[0]);
        if a == b {
            continue;
        }
        top_edges.insert((a.clone(), b.clone()));
        if let (Some(fa), Some(fb)) = (floor_of(a), floor_of(b))
            && fb > fa
        {
            out.push(format!(
                "{} (floor `{}`) imports {} (floor `{}`), a floor above it",
                show(from),
                FLOORS[fa].0,
                show(to),
                FLOORS[fb].0
            ));
        }
    }
    for c in circles(&top_edges) {
        out.push(format!("modules import each other: {}", c.join(", ")));
    }
    for c in circles(&file_edges) {
        let names: Vec<String> = c.iter().map(|m| show(m)).collect();
        out.push(format!("files import each other: {}", names.join(", ")));
    }
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_module_imports_a_floor_above_it_or_closes_a_circle() {
    let files = read_tree(&src());
    assert!(files.len() > 50, "read only {} files", files.len());
    let found = violations(&files);
    assert!(found.is_empty(), "layering broken:\n{}", found.join("\n"));
}

fn file(module: &str, text: &str) -> File {
    File {
        module: module.split("::").map(str::to_owned).collect(),
        text: text.to_owned(),
    }
}

#[test]
fn a_deliberate_back_import_is_caught() {
    let mut files = read_tree(&src());
    assert!(violations(&files).is_empty());
    // storage is a building block; web is a coordinator above it.
    files.push(file("storage::leak", "use crate::web::{self, AppState};\n"));
    let found = violations(&files);
    assert!(
        found
            .iter()
            .any(|v| v.contains("storage::leak") && v.contains("a floor above it")),
        "{found:?}"
    );
}

#[test]
fn circles_are_caught_between_modules_and_between_sibling_files() {
    let files = vec![
        file("vocab", ""),
        file("storage", ""),
        file("storage::a", "use super::b::X;\n"),
        file("storage::b", "fn f() { crate::storage::a::g(); }\n"),
        file("guard", "use crate::pacing::Level;\n"),
        file("pacing", "use crate::{guard::Breaker, vocab::X};\n"),
    ];
    let found = violations(&files);
    assert!(
        found.contains(&"files import each other: storage::a, storage::b".to_owned()),
        "{found:?}"
    );
    assert!(
        found.contains(&"modules import each other: guard, pacing".to_owned()),
        "{found:?}"
    );
}

#[test]
fn comments_strings_and_test_modules_are_not_imports() {
    let files = vec![
        file(
            "vocab",
            "// see crate::web::Thing\nconst S: &str = \"crate::web\";\n#[cfg(test)]\nmod tests {\n    use crate::web::X;\n}\n",
        ),
        file("web", ""),
    ];
    assert_eq!(violations(&files), Vec::<String>::new());
    let paths = paths_in("use crate::a::{b, c::{d, e}, self};");
    let flat: Vec<String> = paths.into_iter().map(|(_, p)| p.join("::")).collect();
    assert_eq!(flat, ["a::b", "a::c::d", "a::c::e", "a::self"]);
}
