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

/// The links in `text`: anything that starts with a URL scheme or `www.`.
pub fn links(text: &str) -> Vec<&str> {
    text.split_whitespace()
        .map(|w| {
            let w = w.trim_end_matches(['.', ',', '!', '?', ';', ':']);
            // A closing parenthesis ends the link unless the link opened one.
            match w.strip_suffix(')') {
                Some(inner) if !inner.contains('(') => inner,
                _ => w,
            }
        })
        .filter(|w| {
            let lower = w.to_ascii_lowercase();
            lower.starts_with("www.")
                || lower
                    .split_once(':')
                    .is_some_and(|(scheme, rest)| is_scheme(scheme) && !rest.is_empty())
        })
        .collect()
}

fn is_scheme(s: &str) -> bool {
    matches!(
        s,
        "http" | "https" | "javascript" | "data" | "file" | "ftp" | "mailto" | "vbscript"
    )
}

/// The host of an `https://` link, lowercase; `None` for any other scheme.
pub fn https_host(link: &str) -> Option<String> {
    let rest = link
        .get(..8)
        .filter(|p| p.eq_ignore_ascii_case("https://"))
        .map(|_| &link[8..])?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = host.rsplit('@').next().unwrap_or_default();
    let host = host
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

/// Internal text found in `text`: what the pipeline says to itself (feedback markers, ids,
/// state keys and versions, error strings) must never be part of content. Each finding names
/// what was found.
pub fn leaks(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let mut found = Vec::new();
    const MARKERS: &[&str] = &[
        "[revised",
        "[feedback",
        "feedback:",
        "state moved",
        "while the item waited",
        "idempotency",
        "task_id",
        "result_id",
        "goal_id",
        "commit_hash",
        "read set",
        "write set",
        "panicked at",
        "stack backtrace",
        "traceback (most recent call last)",
        "internal server error",
        "messageerror",
        "sqlx::",
        "confidence 0.",
        "<|im_start|>",
        "<|im_end|>",
        "<untrusted",
        "</untrusted",
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
        assert_eq!(
            links("see https://shop.example/a, or javascript:alert(1) and www.x.io."),
            vec!["https://shop.example/a", "javascript:alert(1)", "www.x.io"]
        );
        assert_eq!(
            https_host("https://user@Shop.Example:443/a?b").as_deref(),
            Some("shop.example")
        );
        assert_eq!(https_host("http://shop.example"), None);
        assert_eq!(platform_limit("x"), Some(280));
        assert_eq!(platform_limit("fax"), None);
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
    }
}
