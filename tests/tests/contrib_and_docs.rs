//! One truth for keys and defaults: the defaults `--help` shows (built from where each default
//! lives) are the ones contrib/preforkd.toml, docs/configuration.md and SPEC.md give, and every
//! key is in each of them. And what contrib/ ships works: the example configuration passes `-t`,
//! the systemd units pass `systemd-analyze verify` and do what they say when their commands are
//! run, the logrotate snippet rotates both logs without losing a line.

use prefork_tests::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(preforkd_bin()).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Every setting `--help` lists, as the file's key (`max_spare_servers`), with the default it
/// shows, in `--help`'s order.
fn help_defaults() -> Vec<(String, String)> {
    let (code, out, err) = run(&["--help"]);
    assert_eq!(code, 0, "{err}");
    let mut settings = vec![];
    let mut flag: Option<String> = None;
    let mut paragraph = String::new();
    let mut finish = |flag: &mut Option<String>, paragraph: &mut String| {
        if let Some(f) = flag.take()
            && let Some(start) = paragraph.find("[default: ")
        {
            let rest = &paragraph[start + "[default: ".len()..];
            // The `]` that closes `[default: `, past any brackets inside the value (`[::1]:80`).
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '[' => 1,
                        ']' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .expect("a closed [default: ...]")
                .0;
            settings.push((f.replace('-', "_"), rest[..end].to_string()));
        }
        paragraph.clear();
    };
    for line in out.lines() {
        let trimmed = line.trim_start();
        if line.starts_with("      --") || line.starts_with("  -") {
            finish(&mut flag, &mut paragraph);
            let name = trimmed.split([' ', ',']).find_map(|w| w.strip_prefix("--")).unwrap_or("");
            flag = Some(name.to_string());
        } else {
            paragraph.push(' ');
            paragraph.push_str(trimmed);
        }
    }
    finish(&mut flag, &mut paragraph);
    let skip = ["config", "check_config", "help", "version"];
    settings.retain(|(k, _)| !skip.contains(&k.as_str()));
    assert!(settings.len() >= 40, "--help lists only {} settings with defaults: {settings:?}", settings.len());
    settings
}

/// A TOML value as `--help` writes a default: strings bare, arrays joined with ", ".
fn as_help_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(items) => items.iter().map(as_help_text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// Splits `value   # comment` at the first `#` outside a string.
fn split_comment(s: &str) -> (&str, &str) {
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return (s[..i].trim(), s[i + 1..].trim()),
            _ => {}
        }
    }
    (s.trim(), "")
}

