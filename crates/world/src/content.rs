//! The deterministic parts of the world: trend search over the bundled corpus, templated
//! drafting, and image rendering. Same input, same output, byte for byte.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One news item of the bundled corpus (`corpus/trends.json`).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TrendItem {
    pub id: String,
    pub title: String,
    pub summary: String,
    pub tags: Vec<String>,
    pub published: String,
}

static CORPUS: LazyLock<Vec<TrendItem>> = LazyLock::new(|| {
    // The corpus is part of the binary; a broken file is caught by the tests of this module.
    serde_json::from_str(include_str!("../corpus/trends.json")).unwrap_or_default()
});

/// A post by someone else that the agents may answer (`corpus/mentions.json`): the world's
/// readers.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Mention {
    pub post_id: String,
    pub platform: String,
    pub author: String,
    pub text: String,
}

static MENTIONS: LazyLock<Vec<Mention>> = LazyLock::new(|| {
    serde_json::from_str(include_str!("../corpus/mentions.json")).unwrap_or_default()
});

/// The reader's post `post_id`, if the bundled feed has it (on any platform: ids are unique).
pub fn mention(post_id: &str) -> Option<Mention> {
    MENTIONS.iter().find(|m| m.post_id == post_id).cloned()
}

/// The items matching most words of `query` (title, summary and tags), best first; ties by id.
pub fn search(query: &str, limit: usize) -> Vec<(TrendItem, u32)> {
    let words = words(query);
    let mut scored: Vec<(TrendItem, u32)> = CORPUS
        .iter()
        .map(|item| {
            let haystack = words_of_item(item);
            let score = words.iter().filter(|w| haystack.contains(w)).count() as u32;
            (item.clone(), score)
        })
        .filter(|(_, score)| *score > 0)
        .collect();
    scored.sort_by(|(a, sa), (b, sb)| sb.cmp(sa).then_with(|| a.id.cmp(&b.id)));
    scored.truncate(limit);
    scored
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2)
        .map(str::to_lowercase)
        .collect()
}

fn words_of_item(item: &TrendItem) -> Vec<String> {
    let mut all = words(&item.title);
    all.extend(words(&item.summary));
    all.extend(item.tags.iter().map(|t| t.to_lowercase()));
    all
}

/// Topics a reviewer wants to see before anything is said about them, by keyword.
const SENSITIVE: &[(&str, &[&str])] = &[
    (
        "politics",
        &[
            "election",
            "vote",
            "parliament",
            "candidate",
            "senator",
            "party",
            "politics",
        ],
    ),
    (
        "health",
        &[
            "vaccine", "medicine", "diet", "disease", "health", "clinic", "symptom",
        ],
    ),
    (
        "finance",
        &[
            "crypto",
            "stock",
            "invest",
            "investing",
            "bank",
            "rates",
            "fund",
            "finance",
            "loan",
        ],
    ),
];

/// The sensitive topics `text` touches.
pub fn sensitive_topics(text: &str) -> Vec<String> {
    let words = words(text);
    SENSITIVE
        .iter()
        .filter(|(_, keys)| words.iter().any(|w| keys.contains(&w.as_str())))
        .map(|(topic, _)| (*topic).to_owned())
        .collect()
}

/// The longest post a platform takes.
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

/// A drafted post.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Draft {
    pub text: String,
    pub hashtags: Vec<String>,
    /// Sensitive topics the brief or the text touch.
    pub topics: Vec<String>,
    /// The drafter's own estimate of how well the text meets the brief, 0..1.
    pub quality: f64,
}

