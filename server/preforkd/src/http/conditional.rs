//! Validators, preconditions (RFC 9110 §8.8, §13) and byte ranges (§14) for static files.
//!
//! Pure functions over the request's header values and the file's length and modification time,
//! so every rule is unit-tested here and the service only wires them in.
//!
//! * **ETag**: Apache 2.4's default (`FileETag MTime Size`): `"<size>-<mtime in µs>"` in hex. The
//!   inode is left out, as in Apache 2.4, so servers that share files over NFS or from one image
//!   agree. A file modified less than a second before the request gets a **weak** tag (`W/"…"`),
//!   as Apache: its timestamp may not yet tell two edits in the same tick apart, so it must not
//!   serve as a strong validator for `If-Match` or `If-Range`.
//! * **Preconditions**, in RFC 9110 §13.2.2's order: `If-Match` (strong comparison, `*` matches
//!   any file), else `If-Unmodified-Since`; then `If-None-Match` (weak comparison; 304 for GET and
//!   HEAD), else `If-Modified-Since` (GET and HEAD only). Dates that do not parse are ignored, and so
//!   is an `If-Modified-Since` in the future (as Apache).
//! * **Ranges** (GET only; the service decides that): `bytes=` with `a-b`, `a-` and `-n` specs.
//!   A header that does not parse, or another unit, is ignored (200, whole file). No satisfiable
//!   spec is 416. Overlapping or adjacent specs are merged, and the request is answered in full
//!   (200) when it asks for more than `max_ranges` ranges, more than `max_range_overlaps` overlaps or
//!   more than `max_range_reversals` specs out of ascending order (Apache's `MaxRanges`,
//!   `MaxRangeOverlaps`, `MaxRangeReversals`, defaults 200/20/20): a many-ranges request cannot make
//!   the server send the file many times over. `If-Range` must match strongly (the ETag, or the
//!   exact Last-Modified date of a file at least a second old), or the whole file is sent.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A file's entity tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ETag {
    /// `W/` prefixed: usable only in weak comparisons.
    pub weak: bool,
    /// The opaque tag, without quotes.
    pub tag: String,
}

impl ETag {
    /// Apache's `MTime Size` tag of a file `len` bytes long modified at `mtime`, seen at `now`.
    pub fn for_file(len: u64, mtime: SystemTime, now: SystemTime) -> ETag {
        let micros = mtime.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        let settled = now.duration_since(mtime).is_ok_and(|age| age >= Duration::from_secs(1));
        // Sized once: two 64-bit numbers in hex and the dash (no growing while formatting).
        let mut tag = String::with_capacity(33);
        let _ = write!(tag, "{len:x}-{micros:x}");
        ETag { weak: !settled, tag }
    }

    /// The header value.
    pub fn header(&self) -> String {
        let mut header = String::with_capacity(self.tag.len() + 4);
        header.push_str(if self.weak { "W/\"" } else { "\"" });
        header.push_str(&self.tag);
        header.push('"');
        header
    }
}

/// What the service knows about the file to answer: its validators.
#[derive(Clone, Debug)]
pub struct Validators {
    /// The entity tag.
    pub etag: ETag,
    /// Last-Modified (whole seconds), if the file system has an mtime.
    pub last_modified: Option<SystemTime>,
    /// Whether Last-Modified is a strong validator: the file is at least a second older than the
    /// request (RFC 9110 §8.8.2.2), the same rule as the ETag's.
    strong_date: bool,
    /// The time of the request.
    pub now: SystemTime,
}

impl Validators {
    /// The validators of a file.
    pub fn for_file(len: u64, mtime: Option<SystemTime>, now: SystemTime) -> Validators {
        let etag = ETag::for_file(len, mtime.unwrap_or(UNIX_EPOCH), now);
        // Last-Modified is never later than the response (RFC 9110 §8.8.2.1).
        let last_modified = mtime.map(|m| whole_seconds(m.min(now)));
        Validators { strong_date: !etag.weak, etag, last_modified, now }
    }

    /// Last-Modified if it is a strong validator.
    fn strong_date(&self) -> Option<SystemTime> {
        self.last_modified.filter(|_| self.strong_date)
    }
}

