use std::collections::HashMap;

use aws_sdk_dynamodb::types::{KeyType, TimeToLiveStatus};
use aws_sdk_sqs::types::QueueAttributeName;
use chimera_aws::Clients;
use chimera_aws::bootstrap::{BootstrapOptions, bootstrap};
use chimera_core::names::{
    IDEMPOTENCY_KEY_ATTRIBUTE, IDEMPOTENCY_TTL_ATTRIBUTE, Queue, ResourceNames,
};
use chimera_tests::{TestDb, clients, unique_stage};

#[tokio::test]
async fn every_local_service_answers() {
    let clients = clients().await;
    clients
        .sqs
        .list_queues()
        .send()
        .await
        .expect("SQS (LocalStack) answers");
    clients
        .s3
        .list_buckets()
        .send()
        .await
        .expect("S3 (LocalStack) answers");
    clients
        .dynamodb
        .list_tables()
        .send()
        .await
        .expect("DynamoDB Local answers");
    let db = TestDb::empty().await;
    let version: String = sqlx::query_scalar("show server_version")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(
        version.starts_with("15."),
        "PostgreSQL 15 expected, got {version}"
    );
    db.drop_db().await;
}

async fn attributes(clients: &Clients, name: &str) -> HashMap<QueueAttributeName, String> {
    let url = clients
        .sqs
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("queue {name} exists: {e:?}"))
        .queue_url
        .unwrap();
    clients
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default()
}

/// Checks every resource of the stage through the SDK, not through the code under test.
async fn assert_stage(clients: &Clients, names: &ResourceNames, max_receive_count: u64) {
    for queue in Queue::ALL {
        let dlq = attributes(clients, &names.dead_letter_queue(queue)).await;
        let main = attributes(clients, &names.queue(queue)).await;
        let redrive: serde_json::Value = serde_json::from_str(
            main.get(&QueueAttributeName::RedrivePolicy)
                .expect("a redrive policy"),
        )
        .unwrap();
        assert_eq!(
            redrive["deadLetterTargetArn"].as_str(),
            dlq.get(&QueueAttributeName::QueueArn).map(String::as_str),
            "{queue} redrives to its own DLQ"
        );
        let count = redrive["maxReceiveCount"].as_u64().or_else(|| {
            redrive["maxReceiveCount"]
                .as_str()
                .and_then(|s| s.parse().ok())
        });
        assert_eq!(count, Some(max_receive_count), "{queue} maxReceiveCount");
        assert_eq!(
            main.get(&QueueAttributeName::VisibilityTimeout)
                .map(String::as_str),
            Some(queue.visibility_timeout_secs().to_string().as_str()),
            "{queue} visibility timeout is 6x its consumer's timeout"
        );
        assert!(
            !dlq.contains_key(&QueueAttributeName::RedrivePolicy),
            "a DLQ does not redrive"
        );
    }
    clients
        .s3
        .head_bucket()
        .bucket(names.artifact_bucket())
        .send()
        .await
        .expect("the artifact bucket exists");
    let table = clients
        .dynamodb
        .describe_table()
        .table_name(names.idempotency_table())
        .send()
        .await
        .expect("the idempotency table exists")
        .table
        .unwrap();
    let key = &table.key_schema()[0];
    assert_eq!(key.attribute_name(), IDEMPOTENCY_KEY_ATTRIBUTE);
    assert_eq!(key.key_type(), &KeyType::Hash);
    let ttl = clients
        .dynamodb
        .describe_time_to_live()
        .table_name(names.idempotency_table())
        .send()
        .await
        .unwrap()
        .time_to_live_description
        .unwrap();
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
    assert_eq!(ttl.attribute_name(), Some(IDEMPOTENCY_TTL_ATTRIBUTE));
}

async fn remove_stage(clients: &Clients, names: &ResourceNames) {
    for queue in Queue::ALL {
        for name in [names.queue(queue), names.dead_letter_queue(queue)] {
            if let Ok(out) = clients.sqs.get_queue_url().queue_name(name).send().await {
                let _ = clients
                    .sqs
                    .delete_queue()
                    .set_queue_url(out.queue_url)
                    .send()
                    .await;
            }
        }
    }
    let _ = clients
        .s3
        .delete_bucket()
        .bucket(names.artifact_bucket())
        .send()
        .await;
    let _ = clients
        .dynamodb
        .delete_table()
        .table_name(names.idempotency_table())
        .send()
        .await;
}

#[tokio::test]
async fn bootstrap_creates_every_queue_with_its_redrive_policy_the_bucket_and_the_table() {
    let clients = clients().await;
    let names = unique_stage();
    let report = bootstrap(
        &clients,
        &names,
        BootstrapOptions {
            max_receive_count: 3,
        },
    )
    .await
    .unwrap();
    assert_eq!(report.queues.len(), 3);
    assert_stage(&clients, &names, 3).await;
    remove_stage(&clients, &names).await;
}

#[tokio::test]
async fn bootstrap_twice_is_a_no_op_and_converges_a_changed_setting() {
    let clients = clients().await;
    let names = unique_stage();
    let options = BootstrapOptions {
        max_receive_count: 5,
    };
    let first = bootstrap(&clients, &names, options).await.unwrap();
    let second = bootstrap(&clients, &names, options).await.unwrap();
    assert_eq!(first, second, "a second bootstrap changes nothing");
    assert_stage(&clients, &names, 5).await;
    bootstrap(
        &clients,
        &names,
        BootstrapOptions {
            max_receive_count: 7,
        },
    )
    .await
    .unwrap();
    assert_stage(&clients, &names, 7).await;
    remove_stage(&clients, &names).await;
}
