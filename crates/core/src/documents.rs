//! Agents as documents: an agent's persona is SOUL.md and its policy AGENTS.md, both Markdown
//! with a YAML front matter between `---` fences.
//!
//! - **SOUL.md**: the front matter names the agent and its voice (`name`, `voice`, `topics`);
//!   the body's `Bio` section says who it is and its `Examples` section lists example posts.
//!   It becomes the persona the planner and the drafter read.
//! - **AGENTS.md**: the front matter is the typed policy (thresholds, sensitive topics and their
//!   lexicon, attempts, review deadlines and default decision, banned phrases, disclosure,
//!   per-platform quotas, spend limits, model choice); the body is the same rules in words, for
//!   people. It becomes a [`Policy`].
//!
//! Both are read strictly: an unknown field, a wrong type or an inconsistent value is a
//! [`DocError`] naming the document, the line and the field. Each document is stored as written
//! with its SHA-256 ([`content_hash`]); a version is a new row, never an edit.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::content::Lexicon;
use crate::domain::{Confidence, DisclosureLevel, RiskTag};
use crate::routing::{ModelChoice, Policy, Quota, SimilarityPolicy, SpendLimits};

/// Largest document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 24 * 1024;

/// The file name of a persona document.
pub const SOUL: &str = "SOUL.md";
/// The file name of a policy document.
pub const AGENTS: &str = "AGENTS.md";

/// What is wrong with a document, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocError {
    /// `SOUL.md` or `AGENTS.md`.
    pub document: &'static str,
    /// 1-based line in the document, when known.
    pub line: Option<usize>,
    /// The field, as a path into the front matter (`quotas.x.posts_per_day`), when one is at
    /// fault.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for DocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.document)?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ", field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for DocError {}

/// The hex SHA-256 of a document as written: what plans, reviews and decisions name.
pub fn content_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The deepest the front matter may nest (mappings, sequences, flow brackets).
pub const MAX_DEPTH: usize = 32;

/// The first line (1-based) at which `yaml` nests deeper than `max`, or `None`: block nesting by
/// indentation and `- `/`? ` markers, flow nesting by brackets outside quoted scalars (a quote
/// opens a scalar only where one may start, escapes and doubled quotes stay inside, and a
/// quoted scalar may span lines). Linear in the text; it may count a level the parser would not
/// (a bracket inside a plain scalar), never fewer.
fn too_deep(yaml: &str, max: usize) -> Option<usize> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    let mut quote: Option<char> = None;
    for (n, line) in yaml.lines().enumerate() {
        let content = line.trim_start_matches(' ');
        let mut depth = 0;
        if flow == 0 && quote.is_none() {
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let indent = line.len() - content.len();
            while indents.last().is_some_and(|top| *top >= indent) {
                indents.pop();
            }
            indents.push(indent);
            let mut rest = content;
            while let Some(more) = ["- ", "? ", "-\t", "?\t"]
                .iter()
                .find_map(|marker| rest.strip_prefix(marker))
            {
                depth += 1;
                rest = more.trim_start();
            }
            depth += indents.len();
        }
        let mut previous = ' ';
        let mut chars = content.chars().peekable();
        while let Some(c) = chars.next() {
            match quote {
                Some('"') if c == '\\' => {
                    chars.next();
                }
                Some('\'') if c == '\'' && chars.peek() == Some(&'\'') => {
                    chars.next();
                }
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    '"' | '\''
                        if matches!(previous, ' ' | '\t' | '[' | '{' | ',' | ':' | '-' | '?') =>
                    {
                        quote = Some(c)
                    }
                    '#' if matches!(previous, ' ' | '\t') && flow == 0 => break,
                    '[' | '{' => {
                        flow += 1;
                        if depth + flow > max {
                            return Some(n + 1);
                        }
                    }
                    ']' | '}' => flow = flow.saturating_sub(1),
                    _ => {}
                },
            }
            previous = c;
        }
        if depth + flow > max {
            return Some(n + 1);
        }
    }
    None
}

/// A document split at its front matter.
struct Parts<'a> {
    document: &'static str,
    /// The YAML between the fences.
    front: &'a str,
    /// The line of the document the YAML starts on.
    front_line: usize,
    body: &'a str,
}

