//! SPEC.md is part of the product: every test it names must exist, and every numbered invariant
//! must name at least one check.

use std::fs;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if p.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

/// `file.rs: test_name` references in the text.
fn references(spec: &str) -> Vec<(String, String)> {
    let mut refs = vec![];
    for chunk in spec.split('`').skip(1).step_by(2) {
        if let Some((file, name)) = chunk.split_once(".rs: ")
            && !file.contains(' ')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            refs.push((format!("{file}.rs"), name.to_string()));
        }
    }
    refs
}

#[test]
fn spec_names_only_existing_tests() {
    let root = workspace();
    let spec = fs::read_to_string(root.join("SPEC.md")).expect("SPEC.md at the workspace root");
    let mut files = vec![];
    for member in ["core", "server", "model", "tests", "fuzz"] {
        rust_files(&root.join(member), &mut files);
    }
    let refs = references(&spec);
    assert!(refs.len() > 40, "expected many test references, found {}", refs.len());
    let mut missing = vec![];
    for (file, name) in &refs {
        let found = files
            .iter()
            .filter(|p| p.ends_with(file))
            .any(|p| fs::read_to_string(p).is_ok_and(|src| is_test(&src, name)));
        if !found {
            missing.push(format!("{file}: {name}"));
        }
    }
    assert!(missing.is_empty(), "SPEC.md names tests that do not exist (or are not #[test]s): {missing:#?}");
}

/// Does `src` define `fn name(` as a test: a `#[test]` among the attributes right above it?
fn is_test(src: &str, name: &str) -> bool {
    let lines: Vec<&str> = src.lines().collect();
    lines.iter().enumerate().filter(|(_, l)| l.trim_start().starts_with(&format!("fn {name}("))).any(|(i, _)| {
        lines[..i]
            .iter()
            .rev()
            .map(|l| l.trim())
            .take_while(|l| l.starts_with("#[") || l.starts_with("//") || l.is_empty())
            .any(|l| l == "#[test]")
    })
}

#[test]
fn a_reference_must_name_a_test_not_a_helper() {
    let src =
        "fn helper() {}\n\n/// A test.\n#[test]\n#[ignore]\nfn real_one() {}\n#[test]\nfn other() {}\nfn helper2() {}";
    assert!(is_test(src, "real_one") && is_test(src, "other"));
    assert!(!is_test(src, "helper") && !is_test(src, "helper2") && !is_test(src, "missing"));
}

#[test]
fn every_invariant_names_its_checks_and_there_are_enough() {
    let spec = fs::read_to_string(workspace().join("SPEC.md")).unwrap();
    let section = spec.split("## 9. Invariants").nth(1).expect("§9").split("\n## 10.").next().unwrap();
    let blocks: Vec<&str> = section.split("\n**").skip(1).collect();
    let mut numbered = 0;
    for block in blocks {
        let id = block.split('.').next().unwrap();
        if !(id.starts_with('I') || id.starts_with('L')) || !id[1..].chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        numbered += 1;
        assert!(block.contains("Checked by:"), "{id} does not say what checks it");
        assert!(!references(block).is_empty(), "{id} names no test");
    }
    assert!(numbered >= 12, "SPEC.md has {numbered} numbered invariants; at least 12 are required");
}