fn whole_seconds(t: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

/// The outcome of the preconditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Serve the request.
    Proceed,
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// The request's precondition header values (each the comma-joined lines of that field).
#[derive(Clone, Copy, Debug, Default)]
pub struct Conditions<'a> {
    /// `If-Match`.
    pub if_match: Option<&'a str>,
    /// `If-None-Match`.
    pub if_none_match: Option<&'a str>,
    /// `If-Modified-Since`.
    pub if_modified_since: Option<&'a str>,
    /// `If-Unmodified-Since`.
    pub if_unmodified_since: Option<&'a str>,
}

/// Evaluates the preconditions in RFC 9110 §13.2.2's order. `safe` is a GET or HEAD.
pub fn evaluate(c: &Conditions<'_>, v: &Validators, safe: bool) -> Precondition {
    // 1. If-Match, else 2. If-Unmodified-Since.
    if let Some(list) = c.if_match {
        if !matches_any(list, &v.etag, true) {
            return Precondition::Failed;
        }
    } else if let (Some(date), Some(lm)) = (c.if_unmodified_since.and_then(date), v.last_modified)
        && lm > date
    {
        return Precondition::Failed;
    }
    // 3. If-None-Match, else 4. If-Modified-Since.
    if let Some(list) = c.if_none_match {
        if matches_any(list, &v.etag, false) {
            return if safe { Precondition::NotModified } else { Precondition::Failed };
        }
    } else if safe
        && let (Some(date), Some(lm)) = (c.if_modified_since.and_then(date), v.last_modified)
        && date <= v.now
        && lm <= date
    {
        return Precondition::NotModified;
    }
    Precondition::Proceed
}

fn date(value: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(value.trim()).ok()
}

/// One element of an entity-tag list.
#[derive(Debug, PartialEq, Eq)]
enum ListItem<'a> {
    Any,
    Tag { weak: bool, tag: &'a str },
}

/// Parses `*` or `#entity-tag`; `None` if it does not parse (the header then matches nothing).
fn parse_list(s: &str) -> Option<Vec<ListItem<'_>>> {
    if s.trim() == "*" {
        return Some(vec![ListItem::Any]);
    }
    let mut items = vec![];
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return Some(items);
        }
        let weak = rest.starts_with("W/");
        if weak {
            rest = &rest[2..];
        }
        let inner = rest.strip_prefix('"')?;
        let end = inner.find('"')?;
        let tag = &inner[..end];
        // etagc: %x21 / %x23-7E / obs-text
        if tag.bytes().any(|b| b <= 0x20 || b == 0x7f) {
            return None;
        }
        items.push(ListItem::Tag { weak, tag });
        rest = &inner[end + 1..];
        if !(rest.is_empty() || rest.starts_with([' ', '\t', ','])) {
            return None;
        }
    }
}

/// Whether `list` (an If-Match or If-None-Match value) matches `etag`, by strong or weak
/// comparison (RFC 9110 §8.8.3.2).
fn matches_any(list: &str, etag: &ETag, strong: bool) -> bool {
    let Some(items) = parse_list(list) else { return false };
    items.iter().any(|item| match item {
        ListItem::Any => true,
        ListItem::Tag { weak, tag } => *tag == etag.tag && (!strong || (!weak && !etag.weak)),
    })
}

/// Limits on what one Range header may ask (Apache's MaxRanges, MaxRangeOverlaps, MaxRangeReversals).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeLimits {
    /// Most ranges in one request; 0 turns ranges off (`Accept-Ranges: none`).
    pub max_ranges: u32,
    /// Most overlapping or adjacent ranges (they are merged).
    pub max_range_overlaps: u32,
    /// Most ranges that start before the one asked before them.
    pub max_range_reversals: u32,
}

impl Default for RangeLimits {
    fn default() -> Self {
        RangeLimits { max_ranges: 200, max_range_overlaps: 20, max_range_reversals: 20 }
    }
}

