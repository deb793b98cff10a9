//! The one source of resource names and queue settings.
//!
//! Every queue, dead-letter queue, bucket and table name is derived here from a *stage* (for
//! example `chimera-local`, or one per test), and the bootstrap step, the SAM template and the
//! functions all read them from here or from the environment variables named here.

use std::fmt;

/// How many receives a message gets before its queue's redrive policy moves it to the DLQ.
pub const DEFAULT_MAX_RECEIVE_COUNT: u32 = 5;

/// A queue's visibility timeout is this many times its consumer's function timeout (the AWS
/// guidance for SQS event sources), so a message is never redelivered while a slow invocation
/// still holds it.
pub const VISIBILITY_TIMEOUT_FACTOR: u32 = 6;

/// DynamoDB idempotency table: partition key attribute.
pub const IDEMPOTENCY_KEY_ATTRIBUTE: &str = "id";
/// DynamoDB idempotency table: TTL attribute (epoch seconds).
pub const IDEMPOTENCY_TTL_ATTRIBUTE: &str = "expires_at";

/// Environment variables the functions and tools read.
pub mod env {
    /// The stage all names derive from (default [`super::DEFAULT_STAGE`]).
    pub const STAGE: &str = "CHIMERA_STAGE";
    /// Receives before a message is dead-lettered (default 5).
    pub const MAX_RECEIVE_COUNT: &str = "CHIMERA_MAX_RECEIVE_COUNT";
    pub const GOAL_QUEUE_URL: &str = "GOAL_QUEUE_URL";
    pub const TASK_QUEUE_URL: &str = "TASK_QUEUE_URL";
    pub const REVIEW_QUEUE_URL: &str = "REVIEW_QUEUE_URL";
    pub const ARTIFACT_BUCKET: &str = "ARTIFACT_BUCKET";
    pub const IDEMPOTENCY_TABLE: &str = "IDEMPOTENCY_TABLE";
    pub const DATABASE_URL: &str = "DATABASE_URL";
}

/// The stage used when `CHIMERA_STAGE` is not set.
pub const DEFAULT_STAGE: &str = "chimera-local";

/// The secret holding what agent `agent` of `stage` keeps out of PostgreSQL: `name` is a
/// platform (its account, e.g. `bluesky`) or `wallet` (its wallet's key).
pub fn agent_secret(stage: &str, agent: crate::domain::AgentId, name: &str) -> String {
    format!("{stage}/agents/{}/{name}", agent.0)
}

/// The Lambda functions of the swarm, with the timeout each is deployed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    Planner,
    Worker,
    Judge,
    HitlApi,
}

impl Function {
    pub const ALL: [Function; 4] = [Self::Planner, Self::Worker, Self::Judge, Self::HitlApi];

    pub fn name(self) -> &'static str {
        match self {
            Self::Planner => "planner",
            Self::Worker => "worker",
            Self::Judge => "judge",
            Self::HitlApi => "hitl-api",
        }
    }

    /// The function timeout in seconds (the SAM template uses the same figures).
    pub fn timeout_secs(self) -> u32 {
        match self {
            Self::Planner => 30,
            // Workers call MCP tools (rendering, drafting) and may wait on them.
            Self::Worker => 120,
            Self::Judge => 30,
            // API Gateway HTTP APIs cut integrations off at 30 s.
            Self::HitlApi => 29,
        }
    }
}

/// The three work queues; each has a dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Queue {
    /// Goals (and replans) for the planner.
    Goal,
    /// Atomic tasks for the workers.
    Task,
    /// Results for the judge.
    Review,
}

impl Queue {
    pub const ALL: [Queue; 3] = [Self::Goal, Self::Task, Self::Review];

    /// The queue's short name (`goal`, `task`, `review`): its names' suffix, and how the
    /// outbox names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Goal => "goal",
            Self::Task => "task",
            Self::Review => "review",
        }
    }

    /// The queue named `name` ([`Queue::as_str`]).
    pub fn parse(name: &str) -> Option<Queue> {
        Self::ALL.into_iter().find(|q| q.as_str() == name)
    }

    /// The function that consumes this queue.
    pub fn consumer(self) -> Function {
        match self {
            Self::Goal => Function::Planner,
            Self::Task => Function::Worker,
            Self::Review => Function::Judge,
        }
    }

    /// The environment variable that carries this queue's URL in a deployed function.
    pub fn url_env(self) -> &'static str {
        match self {
            Self::Goal => env::GOAL_QUEUE_URL,
            Self::Task => env::TASK_QUEUE_URL,
            Self::Review => env::REVIEW_QUEUE_URL,
        }
    }

    /// Visibility timeout: [`VISIBILITY_TIMEOUT_FACTOR`] x the consumer's timeout.
    pub fn visibility_timeout_secs(self) -> u32 {
        VISIBILITY_TIMEOUT_FACTOR * self.consumer().timeout_secs()
    }
}

