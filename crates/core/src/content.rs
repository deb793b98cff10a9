//! Rules about what a post may say, shared by the judge, the drafters and the simulator:
//! platform length limits, the sensitive-topic lexicon, banned phrases, links, and the leak
//! check that finds internal text (feedback markers, ids, error strings) in content.
//!
//! All of it is a pure function of the text: the judge runs it on every artifact whatever the
//! worker claimed about it.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The longest post a platform takes, in characters.
pub fn platform_limit(platform: &str) -> Option<usize> {
    match platform {
        "x" | "twitter" => Some(280),
        "threads" => Some(500),
        "bluesky" => Some(300),
        "instagram" | "tiktok" => Some(2200),
        "linkedin" => Some(3000),
        _ => None,
    }
}

/// What a writer follows beyond the persona: its agent's policy, as a writing task carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WritingRules {
    /// Phrases the text must not contain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub banned_phrases: Vec<String>,
    /// The text every post carries to disclose automation; the writer adds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disclosure_text: Option<String>,
}

/// `text` ending with `disclosure` unless it already carries it (any case), the whole at most
/// `limit` characters: `cut(text, room)` shortens the text to make room.
pub fn with_disclosure(
    text: &str,
    disclosure: &str,
    limit: usize,
    cut: impl Fn(&str, usize) -> String,
) -> String {
    let disclosure = disclosure.trim();
    if disclosure.is_empty() || text.to_lowercase().contains(&disclosure.to_lowercase()) {
        return text.to_owned();
    }
    let room = limit.saturating_sub(disclosure.chars().count() + 1);
    let body = if text.chars().count() > room {
        cut(text, room)
    } else {
        text.trim_end().to_owned()
    };
    if body.is_empty() {
        disclosure.to_owned()
    } else {
        format!("{body} {disclosure}")
    }
}

/// The lowercase words of `text` (letters and digits), in order.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Sensitive topics and the words that reveal them. A keyword matches a whole word, or the
/// start of one when it is at least five characters long ("election" matches "elections").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Lexicon(pub BTreeMap<String, Vec<String>>);

impl Default for Lexicon {
    fn default() -> Self {
        let entries: [(&str, &[&str]); 6] = [
            (
                "politics",
                &[
                    "election",
                    "vote",
                    "voting",
                    "ballot",
                    "parliament",
                    "candidate",
                    "senator",
                    "politics",
                    "political",
                    "referendum",
                ],
            ),
            (
                "health",
                &[
                    "vaccine", "medicine", "diet", "disease", "health", "clinic", "symptom", "cure",
                ],
            ),
            (
                "finance",
                &[
                    "crypto",
                    "stock",
                    "stocks",
                    "invest",
                    "investing",
                    "investment",
                    "bank",
                    "loan",
                    "finance",
                    "transfer",
                    "payment",
                ],
            ),
            (
                "religion",
                &["religion", "church", "mosque", "temple", "faith"],
            ),
            (
                "minors",
                &["child", "children", "kids", "teenager", "minor"],
            ),
            ("violence", &["weapon", "shooting", "attack"]),
        ];
        Self(
            entries
                .into_iter()
                .map(|(topic, keys)| {
                    (
                        topic.to_owned(),
                        keys.iter().map(|k| (*k).to_owned()).collect(),
                    )
                })
                .collect(),
        )
    }
}

impl Lexicon {
    /// The topics `text` touches, by keyword.
    pub fn classify(&self, text: &str) -> BTreeSet<String> {
        let words = words(text);
        self.0
            .iter()
            .filter(|(_, keys)| {
                keys.iter().any(|key| {
                    let key = key.to_lowercase();
                    words
                        .iter()
                        .any(|w| *w == key || (key.chars().count() >= 5 && w.starts_with(&key)))
                })
            })
            .map(|(topic, _)| topic.clone())
            .collect()
    }
}

/// The phrases of `banned` that `text` contains (case-insensitive, whole words).
pub fn banned_phrases<'a>(text: &str, banned: &'a [String]) -> Vec<&'a str> {
    let haystack = format!(" {} ", words(text).join(" "));
    banned
        .iter()
        .filter(|phrase| {
            let needle = words(phrase).join(" ");
            !needle.is_empty() && haystack.contains(&format!(" {needle} "))
        })
        .map(String::as_str)
        .collect()
}

/// A link found in a text: what was written, the host it points to (lowercase), and whether it
/// is a web link a platform would open over `https` (an `https://` URL, or a bare domain or
/// `www.` host, which platforms link as such).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link<'a> {
    pub raw: &'a str,
    pub host: Option<String>,
    pub secure: bool,
}

/// Schemes that open something without `//` (`javascript:alert(1)`, `data:...`).
const BARE_SCHEMES: [&str; 5] = ["javascript", "data", "mailto", "vbscript", "file"];