/// How to answer a request with a Range header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ranges {
    /// 200 with the whole file (no usable Range, an If-Range that does not match, or over a limit).
    Full,
    /// 206 with these byte ranges (first, last), inclusive, in the order they are sent.
    Partial(Vec<(u64, u64)>),
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Decides how to answer `range` (with `if_range`) for a file of `len` bytes.
pub fn ranges(range: &str, if_range: Option<&str>, v: &Validators, len: u64, limits: RangeLimits) -> Ranges {
    if limits.max_ranges == 0 {
        return Ranges::Full;
    }
    if let Some(cond) = if_range
        && !if_range_matches(cond.trim(), v)
    {
        return Ranges::Full;
    }
    let Some(specs) = parse_range(range) else { return Ranges::Full };
    let mut wanted: Vec<(u64, u64)> = vec![];
    for spec in specs {
        let (first, last) = match spec {
            Spec::From(a, b) => {
                if a >= len {
                    continue;
                }
                (a, b.map_or(len - 1, |b| b.min(len - 1)))
            }
            Spec::Suffix(n) => {
                if n == 0 || len == 0 {
                    continue;
                }
                (len.saturating_sub(n), len - 1)
            }
        };
        wanted.push((first, last));
    }
    if wanted.is_empty() {
        return Ranges::Unsatisfiable;
    }
    if wanted.len() > limits.max_ranges as usize {
        return Ranges::Full;
    }
    // Merge a range into the one before it when they overlap or touch; count those and the
    // ranges that go backwards.
    let (mut overlaps, mut reversals) = (0u32, 0u32);
    let mut merged: Vec<(u64, u64)> = vec![];
    for (first, last) in wanted {
        if let Some(prev) = merged.last_mut() {
            if first < prev.0 {
                reversals += 1;
            }
            if first <= prev.1.saturating_add(1) && last.saturating_add(1) >= prev.0 {
                overlaps += 1;
                *prev = (prev.0.min(first), prev.1.max(last));
                continue;
            }
        }
        merged.push((first, last));
    }
    if overlaps > limits.max_range_overlaps || reversals > limits.max_range_reversals {
        return Ranges::Full;
    }
    Ranges::Partial(merged)
}

fn if_range_matches(cond: &str, v: &Validators) -> bool {
    if cond.starts_with('"') || cond.starts_with("W/") {
        // An entity tag: strong comparison, so a weak tag on either side never matches.
        return match parse_list(cond).as_deref() {
            Some([ListItem::Tag { weak: false, tag }]) => !v.etag.weak && *tag == v.etag.tag,
            _ => false,
        };
    }
    // A date: only an exact match with a strong Last-Modified.
    matches!((date(cond), v.strong_date()), (Some(d), Some(lm)) if d == lm)
}

/// One `range-spec`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spec {
    /// `a-b` or `a-`.
    From(u64, Option<u64>),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

