//! The state keys tasks read and write: what optimistic concurrency guards, as fine as the
//! state itself.
//!
//! A task's commit checks the versions of the keys it read and bumps those it writes
//! ([`crate::occ`]). A key names one piece of one agent's state; two tasks conflict only when
//! one writes what the other read. The planner derives the sets from what a task really
//! touches:
//!
//! | task | reads and writes | why |
//! |---|---|---|
//! | reply | `thread:<platform>:<post>` ([`thread`]) | a reply joins one conversation |
//! | publish (campaign post) | `slot:<platform>:<slot>` ([`slot`]) | a post fills one content slot |
//! | research, render, draft | nothing | they make artifacts, not agent state |
//! | transact | nothing | money is the budget's: the CFO's ledger spends it atomically, under the budget row's lock, within the policy's limits |
//! | execute | nothing | the approval that released it is its identity |
//!
//! Conflicts this scheme intends:
//! - two replies to the same post (two drafts of one thread): the first to commit wins, the
//!   second is replanned with the thread as it is now;
//! - two campaigns filling the same slot on one platform (goals naming the same `slot`).
//!
//! Conflicts it must not cause:
//! - replies to different posts, held for review together and approved one after another;
//! - posts of different campaigns (each fills its own slot unless the goals name one);
//! - transfers of one agent (they share its budget, which is not a version);
//! - tasks of different agents (keys are per agent).
//!
//! Platform quotas are not keys either: they are counters reserved at approval
//! ([`crate::quotas`]), which commute.

use chimera_core::domain::{GoalId, Invalid, StateKey};
use sha2::{Digest, Sha256};

/// The key of the thread of `post` on `platform`.
pub fn thread(platform: &str, post: &str) -> Result<StateKey, Invalid> {
    make("thread", platform, post)
}

/// The key of the content slot `slot` on `platform`.
pub fn slot(platform: &str, slot: &str) -> Result<StateKey, Invalid> {
    make("slot", platform, slot)
}

/// The slot of a campaign that names none: its own.
pub fn own_slot(goal: GoalId) -> String {
    format!("goal-{}", goal.0)
}

/// `<kind>:<platform>:<name>`, where a name that is not already key-safe (short, of lowercase
/// letters, digits and `_.-`) is replaced by its SHA-256 (`h` + 40 hex digits), so distinct
/// names (`AbC` and `abc` are distinct post ids) never share a key.
fn make(kind: &str, platform: &str, name: &str) -> Result<StateKey, Invalid> {
    let safe = |s: &str| {
        !s.is_empty()
            && s.len() <= 48
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
    };
    let part = |s: &str| {
        if safe(s) {
            s.to_owned()
        } else {
            format!("h{}", &hex::encode(Sha256::digest(s.as_bytes()))[..40])
        }
    };
    StateKey::parse(format!("{kind}:{}:{}", part(platform), part(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_key_safe_are_hashed_and_distinct_names_stay_distinct() {
        assert_eq!(thread("x", "post-17").unwrap().as_str(), "thread:x:post-17");
        let upper = thread("x", "AbC").unwrap();
        let lower = thread("x", "abc").unwrap();
        assert_ne!(upper, lower);
        assert!(upper.as_str().starts_with("thread:x:h"));
        let uri = thread(
            "bluesky",
            "at://did:plc:z72i7hdynmk6r22z27h6tvur/app.bsky.feed.post/3k",
        )
        .unwrap();
        assert!(uri.as_str().len() <= 128, "{uri}");
        assert_ne!(slot("x", "monday").unwrap(), thread("x", "monday").unwrap());
    }
}