impl fmt::Display for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stage name was not usable as a prefix of AWS resource names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid stage {0:?}: use 1-40 characters of a-z, 0-9 and '-', starting with a letter and not ending with '-'"
)]
pub struct InvalidStage(pub String);

/// The names of every resource of one stage, and where a deployment says otherwise (the
/// queue URLs, bucket and table the template gives a function), as [`ResourceNames::from_env`]
/// read them. Constructors take this; only `from_env` reads the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceNames {
    stage: String,
    queue_urls: [Option<String>; 3],
    bucket: Option<String>,
    table: Option<String>,
}

impl ResourceNames {
    /// Validates the stage so that every derived name is a legal queue, bucket and table name
    /// (S3 bucket names are the strictest: lowercase, at most 63 characters).
    pub fn new(stage: impl Into<String>) -> Result<Self, InvalidStage> {
        let stage = stage.into();
        let ok = (1..=40).contains(&stage.len())
            && stage.starts_with(|c: char| c.is_ascii_lowercase())
            && !stage.ends_with('-')
            && !stage.contains("--")
            && stage
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(Self {
                stage,
                queue_urls: Default::default(),
                bucket: None,
                table: None,
            })
        } else {
            Err(InvalidStage(stage))
        }
    }

    /// The stage from `CHIMERA_STAGE`, or [`DEFAULT_STAGE`], with the deployed names:
    /// `GOAL_QUEUE_URL`, `TASK_QUEUE_URL`, `REVIEW_QUEUE_URL`, `ARTIFACT_BUCKET`,
    /// `IDEMPOTENCY_TABLE` (each optional).
    pub fn from_env() -> Result<Self, InvalidStage> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut names = Self::new(var(env::STAGE).unwrap_or_else(|| DEFAULT_STAGE.to_owned()))?;
        names.queue_urls = Queue::ALL.map(|q| var(q.url_env()));
        names.bucket = var(env::ARTIFACT_BUCKET);
        names.table = var(env::IDEMPOTENCY_TABLE);
        Ok(names)
    }

    /// The URL `queue` was deployed with, when configured (else it is looked up by name).
    pub fn queue_url(&self, queue: Queue) -> Option<&str> {
        let index = Queue::ALL.iter().position(|q| *q == queue)?;
        self.queue_urls[index].as_deref()
    }

    pub fn stage(&self) -> &str {
        &self.stage
    }

    pub fn queue(&self, queue: Queue) -> String {
        format!("{}-{}", self.stage, queue.as_str())
    }

    pub fn dead_letter_queue(&self, queue: Queue) -> String {
        format!("{}-{}-dlq", self.stage, queue.as_str())
    }

    /// The artifact bucket: as deployed, else the stage's.
    pub fn artifact_bucket(&self) -> String {
        self.bucket
            .clone()
            .unwrap_or_else(|| format!("{}-artifacts", self.stage))
    }

    /// The idempotency table: as deployed, else the stage's.
    pub fn idempotency_table(&self) -> String {
        self.table
            .clone()
            .unwrap_or_else(|| format!("{}-idempotency", self.stage))
    }
}

/// `CHIMERA_MAX_RECEIVE_COUNT`, or the default; a value that is not a number in 1..=1000 is an
/// error naming the variable.
pub fn max_receive_count_from_env() -> Result<u32, String> {
    match std::env::var(env::MAX_RECEIVE_COUNT) {
        Err(_) => Ok(DEFAULT_MAX_RECEIVE_COUNT),
        Ok(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                format!(
                    "{}={raw:?}: expected a whole number from 1 to 1000",
                    env::MAX_RECEIVE_COUNT
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_the_stage() {
        let names = ResourceNames::new("chimera-dev").unwrap();
        assert_eq!(names.queue(Queue::Goal), "chimera-dev-goal");
        assert_eq!(
            names.dead_letter_queue(Queue::Review),
            "chimera-dev-review-dlq"
        );
        assert_eq!(names.artifact_bucket(), "chimera-dev-artifacts");
        assert_eq!(names.idempotency_table(), "chimera-dev-idempotency");
    }

    #[test]
    fn stages_that_would_make_illegal_bucket_names_are_refused() {
        for bad in [
            "",
            "Chimera",
            "1abc",
            "abc-",
            "a--b",
            "a_b",
            &"a".repeat(41),
        ] {
            assert!(ResourceNames::new(bad).is_err(), "{bad:?} was accepted");
        }
        let longest = "a".repeat(40);
        let names = ResourceNames::new(longest).unwrap();
        assert!(names.artifact_bucket().len() <= 63);
    }

    #[test]
    fn visibility_timeouts_are_six_times_the_consumer_timeout() {
        assert_eq!(Queue::Goal.visibility_timeout_secs(), 180);
        assert_eq!(Queue::Task.visibility_timeout_secs(), 720);
        assert_eq!(Queue::Review.visibility_timeout_secs(), 180);
    }
}