impl<'a> Parts<'a> {
    fn split(document: &'static str, text: &'a str) -> Result<Self, DocError> {
        let error = |line, message: &str| DocError {
            document,
            line,
            field: None,
            message: message.to_owned(),
        };
        if text.len() > MAX_DOCUMENT_BYTES {
            return Err(error(
                None,
                &format!("larger than {MAX_DOCUMENT_BYTES} bytes"),
            ));
        }
        if text.contains('\0') {
            return Err(error(None, "contains a NUL character"));
        }
        let Some(rest) = text
            .strip_prefix("---\n")
            .or_else(|| text.strip_prefix("---\r\n"))
        else {
            return Err(error(
                Some(1),
                "must start with a `---` line opening the YAML front matter",
            ));
        };
        let mut offset = 0;
        for line in rest.split_inclusive('\n') {
            if line.trim_end() == "---" {
                return Ok(Parts {
                    document,
                    front: &rest[..offset],
                    front_line: 2,
                    body: &rest[offset + line.len()..],
                });
            }
            offset += line.len();
        }
        Err(error(None, "the front matter has no closing `---` line"))
    }

    /// The front matter as `T`; an error names the line and the field.
    fn front<T: DeserializeOwned>(&self) -> Result<T, DocError> {
        if self.front.trim().is_empty() {
            return Err(self.error(Some(self.front_line), None, "the front matter is empty"));
        }
        // The parser recurses per level: a deep document is refused before it reaches it, in
        // one pass over the text.
        if let Some(line) = too_deep(self.front, MAX_DEPTH) {
            return Err(self.error(
                Some(line + self.front_line - 1),
                None,
                &format!("nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        let deserializer = yaml_serde::Deserializer::from_str(self.front);
        serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let line = inner
                .location()
                .map(|l| l.line() + self.front_line - 1)
                .or_else(|| self.line_of(&path));
            let message = inner.to_string();
            // The YAML error repeats its own position; the line is reported once, ours.
            let message = match message.find(" at line ") {
                Some(at) => message[..at].to_owned(),
                None => message,
            };
            // ... and may start with its own idea of the path; the field is reported once, ours.
            let message = match message.split_once(": ") {
                Some((head, tail)) if !head.contains(' ') => tail.to_owned(),
                _ => message,
            };
            let field = (path != ".").then_some(path);
            self.error(line, field, &message)
        })
    }

    /// The line a top-level `path` starts on in the front matter (its first segment's key).
    fn line_of(&self, path: &str) -> Option<usize> {
        let key = path.split(['.', '[']).next()?;
        self.front
            .lines()
            .position(|l| {
                l.strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with(':'))
            })
            .map(|i| i + self.front_line)
    }

    fn error(&self, line: Option<usize>, field: Option<String>, message: &str) -> DocError {
        DocError {
            document: self.document,
            line,
            field,
            message: message.to_owned(),
        }
    }

    /// An error about `field` (a path into the front matter), at the line its key is on.
    fn field_error(&self, field: &str, message: &str) -> DocError {
        self.error(self.line_of(field), Some(field.to_owned()), message)
    }
}

/// An agent's persona, read from SOUL.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Soul {
    pub name: String,
    pub voice: String,
    pub topics: Vec<String>,
    pub bio: String,
    pub examples: Vec<String>,
    /// How its posts read ("## Post style": a list), as elizaOS separates a character's style
    /// by channel.
    pub post_style: Vec<String>,
    /// How its replies read ("## Reply style": a list).
    pub reply_style: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SoulFront {
    name: String,
    voice: String,
    #[serde(default)]
    topics: Vec<String>,
}

impl Soul {
    pub fn parse(text: &str) -> Result<Soul, DocError> {
        let parts = Parts::split(SOUL, text)?;
        let front: SoulFront = parts.front()?;
        let check = |field: &str, value: &str, max: usize| {
            let n = value.trim().chars().count();
            if n == 0 || n > max {
                Err(parts.field_error(field, &format!("must be 1..={max} characters")))
            } else {
                Ok(())
            }
        };
        check("name", &front.name, 80)?;
        check("voice", &front.voice, 200)?;
        if front.topics.len() > 20 {
            return Err(parts.field_error("topics", "at most 20 topics"));
        }
        for (i, topic) in front.topics.iter().enumerate() {
            check(&format!("topics[{i}]"), topic, 40)?;
        }
        let sections = sections(parts.body);
        let bio = sections
            .get("bio")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        if bio.chars().count() > 2000 {
            return Err(parts.error(None, None, "the Bio section is longer than 2000 characters"));
        }
        // A section that lists at most 10 items of at most `max` characters.
        let listed = |title: &str, items_are: &str, max: usize| -> Result<Vec<String>, DocError> {
            let items: Vec<String> = sections
                .get(&title.to_lowercase())
                .map(|s| list_items(s))
                .unwrap_or_default();
            if items.len() > 10 || items.iter().any(|e| e.chars().count() > max) {
                return Err(parts.error(
                    None,
                    None,
                    &format!(
                        "the {title} section lists at most 10 {items_are} of at most {max} characters"
                    ),
                ));
            }
            Ok(items)
        };
        let examples = listed("Examples", "posts", 500)?;
        let post_style = listed("Post style", "rules", 200)?;
        let reply_style = listed("Reply style", "rules", 200)?;
        Ok(Soul {
            post_style,
            reply_style,
            name: front.name.trim().to_owned(),
            voice: front.voice.trim().to_owned(),
            topics: front.topics.iter().map(|t| t.trim().to_owned()).collect(),
            bio,
            examples,
        })
    }