/// Parses `bytes=spec, spec …`; `None` if the unit is not bytes or any spec is malformed.
fn parse_range(value: &str) -> Option<Vec<Spec>> {
    let value = value.trim();
    let (unit, set) = value.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let number = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(s.parse::<u64>().unwrap_or(u64::MAX)) // beyond u64: past any file's end
    };
    let mut specs = vec![];
    for part in set.split(',') {
        let part = part.trim_matches([' ', '\t']);
        if part.is_empty() {
            continue; // empty list elements are allowed (RFC 9110 §5.6.1)
        }
        let (a, b) = part.split_once('-')?;
        let spec = match (a.is_empty(), b.is_empty()) {
            (true, false) => Spec::Suffix(number(b)?),
            (false, true) => Spec::From(number(a)?, None),
            (false, false) => {
                let (a, b) = (number(a)?, number(b)?);
                if b < a {
                    return None;
                }
                Spec::From(a, Some(b))
            }
            (true, true) => return None,
        };
        specs.push(spec);
    }
    (!specs.is_empty()).then_some(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEN: u64 = 1000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// A file modified at t=1000 s (plus 0.5 s), asked about at t=2000 s.
    fn old_file() -> Validators {
        Validators::for_file(LEN, Some(at(1000) + Duration::from_millis(500)), at(2000))
    }

    fn http_date(secs: u64) -> String {
        httpdate::fmt_http_date(at(secs))
    }

    #[test]
    fn etags_are_apaches_size_and_mtime_weak_while_the_file_is_fresh() {
        let v = old_file();
        assert_eq!(v.etag.header(), format!("\"3e8-{:x}\"", 1_000_500_000u64));
        let fresh = Validators::for_file(LEN, Some(at(2000) - Duration::from_millis(300)), at(2000));
        assert!(fresh.etag.weak);
        assert!(fresh.etag.header().starts_with("W/\""));
        assert_eq!(v.last_modified, Some(at(1000)), "whole seconds");
        // A clock behind the file: Last-Modified is not in the future.
        let future = Validators::for_file(LEN, Some(at(3000)), at(2000));
        assert_eq!(future.last_modified, Some(at(2000)));
        assert!(future.etag.weak);
    }

    #[test]
    fn entity_tag_lists_parse_with_commas_inside_tags() {
        assert_eq!(parse_list("*"), Some(vec![ListItem::Any]));
        assert_eq!(
            parse_list(r#" "a,b" ,W/"c",, "d""#),
            Some(vec![
                ListItem::Tag { weak: false, tag: "a,b" },
                ListItem::Tag { weak: true, tag: "c" },
                ListItem::Tag { weak: false, tag: "d" },
            ])
        );
        assert_eq!(parse_list("abc"), None);
        assert_eq!(parse_list(r#""a"b"#), None);
        assert_eq!(parse_list(r#""a b""#), None);
        assert_eq!(parse_list(""), Some(vec![]));
    }

    #[test]
    fn preconditions_follow_rfc_9110_order() {
        let v = old_file();
        let tag = v.etag.header();
        let weak_tag = format!("W/{tag}");
        let c = |f: fn(&mut Conditions<'static>, &'static str), s: String| {
            let mut c = Conditions::default();
            f(&mut c, Box::leak(s.into_boxed_str()));
            c
        };
        let im = |s: String| c(|c, s| c.if_match = Some(s), s);
        let inm = |s: String| c(|c, s| c.if_none_match = Some(s), s);
        let ims = |s: String| c(|c, s| c.if_modified_since = Some(s), s);
        let ius = |s: String| c(|c, s| c.if_unmodified_since = Some(s), s);
        use Precondition::*;
        let cases: Vec<(Conditions<'static>, bool, Precondition)> = vec![
            (Conditions::default(), true, Proceed),
            (im(tag.clone()), true, Proceed),
            (im("*".into()), true, Proceed),
            (im("\"x\"".into()), true, Failed),
            (im(weak_tag.clone()), true, Failed), // strong comparison
            (im(format!("\"x\", {tag}")), true, Proceed),
            (im("garbage".into()), true, Failed),
            (inm(tag.clone()), true, NotModified),
            (inm(weak_tag.clone()), true, NotModified), // weak comparison
            (inm("*".into()), true, NotModified),
            (inm("*".into()), false, Failed),
            (inm("\"x\"".into()), true, Proceed),
            (ims(http_date(1000)), true, NotModified),
            (ims(http_date(1500)), true, NotModified),
            (ims(http_date(999)), true, Proceed),
            (ims(http_date(1500)), false, Proceed), // only GET and HEAD
            (ims(http_date(3000)), true, Proceed),  // in the future: ignored
            (ims("yesterday".into()), true, Proceed),
            (ius(http_date(999)), true, Failed),
            (ius(http_date(1000)), true, Proceed),
            (ius("not a date".into()), true, Proceed),
        ];
        for (i, (c, safe, want)) in cases.iter().enumerate() {
            assert_eq!(evaluate(c, &v, *safe), *want, "case {i}: {c:?} safe={safe}");
        }
        // If-Match decides before If-Unmodified-Since; If-None-Match before If-Modified-Since.
        let old = http_date(10);
        let both = Conditions { if_match: Some(&tag), if_unmodified_since: Some(&old), ..Default::default() };
        assert_eq!(evaluate(&both, &v, true), Proceed);
        let other = "\"other\"".to_string();
        let later = http_date(1500);
        let both = Conditions { if_none_match: Some(&other), if_modified_since: Some(&later), ..Default::default() };
        assert_eq!(evaluate(&both, &v, true), Proceed);
        // A failed If-Match wins over a matching If-None-Match.
        let x = "\"x\"".to_string();
        let both = Conditions { if_match: Some(&x), if_none_match: Some(&tag), ..Default::default() };
        assert_eq!(evaluate(&both, &v, true), Failed);
    }

    #[test]
    fn range_specs_parse_or_the_header_is_ignored() {
        use Spec::*;
        assert_eq!(parse_range("bytes=0-99"), Some(vec![From(0, Some(99))]));
        assert_eq!(parse_range("Bytes = 5- , -7,,"), Some(vec![From(5, None), Suffix(7)]));
        assert_eq!(parse_range("bytes=99999999999999999999999-"), Some(vec![From(u64::MAX, None)]));
        for bad in ["items=0-1", "bytes=", "bytes=-", "bytes=5-1", "bytes=a-b", "bytes=1", "bytes=+1-2", "0-1"] {
            assert_eq!(parse_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn ranges_are_clamped_merged_and_limited() {
        let v = old_file();
        let l = RangeLimits::default();
        let r = |h: &str| ranges(h, None, &v, LEN, l);
        assert_eq!(r("bytes=0-99"), Ranges::Partial(vec![(0, 99)]));
        assert_eq!(r("bytes=900-"), Ranges::Partial(vec![(900, 999)]));
        assert_eq!(r("bytes=900-5000"), Ranges::Partial(vec![(900, 999)]));
        assert_eq!(r("bytes=-100"), Ranges::Partial(vec![(900, 999)]));
        assert_eq!(r("bytes=-5000"), Ranges::Partial(vec![(0, 999)]));
        assert_eq!(r("bytes=0-0,-1"), Ranges::Partial(vec![(0, 0), (999, 999)]));
        assert_eq!(r("bytes=0-9,5-19,20-29"), Ranges::Partial(vec![(0, 29)]), "overlap and adjacency merge");
        assert_eq!(r("bytes=500-599,0-9"), Ranges::Partial(vec![(500, 599), (0, 9)]), "order kept");
        assert_eq!(r("bytes=1000-"), Ranges::Unsatisfiable);
        assert_eq!(r("bytes=-0"), Ranges::Unsatisfiable);
        assert_eq!(r("bytes=1000-2000,5000-"), Ranges::Unsatisfiable);
        assert_eq!(r("bytes=1000-,0-0"), Ranges::Partial(vec![(0, 0)]), "unsatisfiable specs are dropped");
        assert_eq!(r("bytes=5-1"), Ranges::Full);
        assert_eq!(ranges("bytes=0-0", None, &v, 0, l), Ranges::Unsatisfiable);
        // Limits (Apache's MaxRanges, MaxRangeOverlaps, MaxRangeReversals).
        let many = |n: u64, f: fn(u64) -> String| format!("bytes={}", (0..n).map(f).collect::<Vec<_>>().join(","));
        let apart = |i: u64| format!("{}-{}", i * 3, i * 3);
        let over = |_: u64| "0-10".to_string();
        let back = |i: u64| format!("{}-{}", 900 - i * 3, 900 - i * 3);
        assert!(matches!(r(&many(200, apart)), Ranges::Partial(p) if p.len() == 200));
        assert_eq!(r(&many(201, apart)), Ranges::Full);
        assert_eq!(r(&many(21, over)), Ranges::Partial(vec![(0, 10)]), "20 overlaps");
        assert_eq!(r(&many(22, over)), Ranges::Full);
        assert!(matches!(r(&many(21, back)), Ranges::Partial(p) if p.len() == 21));
        assert_eq!(r(&many(22, back)), Ranges::Full);
        let off = RangeLimits { max_ranges: 0, ..l };
        assert_eq!(ranges("bytes=0-1", None, &v, LEN, off), Ranges::Full);
    }

    #[test]
    fn if_range_needs_a_strong_match() {
        let v = old_file();
        let l = RangeLimits::default();
        let tag = v.etag.header();
        let part = Ranges::Partial(vec![(0, 9)]);
        let r = |cond: &str, v: &Validators| ranges("bytes=0-9", Some(cond), v, LEN, l);
        assert_eq!(r(&tag, &v), part);
        assert_eq!(r(&format!("W/{tag}"), &v), Ranges::Full);
        assert_eq!(r("\"other\"", &v), Ranges::Full);
        assert_eq!(r(&http_date(1000), &v), part);
        assert_eq!(r(&http_date(1001), &v), Ranges::Full, "exact date only");
        assert_eq!(r("garbage", &v), Ranges::Full);
        let fresh = Validators::for_file(LEN, Some(at(2000) - Duration::from_millis(300)), at(2000));
        assert_eq!(r(&fresh.etag.header().replace("W/", ""), &fresh), Ranges::Full, "a fresh file's tag is weak");
        assert_eq!(r(&http_date(1999), &fresh), Ranges::Full, "a fresh file's date is weak");
    }
}