/// contrib/preforkd.toml names every key once, set or commented out; a line whose value is not
/// the default says the real default in its comment (`default: ...`, exactly as `--help` has it).
#[test]
fn the_example_configuration_lists_every_key_with_its_real_default() {
    let defaults = help_defaults();
    let text = std::fs::read_to_string(repo().join("contrib/preforkd.toml")).unwrap();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut wrong = vec![];
    for (n, line) in text.lines().enumerate() {
        let body = line.trim_start().trim_start_matches('#').trim_start();
        let Some((key, rest)) = body.split_once('=') else { continue };
        let key = key.trim();
        let Some((_, default)) = defaults.iter().find(|(k, _)| k == key) else { continue };
        *seen.entry(key.to_string()).or_default() += 1;
        let (value, comment) = split_comment(rest);
        let parsed: toml::Table = toml::from_str(&format!("v = {value}"))
            .unwrap_or_else(|e| panic!("contrib/preforkd.toml:{}: {value:?} is not a TOML value: {e}", n + 1));
        let shown = as_help_text(&parsed["v"]);
        if shown != *default && !comment.contains(&format!("default: {default}")) {
            wrong.push(format!(
                "contrib/preforkd.toml:{}: {key} = {value} is not the default ({default:?}) and its comment does not say \"default: {default}\"",
                n + 1
            ));
        }
    }
    for (key, _) in &defaults {
        match seen.get(key) {
            None => wrong.push(format!("contrib/preforkd.toml does not list {key}")),
            Some(&n) if n > 1 => wrong.push(format!("contrib/preforkd.toml lists {key} {n} times")),
            _ => {}
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The example configuration is valid as shipped (its document root replaced by a flag, which
/// overrides the file, as the box may not have /var/www/html).
#[test]
fn the_example_configuration_is_valid() {
    let example = repo().join("contrib/preforkd.toml");
    let dir = tempdir("example");
    let (code, out, err) =
        run(&["-t", "--config", example.to_str().unwrap(), "--document-root", dir.to_str().unwrap()]);
    assert_eq!((code, out.trim()), (0, "Syntax OK"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The rows of the markdown tables in `text` headed `| key | default |`, whose first cell names
/// settings: (key, default cell).
fn table_defaults(text: &str, keys: &[String]) -> Vec<(String, String)> {
    let mut rows = vec![];
    let (mut in_table, mut settings_table) = (false, false);
    for line in text.lines() {
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        if !in_table {
            in_table = true;
            settings_table = line.replace(' ', "").starts_with("|key|default|");
            continue;
        }
        if !settings_table || !line.starts_with("| `") {
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (first, default) = (cells[1], cells.get(2).copied().unwrap_or(""));
        for name in first.split('`').skip(1).step_by(2) {
            if keys.iter().any(|k| k == name) {
                rows.push((name.to_string(), default.to_string()));
            }
        }
    }
    rows
}

/// A default as prose writes it, reduced to compare: no backticks, quotes, brackets or a leading
/// `= `.
fn plain(s: &str) -> String {
    s.replace(['`', '"', '[', ']'], "").trim().trim_start_matches("= ").trim().to_string()
}

/// docs/configuration.md has a row for every key whose default is `--help`'s exactly; SPEC.md's
/// tables (§8 for the pool, §12.6 for HTTP) have every key, with a default that starts as
/// `--help`'s does (SPEC may say more: `0 (unlimited)`).
#[test]
fn docs_and_spec_give_every_key_with_the_default_of_help() {
    let defaults = help_defaults();
    let keys: Vec<String> = defaults.iter().map(|(k, _)| k.clone()).collect();
    let mut wrong = vec![];
    for (file, exact) in [("docs/configuration.md", true), ("SPEC.md", false)] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        let rows = table_defaults(&text, &keys);
        for (key, default) in &defaults {
            let head = default.split(": ").next().unwrap();
            match rows.iter().find(|(k, _)| k == key) {
                None => wrong.push(format!("{file} has no table row for {key}")),
                Some((_, cell)) if exact && plain(cell) != *default => {
                    wrong.push(format!("{file}: {key}'s default is {cell:?}, --help says {default:?}"))
                }
                Some((_, cell)) if !exact && !plain(cell).starts_with(&plain(head)) => {
                    wrong.push(format!("{file}: {key}'s default is {cell:?}, --help says {default:?}"))
                }
                _ => {}
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The checks above would notice a wrong default: a deliberately wrong line and row fail them.
#[test]
fn a_wrong_default_is_noticed() {
    let defaults = help_defaults();
    let keys: Vec<String> = defaults.iter().map(|(k, _)| k.clone()).collect();
    let rows = table_defaults("| key | default |\n|---|---|\n| `start_servers` | 6 | StartServers |", &keys);
    assert!(table_defaults("| test | what |\n|---|---|\n| `start_servers` | 6 |", &keys).is_empty());
    assert_eq!(rows, vec![("start_servers".to_string(), "6".to_string())]);
    let help = &defaults.iter().find(|(k, _)| k == "start_servers").unwrap().1;
    assert_ne!(plain(&rows[0].1), *help);
    let (value, comment) = split_comment(" 6      # the default");
    assert_eq!((value, comment), ("6", "the default"));
    let (value, _) = split_comment(" \"#1000\"   # a uid");
    assert_eq!(value, "\"#1000\"");
}
