use chimera_aws::handler::QueueHandler;
use chimera_core::domain::TaskStatus;
use std::time::{Duration, SystemTime};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use chimera_aws::Clients;
use chimera_aws::artifacts::ArtifactStore;
use chimera_aws::bootstrap::{BootstrapOptions, bootstrap, queue_url};
use chimera_core::domain::{ReviewId, Task, TaskId, TaskKind, TaskResult};
use chimera_core::envelope::{self, ResultMessage, TaskMessage};
use chimera_core::names::{Queue, ResourceNames};
use chimera_mcp::McpClient;
use chimera_store::records;
use chimera_tests::seed::{Seeded, result, seed_agent};
use chimera_tests::world::{calls, stdio_config};
use chimera_tests::{TestDb, clients, drain, unique_stage};
use chimera_worker::Worker;
use serde_json::{Value, json};

/// A migrated database with a seeded agent, a bootstrapped stage of its own, and a way to
/// make workers on them (each with its own world server child process).
pub(crate) struct Setup {
    pub(crate) db: TestDb,
    pub(crate) names: ResourceNames,
    pub(crate) clients: Clients,
    pub(crate) seed: Seeded,
}

impl Setup {
    pub(crate) async fn new() -> Setup {
        let db = TestDb::migrated().await;
        let seed = seed_agent(&db.pool).await;
        let names = unique_stage();
        let clients = clients().await;
        bootstrap(
            &clients,
            &names,
            BootstrapOptions {
                max_receive_count: 3,
            },
        )
        .await
        .unwrap();
        Setup {
            db,
            names,
            clients,
            seed,
        }
    }

    fn worker(&self) -> Worker {
        self.worker_with(self.clients.clone())
    }

    fn worker_with(&self, clients: Clients) -> Worker {
        let mcp = McpClient::new(stdio_config(&self.db.url(), false, ""));
        Worker::new(clients, self.db.pool.clone(), mcp, self.names.clone())
    }

    /// A task of `kind` stored as the planner stores it.
    async fn task(&self, kind: TaskKind, inputs: Value) -> Task {
        let task = Task {
            id: TaskId::random(),
            goal_id: self.seed.goal,
            tenant_id: self.seed.tenant,
            agent_id: self.seed.agent,
            kind,
            attempt: 1,
            inputs: inputs.as_object().cloned().unwrap_or_default(),
            depends_on: vec![],
            read_set: Default::default(),
            write_set: Default::default(),
            feedback: None,
            approval_id: None,
        };
        records::insert_task(&self.db.pool, &task, TaskStatus::Queued, 3)
            .await
            .unwrap();
        task
    }

    /// An `execute` task of the effect `inputs` describe, released by a reviewer's approval of
    /// a held publish task, as the store records one.
    /// Deletes `task`'s idempotency record, as if the worker that completed it had died
    /// before the record was written or the record had expired.
    pub(crate) async fn forget_claim(&self, task: &Task) {
        self.clients
            .dynamodb
            .delete_item()
            .table_name(self.names.idempotency_table())
            .key(
                "id",
                aws_sdk_dynamodb::types::AttributeValue::S(chimera_worker::idempotency_key(task)),
            )
            .send()
            .await
            .unwrap();
    }