/// Endings of file names and code that read like domains (`node.js`, `notes.txt`) and are not.
const NOT_TLDS: [&str; 14] = [
    "js", "ts", "jsx", "tsx", "txt", "json", "yaml", "yml", "toml", "exe", "png", "jpg", "jpeg",
    "gif",
];

/// Common top-level domains: a capitalised one (`Evil.Com`) is a domain, where another
/// capitalised word after a full stop (`today.Thanks`) starts a sentence.
const COMMON_TLDS: [&str; 40] = [
    "com", "net", "org", "io", "co", "ai", "app", "dev", "xyz", "info", "biz", "me", "ly", "gg",
    "tv", "us", "uk", "de", "fr", "ru", "cn", "jp", "es", "it", "nl", "eu", "ca", "au", "in", "br",
    "shop", "store", "online", "site", "link", "click", "top", "example", "test", "xn",
];

/// Every link in `text`, in any form a reader or a browser would follow: URLs with a scheme
/// wherever they stand (inside `src="..."`, a Markdown `[..](..)`, after `=`), protocol-relative
/// (`//host`) and malformed ones (`https:/host`), `www.` hosts, bare domains (`shop.example/a`,
/// `EVIL.COM`, punycode `xn--...`, Unicode), and the scheme-only kinds (`javascript:`,
/// `data:`). A handle or an address (`@` before any path) is not a link.
pub fn links(text: &str) -> Vec<Link<'_>> {
    let delimiters = |c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '"' | '\'' | '`' | '<' | '>' | '(' | ')' | '[' | ']' | '{' | '}' | '|' | '\\'
            )
    };
    let mut found = Vec::new();
    for token in text.split(delimiters) {
        let token = token
            .trim_start_matches(|c: char| !c.is_alphanumeric() && c != '/' && c != '@')
            .trim_end_matches(|c: char| !c.is_alphanumeric() && c != '/');
        if token.is_empty() {
            continue;
        }
        if let Some(link) = scheme_link(token).or_else(|| bare_link(token)) {
            found.push(link);
        }
    }
    found
}

/// A link with a scheme anywhere in `token` (`href=https://x`, `//x`, `https:/x`), or `None`.
fn scheme_link(token: &str) -> Option<Link<'_>> {
    let lower = token.to_ascii_lowercase();
    if let Some(at) = lower.find("://") {
        // The scheme: the ASCII letters (and + - .) right before `://`.
        let start = lower[..at]
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            .last()
            .map_or(at, |(i, _)| i);
        let scheme = &lower[start..at];
        let raw = &token[start..];
        let host = host_of(&token[at + 3..]);
        return Some(Link {
            raw,
            secure: scheme == "https" && host.is_some(),
            host,
        });
    }
    if let Some(rest) = token.strip_prefix("//") {
        // Protocol-relative: whatever scheme the page has; never trusted as https.
        return Some(Link {
            raw: token,
            host: host_of(rest),
            secure: false,
        });
    }
    for scheme in ["https", "http"] {
        let marker = format!("{scheme}:");
        if let Some(at) = lower.find(&marker)
            && (at == 0 || !lower.as_bytes()[at - 1].is_ascii_alphanumeric())
        {
            // `https:/host` or `https:host`: malformed, refused whatever the host.
            let rest = token[at + marker.len()..].trim_start_matches('/');
            return Some(Link {
                raw: &token[at..],
                host: host_of(rest),
                secure: false,
            });
        }
    }
    for scheme in BARE_SCHEMES {
        let marker = format!("{scheme}:");
        let Some(at) = lower.find(&marker) else {
            continue;
        };
        let boundary = at == 0 || !lower.as_bytes()[at - 1].is_ascii_alphanumeric();
        if boundary && lower.len() > at + marker.len() {
            return Some(Link {
                raw: &token[at..],
                host: None,
                secure: false,
            });
        }
    }
    None
}

