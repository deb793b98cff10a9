use std::collections::HashMap;

use chimera_core::money::from_cents;
use chimera_store::budget::{self, BudgetError, SpendOutcome};
use chimera_tests::TestDb;
use chimera_tests::seed::seed_agent;

const BUDGET_CENTS: i64 = 10_000;
/// The same budget in the ledger's micros.
const BUDGET_MICROS: i64 = BUDGET_CENTS * 10_000;
const SPENDS: usize = 200;

/// Deterministic pseudo-random sizes in micros, most with a fraction of a cent (no RNG
/// dependency; reproducible failures).
fn sizes() -> Vec<i64> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..SPENDS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            1 + (x % 2_000_000) as i64
        })
        .collect()
}

#[tokio::test]
async fn concurrent_spends_never_overdraw_and_a_duplicate_is_charged_once() {
    let db = TestDb::migrated().await;
    let seed = seed_agent(&db.pool).await;
    budget::open_budget(&db.pool, seed.agent, "USD", BUDGET_CENTS)
        .await
        .unwrap();

    // Every 10th spend reuses the key (and amount) of the one before it: a retried request.
    let spends: Vec<(String, i64)> = sizes()
        .into_iter()
        .enumerate()
        .scan(None::<(String, i64)>, |prev, (i, amount)| {
            let spend = match prev {
                Some(p) if i % 10 == 0 => p.clone(),
                _ => (format!("spend-{i}"), amount),
            };
            *prev = Some(spend.clone());
            Some(spend)
        })
        .collect();
    let requested: i64 = spends.iter().map(|(_, a)| a).sum();
    assert!(
        requested > BUDGET_MICROS,
        "the test asks for more than the budget ({requested})"
    );

    let tasks = spends.iter().cloned().map(|(key, amount)| {
        let (pool, agent) = (db.pool.clone(), seed.agent);
        tokio::spawn(async move {
            (
                key.clone(),
                amount,
                budget::spend(&pool, agent, &key, amount, None, None).await,
            )
        })
    });
    let outcomes: Vec<_> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|o| o.unwrap())
        .collect();

    let mut charged: HashMap<String, i64> = HashMap::new();
    let mut duplicates = 0;
    for (key, amount, outcome) in &outcomes {
        match outcome {
            Ok(SpendOutcome::Spent { balance_micros }) => {
                assert!(*balance_micros >= 0);
                assert!(
                    charged.insert(key.clone(), *amount).is_none(),
                    "key {key} charged twice"
                );
            }
            Ok(SpendOutcome::Duplicate { .. }) => duplicates += 1,
            Err(BudgetError::Insufficient {
                balance_micros,
                requested_micros,
            }) => {
                assert!(balance_micros < requested_micros)
            }
            Err(err) => panic!("unexpected spend error: {err:?}"),
        }
    }
    let accepted: i64 = charged.values().sum();
    let balance = budget::balance(&db.pool, seed.agent)
        .await
        .unwrap()
        .unwrap();
    let ledger_spent: i64 = sqlx::query_scalar::<_, Option<i64>>(
        "select sum(amount_micros)::bigint from ledger where agent_id = $1 and kind = 'spend'",
    )
    .bind(seed.agent.0)
    .fetch_one(&db.pool)
    .await
    .unwrap()
    .unwrap_or(0);
    assert!(accepted <= BUDGET_MICROS, "accepted {accepted} > budget");
    assert!(balance >= 0);
    assert_eq!(
        ledger_spent,
        BUDGET_MICROS - balance,
        "ledger sum = budget - balance"
    );
    assert_eq!(
        ledger_spent, accepted,
        "the ledger holds exactly the accepted spends"
    );
    let duplicate_keys: usize = SPENDS / 10 - 1;
    let charged_twice_attempts = outcomes
        .iter()
        .filter(|(k, _, _)| charged.contains_key(k))
        .count()
        - charged.len();
    assert_eq!(
        duplicates, charged_twice_attempts,
        "every retry of a charged key is a Duplicate"
    );
    assert!(duplicate_keys > 0);
    assert!(duplicates > 0, "the run exercised retries of charged keys");
    db.drop_db().await;
}

#[tokio::test]
async fn a_spend_larger_than_the_balance_is_refused_and_a_reused_key_is_an_error() {
    let db = TestDb::migrated().await;
    let seed = seed_agent(&db.pool).await;
    assert!(matches!(
        budget::spend(&db.pool, seed.agent, "k", 1, None, None).await,
        Err(BudgetError::NoBudget)
    ));
    budget::open_budget(&db.pool, seed.agent, "USD", 100)
        .await
        .unwrap();
    assert_eq!(
        budget::spend(&db.pool, seed.agent, "k1", 600_037, None, Some("render"))
            .await
            .unwrap(),
        SpendOutcome::Spent {
            balance_micros: 399_963
        }
    );
    assert!(matches!(
        budget::spend(&db.pool, seed.agent, "k2", 399_964, None, None).await,
        Err(BudgetError::Insufficient {
            balance_micros: 399_963,
            requested_micros: 399_964
        })
    ));
    assert!(matches!(
        budget::spend(&db.pool, seed.agent, "k1", 10, None, None).await,
        Err(BudgetError::KeyReused(_))
    ));
    assert!(matches!(
        budget::spend(&db.pool, seed.agent, "k3", 0, None, None).await,
        Err(BudgetError::InvalidAmount(0))
    ));
    assert_eq!(
        budget::balance(&db.pool, seed.agent).await.unwrap(),
        Some(399_963)
    );
    db.drop_db().await;
}