    pub(crate) async fn approved_execute(&self, inputs: Value) -> Task {
        let held = self
            .task(
                TaskKind::Publish,
                json!({"platform": "instagram", "text": "held"}),
            )
            .await;
        let result = uuid::Uuid::new_v4();
        let approval = ReviewId::random();
        let inputs = inputs.as_object().cloned().unwrap_or_default();
        let execute = Task {
            id: TaskId::random(),
            kind: TaskKind::Execute,
            inputs,
            depends_on: vec![held.id],
            approval_id: Some(approval),
            ..held.clone()
        };
        let digest = chimera_core::effect::performed_by(&execute).digest();
        let mut tx = self.db.pool.begin().await.unwrap();
        sqlx::query(
            "insert into results (id, task_id, attempt, commit_hash, artifact, confidence, read_set)
             values ($1, $2, 1, repeat('a', 64), '{\"artifacts\": []}', 0.95, '{}')",
        )
        .bind(result)
        .bind(held.id.0)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "insert into reviews (id, tenant_id, result_id, task_id, status, artifact_hash, policy_version,
                                  judge_reasoning, confidence, due_at, final_deadline, decision, decided_by,
                                  decided_at, effect_sha256)
             values ($1, $2, $3, $4, 'approved', repeat('a', 64), 1, 'held for a test', 0.95, now(), now(),
                     'approve', 'reviewer', now(), $5)",
        )
        .bind(approval.0)
        .bind(self.seed.tenant.0)
        .bind(result)
        .bind(held.id.0)
        .bind(digest)
        .execute(&mut *tx)
        .await
        .unwrap();
        records::insert_task_in(&mut tx, &execute, TaskStatus::Queued, 1)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        execute
    }

    /// Ten tasks of the three generation kinds.
    async fn ten_tasks(&self) -> Vec<Task> {
        let mut tasks = Vec::new();
        for i in 0..10 {
            let task = match i % 3 {
                0 => {
                    self.task(
                        TaskKind::Draft,
                        json!({"brief": format!("spring collection teaser number {i}"),
                               "platform": "instagram", "persona": {"name": "Nova", "voice": "warm"}}),
                    )
                    .await
                }
                1 => {
                    self.task(TaskKind::Research, json!({"query": format!("solar energy home {i}")}))
                        .await
                }
                _ => {
                    self.task(
                        TaskKind::RenderMedia,
                        json!({"prompt": format!("a spring meadow, variant {i}"), "width": 64, "height": 64}),
                    )
                    .await
                }
            };
            tasks.push(task);
        }
        tasks
    }

    async fn review_queue(&self) -> String {
        queue_url(&self.clients, &self.names.queue(Queue::Review))
            .await
            .unwrap()
    }

    /// Receives (and deletes) review messages until `n` arrived or 30 s passed.
    pub(crate) async fn results(&self, n: usize) -> Vec<TaskResult> {
        let store = ArtifactStore::new(self.clients.s3.clone(), self.names.artifact_bucket());
        let mut out = Vec::new();
        for body in drain(&self.names, Queue::Review, n, Duration::from_secs(30)).await {
            let msg: ResultMessage = envelope::decode(&body).unwrap();
            out.push(store.load_result(msg).await.unwrap());
        }
        out
    }

    /// Messages on the review queue right now (visible or in flight).
    async fn review_depth(&self) -> i64 {
        let url = self.review_queue().await;
        let attrs = self
            .clients
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .unwrap();
        attrs
            .attributes()
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            })
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    async fn s3_keys(&self) -> Vec<String> {
        let listed = self
            .clients
            .s3
            .list_objects_v2()
            .bucket(self.names.artifact_bucket())
            .send()
            .await
            .unwrap();
        let mut keys: Vec<String> = listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect();
        keys.sort();
        keys
    }

    async fn assets(&self) -> i64 {
        sqlx::query_scalar("select count(*) from assets")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    async fn total_calls(&self) -> i64 {
        let mut total = 0;
        for tool in [
            "trends.search",
            "content.draft",
            "media.render_image",
            "social.publish",
            "wallet.balance",
        ] {
            total += calls(&self.db.pool, tool).await;
        }
        total
    }

    async fn idempotency_items(&self) -> usize {
        self.clients
            .dynamodb
            .scan()
            .table_name(self.names.idempotency_table())
            .send()
            .await
            .unwrap()
            .items()
            .len()
    }
}

fn body(task: &Task) -> String {
    envelope::encode(&TaskMessage { task: task.clone() })
}

