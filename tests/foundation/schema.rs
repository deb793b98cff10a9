use chimera_tests::TestDb;
// The statements below are built from UUIDs the test generates.
use sqlx::{AssertSqlSafe, PgPool};
use uuid::Uuid;

#[tokio::test]
async fn migrations_apply_on_an_empty_database_and_a_second_run_is_a_no_op() {
    let db = TestDb::empty().await;
    chimera_store::migrate(&db.pool)
        .await
        .expect("first run applies every migration");
    let expected = chimera_store::MIGRATOR.iter().count() as i64;
    assert_eq!(
        chimera_store::applied_migrations(&db.pool).await.unwrap(),
        expected
    );
    chimera_store::migrate(&db.pool)
        .await
        .expect("second run succeeds");
    assert_eq!(
        chimera_store::applied_migrations(&db.pool).await.unwrap(),
        expected,
        "nothing re-applied"
    );
    let tables: Vec<String> = sqlx::query_scalar(
        "select tablename::text from pg_tables where schemaname = 'public' and tablename not like '\\_%' order by 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for table in [
        "tenants",
        "agents",
        "policies",
        "agent_state",
        "goals",
        "tasks",
        "task_dependencies",
        "results",
        "commits",
        "reviews",
        "audit_log",
        "budgets",
        "ledger",
        "assets",
        "asset_lineage",
        "asset_events_default",
    ] {
        assert!(
            tables.iter().any(|t| t == table),
            "table {table} exists (have {tables:?})"
        );
    }
    let partitions: i64 = sqlx::query_scalar(
        "select count(*) from pg_inherits where inhparent = 'asset_events'::regclass",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        partitions >= 6,
        "asset_events has weekly partitions and a default one, got {partitions}"
    );
    db.drop_db().await;
}

/// Every migration, with the SHA-384 of its file as it was when it was first applied. An
/// applied migration is never edited: a schema change is a new migration, pinned here once it is
/// final.
const PINNED: &[(i64, &str)] = &[
    (
        20261128000001,
        "b9ee53b9a312c2ae0b443ec76342907994cbc3164d5f5f188cb502561a9faeaffeb34c4ed8b858e459a06ad074669a3a",
    ),
    (
        20261128000002,
        "a3864ad3e239a1fe84260728b5e284fdafc758a0ceddedce8bb126cf79f4f0dfdf9cf92984b18d44bfa49b87c259062a",
    ),
    (
        20261128000003,
        "c59560ca30609140ded0558c35b1668621062358a5a8fdc1f621058c6491d26ee3609e4e484b6a27e4a51fc77c55b0cc",
    ),
    (
        20261128000004,
        "ed9dfb098a14241b52fcae8ede4be7aabe8740c5be9ed3d4b42a655741960edd9cbd190a9ae2d40571a89467d1991baf",
    ),
    (
        20261128000005,
        "276a76b6173f4fda127388518feecd9786617cf310a27eaa456df0ef057007a63f25246d2d2e7827e5196dc36c21f28d",
    ),
    (
        20261128000006,
        "6a127d46524b7a9df87d08a240b26078d73765debec3c87cb21fbc21011a20b6ed4d2c855f8c2c2c49e15c11bd9a280e",
    ),
    (
        20261128000007,
        "01e3d782908ee210b42fa6188d52fe5471d0acd665a424b8978ac2e77d1f33bc2dd72171a240855ed43229db310fe055",
    ),
    (
        20261128000008,
        "90521fb333d421b468e6cbed7f677900553c7de3743230e21512450d82a7fde09d0ba3ea1c2f682f58b0116ed9780003",
    ),
    (
        20261128000009,
        "6e301a691b27e5dbca437a898a54c471943c4b6cdefebe712271b4862158bf1aeb6e626f6e0b32d1ebf134c2ba62dc8c",
    ),
    (
        20261128000010,
        "5ffcfa0cd8e0b3d7212692e51838c91947808a0ddf9cc960030bd83359b35c29181372b2a9412e77cf671b052533e227",
    ),
    (
        20261128000011,
        "81403a11ebd5e104840448527c0e85e5811c3e7d71320192bf2229b82c862b5c5f3956c0ab31c966a31b1432aa620dad",
    ),
    (
        20261128000012,
        "b42589b8205cccfe6a0734929dabe8623dbc3f241082492af370a19329564f7049ed80473be4be7b21866569ca0900b8",
    ),
    (
        20261128000013,
        "233de72f895ff9636bb4e69db2ad4745b666a90d67e95a7fa8c27abd9d06c8403a85d703826d670987608e6dcc8c1167",
    ),
    (
        20261128000014,
        "73f6954c287054345576fc29e5eba08aa6c7e10eaf033b6807a960088c68a5db05ce78d6aa432d897133c0a4bb6f0684",
    ),
    (
        20261128000015,
        "269a8d54b230abe6c1f2a531327b3d9a80a72a63e3d743a792bda1cab5ba73340f9aa6bfe9b4cac3242aa8eefe946345",
    ),
    (
        20261128000016,
        "227f5397b0aadebf762da8e214762cb603562811227e895307d32ffb7023d43e2c24ab96e553cf6fde26ee4718113ea5",
    ),
    (
        20261128000017,
        "0f4129d2979f38762141c39f4cf3d0ea05db1408150834f4a48ab632c50f201be38e504c0a955856812ce70ffb85c1fc",
    ),
    (
        20261128000018,
        "368356ab6d49edbd94bd0d9f89de14f21ba36de9738e44f7384d811f8fa674a03cb5d1366024c4f1f773fae89d3961fd",
    ),
    (
        20261128000019,
        "8096597a0fedf9821ecd0a92ff8414ddfe32c6980c7ac6e7d47f63c4359a585a9da6d2119448aaf68da928f07b2f1516",
    ),
    (
        20261128000020,
        "49201553c01e94d486154d9fc3eb01ee1ebc744269f431e1164ee229144886c0274db4d4dffd1b685c825ef3b313c611",
    ),
];