/// A `www.` host or a bare domain (`evil.example`, `shop.example/a`), or `None`.
fn bare_link(token: &str) -> Option<Link<'_>> {
    let path_at = token.find(['/', '?', '#']).unwrap_or(token.len());
    // `name@host`: an address or a handle, not a link (an `@` in a path is).
    if token[..path_at].contains('@') {
        return None;
    }
    // `key=host`: the value is the link (an `=` in a query is part of it).
    let token = match token.find('=') {
        Some(eq) if eq < path_at && !token[..eq].contains('.') => &token[eq + 1..],
        _ => token,
    };
    let host = host_of(token)?;
    let labels: Vec<&str> = host.split('.').collect();
    let written_tld = token
        .split(['/', '?', '#', ':'])
        .next()
        .and_then(|h| h.rsplit('.').next())
        .unwrap_or_default();
    let tld = labels.last().copied().unwrap_or_default();
    let letters = tld.chars().count();
    let mut chars = written_tld.chars();
    // A capital then small letters after a full stop is a new sentence ("today.Thanks"),
    // unless it is a common top-level domain ("Evil.Com").
    let sentence = chars.next().is_some_and(char::is_uppercase)
        && chars.any(char::is_lowercase)
        && !COMMON_TLDS.contains(&tld);
    let tld_like = ((2..=24).contains(&letters)
        && tld.chars().all(char::is_alphabetic)
        && !sentence
        && !NOT_TLDS.contains(&tld))
        || tld.starts_with("xn--");
    let labels_ok = labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_alphanumeric() || c == '-'))
        && !labels[0].chars().all(|c| c.is_ascii_digit());
    (labels_ok && (tld_like || host.starts_with("www."))).then_some(Link {
        raw: token,
        host: Some(host),
        secure: true,
    })
}

/// The host of what follows a scheme's `//` (or of a bare domain), lowercase.
fn host_of(rest: &str) -> Option<String> {
    // The authority ends at the first character no host, port or user name has.
    let authority = rest
        .split(|c: char| {
            !(c.is_alphanumeric() || matches!(c, '-' | '.' | ':' | '@' | '_' | '%' | '~'))
        })
        .next()
        .unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    let host = host.split(':').next().unwrap_or_default().to_lowercase();
    let host = host.trim_end_matches('.');
    (!host.is_empty()).then(|| host.to_owned())
}

/// Whether `host` is one of `allowed` or a subdomain of one.
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|h| {
        let h = h.trim().trim_end_matches('.').to_lowercase();
        host == h || host.ends_with(&format!(".{h}"))
    })
}

/// Internal text found in `text`: what the pipeline says to itself (feedback markers, ids,
/// state keys and versions, error strings) must never be part of content. Each finding names
/// what was found.
pub fn leaks(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let mut found = Vec::new();
    // Chimera's own markers and identifiers, not ordinary words: "idempotency" or
    // "feedback" in a post are fine, `idempotency_key` or "[revised ...]" are not.
    const MARKERS: &[&str] = &[
        "[revised",
        "[feedback",
        "state moved since",
        "while the item waited",
        "idempotency_key",
        "task_id",
        "result_id",
        "goal_id",
        "review_id",
        "commit_hash",
        "read_set",
        "write_set",
        "panicked at",
        "stack backtrace",
        "traceback (most recent call last)",
        "internal server error",
        "messageerror",
        "sqlx::",
        "<|im_start|>",
        "<|im_end|>",
        "<untrusted",
        "</untrusted",
        "<data>",
        "</data>",
    ];
    for marker in MARKERS {
        if lower.contains(marker) {
            found.push(format!("internal text {marker:?}"));
        }
    }
    if contains_uuid(&lower) {
        found.push("an internal id (a UUID)".to_owned());
    }
    if contains_version_arrow(&lower) {
        found.push("a state version change (\"n -> m\")".to_owned());
    }
    found
}

fn contains_uuid(lower: &str) -> bool {
    let bytes = lower.as_bytes();
    let groups = [8, 4, 4, 4, 12];
    let total = 36;
    (0..bytes.len().saturating_sub(total - 1)).any(|start| {
        let mut at = start;
        groups.iter().enumerate().all(|(i, len)| {
            let ok = bytes[at..at + len].iter().all(u8::is_ascii_hexdigit)
                && (i == groups.len() - 1 || bytes.get(at + len) == Some(&b'-'));
            at += len + 1;
            ok
        })
    })
}

