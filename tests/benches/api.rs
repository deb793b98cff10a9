//! The console's reads under load (`scripts/bench api`): the review queue, a review card and
//! the fleet view, each asked by 1, 10 and 50 concurrent clients (`BENCH_CLIENTS`, a comma
//! list) on loopback, each client asking again as soon as it has its answer, for `BENCH_SECS`
//! seconds (5), against a tenant of `BENCH_AGENTS` agents (50) with `BENCH_HELD` items held
//! for review (200) that went through the swarm on the local stack. It prints p50, p99 and
//! the maximum latency per endpoint and concurrency, and requests per second; then each at the
//! most clients again while a held review is written 20 times a second (`+churn`), so the API's
//! kept answers (`chimera_hitl_api::cache`) of it are dropped and read again throughout.
//! Target: p99 < 20 ms for each at 50 clients, on this build profile (optimized).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chimera_tests::bench_setting;
use chimera_tests::swarm::{Swarm, SwarmOptions};
use futures::StreamExt;
use serde_json::json;

#[tokio::main]
async fn main() {
    let agents = bench_setting("BENCH_AGENTS", 50);
    let held = bench_setting("BENCH_HELD", 200);
    let levels: Vec<usize> = std::env::var("BENCH_CLIENTS")
        .unwrap_or_else(|_| "1,10,50".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .filter(|n| *n > 0)
        .collect();
    let clients = levels.iter().copied().max().unwrap_or(50);
    let secs = bench_setting("BENCH_SECS", 5) as u64;
    // The pipeline's metrics lines are not this bench's output.
    chimera_aws::telemetry::set_metrics_sink(Box::new(std::io::sink()));
    let mut swarm = Swarm::new(SwarmOptions {
        agents,
        ..SwarmOptions::default()
    })
    .await;
    swarm.run().await;
    println!("api: {agents} agents, {held} held items, {levels:?} clients, {secs} s per run");

    // Held items: replies the judge sends to a person (scripted medium quality).
    let started = Instant::now();
    let goals: Vec<_> = futures::stream::iter(0..held)
        .map(|i| {
            let swarm = &swarm;
            async move {
                swarm
                    .submit(
                        i % agents,
                        "reply",
                        "thanks for asking",
                        json!({"platforms": ["x"], "in_reply_to": format!("post-api-{i}"), "simulated_quality": 0.80}),
                    )
                    .await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    swarm.settle(&goals, Duration::from_secs(600)).await;
    let reviews: Vec<uuid::Uuid> =
        sqlx::query_scalar("select id from reviews where status = 'pending' order by id")
            .fetch_all(&swarm.db.pool)
            .await
            .unwrap();
    println!(
        "seeded {} held items in {:.1} s",
        reviews.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        !reviews.is_empty(),
        "nothing held: the bench has nothing to read"
    );

    let token = swarm.token("bench-reviewer", &["reviewer"]);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .unwrap();
    let api = swarm.api().to_owned();
    let reviews = Arc::new(reviews);
    println!(
        "{:<26} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "endpoint", "clients", "p50 ms", "p99 ms", "max ms", "req/s"
    );
    // Each endpoint at each level, then at the most clients while the reviews change
    // (`+churn`): one held review written every 50 ms, as 20 decisions a second elsewhere
    // would, drops the API's kept answers of it (its card, the queue and the fleet view).
    let plan = levels
        .iter()
        .map(|&c| (c, false))
        .chain([(clients, true)])
        .collect::<Vec<_>>();
    for endpoint in ["GET /reviews?limit=25", "GET /reviews/{id}", "GET /fleet"] {
        for &(clients, churn) in &plan {
            let until = Instant::now() + Duration::from_secs(secs);
            let changes = churn.then(|| {
                let (pool, reviews) = (swarm.db.pool.clone(), reviews.clone());
                tokio::spawn(async move {
                    let mut sent = 0usize;
                    let mut every = tokio::time::interval(Duration::from_millis(50));
                    while Instant::now() < until {
                        every.tick().await;
                        // A real write of a held review: its trigger notifies every API.
                        sqlx::query("update reviews set priority = priority where id = $1")
                            .bind(reviews[sent % reviews.len()])
                            .execute(&pool)
                            .await
                            .expect("a review written");
                        sent += 1;
                    }
                    sent
                })
            });
            let runs: Vec<Vec<Duration>> = futures::future::join_all((0..clients).map(|c| {
                let (http, api, token, reviews) =
                    (http.clone(), api.clone(), token.clone(), reviews.clone());
                async move {
                    let mut took = Vec::new();
                    let mut n = c;
                    while Instant::now() < until {
                        let url = match endpoint {
                            "GET /reviews/{id}" => {
                                format!("{api}/reviews/{}", reviews[n % reviews.len()])
                            }
                            "GET /fleet" => format!("{api}/fleet?limit=50"),
                            _ => format!("{api}/reviews?limit=25&offset={}", (n % 4) * 25),
                        };
                        n += clients;
                        let start = Instant::now();
                        let res = http
                            .get(&url)
                            .bearer_auth(&token)
                            .send()
                            .await
                            .expect(endpoint);
                        let status = res.status();
                        let body = res.bytes().await.expect(endpoint);
                        took.push(start.elapsed());
                        assert!(
                            status.is_success(),
                            "{endpoint}: {status} {}",
                            String::from_utf8_lossy(&body)
                        );
                    }
                    took
                }
            }))
            .await;
            let changed = match changes {
                Some(changes) => format!(" ({} changes)", changes.await.unwrap()),
                None => String::new(),
            };
            let mut all: Vec<Duration> = runs.into_iter().flatten().collect();
            all.sort();
            let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            println!(
                "{:<26} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.0}{changed}",
                endpoint,
                if churn {
                    format!("{clients}+churn")
                } else {
                    clients.to_string()
                },
                ms(at(0.50)),
                ms(at(0.99)),
                ms(*all.last().unwrap()),
                all.len() as f64 / secs as f64
            );
        }
    }
    if std::env::var_os("BENCH_KEEP_DB").is_some() {
        // For EXPLAIN: the database stays (scripts/stack prune-test-dbs drops it later).
        println!("database kept: {}", swarm.db.url());
        return;
    }
    swarm.stop().await;
}
