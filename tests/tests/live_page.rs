//! The live status page (`/server-status?live`) in a real browser: headless Chromium (Debian
//! package `chromium`) loads it while the server is under load, runs its script, and the numbers
//! it shows must be the ones `?json` gives.

use prefork_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// The page's DOM after its script ran for `budget_ms` of virtual time (its timers run that far,
/// its fetches really happen).
fn rendered(browser: &Path, url: &str, budget_ms: u32) -> String {
    let profile = tempdir("chromium");
    let out = Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("run chromium");
    let _ = std::fs::remove_dir_all(profile);
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element with `id` (no nested elements).
fn element(dom: &str, id: &str) -> String {
    let at = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in {dom}"));
    let start = at + dom[at..].find('>').unwrap() + 1;
    let end = start + dom[start..].find('<').unwrap();
    dom[start..end].to_string()
}

fn attribute(dom: &str, name: &str) -> String {
    let at = dom.find(&format!("{name}=\"")).unwrap_or_else(|| panic!("no {name} in {dom}")) + name.len() + 2;
    dom[at..at + dom[at..].find('"').unwrap()].to_string()
}

fn json(p: &Preforkd) -> serde_json::Value {
    serde_json::from_str(&p.get("/server-status?json").text()).unwrap()
}

#[test]
fn the_live_page_shows_in_a_browser_what_json_says_under_load() {
    let p = Preforkd::start(&["--start-servers", "4", "--server-name", "live.test"]);
    let page = p.get("/server-status?live");
    assert_eq!(page.status, 200);
    let csp = page.header("Content-Security-Policy").unwrap_or_default();
    assert!(csp.starts_with("default-src 'none'"), "nothing may come from elsewhere: {csp}");
    let html = page.text();
    for external in ["src=\"http", "href=\"http", "url(http", "@import", "//cdn"] {
        assert!(!html.contains(external), "the page is self-contained: found {external}");
    }
    let Some(browser) = chromium() else {
        eprintln!(
            "SKIPPED: no Chromium (Debian package chromium; .ci/run installs it): the page was checked without a browser"
        );
        return;
    };
    let load = Load::start(&[p.addr()], 4, Mode::KeepAlive, "/");
    assert!(load.progresses(50, Duration::from_secs(10)), "the load runs");
    let before = json(&p);
    let dom = rendered(&browser, &format!("http://{}/server-status?live", p.addr()), 3500);
    let after = json(&p);
    let totals = load.stop();
    assert!(totals.failures.is_empty() && totals.ok > 0, "{:?}", totals.failures);

    let polls: u64 = attribute(&dom, "data-polls").parse().unwrap();
    let samples: u64 = attribute(&dom, "data-samples").parse().unwrap();
    assert!(polls >= 2 && samples == polls, "the page polled ?json repeatedly: {polls} polls, {samples} samples");
    assert!(!dom.contains("class=\"down\""), "no failed poll: {}", element(&dom, "state"));
    assert!(element(&dom, "state").starts_with("live: "), "{}", element(&dom, "state"));
    assert_eq!(element(&dom, "server-name"), "live.test");
    // Live numbers: between what ?json said just before and just after the page ran.
    let shown: u64 = element(&dom, "total-accesses").parse().unwrap();
    let (lo, hi) = (before["total_accesses"].as_u64().unwrap(), after["total_accesses"].as_u64().unwrap());
    assert!(lo <= shown && shown <= hi, "total requests {shown} not within ?json's {lo}..={hi}");
    assert!(hi > lo, "the load went on while the page ran");
    assert_eq!(element(&dom, "generation"), after["generation"].to_string());
    let busy: u64 = element(&dom, "busy").parse().unwrap();
    let idle: u64 = element(&dom, "idle").parse().unwrap();
    let children: u64 = element(&dom, "children").parse().unwrap();
    assert!(busy >= 1, "the load keeps children busy, and the one serving ?json is busy too");
    assert!(busy + idle <= children, "{busy} busy + {idle} idle of {children} children");
    let spawned: u64 = element(&dom, "spawned").parse().unwrap();
    assert!(
        spawned >= before["spawned_total"].as_u64().unwrap() && spawned <= after["spawned_total"].as_u64().unwrap()
    );
    // The scoreboard: one cell per slot, each with its letter.
    let slots = after["slots"].as_array().unwrap().len();
    assert_eq!(dom.matches("title=\"slot ").count(), slots, "one cell per slot");
    assert!(dom.contains(&format!("title=\"slot {}: ", slots - 1)));
    // Charts were drawn with a legend showing the latest sample.
    assert!(dom.contains("requests/s "), "the requests chart's legend");
    eprintln!("RESULT live page: {polls} polls in Chromium, total requests {shown} within {lo}..={hi}");
}