    /// The persona as the planner and the drafter read it.
    pub fn persona(&self) -> Value {
        let mut persona = json!({
            "name": self.name,
            "voice": self.voice,
            "topics": self.topics,
            "bio": self.bio,
            "examples": self.examples,
        });
        if !self.post_style.is_empty() || !self.reply_style.is_empty() {
            persona["style"] = json!({"posts": self.post_style, "replies": self.reply_style});
        }
        persona
    }
}

/// The body's sections by heading (any level, lowercased): the text under each.
fn sections(body: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in body.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') {
            let title = trimmed.trim_start_matches('#').trim().to_lowercase();
            current = Some(title);
            continue;
        }
        if let Some(title) = &current {
            let text = out.entry(title.clone()).or_default();
            text.push_str(line);
            text.push('\n');
        }
    }
    out
}

/// The items of a Markdown bullet list (`-` or `*`), continuation lines joined.
fn list_items(section: &str) -> Vec<String> {
    let mut items: Vec<String> = Vec::new();
    for line in section.lines() {
        let trimmed = line.trim();
        if let Some(item) = trimmed
            .strip_prefix("- ")
            .or_else(|| trimmed.strip_prefix("* "))
        {
            items.push(item.trim().to_owned());
        } else if !trimmed.is_empty()
            && let Some(last) = items.last_mut()
        {
            last.push(' ');
            last.push_str(trimmed);
        }
    }
    items
}

/// AGENTS.md's front matter: every field optional, the defaults of [`Policy::default`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFront {
    auto_approve_above: Option<f64>,
    review_at_or_above: Option<f64>,
    sensitive_topics: Option<Vec<String>>,
    /// Words per topic, over the default lexicon (a topic listed here replaces its words).
    #[serde(default)]
    lexicon: BTreeMap<String, Vec<String>>,
    max_attempts: Option<u32>,
    #[serde(default)]
    review: ReviewFront,
    banned_phrases: Option<Vec<String>>,
    disclosure: Option<DisclosureLevel>,
    link_hosts: Option<Vec<String>>,
    /// Gone: read only to say so (the worker's claim can no longer decide).
    score_rule: Option<yaml_serde::Value>,
    similarity: Option<SimilarityPolicy>,
    disclosure_text: Option<String>,
    #[serde(default)]
    quotas: BTreeMap<String, Quota>,
    #[serde(default)]
    spend: SpendLimits,
    model: Option<ModelChoice>,
    #[serde(default)]
    schedules: Vec<crate::schedule::Schedule>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewFront {
    /// How long an item may wait before it is escalated (`30m`, `4h`, `2d`, or seconds).
    due: Option<Duration>,
    /// When an unreviewed item takes the default decision.
    #[serde(rename = "final")]
    final_after: Option<Duration>,
    default_decision: Option<DefaultDecision>,
}