/// Drafts a post for `platform` in the persona's voice from `brief`. Feedback on an earlier
/// draft picks another wording; it is an instruction, never part of the text. `quality`, when
/// given, is reported as is (a stand-in for a model's self-assessment, scripted by tests);
/// otherwise it is derived from how much the brief says.
pub fn draft(
    persona_name: &str,
    voice: &str,
    brief: &str,
    platform: &str,
    feedback: Option<&str>,
    quality: Option<f64>,
) -> Draft {
    let feedback = feedback.map(str::trim).unwrap_or_default();
    let digest =
        Sha256::digest(format!("{persona_name}|{voice}|{brief}|{platform}|{feedback}").as_bytes());
    let openers = [
        "Quick take:",
        "Worth your time:",
        "Here is the thing:",
        "Today on my feed:",
    ];
    let opener = openers[digest[0] as usize % openers.len()];
    let hashtags: Vec<String> = words(brief)
        .into_iter()
        .filter(|w| w.len() > 4)
        .take(3)
        .map(|w| format!("#{w}"))
        .collect();
    let mut text = format!("{opener} {}", brief.trim());
    if !voice.is_empty() {
        text.push_str(&format!(" ({voice}, {persona_name})"));
    }
    if !hashtags.is_empty() {
        text.push(' ');
        text.push_str(&hashtags.join(" "));
    }
    if let Some(limit) = platform_limit(platform) {
        text = truncate_chars(&text, limit);
    }
    let quality = quality.map(|q| q.clamp(0.0, 1.0)).unwrap_or_else(|| {
        let words = words(brief).len();
        (0.5 + 0.05 * words as f64).min(0.97)
    });
    let mut topics = sensitive_topics(brief);
    for topic in sensitive_topics(&text) {
        if !topics.contains(&topic) {
            topics.push(topic);
        }
    }
    Draft {
        text,
        hashtags,
        topics,
        quality,
    }
}

fn truncate_chars(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(limit.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Renders a `width` x `height` RGB PNG from `prompt`: a two-colour gradient with bands, both
/// picked from the prompt's hash.
pub fn render_png(prompt: &str, width: u32, height: u32) -> Result<Vec<u8>, png::EncodingError> {
    let digest = Sha256::digest(prompt.as_bytes());
    let (from, to) = (
        [digest[0], digest[1], digest[2]],
        [digest[3], digest[4], digest[5]],
    );
    let bands = 2 + u32::from(digest[6] % 6);
    let mut pixels = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            let t = (x + y) as f64 / (width + height).max(1) as f64;
            let band = (y * bands / height.max(1)).is_multiple_of(2);
            for c in 0..3 {
                let v = f64::from(from[c]) * (1.0 - t) + f64::from(to[c]) * t;
                let v = if band { v } else { 255.0 - v };
                pixels.push(v as u8);
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&pixels)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readers_posts_load() {
        assert!(MENTIONS.len() >= 4);
        let post = mention("post-101").expect("a bundled reader's post");
        assert!(post.text.contains("tea"), "{post:?}");
        assert!(mention("post-1").is_none());
    }

    #[test]
    fn the_corpus_loads_and_search_ranks_by_matched_words() {
        assert!(CORPUS.len() >= 20);
        let hits = search("solar energy at home", 3);
        assert_eq!(hits[0].0.id, "solar-balcony");
        assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1));
        assert!(search("zzzz qqqq", 5).is_empty());
    }

    #[test]
    fn drafting_is_deterministic_fits_the_platform_and_flags_sensitive_topics() {
        let a = draft(
            "Ava",
            "warm",
            "Why I vote early in the city election",
            "x",
            None,
            None,
        );
        let b = draft(
            "Ava",
            "warm",
            "Why I vote early in the city election",
            "x",
            None,
            None,
        );
        assert_eq!(a.text, b.text);
        assert!(a.text.chars().count() <= 280);
        assert_eq!(a.topics, vec!["politics".to_owned()]);
        let long = draft(
            "Ava",
            "warm",
            &"sunny day ".repeat(100),
            "x",
            None,
            Some(1.5),
        );
        assert!(long.text.chars().count() <= 280);
        assert_eq!(long.quality, 1.0);
        let feedback = "state moved while the item waited for review: mentions:x 0 -> 1";
        let revised = draft("Ava", "warm", "Spring shoes", "x", Some(feedback), None);
        assert!(!revised.text.contains("revised") && !revised.text.contains("state moved"));
        assert!(!revised.text.contains("->"), "{}", revised.text);
    }

    #[test]
    fn rendering_gives_a_real_png_that_depends_on_the_prompt() {
        let a = render_png("a red fox", 32, 16).unwrap();
        assert_eq!(&a[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(a, render_png("a red fox", 32, 16).unwrap());
        assert_ne!(a, render_png("a blue fox", 32, 16).unwrap());
        let decoder = png::Decoder::new(std::io::Cursor::new(&a));
        let reader = decoder.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), (32, 16));
    }
}