#[test]
fn applied_migrations_are_never_edited() {
    for migration in chimera_store::MIGRATOR.iter() {
        let checksum: String = migration
            .checksum
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        match PINNED
            .iter()
            .find(|(version, _)| *version == migration.version)
        {
            Some((_, pinned)) => assert_eq!(
                checksum, *pinned,
                "migration {} ({}) changed after it was pinned: revert it and write a new migration",
                migration.version, migration.description
            ),
            None => panic!(
                "migration {} ({}) is not pinned: once it is final, add ({}, \"{checksum}\") to PINNED",
                migration.version, migration.description, migration.version
            ),
        }
    }
}

#[tokio::test]
async fn a_database_refuses_a_migration_edited_after_it_was_applied() {
    let db = TestDb::migrated().await;
    // As if the file had been edited since: its recorded checksum no longer matches.
    sqlx::query("update _sqlx_migrations set checksum = sha384('edited'::bytea)")
        .execute(&db.pool)
        .await
        .unwrap();
    let err = chimera_store::migrate(&db.pool)
        .await
        .expect_err("an edited migration is refused");
    assert!(
        matches!(err, sqlx::migrate::MigrateError::VersionMismatch(_)),
        "{err}"
    );
    db.drop_db().await;
}

/// The SQLSTATE and constraint of a failed statement.
async fn rejection(pool: &PgPool, sql: &str) -> (String, Option<String>) {
    let err = sqlx::query(AssertSqlSafe(sql.to_owned()))
        .execute(pool)
        .await
        .expect_err("the statement is rejected");
    let db_err = err
        .as_database_error()
        .unwrap_or_else(|| panic!("a database error, got {err:?}"));
    (
        db_err.code().unwrap_or_default().into_owned(),
        db_err.constraint().map(str::to_owned),
    )
}

/// A tenant, an agent with its first policy, a goal and a task; returns their ids.
async fn seed(pool: &PgPool) -> (Uuid, Uuid, Uuid, Uuid) {
    let (tenant, agent, goal, task) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("insert into tenants (id, name) values ($1, $2)")
        .bind(tenant)
        .bind(format!("tenant-{tenant}"))
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("insert into agents (id, tenant_id, handle, persona, policy_version) values ($1, $2, 'nova', '{}', 1)")
        .bind(agent)
        .bind(tenant)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("insert into policies (agent_id, version, document) values ($1, 1, '{}')")
        .bind(agent)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("insert into personas (agent_id, version, persona) values ($1, 1, '{}')")
        .bind(agent)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    sqlx::query("insert into goals (id, tenant_id, agent_id, kind, body) values ($1, $2, $3, 'campaign', 'launch')")
        .bind(goal)
        .bind(tenant)
        .bind(agent)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "insert into tasks (id, goal_id, agent_id, kind, status, max_attempts) values ($1, $2, $3, 'draft', 'ready', 3)",
    )
    .bind(task)
    .bind(goal)
    .bind(agent)
    .execute(pool)
    .await
    .unwrap();
    (tenant, agent, goal, task)
}