/// `<digits> -> <digits>`, as the OCC feedback describes moved versions.
fn contains_version_arrow(lower: &str) -> bool {
    let tokens: Vec<&str> = lower.split_whitespace().collect();
    tokens.windows(3).any(|w| {
        w[1] == "->"
            && w[0].chars().all(|c| c.is_ascii_digit())
            && w[2]
                .trim_end_matches([',', ';', ']', ')'])
                .chars()
                .all(|c| c.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lexicon_matches_words_and_their_longer_forms_not_fragments() {
        let lexicon = Lexicon::default();
        assert_eq!(
            lexicon.classify("Why I vote early in the city elections"),
            BTreeSet::from(["politics".to_owned()])
        );
        // "devote" is not "vote"; "bankruptcy" does not start with a 5-letter key here.
        assert!(
            lexicon
                .classify("I devote my weekends to gardening")
                .is_empty()
        );
        assert!(lexicon.classify("").is_empty());
    }

    #[test]
    fn banned_phrases_links_and_limits() {
        let banned = vec!["guaranteed returns".to_owned(), "risk-free".to_owned()];
        assert_eq!(
            banned_phrases("Guaranteed   returns, totally RISK FREE!", &banned),
            vec!["guaranteed returns", "risk-free"]
        );
        assert!(banned_phrases("returns are never guaranteed", &banned).is_empty());
        let raw = |text| links(text).into_iter().map(|l| l.raw).collect::<Vec<_>>();
        assert_eq!(
            raw("see https://shop.example/a, or javascript:alert(1) and www.x.io."),
            vec!["https://shop.example/a", "javascript:alert", "www.x.io"]
        );
        let hosts = |text| {
            links(text)
                .into_iter()
                .map(|l| l.host.unwrap_or_default())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            hosts("https://user@Shop.Example:443/a?b"),
            vec!["shop.example"]
        );
        assert!(!links("http://shop.example")[0].secure);
    }

    #[test]
    fn links_are_found_in_every_form() {
        let hosts = |text| {
            links(text)
                .into_iter()
                .map(|l| (l.host.unwrap_or_default(), l.secure))
                .collect::<Vec<_>>()
        };
        let evil = || vec![("evil.example".to_owned(), true)];
        assert_eq!(hosts(r#"<img src="https://evil.example/x.png">"#), evil());
        assert_eq!(hosts("[our shop](https://evil.example)"), evil());
        assert_eq!(hosts("visit evil.example today"), evil());
        assert_eq!(hosts("visit evil.example/deals."), evil());
        assert_eq!(hosts("href=https://evil.example"), evil());
        assert_eq!(
            hosts("see xn--80ak6aa92e.com now"),
            vec![("xn--80ak6aa92e.com".to_owned(), true)]
        );
        assert_eq!(
            hosts("<a href='data:text/html;base64,xx'>"),
            vec![(String::new(), false)]
        );
        // Not links: sentences run together, versions, files, handles and addresses.
        assert!(links("What a day.Thanks for coming").is_empty());
        assert!(links("version 3.5 of Node.js and notes.txt").is_empty());
        assert!(links("thanks @nova.bsky.social, mail me at a@b.example").is_empty());
        for (text, host) in [
            ("“https://evil.example”", "evil.example"),
            ("→https://evil.example", "evil.example"),
            ("éhttps://evil.example", "evil.example"),
            ("EVIL.COM", "evil.com"),
            ("Evil.Com!", "evil.com"),
            ("evil.example/?ref=1", "evil.example"),
            ("evil.example/@deal", "evil.example"),
            ("evil.example…", "evil.example"),
            ("evil.example’s shop", "evil.example"),
            ("пример.рф", "пример.рф"),
        ] {
            assert_eq!(hosts(text), vec![(host.to_owned(), true)], "{text}");
        }
        for text in [
            "//evil.example",
            "https:/evil.example",
            "https:evil.example",
        ] {
            assert_eq!(
                hosts(text),
                vec![("evil.example".to_owned(), false)],
                "{text}"
            );
        }
        assert!(host_allowed("www.shop.example", &["shop.example".into()]));
        assert!(!host_allowed("shop.example.evil", &["shop.example".into()]));
        assert_eq!(platform_limit("x"), Some(280));
        assert_eq!(platform_limit("fax"), None);
    }

    #[test]
    fn the_disclosure_is_added_once_within_the_limit() {
        let cut = |t: &str, n: usize| t.chars().take(n).collect::<String>().trim_end().to_owned();
        assert_eq!(
            with_disclosure("Hello.", "#automated", 280, cut),
            "Hello. #automated"
        );
        assert_eq!(
            with_disclosure("Hello #Automated", "#automated", 280, cut),
            "Hello #Automated"
        );
        let long = "a".repeat(300);
        let done = with_disclosure(&long, "#automated", 280, cut);
        assert_eq!(done.chars().count(), 280);
        assert!(done.ends_with(" #automated"), "{done}");
        assert_eq!(with_disclosure("Hi", " ", 280, cut), "Hi");
    }

    #[test]
    fn internal_text_is_found() {
        let leaked =
            "Nice! [revised: state moved while the item waited for review: mentions:x 0 -> 1]";
        let found = leaks(leaked);
        assert!(found.iter().any(|f| f.contains("[revised")), "{found:?}");
        assert!(found.iter().any(|f| f.contains("->")), "{found:?}");
        assert!(!leaks("task 0f8fad5b-d9cb-469f-a165-70867728950e failed").is_empty());
        assert!(leaks("Spring is here: fresh colours, new shoes. #spring").is_empty());
        assert!(leaks("Scores went 3 - 1 tonight").is_empty());
        // Ordinary words are not Chimera's markers.
        assert!(leaks("Why idempotency matters: feedback: welcome").is_empty());
        assert!(!leaks("the idempotency_key was reused").is_empty());
    }
}