/// An SQS event as Lambda delivers it, one record per (message id, body).
fn event(messages: &[(String, String)]) -> SqsEvent {
    let records: Vec<Value> = messages
        .iter()
        .map(|(id, body)| {
            json!({
                "messageId": id, "receiptHandle": format!("handle-{id}"), "body": body,
                "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
                "md5OfBody": "", "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:tasks", "awsRegion": "us-east-1"
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

pub(crate) fn event_of(tasks: &[Task]) -> SqsEvent {
    let messages: Vec<(String, String)> = tasks
        .iter()
        .map(|t| (format!("m-{}", t.id.0), body(t)))
        .collect();
    event(&messages)
}

pub(crate) fn deadline() -> SystemTime {
    SystemTime::now() + Duration::from_secs(120)
}

pub(crate) fn failed(response: &SqsBatchResponse) -> Vec<String> {
    let value = serde_json::to_value(response).unwrap();
    let mut ids: Vec<String> = value["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn ten_tasks_give_ten_results_and_a_redelivered_batch_calls_no_tool_again() {
    let s = Setup::new().await;
    let tasks = s.ten_tasks().await;
    let worker = s.worker();

    let response = worker.handle(&event_of(&tasks), deadline()).await;
    assert_eq!(failed(&response), Vec::<String>::new());
    let mut first = s.results(10).await;
    assert_eq!(first.len(), 10);
    first.sort_by_key(|r| r.task_id);

    let keys = s.s3_keys().await;
    for r in &first {
        assert!(r.commit_hash_matches(), "the hash covers the content");
        assert_eq!(r.artifacts.len(), 1);
        let artifact = &r.artifacts[0];
        let key = artifact.s3_key.as_ref().unwrap();
        assert_eq!(key, &format!("artifacts/sha256/{}", artifact.sha256));
        assert!(keys.contains(key), "{key} is in the bucket");
        match r.task_kind {
            TaskKind::RenderMedia => assert_eq!(artifact.media_type, "image/png"),
            TaskKind::Draft => assert!(artifact.inline.as_deref().unwrap().contains("spring")),
            TaskKind::Research => assert_eq!(artifact.media_type, "application/json"),
            other => panic!("unexpected kind {other:?}"),
        }
    }
    let provenance: Vec<(String, Option<String>, Value)> =
        sqlx::query_as("select tool_name, tool_version, provenance from assets order by tool_name")
            .fetch_all(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(provenance.len(), 10, "one provenance row per artifact");
    for (tool, version, call) in &provenance {
        assert!(version.as_deref().unwrap().starts_with("chimera-world "));
        assert_eq!(call["tool"], tool.as_str());
        assert!(call["arguments"].is_object());
    }
    let tool_calls = s.total_calls().await;
    assert_eq!(tool_calls, 10);

    // The same batch again: the same results, no tool called, nothing new stored.
    let response = worker.handle(&event_of(&tasks), deadline()).await;
    assert_eq!(failed(&response), Vec::<String>::new());
    let mut again = s.results(10).await;
    again.sort_by_key(|r| r.task_id);
    assert_eq!(again, first, "the same results are sent again");
    assert_eq!(
        s.total_calls().await,
        tool_calls,
        "no tool was called again"
    );
    assert_eq!(s.s3_keys().await, keys, "no new artifact");
    assert_eq!(s.assets().await, 10, "no new provenance row");
    s.db.drop_db().await;
}

#[tokio::test]
async fn two_workers_racing_on_one_message_execute_it_once() {
    let s = Setup::new().await;
    let task = s
        .task(
            TaskKind::RenderMedia,
            json!({"prompt": "a race", "width": 32, "height": 32}),
        )
        .await;
    let (a, b) = (s.worker(), s.worker());
    // Both sessions are open before the race, so neither has a head start.
    a.mcp().connect().await.unwrap();
    b.mcp().connect().await.unwrap();
    let e = event_of(std::slice::from_ref(&task));
    let (ra, rb) = tokio::join!(a.handle(&e, deadline()), b.handle(&e, deadline()));
    assert_eq!(
        calls(&s.db.pool, "media.render_image").await,
        1,
        "exactly one executed"
    );
    let failures = failed(&ra).len() + failed(&rb).len();
    assert!(failures <= 1, "at most the loser reports failure");
    // A later copy is answered from the record.
    let response = b.handle(&e, deadline()).await;
    assert_eq!(failed(&response), Vec::<String>::new());
    assert_eq!(calls(&s.db.pool, "media.render_image").await, 1);
    // The loser's copy was dropped if it found the winner on the attempt (the winner answers),
    // answered from the record if the winner had finished.
    let results = s.results(3).await;
    assert!(
        (2..=3).contains(&results.len()),
        "{} results",
        results.len()
    );
    assert!(
        results.iter().all(|r| r == &results[0]),
        "one result, sent again"
    );
    s.db.drop_db().await;
}

#[tokio::test]
async fn a_malformed_message_is_the_only_failure_of_its_batch() {
    let s = Setup::new().await;
    let tasks: Vec<Task> = s.ten_tasks().await.into_iter().take(9).collect();
    let mut messages: Vec<(String, String)> = tasks
        .iter()
        .map(|t| (format!("m-{}", t.id.0), body(t)))
        .collect();
    messages.insert(
        4,
        (
            "bad-one".into(),
            r#"{"schema_version": 1, "message": {"task": 7}}"#.into(),
        ),
    );
    let response = s.worker().handle(&event(&messages), deadline()).await;
    assert_eq!(failed(&response), vec!["bad-one".to_owned()]);
    assert_eq!(s.results(9).await.len(), 9);
    s.db.drop_db().await;
}

#[tokio::test]
async fn an_execute_task_publishes_exactly_once_however_often_it_is_delivered() {
    let s = Setup::new().await;
    let task = s
        .approved_execute(json!({"action": "social.publish",
                   "arguments": {"platform": "instagram", "text": "Spring is here"},
                   "disclosure_level": "automated"}))
        .await;
    let e = event_of(std::slice::from_ref(&task));
    let (a, b) = (s.worker(), s.worker());
    // Twice at once, then once more.
    let (ra, rb) = tokio::join!(a.handle(&e, deadline()), b.handle(&e, deadline()));
    let third = a.handle(&e, deadline()).await;
    assert_eq!(failed(&third), Vec::<String>::new());
    // Even with the idempotency record gone (a worker that died after publishing, a record
    // expired), the approval id keeps the post single.
    s.forget_claim(&task).await;
    let fourth = b.handle(&e, deadline()).await;
    assert_eq!(failed(&fourth), Vec::<String>::new());

    let posts: i64 = sqlx::query_scalar("select count(*) from world.posts")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(posts, 1, "one post for one approval");
    let (state, platform_ref): (String, String) =
        sqlx::query_as("select state::text, platform_ref from effects where approval_id = $1")
            .bind(task.approval_id.unwrap().0)
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(state, "confirmed");
    // A copy that found the other worker on the attempt was dropped (that worker answers);
    // every other delivery answered with the result.
    let results = s.results(4).await;
    assert!(
        (3..=4).contains(&(results.len() + failed(&ra).len() + failed(&rb).len())),
        "{} results",
        results.len()
    );
    // Every delivery answered with the receipt of the one post.
    let store = ArtifactStore::new(s.clients.s3.clone(), s.names.artifact_bucket());
    let artifact = &results[0].artifacts[0];
    let receipt: Value = serde_json::from_slice(
        &store
            .get(artifact.s3_key.as_deref().unwrap(), &artifact.sha256)
            .await
            .unwrap(),
    )
    .unwrap();
    let post_id: uuid::Uuid = sqlx::query_scalar("select id from world.posts")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(receipt["post_id"], post_id.to_string());
    assert_eq!(
        platform_ref,
        post_id.to_string(),
        "the ledger holds the platform's id"
    );
    assert!(results.iter().all(|r| r.task_id == task.id));
    s.db.drop_db().await;
}

#[tokio::test]
async fn bad_input_fails_cleanly_and_leaves_nothing_referenced() {
    let s = Setup::new().await;

    // Inputs this kind cannot work with: a permanent failure, no tool called, no claim held.
    let no_brief = s.task(TaskKind::Draft, json!({"platform": "x"})).await;
    let response = s
        .worker()
        .handle(&event_of(std::slice::from_ref(&no_brief)), deadline())
        .await;
    assert_eq!(failed(&response).len(), 1);
    assert_eq!(s.total_calls().await, 0);
    assert_eq!(s.idempotency_items().await, 0, "the claim was released");

    // The same task id and attempt with a different payload is refused.
    let draft = s
        .task(
            TaskKind::Draft,
            json!({"brief": "a calm morning", "platform": "x", "persona": {"name": "Nova"}}),
        )
        .await;
    let worker = s.worker();
    assert!(
        failed(
            &worker
                .handle(&event_of(std::slice::from_ref(&draft)), deadline())
                .await
        )
        .is_empty()
    );
    let mut tampered = draft.clone();
    tampered
        .inputs
        .insert("brief".into(), json!("something else entirely"));
    let response = worker.handle(&event_of(&[tampered]), deadline()).await;
    assert_eq!(failed(&response).len(), 1);
    assert_eq!(calls(&s.db.pool, "content.draft").await, 1);
    s.results(1).await;

    // S3 unreachable: retryable failure, claim released, no provenance, nothing sent.
    let mut no_s3 = s.clients.clone();
    let unreachable = no_s3
        .s3
        .config()
        .to_builder()
        .endpoint_url("http://127.0.0.1:1")
        .build();
    no_s3.s3 = aws_sdk_s3::Client::from_conf(unreachable);
    let render = s
        .task(
            TaskKind::RenderMedia,
            json!({"prompt": "unstored", "width": 16, "height": 16}),
        )
        .await;
    let assets_before = s.assets().await;
    let items_before = s.idempotency_items().await;
    let response = s
        .worker_with(no_s3)
        .handle(&event_of(std::slice::from_ref(&render)), deadline())
        .await;
    assert_eq!(failed(&response).len(), 1);
    assert_eq!(s.assets().await, assets_before, "nothing recorded");
    assert_eq!(
        s.idempotency_items().await,
        items_before,
        "the claim was released"
    );
    assert_eq!(s.review_depth().await, 0, "nothing sent");
    // With S3 back, the retry succeeds.
    let response = s.worker().handle(&event_of(&[render]), deadline()).await;
    assert!(failed(&response).is_empty());
    assert_eq!(s.results(1).await.len(), 1);

    // DynamoDB unreachable: retryable failure before any tool is called.
    let mut no_dynamo = s.clients.clone();
    let unreachable = no_dynamo
        .dynamodb
        .config()
        .to_builder()
        .endpoint_url("http://127.0.0.1:1")
        .build();
    no_dynamo.dynamodb = aws_sdk_dynamodb::Client::from_conf(unreachable);
    let research = s
        .task(TaskKind::Research, json!({"query": "night trains"}))
        .await;
    let calls_before = s.total_calls().await;
    let response = s
        .worker_with(no_dynamo)
        .handle(&event_of(&[research]), deadline())
        .await;
    assert_eq!(failed(&response).len(), 1);
    assert_eq!(
        s.total_calls().await,
        calls_before,
        "no tool called without a claim"
    );
    s.db.drop_db().await;
}

#[tokio::test]
async fn a_result_too_large_for_a_message_travels_through_s3() {
    let s = Setup::new().await;
    let store = ArtifactStore::new(s.clients.s3.clone(), s.names.artifact_bucket());
    let mut big = result(
        &s.seed,
        Default::default(),
        Default::default(),
        &"y".repeat(300 * 1024),
    );
    big.commit_hash = big.compute_commit_hash();
    let body = store.result_message(&big).await.unwrap();
    assert!(body.len() < 4096, "the message only references the result");
    let msg: ResultMessage = envelope::decode(&body).unwrap();
    assert!(matches!(msg, ResultMessage::Offloaded { .. }));
    assert_eq!(store.load_result(msg).await.unwrap(), big);

    let small = result(&s.seed, Default::default(), Default::default(), "small");
    let msg: ResultMessage =
        envelope::decode(&store.result_message(&small).await.unwrap()).unwrap();
    assert_eq!(msg, ResultMessage::Inline { result: small });
    s.db.drop_db().await;
}

#[tokio::test]
async fn messages_the_database_does_not_know_are_refused_before_any_tool_is_called() {
    let s = Setup::new().await;
    let research = s
        .task(TaskKind::Research, json!({"query": "spring trends"}))
        .await;
    let execute = s
        .approved_execute(json!({"action": "social.reply",
                                 "arguments": {"platform": "x", "text": "thanks!", "in_reply_to": "m1"}}))
        .await;
    let mut unknown = research.clone();
    unknown.id = TaskId::random();
    let mut altered = research.clone();
    altered
        .inputs
        .insert("query".into(), json!("something else entirely"));
    let mut never_released = research.clone();
    never_released.attempt = 2;
    let mut other_words = execute.clone();
    other_words.inputs["arguments"]["text"] = json!("words nobody approved");
    let mut no_approval = execute.clone();
    no_approval.id = TaskId::random();
    no_approval.approval_id = Some(ReviewId::random());
    let forged: Vec<(String, String)> =
        [unknown, altered, never_released, other_words, no_approval]
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("forged-{i}"), body(t)))
            .collect();
    let response = s.worker().handle(&event(&forged), deadline()).await;
    let mut refused = failed(&response);
    refused.sort();
    assert_eq!(
        refused,
        (0..5).map(|i| format!("forged-{i}")).collect::<Vec<_>>()
    );
    for tool in ["trends.search", "social.reply"] {
        assert_eq!(calls(&s.db.pool, tool).await, 0, "{tool} was never called");
    }
    // The genuine messages run.
    let genuine = event_of(&[research, execute]);
    assert_eq!(
        failed(&s.worker().handle(&genuine, deadline()).await),
        Vec::<String>::new()
    );
    assert_eq!(calls(&s.db.pool, "social.reply").await, 1);
    s.db.drop_db().await;
}

#[tokio::test]
async fn an_object_that_does_not_exist_is_a_permanent_error() {
    let s = Setup::new().await;
    let store = ArtifactStore::new(s.clients.s3.clone(), s.names.artifact_bucket());
    let missing = format!("artifacts/sha256/{}", "0".repeat(64));
    let err = store.get(&missing, &"0".repeat(64)).await.unwrap_err();
    assert!(
        matches!(err, chimera_aws::artifacts::StorageError::Missing { .. }),
        "{err}"
    );
    assert!(!err.is_retryable(), "a redelivery cannot make it appear");
    s.db.drop_db().await;
}