#[tokio::test]
async fn invalid_rows_are_rejected_by_the_schema() {
    let db = TestDb::migrated().await;
    let pool = &db.pool;
    let (tenant, agent, goal, task) = seed(pool).await;

    // A status outside the enum.
    let (code, _) = rejection(
        pool,
        &format!("insert into tasks (id, goal_id, agent_id, kind, status, max_attempts) values ('{}', '{goal}', '{agent}', 'draft', 'bogus', 3)", Uuid::new_v4()),
    )
    .await;
    assert_eq!(code, "22P02", "invalid enum value");

    // A negative budget.
    let (code, constraint) = rejection(
        pool,
        &format!(
            "insert into budgets (agent_id, currency, balance_micros) values ('{agent}', 'USD', -1)"
        ),
    )
    .await;
    assert_eq!(
        (code.as_str(), constraint.as_deref()),
        ("23514", Some("budgets_balance_micros_check"))
    );

    // A dangling foreign key.
    let (code, _) = rejection(
        pool,
        &format!("insert into goals (id, tenant_id, agent_id, kind, body) values ('{}', '{tenant}', '{}', 'campaign', 'x')", Uuid::new_v4(), Uuid::new_v4()),
    )
    .await;
    assert_eq!(code, "23503", "foreign key violation");

    // A goal pinned to another tenant's agent.
    let other_tenant = Uuid::new_v4();
    sqlx::query("insert into tenants (id, name) values ($1, 'other')")
        .bind(other_tenant)
        .execute(pool)
        .await
        .unwrap();
    let (code, _) = rejection(
        pool,
        &format!("insert into goals (id, tenant_id, agent_id, kind, body) values ('{}', '{other_tenant}', '{agent}', 'campaign', 'x')", Uuid::new_v4()),
    )
    .await;
    assert_eq!(
        code, "23503",
        "an agent of another tenant is not a valid target"
    );

    // An execute task must carry its approval, and only execute tasks may.
    let (code, _) = rejection(
        pool,
        &format!("insert into tasks (id, goal_id, agent_id, kind, status, max_attempts) values ('{}', '{goal}', '{agent}', 'execute', 'ready', 3)", Uuid::new_v4()),
    )
    .await;
    assert_eq!(code, "23514");

    // More attempts than allowed.
    let (code, _) = rejection(
        pool,
        &format!("update tasks set attempt = 4 where id = '{task}'"),
    )
    .await;
    assert_eq!(code, "23514");

    // Confidence outside 0..1, and a malformed commit hash.
    let hash = "a".repeat(64);
    let (code, _) = rejection(
        pool,
        &format!("insert into results (id, task_id, attempt, commit_hash, artifact, confidence, read_set) values ('{}', '{task}', 1, '{hash}', '{{}}', 1.5, '{{}}')", Uuid::new_v4()),
    )
    .await;
    assert_eq!(code, "23514");
    let (code, _) = rejection(
        pool,
        &format!("insert into results (id, task_id, attempt, commit_hash, artifact, confidence, read_set) values ('{}', '{task}', 1, 'not-a-hash', '{{}}', 0.5, '{{}}')", Uuid::new_v4()),
    )
    .await;
    assert_eq!(code, "23514");

    // A negative state version.
    let (code, _) = rejection(
        pool,
        &format!(
            "insert into agent_state (agent_id, key, version) values ('{agent}', 'persona', -1)"
        ),
    )
    .await;
    assert_eq!(code, "23514");

    // A pending review that already carries a decision.
    let result = Uuid::new_v4();
    sqlx::query(AssertSqlSafe(format!("insert into results (id, task_id, attempt, commit_hash, artifact, confidence, read_set) values ('{result}', '{task}', 1, '{hash}', '{{}}', 0.8, '{{}}')")))
        .execute(pool)
        .await
        .unwrap();
    let (code, _) = rejection(
        pool,
        &format!("insert into reviews (id, tenant_id, result_id, artifact_hash, policy_version, judge_reasoning, confidence, due_at, final_deadline, decision) values ('{}', '{tenant}', '{result}', '{hash}', 1, 'medium confidence', 0.8, now(), now(), 'approve')", Uuid::new_v4()),
    )
    .await;
    assert_eq!(code, "23514");

    // Asset events are append-only, like the audit log and commits.
    let asset = Uuid::new_v4();
    sqlx::query(AssertSqlSafe(format!("insert into assets (id, tenant_id, agent_id, kind, s3_key, sha256, size_bytes, media_type, tool_name, provenance) values ('{asset}', '{tenant}', '{agent}', 'text', 'assets/{asset}', '{hash}', 1, 'text/plain', 'world.post', '{{}}')")))
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(AssertSqlSafe(format!("insert into asset_events (asset_id, agent_id, event_type) values ('{asset}', '{agent}', 'created')")))
        .execute(pool)
        .await
        .unwrap();
    for sql in [
        format!("update asset_events set status = 'done' where asset_id = '{asset}'"),
        format!("delete from asset_events where asset_id = '{asset}'"),
    ] {
        let (code, _) = rejection(pool, &sql).await;
        assert_eq!(code, "42501", "{sql}");
    }

    // An agent whose policy version does not exist fails when its transaction commits.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(AssertSqlSafe(format!("insert into agents (id, tenant_id, handle, persona, policy_version) values ('{}', '{tenant}', 'ghost', '{{}}', 7)", Uuid::new_v4())))
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = tx
        .commit()
        .await
        .expect_err("the deferred policy foreign key is checked at commit");
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("23503")
    );

    db.drop_db().await;
}