#[tokio::test]
async fn racing_transfers_keep_to_the_daily_limit_and_a_repeated_key_is_a_duplicate() {
    let db = TestDb::migrated().await;
    let seed = seed_agent(&db.pool).await;
    budget::open_budget(&db.pool, seed.agent, "USD", BUDGET_CENTS)
        .await
        .unwrap();
    let limits = chimera_core::routing::SpendLimits {
        per_transfer_cents: Some(500),
        per_day_cents: Some(1_500),
        auto_pay_per_day_cents: None,
    };
    let spends = (0..10).map(|i| {
        let pool = db.pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            let outcome = budget::spend_transfer(
                &mut tx,
                seed.agent,
                &format!("approval:{i}"),
                400,
                None,
                None,
                &limits,
                false,
            )
            .await;
            tx.commit().await.unwrap();
            outcome
        }
    });
    let outcomes = futures::future::join_all(spends).await;
    let spent = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(spent, 3, "3 x 400 fit in 1,500 a day: {outcomes:?}");
    assert!(outcomes.iter().all(|o| match o {
        Ok(_) => true,
        Err(BudgetError::OverLimit(why)) => why.contains("a day"),
        Err(_) => false,
    }));
    // A key charged before is a duplicate, though the day is full now.
    let mut tx = db.pool.begin().await.unwrap();
    let first_ok = (0..10).find(|i| outcomes[*i].is_ok()).unwrap();
    let again = budget::spend_transfer(
        &mut tx,
        seed.agent,
        &format!("approval:{first_ok}"),
        400,
        None,
        None,
        &limits,
        false,
    )
    .await
    .unwrap();
    assert!(matches!(again, SpendOutcome::Duplicate { .. }));
    // Over the per-transfer limit.
    let big = budget::spend_transfer(
        &mut tx,
        seed.agent,
        "approval:big",
        600,
        None,
        None,
        &limits,
        false,
    )
    .await;
    assert!(matches!(big, Err(BudgetError::OverLimit(why)) if why.contains("per transfer")));
    tx.rollback().await.unwrap();
    db.drop_db().await;
}

#[tokio::test]
async fn the_daily_limit_covers_inference_and_transfers_and_a_settled_reservation_gives_back_the_rest()
 {
    let db = TestDb::migrated().await;
    let seed = seed_agent(&db.pool).await;
    budget::open_budget(&db.pool, seed.agent, "USD", BUDGET_CENTS)
        .await
        .unwrap();
    sqlx::query(
        "update policies set document = jsonb_set(document, '{spend}', '{\"per_day_cents\": 1000}')
         where agent_id = $1",
    )
    .bind(seed.agent.0)
    .execute(&db.pool)
    .await
    .unwrap();
    let limits = chimera_core::routing::SpendLimits {
        per_transfer_cents: None,
        per_day_cents: Some(1_000),
        auto_pay_per_day_cents: None,
    };
    let transfer = |key: &'static str, cents: i64| {
        let pool = db.pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            let outcome =
                budget::spend_transfer(&mut tx, seed.agent, key, cents, None, None, &limits, false)
                    .await;
            tx.commit().await.unwrap();
            outcome
        }
    };
    // A model call's worst case, reserved: 600 cents of the day's 1,000.
    let reserved = budget::reserve_inference(
        &db.pool,
        seed.agent,
        "llm:a",
        from_cents(600),
        None,
        "a call",
    )
    .await;
    assert_eq!(reserved.unwrap(), from_cents(600));
    let refused = transfer("approval:1", 500).await;
    assert!(
        matches!(&refused, Err(BudgetError::OverLimit(why)) if why.contains("transfers and inference")),
        "{refused:?}"
    );
    // The call cost 100 cents and 37 micros: the rest goes back, and the transfer fits.
    let cost = from_cents(100) + 37;
    let charged = budget::settle_inference(&db.pool, seed.agent, "llm:a", cost).await;
    assert_eq!(charged.unwrap(), cost);
    assert_eq!(
        budget::settle_inference(&db.pool, seed.agent, "llm:a", cost)
            .await
            .unwrap(),
        0,
        "settled once"
    );
    assert!(transfer("approval:2", 500).await.is_ok());
    // 600 cents and 37 micros spent today: a call that may cost 400 cents would go over 1,000
    // by those 37 micros; one of 400 cents less 37 micros fits exactly.
    let over =
        budget::reserve_inference(&db.pool, seed.agent, "llm:b", from_cents(400), None, "b").await;
    assert!(
        matches!(&over, Err(BudgetError::OverLimit(why)) if why.contains("1000.0037 cents spent today")),
        "{over:?}"
    );
    let exact = from_cents(400) - 37;
    let fits = budget::reserve_inference(&db.pool, seed.agent, "llm:d", exact, None, "d").await;
    assert_eq!(fits.unwrap(), exact);
    budget::settle_inference(&db.pool, seed.agent, "llm:d", exact)
        .await
        .unwrap();
    // More than the balance: refused before anything is reserved.
    sqlx::query("update policies set document = document - 'spend' where agent_id = $1")
        .bind(seed.agent.0)
        .execute(&db.pool)
        .await
        .unwrap();
    let broke =
        budget::reserve_inference(&db.pool, seed.agent, "llm:c", BUDGET_MICROS, None, "c").await;
    assert!(
        matches!(broke, Err(BudgetError::Insufficient { .. })),
        "{broke:?}"
    );
    let balance = budget::balance(&db.pool, seed.agent)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(balance, BUDGET_MICROS - cost - from_cents(500) - exact);
    // The ledger is the balance's history, to the micro.
    let spent: i64 = sqlx::query_scalar(
        "select sum(case kind when 'top_up' then 0 when 'release' then -amount_micros else amount_micros end)::bigint
         from ledger where agent_id = $1",
    )
    .bind(seed.agent.0)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(spent, BUDGET_MICROS - balance);
    db.drop_db().await;
}
