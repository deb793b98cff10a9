//! Each function's database role (migration 20) can do what its function does and not what
//! it does not. The test logs in as a user of each role's own (a member of it, as a deployed
//! function's login is the role itself), never as the owner: no role may alter a table,
//! disable a trigger, change or empty the audit log, create tables or run the partition DDL
//! except through the function granted for it.

use chimera_store::DbRole;
use chimera_tests::TestDb;
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgConnection};

/// A login of its own in `role`, on `db`; dropped by [`forget`].
async fn login_as(db: &TestDb, role: DbRole) -> (PgConnection, String) {
    let user = format!(
        "t_{}_{}",
        role.name(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    sqlx::query(AssertSqlSafe(format!(
        "create role {user} login in role {}",
        role.name()
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    let options: PgConnectOptions = db.options.clone().username(&user);
    let conn = options.connect().await.expect("the role's login connects");
    (conn, user)
}

async fn forget(db: &TestDb, conn: PgConnection, user: &str) {
    conn.close().await.ok();
    sqlx::query(AssertSqlSafe(format!("drop role {user}")))
        .execute(&db.pool)
        .await
        .unwrap();
}

/// The SQLSTATE of running `sql` (None: it ran).
async fn outcome(conn: &mut PgConnection, sql: &str) -> Option<String> {
    let mut tx = conn.begin().await.unwrap();
    let result = sqlx::query(AssertSqlSafe(sql.to_owned()))
        .execute(&mut *tx)
        .await;
    tx.rollback().await.ok();
    match result {
        Ok(_) => None,
        Err(sqlx::Error::Database(e)) => Some(e.code().unwrap_or_default().into_owned()),
        Err(other) => panic!("{sql}: {other}"),
    }
}

const INSUFFICIENT_PRIVILEGE: &str = "42501";

/// What no role may do.
const NOBODY: &[&str] = &[
    "alter table audit_log disable trigger audit_log_no_update_delete",
    "alter table audit_log disable trigger all",
    "drop trigger audit_log_no_update_delete on audit_log",
    "update audit_log set actor = 'someone else'",
    "delete from audit_log",
    "truncate audit_log",
    "alter table tasks add column note text",
    "drop table goals",
    "create table scratch (id int)",
    "set session_replication_role = replica",
    "set role chimera",
    "alter table audit_log owner to chimera_api",
];

#[tokio::test]
async fn each_role_does_its_work_and_cannot_touch_the_audit_log_or_the_schema() {
    let db = TestDb::migrated().await;
    // What each role may not do beyond the common list, and one thing it does.
    let cases: &[(DbRole, &[&str], &str)] = &[
        (
            DbRole::Planner,
            &[
                "select * from audit_log",
                "insert into audit_log (tenant_id, actor, action) select id, 'planner', 'x.y' from tenants",
                "update reviews set status = status",
                "select ensure_asset_event_partitions(now(), 1)",
            ],
            "select count(*) from tasks",
        ),
        (
            DbRole::Worker,
            &[
                "select actor from audit_log",
                "update reviews set status = status",
                "delete from outbox",
                "update agents set status = status",
            ],
            "select ensure_asset_event_partitions(now() + interval '30 weeks', 1)",
        ),
        (
            DbRole::Judge,
            &[
                "select actor from audit_log",
                "delete from outbox",
                "update agents set status = status",
                "insert into tenants (id, name) values (gen_random_uuid(), 'x')",
            ],
            "select count(*) from reviews",
        ),
        (
            DbRole::Api,
            &[
                "delete from outbox",
                "delete from goals",
                "select ensure_asset_event_partitions(now(), 1)",
                "update effects set state = state",
            ],
            "select count(*) from audit_log",
        ),
        (
            DbRole::Sweep,
            &[
                "select actor from audit_log",
                "insert into tenants (id, name) values (gen_random_uuid(), 'x')",
                "update agents set status = status",
                "update effects set state = state",
            ],
            "delete from outbox where sent_at < now() - interval '1 day'",
        ),
    ];
    for (role, denied, allowed) in cases {
        let (mut conn, user) = login_as(&db, *role).await;
        for sql in NOBODY.iter().chain(denied.iter()) {
            assert_eq!(
                outcome(&mut conn, sql).await.as_deref(),
                Some(INSUFFICIENT_PRIVILEGE),
                "{}: {sql}",
                role.name()
            );
        }
        assert_eq!(
            outcome(&mut conn, allowed).await,
            None,
            "{}: {allowed}",
            role.name()
        );
        forget(&db, conn, &user).await;
    }
    db.drop_db().await;
}

#[tokio::test]
async fn migrate_gives_each_function_role_its_login_and_refuses_other_names() {
    let db = TestDb::migrated().await;
    // A name that is no function's role: refused before anything changes.
    let refused = chimera_store::grant_logins(
        &db.pool,
        &[
            ("chimera_api".into(), "secret-one".into()),
            ("chimera".into(), "taken-over".into()),
        ],
    )
    .await;
    assert!(
        matches!(refused, Err(chimera_store::LoginError::UnknownRole(ref name)) if name == "chimera"),
        "{refused:?}"
    );
    // The roles' logins: each connects under its own name, with its role's privileges only.
    let logins: Vec<(String, String)> = DbRole::ALL
        .iter()
        .map(|r| (r.name().to_owned(), format!("pw-{}", uuid::Uuid::new_v4())))
        .collect();
    let granted = chimera_store::grant_logins(&db.pool, &logins)
        .await
        .unwrap();
    assert_eq!(granted, DbRole::ALL.to_vec());
    for role in DbRole::ALL {
        let mut conn = db
            .options
            .clone()
            .username(role.name())
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{} logs in: {e}", role.name()));
        let me: String = sqlx::query_scalar("select current_user::text")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(me, role.name());
        assert_eq!(
            outcome(&mut conn, "truncate audit_log").await.as_deref(),
            Some(INSUFFICIENT_PRIVILEGE)
        );
        conn.close().await.ok();
    }
    db.drop_db().await;
}