/// `T`'s variants against the PostgreSQL enum `pg_type`: the same names in the same order, and
/// each variant round-trips through the database and through JSON.
async fn enum_round_trips<T>(pool: &PgPool, pg_type: &str, all: &[T], name: fn(&T) -> &'static str)
where
    T: Copy
        + PartialEq
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned
        + for<'r> sqlx::Decode<'r, sqlx::Postgres>
        + for<'q> sqlx::Encode<'q, sqlx::Postgres>
        + sqlx::Type<sqlx::Postgres>
        + Send
        + Sync
        + Unpin,
{
    let labels: Vec<String> = sqlx::query_scalar(
        "select enumlabel::text from pg_enum e join pg_type t on t.oid = e.enumtypid
         where t.typname = $1 order by e.enumsortorder",
    )
    .bind(pg_type)
    .fetch_all(pool)
    .await
    .unwrap();
    let names: Vec<&str> = all.iter().map(name).collect();
    assert_eq!(
        labels, names,
        "{pg_type}: the Rust enum names the schema's values in order"
    );
    for variant in all {
        // Not cached: one statement text serves every enum type here.
        let (back, text): (T, String) = sqlx::query_as("select $1, $1::text")
            .persistent(false)
            .bind(*variant)
            .fetch_one(pool)
            .await
            .unwrap_or_else(|e| panic!("{pg_type} {variant:?}: {e}"));
        assert_eq!(back, *variant);
        assert_eq!(text, name(variant));
        let json = serde_json::to_value(variant).unwrap();
        assert_eq!(json, serde_json::Value::String(name(variant).to_owned()));
        assert_eq!(serde_json::from_value::<T>(json).unwrap(), *variant);
    }
}

#[tokio::test]
async fn every_status_kind_and_decision_round_trips_through_postgres_and_json() {
    use chimera_core::domain::{
        DecisionKind, DisclosureLevel, GoalStatus, ReviewStatus, TaskKind, TaskStatus,
    };
    let db = TestDb::migrated().await;
    enum_round_trips(&db.pool, "goal_status", GoalStatus::ALL, |v| v.as_str()).await;
    enum_round_trips(&db.pool, "task_status", TaskStatus::ALL, |v| v.as_str()).await;
    enum_round_trips(&db.pool, "review_status", ReviewStatus::ALL, |v| v.as_str()).await;
    enum_round_trips(&db.pool, "decision_kind", DecisionKind::ALL, |v| v.as_str()).await;
    enum_round_trips(&db.pool, "task_kind", TaskKind::ALL, |v| v.as_str()).await;
    enum_round_trips(&db.pool, "disclosure_level", DisclosureLevel::ALL, |v| {
        v.as_str()
    })
    .await;
    db.drop_db().await;
}

#[test]
fn every_effect_action_round_trips_through_json_and_is_the_tool_it_names() {
    use chimera_core::effect::EffectAction;
    for action in EffectAction::ALL {
        let json = serde_json::to_value(action).unwrap();
        assert_eq!(json, serde_json::Value::String(action.as_str().to_owned()));
        assert_eq!(
            serde_json::from_value::<EffectAction>(json).unwrap(),
            action
        );
        assert_eq!(EffectAction::parse(action.as_str()), Some(action));
        assert!(
            chimera_mcp::allowed_tools(chimera_core::domain::TaskKind::Execute)
                .contains(&action.as_str()),
            "only execute tasks perform {action}"
        );
    }
}
