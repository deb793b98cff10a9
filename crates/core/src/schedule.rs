//! Recurring goals: a schedule an agent's policy declares (AGENTS.md), such as "a campaign post
//! on instagram every weekday at 09:00 Paris time".
//!
//! A schedule is a five-field cron pattern (minute, hour, day of month, month, day of week;
//! lists, ranges, steps and names, as `croner` reads them) in an IANA time zone, and the goal
//! each occurrence submits. [`Schedule::occurrences`] lists the occurrences in a window, in
//! UTC; the scheduler submits one goal per occurrence, keyed by it, so an occurrence is
//! submitted once however often the scheduler runs (see `chimera_store::schedules`).

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::AgentId;
use crate::goal::Constraints;

/// A recurring goal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Unique among the agent's schedules: `[a-z0-9_-]{1,48}`. An occurrence is known by it.
    pub name: String,
    /// Five fields: minute hour day-of-month month day-of-week, e.g. `0 9 * * MON-FRI`.
    pub cron: String,
    /// An IANA time zone, e.g. `Europe/Paris` (default UTC). Occurrences follow its clock,
    /// daylight saving included.
    #[serde(default = "utc")]
    pub timezone: String,
    /// The goal each occurrence submits: its kind, text and constraints, as `POST /goals`
    /// takes them.
    pub kind: String,
    pub text: String,
    #[serde(default)]
    pub constraints: Constraints,
}

fn utc() -> String {
    "UTC".into()
}

/// At most this many occurrences in one window (a pattern of every minute over a long outage
/// is caught up over several runs).
pub const MAX_PER_WINDOW: usize = 20;

impl Schedule {
    /// Checks the name, the pattern, the time zone and the goal; the reason if not.
    pub fn validate(&self) -> Result<(), String> {
        let named = (1..=48).contains(&self.name.len())
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !named {
            return Err(format!(
                "schedule name {:?} must be 1..=48 characters of a-z 0-9 _ -",
                self.name
            ));
        }
        self.pattern()?;
        self.zone()?;
        if self.text.trim().is_empty() || self.text.chars().count() > 2000 {
            return Err(format!(
                "schedule {:?}: text must be 1..=2000 characters",
                self.name
            ));
        }
        self.constraints
            .validate(&self.kind)
            .map_err(|e| format!("schedule {:?}: {e}", self.name))
    }

    /// The pattern, refused when it never fires (such as 31 February): every run would search
    /// thousands of years for its next occurrence.
    fn pattern(&self) -> Result<Cron, String> {
        let cron = self.parse_pattern()?;
        let start = Utc
            .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default();
        match cron.find_next_occurrence(&start, false) {
            // Every pattern that fires at all fires within eight years (29 February included).
            Ok(next) if next < start + chrono::Duration::days(8 * 366) => Ok(cron),
            _ => Err(format!(
                "schedule {:?}: cron {:?} never fires",
                self.name, self.cron
            )),
        }
    }

    fn parse_pattern(&self) -> Result<Cron, String> {
        if self.cron.split_whitespace().count() != 5 {
            return Err(format!(
                "schedule {:?}: cron {:?} must have five fields (minute hour day-of-month month day-of-week)",
                self.name, self.cron
            ));
        }
        Cron::from_str(&self.cron)
            .map_err(|e| format!("schedule {:?}: cron {:?}: {e}", self.name, self.cron))
    }

    fn zone(&self) -> Result<Tz, String> {
        self.timezone.parse::<Tz>().map_err(|_| {
            format!(
                "schedule {:?}: {:?} is not an IANA time zone (e.g. Europe/Paris)",
                self.name, self.timezone
            )
        })
    }

    /// The occurrences after `after` up to and including `until`, oldest first, at most
    /// [`MAX_PER_WINDOW`]. An invalid schedule has none.
    pub fn occurrences(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let (Ok(cron), Ok(zone)) = (self.pattern(), self.zone()) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        let mut from = after.with_timezone(&zone);
        while found.len() < MAX_PER_WINDOW {
            let Ok(next) = cron.find_next_occurrence(&from, false) else {
                break;
            };
            let next_utc = next.with_timezone(&Utc);
            if next_utc > until {
                break;
            }
            // Around a clock change an ambiguous local time can resolve before `after`.
            if next_utc > after {
                found.push(next_utc);
            }
            from = next;
        }
        found
    }

