//! The shape of the code, checked: top-level modules depend one way, no source
//! file grows past 900 lines, and every folder's `mod.rs` (and each crate's
//! `lib.rs`) opens with a doc comment that says what it holds.
//!
//! The layers, lowest first: `k8s` (Kubernetes helpers, a leaf), then `llm`
//! (the model client) and `admission` (the webhook), then `remediation`, then
//! `console` (the web console), then `operator` and `plugin`, and `cli`
//! (which starts the operator) on top. A
//! module may name only modules in a lower layer; the policy engine is its
//! own crate and cannot name the operator at all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const MAX_LINES: usize = 900;

/// The layer of each top-level module of the operator crate.
fn layer(module: &str) -> Option<u8> {
    Some(match module {
        "k8s" => 0,
        "llm" | "admission" => 1,
        "remediation" => 2,
        "console" => 3,
        "operator" | "plugin" => 4,
        // The command line parses arguments and hands them to `operator`.
        "cli" => 5,
        _ => return None,
    })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under `src/` belongs to (`src/llm/x.rs` → `llm`).
fn owning_module(file: &Path) -> String {
    let rel = file
        .strip_prefix(Path::new(ROOT).join("src"))
        .expect("file under src");
    let first = rel.components().next().expect("non-empty path");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

/// Every `crate::<module>` a source text names, comments included: a doc link
/// to a higher layer is a dependency a reader follows too.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        // `aiops_crate::x` or `other_crate::x` are not this crate.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.insert(name);
        }
    }
    found
}

/// Module → the modules it names, over every file of `src/`.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&Path::new(ROOT).join("src"), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let module = owning_module(&file);
        let text = std::fs::read_to_string(&file).expect("read source");
        let named = named_modules(&text);
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(named.into_iter().filter(|m| *m != module));
    }
    graph
}

#[test]
fn top_level_modules_depend_only_on_lower_layers() {
    let graph = module_graph();
    assert!(
        graph.contains_key("remediation") && graph.contains_key("k8s"),
        "the scan found the source tree: {graph:?}"
    );
    let mut wrong = Vec::new();
    for (module, named) in &graph {
        let Some(own) = layer(module) else { continue };
        for other in named {
            // `crate::policy` is the engine crate re-exported; it sits below all.
            if other == "policy" {
                continue;
            }
            match layer(other) {
                Some(theirs) if theirs < own => {}
                Some(_) => wrong.push(format!("{module} names {other}")),
                None => wrong.push(format!("{module} names {other}, a module with no layer")),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies against the layers: {wrong:#?}"
    );
    for module in graph.keys() {
        if module != "lib" && module != "main" {
            assert!(
                layer(module).is_some(),
                "top-level module {module} has no layer: add it to `layer`"
            );
        }
    }
}

#[test]
fn the_policy_engine_crate_names_nothing_of_the_operator() {
    let mut files = Vec::new();
    rust_files(&Path::new(ROOT).join("crates/policy/src"), &mut files);
    assert!(!files.is_empty());
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read source");
        assert!(
            !text.contains("aiops_operator"),
            "{} names the operator crate",
            file.display()
        );
    }
}

#[test]
fn the_layer_check_catches_a_cycle() {
    // The scanner itself must see a reference, or the check above proves nothing.
    let named = named_modules(
        "use crate::remediation::Incident; // see crate::k8s::pod_spec\nuse aiops_crate::x;",
    );
    assert_eq!(
        named,
        BTreeSet::from(["remediation".to_string(), "k8s".to_string()])
    );
}

#[test]
fn no_source_file_passes_the_line_limit() {
    let mut files = Vec::new();
    for dir in ["src", "crates/policy/src", "crates/policy/tests", "tests"] {
        rust_files(&Path::new(ROOT).join(dir), &mut files);
    }
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f)
                .expect("read source")
                .lines()
                .count();
            (lines > MAX_LINES).then(|| format!("{}: {lines} lines", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines (split them by job): {long:#?}"
    );
}

#[test]
fn every_folder_module_says_what_it_holds() {
    let mut files = Vec::new();
    rust_files(&Path::new(ROOT).join("src"), &mut files);
    rust_files(&Path::new(ROOT).join("crates/policy/src"), &mut files);
    let silent: Vec<String> = files
        .iter()
        .filter(|f| {
            f.file_name()
                .is_some_and(|n| n == "mod.rs" || n == "lib.rs")
        })
        .filter(|f| {
            !std::fs::read_to_string(f)
                .expect("read source")
                .starts_with("//! ")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        silent.is_empty(),
        "folder modules without a top doc comment: {silent:#?}"
    );
}
