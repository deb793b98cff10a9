//! The SAM template names the same queues, bucket, table, environment variables, timeouts and
//! event source settings as the code reads (`chimera_core::names` and friends).

use std::collections::BTreeSet;

use chimera_aws::database::{DATABASE_HOST, DATABASE_NAME, DATABASE_SECRET_ARN};
use chimera_core::names::{
    self, DEFAULT_MAX_RECEIVE_COUNT, Function, IDEMPOTENCY_KEY_ATTRIBUTE,
    IDEMPOTENCY_TTL_ATTRIBUTE, Queue, ResourceNames,
};
use chimera_store::DbRole;
use chimera_tests::repo_root;
use serde_yaml::Value;

fn template() -> Value {
    let text = std::fs::read_to_string(repo_root().join("infra/template.yaml")).unwrap();
    serde_yaml::from_str(&text).expect("the template is YAML")
}

/// `!Tag value` as (tag, value).
fn tagged(value: &Value) -> (String, Value) {
    match value {
        Value::Tagged(t) => (t.tag.to_string(), t.value.clone()),
        other => panic!("expected a tagged value (!Ref, !Sub...), got {other:?}"),
    }
}

/// A `!Sub "${Stage}-..."` name, with the stage put in.
fn name_for(value: &Value, stage: &str) -> String {
    let (tag, inner) = tagged(value);
    assert_eq!(tag, "!Sub", "{value:?}");
    inner.as_str().unwrap().replace("${Stage}", stage)
}

fn resource<'a>(t: &'a Value, name: &str) -> &'a Value {
    let r = &t["Resources"][name];
    assert!(r.is_mapping(), "resource {name} exists");
    r
}

fn pascal(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next().unwrap().to_uppercase().collect::<String>() + c.as_str()
        })
        .collect()
}

const STAGE: &str = "chimera-prod";

#[test]
fn queues_bucket_and_table_have_the_names_and_settings_the_code_uses() {
    let t = template();
    let names = ResourceNames::new(STAGE).unwrap();
    assert_eq!(t["Parameters"]["Stage"]["Default"].as_str(), Some(STAGE));
    assert_eq!(
        t["Parameters"]["MaxReceiveCount"]["Default"].as_u64(),
        Some(u64::from(DEFAULT_MAX_RECEIVE_COUNT))
    );
    for queue in Queue::ALL {
        let q = pascal(&queue.to_string());
        let main = resource(&t, &format!("{q}Queue"));
        let dlq = resource(&t, &format!("{q}DeadLetterQueue"));
        let props = &main["Properties"];
        assert_eq!(name_for(&props["QueueName"], STAGE), names.queue(queue));
        assert_eq!(
            name_for(&dlq["Properties"]["QueueName"], STAGE),
            names.dead_letter_queue(queue)
        );
        assert_eq!(
            props["VisibilityTimeout"].as_u64(),
            Some(u64::from(queue.visibility_timeout_secs())),
            "{queue}: 6 x its consumer's timeout"
        );
        let redrive = &props["RedrivePolicy"];
        assert_eq!(
            tagged(&redrive["deadLetterTargetArn"]),
            (
                "!GetAtt".into(),
                Value::from(format!("{q}DeadLetterQueue.Arn"))
            )
        );
        assert_eq!(
            tagged(&redrive["maxReceiveCount"]),
            ("!Ref".into(), Value::from("MaxReceiveCount"))
        );
    }
    let bucket = &resource(&t, "ArtifactBucket")["Properties"];
    assert_eq!(
        name_for(&bucket["BucketName"], STAGE),
        names.artifact_bucket()
    );
    assert_eq!(
        bucket["VersioningConfiguration"]["Status"].as_str(),
        Some("Enabled")
    );
    let block = &bucket["PublicAccessBlockConfiguration"];
    for flag in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(block[flag].as_bool(), Some(true), "{flag}");
    }
    assert!(bucket["BucketEncryption"].is_mapping());
    let table = &resource(&t, "IdempotencyTable")["Properties"];
    assert_eq!(
        name_for(&table["TableName"], STAGE),
        names.idempotency_table()
    );
    assert_eq!(table["BillingMode"].as_str(), Some("PAY_PER_REQUEST"));
    assert_eq!(
        table["KeySchema"][0]["AttributeName"].as_str(),
        Some(IDEMPOTENCY_KEY_ATTRIBUTE)
    );
    assert_eq!(
        table["TimeToLiveSpecification"]["AttributeName"].as_str(),
        Some(IDEMPOTENCY_TTL_ATTRIBUTE)
    );
}

