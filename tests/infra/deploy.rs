//! The template deploys to LocalStack's CloudFormation (without the functions, which need
//! Docker there): the queues with their redrive policies, the bucket with its settings and the
//! roles exist afterwards, named as the code names them.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use chimera_core::names::{Queue, ResourceNames};
use chimera_tests::{clients, repo_root, stack_env, unique_stage};

/// The AWS CLI: on PATH, or the one in LocalStack's venv.
fn aws_cli() -> PathBuf {
    let venv = repo_root().join(".local/localstack-venv/bin/aws");
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("aws"))
        .find(|p| p.is_file())
        .or_else(|| venv.is_file().then_some(venv))
        .expect("the AWS CLI (awscli) is needed: it is on the machine or in .local/localstack-venv")
}

/// Runs `aws <args>` against LocalStack.
fn aws_output(args: &[&str]) -> std::process::Output {
    Command::new(aws_cli())
        .args([
            "--endpoint-url",
            &stack_env("AWS_ENDPOINT_URL"),
            "--region",
            &stack_env("AWS_REGION"),
        ])
        .args(args)
        .output()
        .expect("running the AWS CLI")
}

/// Runs `aws <args>` against LocalStack; its stdout, or a panic with its stderr.
fn aws(args: &[&str]) -> String {
    let out = aws_output(args);
    assert!(
        out.status.success(),
        "aws {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn the_template_deploys_to_localstack_without_functions() {
    let names: ResourceNames = unique_stage();
    let stage = names.stage().to_owned();
    let clients = clients().await;
    // `aws cloudformation package` uploads each function's CodeUri, as `sam deploy` would.
    let deploy_bucket = format!("{stage}-deploy");
    clients
        .s3
        .create_bucket()
        .bucket(&deploy_bucket)
        .send()
        .await
        .unwrap();
    let packaged = std::env::temp_dir().join(format!("{stage}-packaged.yaml"));
    let template = repo_root().join("infra/template.yaml");
    aws(&[
        "cloudformation",
        "package",
        "--template-file",
        template.to_str().unwrap(),
        "--s3-bucket",
        &deploy_bucket,
        "--output-template-file",
        packaged.to_str().unwrap(),
    ]);
    // The template is larger than CloudFormation takes inline (51,200 bytes): from S3, as
    // `sam deploy` and `scripts/deploy` hand it over.
    clients
        .s3
        .put_object()
        .bucket(&deploy_bucket)
        .key("template.yaml")
        .body(std::fs::read(&packaged).unwrap().into())
        .send()
        .await
        .unwrap();
    let template_url = format!(
        "{}/{deploy_bucket}/template.yaml",
        std::env::var("AWS_ENDPOINT_URL")
            .unwrap()
            .trim_end_matches('/')
    );
    let param = |k: &str, v: &str| format!("ParameterKey={k},ParameterValue={v}");
    let stack = format!("{stage}-stack");
    aws(&[
        "cloudformation",
        "create-stack",
        "--stack-name",
        &stack,
        "--template-url",
        &template_url,
        "--capabilities",
        "CAPABILITY_IAM",
        "CAPABILITY_NAMED_IAM",
        "CAPABILITY_AUTO_EXPAND",
        "--parameters",
        &param("Stage", &stage),
        &param("DeployFunctions", "false"),
        // LocalStack has no Cognito: an issuer of one's own instead of the stack's user pool.
        &param("JwtIssuer", "https://example.invalid/"),
        &param("JwtAudience", "mission-control"),
        &param("CreateIdempotencyTable", "false"),
        &param("MaxReceiveCount", "4"),
        &param("VpcId", "vpc-00000000"),
        &param("PrivateSubnetIds", "subnet-00000000"),
        &param("PrivateRouteTableIds", "rtb-00000000"),
    ]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        let status = aws(&[
            "cloudformation",
            "describe-stacks",
            "--stack-name",
            &stack,
            "--query",
            "Stacks[0].StackStatus",
            "--output",
            "text",
        ]);
        if status.ends_with("_COMPLETE") || status.ends_with("_FAILED") {
            break status;
        }
        assert!(Instant::now() < deadline, "stack still {status}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let events = aws(&[
        "cloudformation",
        "describe-stack-events",
        "--stack-name",
        &stack,
        "--query",
        "StackEvents[?contains(ResourceStatus, `FAILED`)].[LogicalResourceId,ResourceStatusReason]",
        "--output",
        "text",
    ]);
    assert_eq!(status, "CREATE_COMPLETE", "failures: {events}");

    for queue in Queue::ALL {
        let url = chimera_aws::bootstrap::queue_url(&clients, &names.queue(queue))
            .await
            .unwrap();
        let attrs = clients
            .sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .unwrap();
        let attrs = attrs.attributes().unwrap();
        assert_eq!(
            attrs[&QueueAttributeName::VisibilityTimeout],
            queue.visibility_timeout_secs().to_string()
        );
        let redrive: serde_json::Value =
            serde_json::from_str(&attrs[&QueueAttributeName::RedrivePolicy]).unwrap();
        assert_eq!(
            redrive["maxReceiveCount"].to_string().trim_matches('"'),
            "4"
        );
        assert!(
            redrive["deadLetterTargetArn"]
                .as_str()
                .unwrap()
                .ends_with(&names.dead_letter_queue(queue)),
            "{redrive}"
        );
    }
    let bucket = names.artifact_bucket();
    clients
        .s3
        .head_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("the artifact bucket exists");
    let versioning = clients
        .s3
        .get_bucket_versioning()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(versioning.status().map(|s| s.as_str()), Some("Enabled"));
    let block = clients
        .s3
        .get_public_access_block()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let block = block.public_access_block_configuration().unwrap();
    assert_eq!(block.block_public_acls(), Some(true));
    assert_eq!(block.restrict_public_buckets(), Some(true));
    for role in ["planner", "worker", "judge", "hitl-api", "sweep", "migrate"] {
        let arn = aws(&[
            "iam",
            "get-role",
            "--role-name",
            &format!("{stage}-{role}"),
            "--query",
            "Role.Arn",
            "--output",
            "text",
        ]);
        assert!(arn.ends_with(&format!("role/{stage}-{role}")), "{arn}");
        let policies = aws(&[
            "iam",
            "list-role-policies",
            "--role-name",
            &format!("{stage}-{role}"),
            "--query",
            "PolicyNames",
            "--output",
            "text",
        ]);
        assert_eq!(
            policies, role,
            "each role has its own least-privilege policy"
        );
    }
    // The API's access logs go to a group of the stack's (its retention is the preflight's
    // to check: LocalStack's CloudFormation does not apply RetentionInDays).
    let group = aws(&[
        "logs",
        "describe-log-groups",
        "--log-group-name-prefix",
        &format!("/aws/apigateway/{stage}-api"),
        "--query",
        "logGroups[0].logGroupName",
        "--output",
        "text",
    ]);
    assert_eq!(group, format!("/aws/apigateway/{stage}-api"));

    // LocalStack 4.12 refuses to delete a stack whose skipped (conditional) resources refer to
    // each other; the stage is unique to this test, so what stays behind is only clutter.
    let deleted = aws_output(&["cloudformation", "delete-stack", "--stack-name", &stack]);
    if !deleted.status.success() {
        eprintln!(
            "delete-stack {stack}: {}",
            String::from_utf8_lossy(&deleted.stderr).trim()
        );
    }
    let _ = std::fs::remove_file(packaged);
}
