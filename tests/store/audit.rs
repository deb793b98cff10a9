use chimera_core::domain::AuditRecord;
use chimera_store::audit;
use chimera_tests::TestDb;
use chimera_tests::seed::seed_agent;

#[tokio::test]
async fn the_audit_log_refuses_update_delete_and_truncate() {
    let db = TestDb::migrated().await;
    let seed = seed_agent(&db.pool).await;
    let record = AuditRecord {
        tenant_id: seed.tenant,
        actor: "reviewer-7".into(),
        action: "review.approve".into(),
        at: chrono::Utc::now(),
        goal_id: Some(seed.goal),
        task_id: Some(seed.task),
        review_id: None,
        artifact_hash: None,
        edited_artifact_hash: None,
        policy_version: Some(1),
        reasoning: Some("medium confidence".into()),
        request_id: Some("req-1".into()),
    };
    let id = audit::append(&db.pool, &record).await.unwrap();

    for sql in [
        "update audit_log set actor = 'someone else' where id = $1",
        "delete from audit_log where id = $1",
    ] {
        let err = sqlx::query(sql)
            .bind(id)
            .execute(&db.pool)
            .await
            .expect_err("the audit log is append-only");
        let db_err = err.as_database_error().unwrap();
        assert_eq!(db_err.code().as_deref(), Some("42501"), "{sql}: {db_err}");
        assert!(
            db_err.message().contains("append-only"),
            "{}",
            db_err.message()
        );
    }
    let err = sqlx::query("truncate audit_log")
        .execute(&db.pool)
        .await
        .expect_err("no truncate either");
    assert_eq!(
        err.as_database_error().unwrap().code().as_deref(),
        Some("42501")
    );

    let actor: String = sqlx::query_scalar("select actor from audit_log where id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(actor, "reviewer-7", "the record is unchanged");
    db.drop_db().await;
}