#[test]
fn functions_read_the_environment_the_code_reads_and_consume_their_queues() {
    let t = template();
    let globals = &t["Globals"]["Function"];
    assert_eq!(globals["Runtime"].as_str(), Some("provided.al2023"));
    assert_eq!(globals["Architectures"][0].as_str(), Some("arm64"));
    assert_eq!(globals["Handler"].as_str(), Some("bootstrap"));
    assert_eq!(globals["LoggingConfig"]["LogFormat"].as_str(), Some("JSON"));
    let env = &globals["Environment"]["Variables"];
    let refers = |var: &str, tag: &str, target: &str| {
        assert_eq!(
            tagged(&env[var]),
            (tag.to_owned(), Value::from(target)),
            "{var}"
        );
    };
    refers(names::env::STAGE, "!Ref", "Stage");
    refers(names::env::MAX_RECEIVE_COUNT, "!Ref", "MaxReceiveCount");
    for queue in Queue::ALL {
        refers(
            queue.url_env(),
            "!Ref",
            &format!("{}Queue", pascal(&queue.to_string())),
        );
    }
    refers(names::env::ARTIFACT_BUCKET, "!Ref", "ArtifactBucket");
    assert_eq!(
        name_for(&env[names::env::IDEMPOTENCY_TABLE], STAGE),
        ResourceNames::new(STAGE).unwrap().idempotency_table()
    );
    // Each function logs in as its own database role, never as the owner: its secret's
    // username is the role's name (migration 20), and only migrate has the owner's.
    assert!(
        env[DATABASE_SECRET_ARN].is_null(),
        "no function gets a login by default"
    );
    for (function, role) in [
        ("PlannerFunction", DbRole::Planner),
        ("WorkerFunction", DbRole::Worker),
        ("JudgeFunction", DbRole::Judge),
        ("HitlApiFunction", DbRole::Api),
        ("SweepFunction", DbRole::Sweep),
    ] {
        let own = &resource(&t, function)["Properties"]["Environment"]["Variables"];
        let (tag, secret) = tagged(&own[DATABASE_SECRET_ARN]);
        assert_eq!(tag, "!Ref", "{function}");
        let generated =
            &resource(&t, secret.as_str().unwrap())["Properties"]["GenerateSecretString"];
        let template: serde_json::Value =
            serde_json::from_str(generated["SecretStringTemplate"].as_str().unwrap()).unwrap();
        assert_eq!(template["username"], role.name(), "{function}");
    }
    let migrate = &resource(&t, "MigrateFunction")["Properties"]["Environment"]["Variables"];
    assert_eq!(
        tagged(&migrate[DATABASE_SECRET_ARN]),
        ("!Ref".to_owned(), Value::from("DatabaseSecret"))
    );
    assert!(!migrate[chimera_aws::database::DATABASE_ROLE_SECRET_ARNS].is_null());
    refers(DATABASE_HOST, "!GetAtt", "DatabaseProxy.Endpoint");
    assert!(env[DATABASE_NAME].is_string());
    // The language model is configuration, its key a secret the three thinking roles may read,
    // and Bedrock theirs to invoke.
    for (var, parameter) in [
        ("CHIMERA_LLM", "LlmProvider"),
        ("CHIMERA_LLM_MODEL", "LlmModel"),
        ("CHIMERA_LLM_BASE_URL", "LlmBaseUrl"),
        (chimera_aws::mind::API_KEY_SECRET_ARN, "LlmApiKeySecretArn"),
        ("CHIMERA_LLM_PRICES", "LlmPrices"),
        ("CHIMERA_LLM_TIMEOUT_MS", "LlmTimeoutMs"),
        // Semantic memory's embedder (Titan through the same bedrock:InvokeModel).
        ("CHIMERA_EMBED", "EmbedProvider"),
        ("CHIMERA_EMBED_MODEL", "EmbedModel"),
        ("CHIMERA_EMBED_BASE_URL", "EmbedBaseUrl"),
        ("CHIMERA_EMBED_DIMENSIONS", "EmbedDimensions"),
        // The chain agents' wallets are on (the API's balances, the sweep's comparison).
        ("CHIMERA_EVM_RPC_URL", "EvmRpcUrl"),
        ("CHIMERA_EVM_TOKEN", "EvmToken"),
    ] {
        refers(var, "!Ref", parameter);
    }
    assert_eq!(
        t["Parameters"]["LlmProvider"]["Default"].as_str(),
        Some("none")
    );
    for role in ["PlannerRole", "WorkerRole", "JudgeRole"] {
        let statements =
            resource(&t, role)["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
                .as_sequence()
                .unwrap();
        let allows = |action: &str| {
            statements.iter().any(|s| {
                s["Action"]
                    .as_sequence()
                    .unwrap()
                    .contains(&Value::from(action))
            })
        };
        assert!(allows("bedrock:InvokeModel"), "{role}");
        // Only the stage's models (LlmModel, EmbedModel, LlmAllowedModels), never any model.
        let models = statements
            .iter()
            .find(|s| s["Sid"].as_str() == Some("LanguageModel"))
            .unwrap();
        let resource = serde_json::to_string(&models["Resource"]).unwrap();
        assert!(
            !resource.contains("foundation-model/*"),
            "{role}: {resource}"
        );
        for parameter in ["LlmModel", "EmbedModel", "LlmAllowedModels"] {
            assert!(resource.contains(parameter), "{role}: {resource}");
        }
        assert!(
            statements
                .iter()
                .any(|s| s["Sid"].as_str() == Some("LanguageModelKey")),
            "{role}"
        );
    }
    // Onboarding stores each agent's wallet key, and may read none back.
    let api =
        resource(&t, "HitlApiRole")["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
            .as_sequence()
            .unwrap();
    let wallets = api
        .iter()
        .find(|s| s["Sid"].as_str() == Some("AgentWallets"))
        .expect("the API may store wallet keys");
    assert!(
        !serde_json::to_string(&wallets["Action"])
            .unwrap()
            .contains("GetSecretValue")
    );
    assert!(
        env.get(names::env::DATABASE_URL).is_none(),
        "no credentials in the configuration"
    );
    assert_eq!(
        tagged(
            &resource(&t, "WorkerFunction")["Properties"]["Environment"]["Variables"]
                [chimera_mcp::SERVERS_ENV]
        ),
        ("!Ref".into(), Value::from("McpServers"))
    );

    let mut binaries = BTreeSet::new();
    for function in Function::ALL {
        let logical = format!("{}Function", pascal(function.name()));
        let f = resource(&t, &logical);
        assert_eq!(
            f["Metadata"]["BuildMethod"].as_str(),
            Some("rust-cargolambda")
        );
        assert_eq!(
            f["Metadata"]["BuildProperties"]["Binary"].as_str(),
            Some(function.name())
        );
        let props = &f["Properties"];
        assert_eq!(
            props["Timeout"].as_u64(),
            Some(u64::from(function.timeout_secs())),
            "{logical}"
        );
        binaries.insert(function.name().to_owned());
        let Some(queue) = Queue::ALL.into_iter().find(|q| q.consumer() == function) else {
            continue;
        };
        // One queue feeds each function (the worker also has its engagement schedule).
        let events = props["Events"].as_mapping().unwrap();
        let queues: Vec<&Value> = events
            .values()
            .filter(|e| e["Type"].as_str() == Some("SQS"))
            .collect();
        assert_eq!(queues.len(), 1, "{logical} has one queue");
        let source = queues[0];
        let p = &source["Properties"];
        assert_eq!(
            tagged(&p["Queue"]),
            (
                "!GetAtt".into(),
                Value::from(format!("{}Queue.Arn", pascal(&queue.to_string())))
            )
        );
        assert_eq!(
            p["FunctionResponseTypes"][0].as_str(),
            Some("ReportBatchItemFailures")
        );
        assert!((1..=10).contains(&p["BatchSize"].as_u64().unwrap()));
        assert!(p["MaximumBatchingWindowInSeconds"].as_u64().is_some());
        assert!(p["ScalingConfig"]["MaximumConcurrency"].as_u64().unwrap() >= 2);
    }
    // Every binary the template builds exists in its crate.
    for (logical, r) in t["Resources"].as_mapping().unwrap() {
        if r["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let binary = r["Metadata"]["BuildProperties"]["Binary"].as_str().unwrap();
        let code = r["Properties"]["CodeUri"].as_str().unwrap();
        let manifest =
            std::fs::read_to_string(repo_root().join("infra").join(code).join("Cargo.toml"))
                .unwrap_or_else(|e| panic!("{logical:?}: {code}/Cargo.toml: {e}"));
        assert!(
            manifest.contains(&format!("name = \"{binary}\"")),
            "{logical:?}: {code} builds no binary {binary}"
        );
        assert_eq!(r["Condition"].as_str(), Some("Functions"), "{logical:?}");
    }
    for extra in ["SweepFunction", "MigrateFunction"] {
        resource(&t, extra);
    }
    // The sweep runs on a schedule; the API sits behind the JWT authorizer.
    let sweep = &resource(&t, "SweepFunction")["Properties"]["Events"]["ReviewTimeouts"];
    assert!(sweep["Type"].as_str().unwrap().starts_with("Schedule"));
    // The engagement collector is the worker, invoked on a schedule with the input its entry
    // point reads (functions/worker/src/main.rs).
    let collect = &resource(&t, "WorkerFunction")["Properties"]["Events"]["Engagement"];
    assert_eq!(collect["Type"].as_str(), Some("ScheduleV2"));
    let input: Value =
        serde_yaml::from_str(collect["Properties"]["Input"].as_str().unwrap()).unwrap();
    assert!(input.get("collect_engagement").is_some(), "{input:?}");
    // The JWT authorizer takes the stack's user pool, or the issuer given as JwtIssuer; the
    // API tells Mission Control where to sign in (the same pool's endpoints and client).
    let api = &resource(&t, "HttpApi")["Properties"]["Auth"];
    assert_eq!(api["DefaultAuthorizer"].as_str(), Some("JwtAuthorizer"));
    let (tag, issuer) = tagged(&api["Authorizers"]["JwtAuthorizer"]["JwtConfiguration"]["issuer"]);
    assert_eq!(tag, "!If");
    assert_eq!(issuer[0].as_str(), Some("OwnUserPool"));
    assert_eq!(
        tagged(&issuer[2]),
        ("!Ref".into(), Value::from("JwtIssuer"))
    );
    assert_eq!(t["Parameters"]["JwtIssuer"]["Default"].as_str(), Some(""));
    let groups: BTreeSet<String> = t["Resources"]
        .as_mapping()
        .unwrap()
        .values()
        .filter(|r| r["Type"].as_str() == Some("AWS::Cognito::UserPoolGroup"))
        .map(|r| r["Properties"]["GroupName"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        groups,
        BTreeSet::from(["operator", "reviewer", "admin", "platform_admin"].map(String::from)),
        "a group per role"
    );
    let client = &resource(&t, "MissionControlClient")["Properties"];
    assert_eq!(
        client["GenerateSecret"].as_bool(),
        Some(false),
        "a public client (PKCE)"
    );
    assert_eq!(client["AllowedOAuthFlows"][0].as_str(), Some("code"));
    // No one moves a user to another tenant: the attribute is set once, by an administrator.
    let writable = client["WriteAttributes"]
        .as_sequence()
        .expect("WriteAttributes is listed");
    assert!(!writable.contains(&Value::from("custom:tenant")));
    let schema = resource(&t, "UserPool")["Properties"]["Schema"]
        .as_sequence()
        .unwrap();
    let tenant = schema
        .iter()
        .find(|a| a["Name"].as_str() == Some("tenant"))
        .unwrap();
    assert_eq!(tenant["Mutable"].as_bool(), Some(false));
    let env = &resource(&t, "HitlApiFunction")["Properties"]["Environment"]["Variables"];
    for var in [
        chimera_hitl_api::auth::env::OIDC_AUTHORIZE_URL,
        chimera_hitl_api::auth::env::OIDC_TOKEN_URL,
        chimera_hitl_api::auth::env::OIDC_CLIENT_ID,
    ] {
        assert_eq!(tagged(&env[var]).0, "!If", "{var}");
    }
}