    /// What decides when the schedule fires (pattern and zone): a bookmark kept under another
    /// signature belongs to another schedule.
    pub fn signature(&self) -> String {
        format!(
            "{} {}",
            self.cron.split_whitespace().collect::<Vec<_>>().join(" "),
            self.timezone
        )
    }

    /// The idempotency key of the goal an occurrence of `agent`'s schedule submits.
    pub fn key(&self, agent: AgentId, occurrence: DateTime<Utc>) -> String {
        format!(
            "schedule:{}:{}:{}",
            agent.0,
            self.name,
            occurrence.format("%Y-%m-%dT%H:%MZ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weekday_mornings() -> Schedule {
        Schedule {
            name: "morning-post".into(),
            cron: "0 9 * * MON-FRI".into(),
            timezone: "Europe/Paris".into(),
            kind: "campaign".into(),
            text: "good morning from the shop".into(),
            constraints: Constraints {
                platforms: vec!["instagram".into()],
                ..Constraints::default()
            },
        }
    }

    #[test]
    fn weekday_mornings_follow_the_zones_clock_across_daylight_saving() {
        let s = weekday_mornings();
        s.validate().unwrap();
        // Friday 2026-10-23 to Wednesday 2026-10-28: Paris leaves summer time on Sunday 25th.
        let after = Utc.with_ymd_and_hms(2026, 10, 23, 0, 0, 0).unwrap();
        let until = Utc.with_ymd_and_hms(2026, 10, 28, 12, 0, 0).unwrap();
        let got: Vec<String> = s
            .occurrences(after, until)
            .iter()
            .map(|t| t.format("%a %d %H:%M").to_string())
            .collect();
        // 09:00 in Paris is 07:00 UTC in summer, 08:00 UTC in winter; no weekend.
        assert_eq!(
            got,
            [
                "Fri 23 07:00",
                "Mon 26 08:00",
                "Tue 27 08:00",
                "Wed 28 08:00"
            ]
        );
        // The window's ends: after is excluded, until included.
        let first = s.occurrences(after, until)[0];
        assert_eq!(s.occurrences(first, first), Vec::<DateTime<Utc>>::new());
        assert_eq!(
            s.occurrences(first - chrono::Duration::seconds(1), first),
            [first]
        );
        assert_eq!(
            s.key(AgentId(uuid::Uuid::nil()), first),
            "schedule:00000000-0000-0000-0000-000000000000:morning-post:2026-10-23T07:00Z"
        );
    }

    #[test]
    fn a_window_holds_at_most_its_bound() {
        let mut s = weekday_mornings();
        s.cron = "* * * * *".into();
        let after = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let got = s.occurrences(after, after + chrono::Duration::days(1));
        assert_eq!(got.len(), MAX_PER_WINDOW);
        assert_eq!(got[0], after + chrono::Duration::minutes(1));
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        let bad = |f: fn(&mut Schedule)| {
            let mut s = weekday_mornings();
            f(&mut s);
            s.validate().unwrap_err()
        };
        assert!(bad(|s| s.name = "Morning Post".into()).contains("a-z 0-9"));
        assert!(bad(|s| s.cron = "0 9 * *".into()).contains("five fields"));
        assert!(bad(|s| s.cron = "0 25 * * *".into()).contains("cron"));
        assert!(bad(|s| s.cron = "0 0 31 2 *".into()).contains("never fires"));
        let mut leap = weekday_mornings();
        leap.cron = "0 12 29 2 *".into();
        leap.validate().unwrap();
        assert_ne!(leap.signature(), weekday_mornings().signature());
        assert!(bad(|s| s.timezone = "Mars/Olympus".into()).contains("IANA"));
        assert!(bad(|s| s.kind = "dance".into()).contains("kind"));
        assert!(bad(|s| s.text = " ".into()).contains("text"));
    }
}