/// What an item nobody decided in time becomes: rejected (nothing is published by default).
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum DefaultDecision {
    Reject,
}

/// A duration in seconds, written `90`, `90s`, `30m`, `4h` or `2d`.
struct Duration(u32);

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u32),
            Text(String),
        }
        let invalid = || serde::de::Error::custom("expected a duration such as 90s, 30m, 4h or 2d");
        match Raw::deserialize(d)? {
            Raw::Seconds(s) => Ok(Duration(s)),
            Raw::Text(text) => {
                let text = text.trim();
                let split = text
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(text.len());
                let (number, unit) = text.split_at(split);
                let number: u32 = number.parse().map_err(|_| invalid())?;
                let scale = match unit {
                    "" | "s" => 1,
                    "m" => 60,
                    "h" => 3600,
                    "d" => 86_400,
                    _ => return Err(invalid()),
                };
                number.checked_mul(scale).map(Duration).ok_or_else(invalid)
            }
        }
    }
}

/// Parses AGENTS.md into the policy it states, at `version`.
pub fn parse_policy(text: &str, version: i32) -> Result<Policy, DocError> {
    let parts = Parts::split(AGENTS, text)?;
    let front: PolicyFront = parts.front()?;
    let defaults = Policy::default();
    let confidence = |field: &str, value: Option<f64>, default: Confidence| match value {
        None => Ok(default),
        Some(v) => {
            Confidence::try_from(v).map_err(|_| parts.field_error(field, "must be between 0 and 1"))
        }
    };
    let auto_approve_above = confidence(
        "auto_approve_above",
        front.auto_approve_above,
        defaults.auto_approve_above,
    )?;
    let review_at_or_above = confidence(
        "review_at_or_above",
        front.review_at_or_above,
        defaults.review_at_or_above,
    )?;
    if review_at_or_above > auto_approve_above {
        return Err(parts.field_error("review_at_or_above", "must not exceed auto_approve_above"));
    }
    let sensitive_topics = match front.sensitive_topics {
        None => defaults.sensitive_topics,
        Some(topics) => topics
            .iter()
            .enumerate()
            .map(|(i, t)| {
                RiskTag::parse(t.as_str())
                    .map_err(|e| parts.field_error(&format!("sensitive_topics[{i}]"), &e.reason))
            })
            .collect::<Result<_, _>>()?,
    };
    let mut lexicon = defaults.topic_lexicon.0;
    for (topic, words) in front.lexicon {
        let field = format!("lexicon.{topic}");
        if RiskTag::parse(topic.as_str()).is_err() {
            return Err(parts.field_error(&field, "a topic is 1-64 characters of a-z 0-9 _ -"));
        }
        if words.is_empty() || words.iter().any(|w| w.trim().is_empty() || w.len() > 64) {
            return Err(parts.field_error(&field, "lists 1-64 character words"));
        }
        lexicon.insert(
            topic,
            words.iter().map(|w| w.trim().to_lowercase()).collect(),
        );
    }
    let max_attempts = front.max_attempts.unwrap_or(defaults.max_attempts);
    if !(1..=20).contains(&max_attempts) {
        return Err(parts.field_error("max_attempts", "must be from 1 to 20"));
    }
    let review_due_secs = front.review.due.map_or(defaults.review_due_secs, |d| d.0);
    let review_final_secs = front
        .review
        .final_after
        .map_or(defaults.review_final_secs, |d| d.0);
    if review_due_secs == 0 {
        return Err(parts.field_error("review.due", "must be longer than 0"));
    }
    if review_final_secs < review_due_secs {
        return Err(parts.field_error("review.final", "must not come before review.due"));
    }
    let DefaultDecision::Reject = front
        .review
        .default_decision
        .unwrap_or(DefaultDecision::Reject);
    let banned_phrases = front.banned_phrases.unwrap_or(defaults.banned_phrases);
    if let Some(i) = banned_phrases
        .iter()
        .position(|p| p.trim().is_empty() || p.chars().count() > 100)
    {
        return Err(parts.field_error(
            &format!("banned_phrases[{i}]"),
            "a phrase is 1..=100 characters",
        ));
    }
    if let Some(hosts) = &front.link_hosts
        && let Some(i) = hosts
            .iter()
            .position(|h| h.is_empty() || h.contains(['/', ':', ' ']))
    {
        return Err(parts.field_error(
            &format!("link_hosts[{i}]"),
            "a host name, such as example.com",
        ));
    }
    for (platform, quota) in &front.quotas {
        if crate::content::platform_limit(platform).is_none() {
            return Err(parts.field_error(
                &format!("quotas.{platform}"),
                "not a platform the agents post on",
            ));
        }
        for (field, value) in [
            ("posts_per_day", quota.posts_per_day),
            ("replies_per_hour", quota.replies_per_hour),
        ] {
            if value == Some(0) {
                return Err(parts.field_error(
                    &format!("quotas.{platform}.{field}"),
                    "must be at least 1 (to stop posting on a platform, leave it out of the agent's platforms)",
                ));
            }
        }
    }
    if let (Some(per), Some(day)) = (front.spend.per_transfer_cents, front.spend.per_day_cents)
        && per > day
    {
        return Err(parts.field_error(
            "spend.per_transfer_cents",
            "must not exceed spend.per_day_cents",
        ));
    }
    if front.score_rule.is_some() {
        return Err(parts.field_error(
            "score_rule",
            "is no longer read: the judge scores every effect from its own signals, and the worker's claim can only lower that score (remove the line)",
        ));
    }
    if let Some(model) = &front.model {
        if model.id.trim().is_empty() || model.id.len() > 200 {
            return Err(parts.field_error("model.id", "must be 1..=200 characters"));
        }
        if model.price.is_some() {
            return Err(parts.field_error(
                "model.price",
                "prices come from the stage's price table, not from an agent's policy (remove it)",
            ));
        }
    }
    for (i, schedule) in front.schedules.iter().enumerate() {
        schedule
            .validate()
            .map_err(|e| parts.field_error(&format!("schedules[{i}]"), &e))?;
    }
    let policy = Policy {
        version,
        auto_approve_above,
        review_at_or_above,
        sensitive_topics,
        max_attempts,
        review_due_secs,
        review_final_secs,
        banned_phrases,
        topic_lexicon: Lexicon(lexicon),
        link_hosts: front.link_hosts,
        similarity: front.similarity.unwrap_or_default(),
        disclosure: front.disclosure.unwrap_or(defaults.disclosure),
        disclosure_text: front.disclosure_text,
        quotas: front.quotas,
        spend: front.spend,
        model: front.model,
        schedules: front.schedules,
    };
    policy
        .validate()
        .map_err(|e| parts.error(None, None, &e.reason))?;
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLES: [(&str, &str, &str); 3] = [
        (
            "nova",
            include_str!("../../../examples/agents/nova/SOUL.md"),
            include_str!("../../../examples/agents/nova/AGENTS.md"),
        ),
        (
            "rex",
            include_str!("../../../examples/agents/rex/SOUL.md"),
            include_str!("../../../examples/agents/rex/AGENTS.md"),
        ),
        (
            "ivy",
            include_str!("../../../examples/agents/ivy/SOUL.md"),
            include_str!("../../../examples/agents/ivy/AGENTS.md"),
        ),
    ];

    #[test]
    fn the_example_agents_read_as_personas_and_policies() {
        for (handle, soul, agents) in EXAMPLES {
            let soul = Soul::parse(soul).unwrap_or_else(|e| panic!("{handle}: {e}"));
            assert!(
                !soul.bio.is_empty() && !soul.examples.is_empty(),
                "{handle}"
            );
            let policy = parse_policy(agents, 1).unwrap_or_else(|e| panic!("{handle}: {e}"));
            assert_eq!(policy.spend.auto_pay_per_day_cents, None, "{handle}");
        }
        let nova = Soul::parse(EXAMPLES[0].1).unwrap();
        assert_eq!(nova.persona()["voice"], "warm and curious");
        assert_eq!(nova.examples.len(), 2);
        let rex = parse_policy(EXAMPLES[1].2, 3).unwrap();
        assert_eq!(rex.version, 3);
        assert_eq!(rex.max_attempts, 4);
        assert_eq!((rex.review_due_secs, rex.review_final_secs), (7200, 43_200));
        assert!(rex.topic_lexicon.0["health"].contains(&"caffeine".to_owned()));
        // Topics the document does not name keep the default words.
        assert_eq!(
            rex.topic_lexicon.0["politics"],
            Lexicon::default().0["politics"]
        );
        assert_eq!(rex.quotas["x"].replies_per_hour, Some(20));
        assert_eq!(rex.link_hosts, Some(vec!["example.com".to_owned()]));
        let nova = parse_policy(EXAMPLES[0].2, 1).unwrap();
        assert_eq!(nova.schedules.len(), 1);
        assert_eq!(nova.schedules[0].cron, "0 9 * * MON-FRI");
        assert_eq!(nova.schedules[0].constraints.platforms, ["instagram"]);
        let ivy = parse_policy(EXAMPLES[2].2, 1).unwrap();
        assert_eq!(ivy.spend.per_transfer_cents, Some(500));
        // A document with nothing but a front matter of one field takes the defaults.
        let minimal = parse_policy("---\nmax_attempts: 5\n---\n", 1).unwrap();
        assert_eq!(
            minimal,
            Policy {
                max_attempts: 5,
                ..Policy::default()
            }
        );
        assert_eq!(content_hash("a").len(), 64);
    }

    fn error(result: Result<Policy, DocError>) -> (Option<usize>, Option<String>, String) {
        let e = result.unwrap_err();
        (e.line, e.field, e.message)
    }

    #[test]
    fn a_bad_policy_is_refused_naming_the_line_and_the_field() {
        // Bad YAML.
        let (line, _, message) = error(parse_policy(
            "---\nmax_attempts: 3\nbanned_phrases: a: b\n---\n",
            1,
        ));
        assert_eq!(line, Some(3), "{message}");
        // An unknown field, nested.
        let (line, field, message) = error(parse_policy(
            "---\nmax_attempts: 3\nreview:\n  due: 1h\n  finale: 2h\n---\n",
            1,
        ));
        assert_eq!(
            (line, field.as_deref()),
            (Some(5), Some("review.finale")),
            "{message}"
        );
        assert!(message.starts_with("unknown field `finale`"), "{message}");
        // Thresholds out of order.
        let (line, field, message) = error(parse_policy(
            "---\nauto_approve_above: 0.6\nreview_at_or_above: 0.8\n---\n",
            1,
        ));
        assert_eq!(line, Some(3));
        assert_eq!(field.as_deref(), Some("review_at_or_above"));
        assert!(message.contains("must not exceed"), "{message}");
        // A zero quota.
        let (_, field, _) = error(parse_policy(
            "---\nquotas:\n  x:\n    replies_per_hour: 0\n---\n",
            1,
        ));
        assert_eq!(field.as_deref(), Some("quotas.x.replies_per_hour"));
        // A negative quota.
        let (line, field, message) = error(parse_policy(
            "---\nquotas:\n  x:\n    posts_per_day: -1\n---\n",
            1,
        ));
        assert_eq!(line, Some(4), "{message}");
        assert_eq!(field.as_deref(), Some("quotas.x.posts_per_day"));
        // A wrong type, a bad duration, an unknown platform, a bad topic.
        let (_, field, _) = error(parse_policy("---\nmax_attempts: many\n---\n", 1));
        assert_eq!(field.as_deref(), Some("max_attempts"));
        let (line, field, message) = error(parse_policy("---\nreview:\n  due: soon\n---\n", 1));
        assert_eq!((line, field.as_deref()), (Some(3), Some("review.due")));
        assert!(message.contains("duration"), "{message}");
        let (_, field, _) = error(parse_policy("---\nquotas:\n  myspace: {}\n---\n", 1));
        assert_eq!(field.as_deref(), Some("quotas.myspace"));
        let (line, field, _) = error(parse_policy(
            "---\nmax_attempts: 2\nsensitive_topics: [Politics!]\n---\n",
            1,
        ));
        assert_eq!(
            (line, field.as_deref()),
            (Some(3), Some("sensitive_topics[0]"))
        );
        let (_, field, _) = error(parse_policy("---\nmax_attempts: 0\n---\n", 1));
        assert_eq!(field.as_deref(), Some("max_attempts"));
        // A schedule that cannot run: its line and its place in the list.
        let (line, field, message) = error(parse_policy(
            "---\nmax_attempts: 2\nschedules:\n  - name: daily\n    cron: \"0 9 * *\"\n    kind: reply\n    text: hi\n---\n",
            1,
        ));
        assert_eq!(
            (line, field.as_deref()),
            (Some(3), Some("schedules[0]")),
            "{message}"
        );
        assert!(message.contains("five fields"), "{message}");
        let (_, field, message) = error(parse_policy(
            "---\nschedules:\n  - {name: a, cron: \"0 9 * * *\", timezone: Moon/Base, kind: campaign, text: hi}\n---\n",
            1,
        ));
        assert_eq!(field.as_deref(), Some("schedules[0]"));
        assert!(message.contains("IANA"), "{message}");
        // No front matter, or no end to it.
        let (line, _, _) = error(parse_policy("# rules\n", 1));
        assert_eq!(line, Some(1));
        assert!(parse_policy("---\nmax_attempts: 2\n", 1).is_err());
        // The message reads as one sentence with its place.
        let e = parse_policy("---\nmax_attempts: 0\n---\n", 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "AGENTS.md line 2, field `max_attempts`: must be from 1 to 20"
        );
    }

    #[test]
    fn a_deeply_nested_document_is_refused_before_it_is_parsed() {
        for nested in [
            format!("{}{}", "[".repeat(12_000), "]".repeat(12_000)),
            format!("\n{}x", "- ".repeat(12_000)),
            format!("{}1{}", "{a: ".repeat(4_000), "}".repeat(4_000)),
            // Quotes that do not open a scalar, escaped and spanning lines hide nothing.
            format!("[a'b, {}]", "[".repeat(12_000)),
            format!("[\"\\\"\", {}]", "[".repeat(12_000)),
            format!("[\"a\n b\", {}]", "[".repeat(12_000)),
            format!("\n{}x", "? ".repeat(12_000)),
        ] {
            let text = format!("---\nmax_attempts: {nested}\n---\n");
            assert!(text.len() <= MAX_DOCUMENT_BYTES, "{}", text.len());
            let err = parse_policy(&text, 1).unwrap_err();
            assert!(err.message.contains("nested deeper"), "{err}");
        }
        // Ordinary nesting is fine.
        let ok = "---\nquotas:\n  x: {posts_per_day: 2}\nschedules:\n  - name: a\n    cron: \"0 9 * * *\"\n    timezone: UTC\n    kind: campaign\n    text: hello there\n    constraints: {platforms: [x]}\n---\n";
        parse_policy(ok, 1).unwrap();
    }

    #[test]
    fn a_tenant_cannot_price_its_model_or_keep_the_claim_rule() {
        let priced = "---\nmodel: {id: m, price: {input_cents_per_mtok: 0, output_cents_per_mtok: 0}}\n---\n";
        let err = parse_policy(priced, 1).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("model.price"), "{err}");
        let claim = "---\nscore_rule: claim\n---\n";
        let err = parse_policy(claim, 1).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("score_rule"), "{err}");
        let auto = "---\nspend: {per_day_cents: 100, auto_pay_per_day_cents: -5}\n---\n";
        assert!(parse_policy(auto, 1).is_err());
    }

    #[test]
    fn a_bad_persona_is_refused_naming_the_field() {
        let e = Soul::parse("---\nname: Nova\n---\n").unwrap_err();
        assert!(e.message.contains("missing field `voice`"), "{e}");
        let e = Soul::parse("---\nname: Nova\nvoice: warm\nmood: happy\n---\n").unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        let e = Soul::parse("---\nname: \"\"\nvoice: warm\n---\n").unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (Some(2), Some("name")));
        let soul = Soul::parse(
            "---\nname: Nova\nvoice: warm\n---\n## Bio\nMakes lanterns.\n\n## Examples\n- One\n  continued\n* Two\n",
        )
        .unwrap();
        assert_eq!(soul.bio, "Makes lanterns.");
        assert_eq!(soul.examples, ["One continued", "Two"]);
        assert!(soul.topics.is_empty());
    }
}
