"""cfn-lint rules for what AWS checks when it creates the stack, and for what a running stack
needs to be operated, on the transformed template (`infra/preflight/transform.py`):

    E9101  active tracing: the function's role may write to X-Ray
    E9102  a function in a VPC: its role may manage its network interfaces
    E9103  an SQS event source: the function's role may receive, delete and read the queue's
           attributes, and decrypt with the queue's KMS key
    E9104  an SQS event source: the queue's visibility timeout is at least 6 x the function's
    E9105  reserved concurrency: the sum leaves the account's 100 unreserved executions
    E9106  every secret named (environment, proxy auth, dynamic references) exists: a secret
           of this template, or a parameter the deploy checks
    E9107  logs: every log group has a retention; every function logs to one of them
    E9108  a function in a VPC reaches each AWS service its role calls through an endpoint
    E9109  the HTTP API's stage: default throttling and JSON access logs
    E9110  alarms: DLQ depth, age of the oldest message, function throttles, API 5xx

Run by `scripts/infra preflight`; each rule's message says which resource and what to add.
"""

from __future__ import annotations

import fnmatch
import json
import re

from cfnlint.rules import CloudFormationLintRule, RuleMatch

# What the AWS managed policies the templates attach allow (the parts these rules look at).
MANAGED_POLICIES = {
    "AWSLambdaBasicExecutionRole": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
    "AWSLambdaVPCAccessExecutionRole": [
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "ec2:CreateNetworkInterface",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeSubnets",
        "ec2:DeleteNetworkInterface",
        "ec2:AssignPrivateIpAddresses",
        "ec2:UnassignPrivateIpAddresses",
    ],
    "AWSXRayDaemonWriteAccess": [
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "xray:GetSamplingRules",
        "xray:GetSamplingTargets",
        "xray:GetSamplingStatisticSummaries",
    ],
    "AWSLambdaSQSQueueExecutionRole": [
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    ],
}

# The VPC endpoint service each IAM action prefix is called through.
ENDPOINT_SERVICES = {
    "sqs": "sqs",
    "s3": "s3",
    "dynamodb": "dynamodb",
    "secretsmanager": "secretsmanager",
    "bedrock": "bedrock-runtime",
    "xray": "xray",
}

# Lambda keeps this many executions unreserved in every account.
UNRESERVED_MINIMUM = 100


# ------------------------------------------------------------------------------------------
# Reading the template


def resources(cfn, kind=None):
    found = cfn.template.get("Resources") or {}
    return {n: r for n, r in found.items() if isinstance(r, dict) and (kind is None or r.get("Type") == kind)}


def props(resource):
    value = resource.get("Properties")
    return value if isinstance(value, dict) else {}


def ref(value):
    """The resource or parameter a `Ref` names, else None."""
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("Ref"), str):
        return value["Ref"]
    return None


def get_att(value):
    """(resource, attribute) of a `Fn::GetAtt`, else None."""
    if not isinstance(value, dict) or len(value) != 1 or "Fn::GetAtt" not in value:
        return None
    target = value["Fn::GetAtt"]
    if isinstance(target, str) and "." in target:
        target = target.split(".", 1)
    if isinstance(target, list) and len(target) == 2 and all(isinstance(p, str) for p in target):
        return target[0], target[1]
    return None


def named(value):
    """The resource a `Ref` or `Fn::GetAtt` points at."""
    if ref(value):
        return ref(value)
    att = get_att(value)
    return att[0] if att else None


def number(cfn, value, default=None):
    """An integer, literal or a parameter's default."""
    name = ref(value)
    if name:
        value = ((cfn.template.get("Parameters") or {}).get(name) or {}).get("Default")
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def branches(value):
    """Both sides of `Fn::If` (without `AWS::NoValue`), or the value itself."""
    if isinstance(value, dict) and len(value) == 1 and "Fn::If" in value:
        cond = value["Fn::If"]
        if isinstance(cond, list) and len(cond) == 3:
            return [v for side in cond[1:] for v in branches(side) if ref(v) != "AWS::NoValue"]
    return [value]


def as_list(value):
    if value is None:
        return []
    return [v for item in (value if isinstance(value, list) else [value]) for v in branches(item)]


def last_segment(value):
    """`AWSLambdaVPCAccessExecutionRole` of a managed policy ARN, literal or `Fn::Sub`."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        value = value["Fn::Sub"]
        if isinstance(value, list):
            value = value[0]
    return value.rsplit("/", 1)[-1] if isinstance(value, str) else None


class Role:
    """What one IAM role of the template allows."""

    def __init__(self, cfn, name):
        self.name = name
        self.statements = []
        role = resources(cfn).get(name) or {}
        for policy in as_list(props(role).get("Policies")):
            if isinstance(policy, dict):
                self._document(policy.get("PolicyDocument"))
        for arn in as_list(props(role).get("ManagedPolicyArns")):
            own = ref(arn)
            if own and own in resources(cfn, "AWS::IAM::ManagedPolicy"):
                self._document(props(resources(cfn)[own]).get("PolicyDocument"))
            elif last_segment(arn) in MANAGED_POLICIES:
                actions = MANAGED_POLICIES[last_segment(arn)]
                self.statements.append({"Effect": "Allow", "Action": actions, "Resource": "*"})
        for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::RolePolicy"):
            for policy in resources(cfn, kind).values():
                p = props(policy)
                roles = [ref(r) for r in as_list(p.get("Roles"))] + [ref(p.get("RoleName"))]
                if name in roles:
                    self._document(p.get("PolicyDocument"))

    def _document(self, document):
        if isinstance(document, dict):
            for statement in as_list(document.get("Statement")):
                if isinstance(statement, dict) and statement.get("Effect") == "Allow":
                    self.statements.append(statement)

    def allows(self, action, resource=None):
        """Whether some statement allows `action` on `resource` (a template value: an
        `Fn::GetAtt` or `Ref` is matched as written, `*` matches anything); None: any."""
        for statement in self.statements:
            actions = [a for a in as_list(statement.get("Action")) if isinstance(a, str)]
            if not any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in actions):
                continue
            if resource is None:
                return True
            for allowed in as_list(statement.get("Resource")):
                if allowed == "*" or allowed == resource:
                    return True
                if named(allowed) and named(allowed) == named(resource) and get_att(allowed) == get_att(resource):
                    return True
        return False

    def prefixes(self):
        """The services (IAM action prefixes) the role may call."""
        found = set()
        for statement in self.statements:
            for action in as_list(statement.get("Action")):
                if isinstance(action, str) and ":" in action:
                    found.add(action.split(":", 1)[0].lower())
        return found


def role_of(cfn, function):
    """The template role a Lambda function runs as, or None (a role from outside)."""
    name = named(props(function).get("Role"))
    return Role(cfn, name) if name in resources(cfn, "AWS::IAM::Role") else None


def sqs_sources(cfn):
    """(mapping name, function name, function, queue name, queue) of each SQS event source."""
    functions = resources(cfn, "AWS::Lambda::Function")
    queues = resources(cfn, "AWS::SQS::Queue")
    for name, mapping in resources(cfn, "AWS::Lambda::EventSourceMapping").items():
        p = props(mapping)
        fn, queue = named(p.get("FunctionName")), named(p.get("EventSourceArn"))
        if fn in functions and queue in queues:
            yield name, fn, functions[fn], queue, queues[queue]


def in_vpc(function):
    vpc = props(function).get("VpcConfig")
    return isinstance(vpc, dict) and bool(vpc.get("SubnetIds"))


class Rule(CloudFormationLintRule):
    """The shared part of the preflight rules."""

    source_url = "https://github.com/aws-cloudformation/cfn-lint"
    tags = ["preflight"]

    def at(self, path, message):
        return RuleMatch(list(path), message)

    def roles_lacking(self, cfn, applies, actions, prop, why, fix):
        """A match for each function `applies` to whose role does not allow all `actions`."""
        found = []
        for name, function in resources(cfn, "AWS::Lambda::Function").items():
            role = role_of(cfn, function)
            if role is None or not applies(function):
                continue
            missing = [a for a in actions if not role.allows(a)]
            if missing:
                found.append(
                    self.at(
                        ["Resources", name, "Properties", prop],
                        f"{name} {why} but its role {role.name} does not allow {', '.join(missing)} ({fix})",
                    )
                )
        return found


def traced(function):
    return (props(function).get("TracingConfig") or {}).get("Mode") == "Active"


# ------------------------------------------------------------------------------------------
# The rules


class TracingNeedsXRay(Rule):
    id = "E9101"
    shortdesc = "Active tracing needs X-Ray write permission"
    description = (
        "Lambda refuses to create a function with active tracing whose role cannot call "
        "xray:PutTraceSegments and xray:PutTelemetryRecords"
    )

    def match(self, cfn):
        actions = ("xray:PutTraceSegments", "xray:PutTelemetryRecords")
        return self.roles_lacking(
            cfn, traced, actions, "TracingConfig", "has active tracing", "attach AWSXRayDaemonWriteAccess"
        )


class VpcNeedsNetworkInterfaces(Rule):
    id = "E9102"
    shortdesc = "A function in a VPC needs network interface permissions"
    description = (
        "Lambda refuses to create a function in a VPC whose role cannot create, describe and "
        "delete network interfaces"
    )

    def match(self, cfn):
        actions = ("ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DeleteNetworkInterface")
        return self.roles_lacking(
            cfn, in_vpc, actions, "VpcConfig", "is in a VPC", "attach AWSLambdaVPCAccessExecutionRole"
        )


class SqsSourceNeedsQueueAccess(Rule):
    id = "E9103"
    shortdesc = "An SQS event source needs the queue's actions"
    description = (
        "Lambda refuses an SQS event source mapping whose function's role cannot receive, "
        "delete and read attributes of the queue (and decrypt with its KMS key)"
    )

    def match(self, cfn):
        found = []
        for mapping, fn, function, queue_name, queue in sqs_sources(cfn):
            role = role_of(cfn, function)
            if role is None:
                continue
            arn = {"Fn::GetAtt": [queue_name, "Arn"]}
            needed = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"]
            missing = [a for a in needed if not role.allows(a, arn)]
            key = props(queue).get("KmsMasterKeyId")
            if key is not None and key != "alias/aws/sqs" and not role.allows("kms:Decrypt"):
                missing.append("kms:Decrypt (the queue's KMS key)")
            if missing:
                found.append(
                    self.at(
                        ["Resources", mapping, "Properties", "EventSourceArn"],
                        f"{fn} consumes {queue_name} but its role {role.name} does not allow "
                        f"{', '.join(missing)} on it",
                    )
                )
        return found


class VisibilityCoversRetries(Rule):
    id = "E9104"
    shortdesc = "Queue visibility timeout is at least 6 x its consumer's timeout"
    description = (
        "AWS refuses a visibility timeout shorter than the function's timeout and recommends "
        "6 times it, so that a batch retried by the poller is not delivered twice meanwhile"
    )

    def match(self, cfn):
        found = []
        for mapping, fn, function, queue_name, queue in sqs_sources(cfn):
            timeout = number(cfn, props(function).get("Timeout"), 3)
            visibility = number(cfn, props(queue).get("VisibilityTimeout"), 30)
            if timeout is not None and visibility is not None and visibility < 6 * timeout:
                found.append(
                    self.at(
                        ["Resources", queue_name, "Properties"],
                        f"{queue_name} has a visibility timeout of {visibility} s; its consumer "
                        f"{fn} may run {timeout} s, so it needs at least {6 * timeout} s",
                    )
                )
        return found


class ReservedConcurrencyFits(Rule):
    id = "E9105"
    shortdesc = "Reserved concurrency fits the account"
    description = (
        "Lambda refuses reserved concurrency that would leave fewer than 100 unreserved "
        "executions in the account (its limit: `account_limit`, 1000 by default)"
    )

    def __init__(self):
        super().__init__()
        self.config_definition = {"account_limit": {"default": 1000, "type": "integer"}}
        self.configure()

    def match(self, cfn):
        reserved = {}
        for name, function in resources(cfn, "AWS::Lambda::Function").items():
            value = props(function).get("ReservedConcurrentExecutions")
            if value is not None:
                reserved[name] = number(cfn, value, 0)
        limit = self.config["account_limit"]
        total = sum(reserved.values())
        if total > limit - UNRESERVED_MINIMUM:
            listed = ", ".join(f"{n} {v}" for n, v in sorted(reserved.items()))
            return [
                self.at(
                    ["Resources"],
                    f"functions reserve {total} executions ({listed}); an account limit of "
                    f"{limit} allows {limit - UNRESERVED_MINIMUM}",
                )
            ]
        return []


SECRET_REFERENCE = re.compile(r"\{\{resolve:secretsmanager:(\$\{[^}]+\}|[^:}]+)")


class SecretsExist(Rule):
    id = "E9106"
    shortdesc = "Every secret named exists"
    description = (
        "A secret named in a function's environment (`*_SECRET_ARN`), an RDS Proxy's auth or a "
        "dynamic reference is a secret of this template or a parameter (which the deploy checks)"
    )

    def match(self, cfn):
        secrets = resources(cfn, "AWS::SecretsManager::Secret")
        parameters = cfn.template.get("Parameters") or {}
        found = []

        def check(path, value, what):
            for item in as_list(value):
                target = named(item)
                if target in secrets or (ref(item) and target in parameters):
                    continue
                if isinstance(item, str) and item == "":
                    continue
                found.append(self.at(path, f"{what} names {json.dumps(item)}, which is no secret of this template nor a parameter"))

        for name, function in resources(cfn, "AWS::Lambda::Function").items():
            env = ((props(function).get("Environment") or {}).get("Variables")) or {}
            for key, value in env.items():
                if key.endswith("_SECRET_ARN"):
                    check(["Resources", name, "Properties", "Environment", "Variables", key], value, f"{name}'s {key}")
        for name, proxy in resources(cfn, "AWS::RDS::DBProxy").items():
            for i, auth in enumerate(as_list(props(proxy).get("Auth"))):
                if isinstance(auth, dict):
                    check(["Resources", name, "Properties", "Auth", i], auth.get("SecretArn"), f"{name}'s auth")
        for name, resource in resources(cfn).items():
            for secret in SECRET_REFERENCE.findall(json.dumps(resource)):
                own = secret[2:-1] if secret.startswith("${") and secret.endswith("}") else None
                if own not in secrets and own not in parameters:
                    found.append(self.at(["Resources", name], f"{name} resolves the secret {secret}, which is no secret of this template nor a parameter"))
        return found


class LogsAreKept(Rule):
    id = "E9107"
    shortdesc = "Every log group has a retention; every function logs to one"
    description = (
        "A log group without RetentionInDays keeps logs forever; a function without a log "
        "group of the template gets one from Lambda at its first run, without retention"
    )

    def match(self, cfn):
        groups = resources(cfn, "AWS::Logs::LogGroup")
        found = []
        for name, group in groups.items():
            if props(group).get("RetentionInDays") is None:
                found.append(self.at(["Resources", name, "Properties"], f"log group {name} has no RetentionInDays"))
        for name, function in resources(cfn, "AWS::Lambda::Function").items():
            group = (props(function).get("LoggingConfig") or {}).get("LogGroup")
            if named(group) not in groups:
                found.append(
                    self.at(
                        ["Resources", name, "Properties", "LoggingConfig"],
                        f"{name} logs to no log group of this template (LoggingConfig.LogGroup: !Ref a group with a retention)",
                    )
                )
        return found


class EndpointsForServices(Rule):
    id = "E9108"
    shortdesc = "A function in a VPC reaches its AWS services through endpoints"
    description = (
        "Private subnets reach AWS services through VPC endpoints: one for each service a "
        "VPC function's role calls (and X-Ray for active tracing)"
    )

    def match(self, cfn):
        services = set()
        for endpoint in resources(cfn, "AWS::EC2::VPCEndpoint").values():
            service = props(endpoint).get("ServiceName")
            if isinstance(service, dict) and "Fn::Sub" in service:
                service = service["Fn::Sub"]
            if isinstance(service, str):
                services.add(service.rsplit(".", 1)[-1])
        found = []
        for name, function in resources(cfn, "AWS::Lambda::Function").items():
            role = role_of(cfn, function)
            if not in_vpc(function) or role is None:
                continue
            needed = {ENDPOINT_SERVICES[p] for p in role.prefixes() if p in ENDPOINT_SERVICES}
            if traced(function):
                needed.add("xray")
            missing = sorted(needed - services)
            if missing:
                found.append(
                    self.at(
                        ["Resources", name, "Properties", "VpcConfig"],
                        f"{name} is in a VPC and calls {', '.join(missing)} with no VPC endpoint for it",
                    )
                )
        return found


class ApiEdge(Rule):
    id = "E9109"
    shortdesc = "The HTTP API throttles and writes JSON access logs"
    description = "Every API Gateway v2 stage has default route throttling and JSON access logs to a log group"

    def match(self, cfn):
        found = []
        groups = resources(cfn, "AWS::Logs::LogGroup")
        for name, stage in resources(cfn, "AWS::ApiGatewayV2::Stage").items():
            p = props(stage)
            defaults = p.get("DefaultRouteSettings") or {}
            for key in ("ThrottlingBurstLimit", "ThrottlingRateLimit"):
                if defaults.get(key) is None:
                    found.append(self.at(["Resources", name, "Properties"], f"stage {name} has no DefaultRouteSettings.{key}"))
            logs = p.get("AccessLogSettings") or {}
            if named(logs.get("DestinationArn")) not in groups:
                found.append(self.at(["Resources", name, "Properties"], f"stage {name} writes no access log to a log group of this template"))
            fmt = logs.get("Format")
            try:
                json.loads(fmt if isinstance(fmt, str) else "")
            except ValueError:
                found.append(self.at(["Resources", name, "Properties"], f"stage {name}'s access log format is not JSON"))
        return found


def alarmed(cfn, namespace, metric, dimension, target):
    """Whether an alarm watches `metric` with `dimension` naming `target` (a resource)."""

    def watches(spec):
        if spec.get("Namespace") != namespace or spec.get("MetricName") != metric:
            return False
        return any(
            isinstance(d, dict) and d.get("Name") == dimension and named(d.get("Value")) == target
            for d in as_list(spec.get("Dimensions"))
        )

    for alarm in resources(cfn, "AWS::CloudWatch::Alarm").values():
        p = props(alarm)
        if watches(p):
            return True
        for query in as_list(p.get("Metrics")):
            metric_spec = ((query or {}).get("MetricStat") or {}).get("Metric") or {}
            if watches(metric_spec):
                return True
    return False


class Alarms(Rule):
    id = "E9110"
    shortdesc = "Queues, functions and the API have their alarms"
    description = (
        "An alarm on each DLQ's depth, each consumed queue's age of oldest message, each "
        "function's throttles and each HTTP API's 5xx"
    )

    def match(self, cfn):
        found = []
        queues = resources(cfn, "AWS::SQS::Queue")
        dead = set()
        for queue in queues.values():
            redrive = props(queue).get("RedrivePolicy") or {}
            if isinstance(redrive, dict) and named(redrive.get("deadLetterTargetArn")):
                dead.add(named(redrive["deadLetterTargetArn"]))
        for name in sorted(dead):
            if not alarmed(cfn, "AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", name):
                found.append(self.at(["Resources", name], f"no alarm on the depth of the DLQ {name}"))
        for _, _, _, queue_name, _ in sqs_sources(cfn):
            if not alarmed(cfn, "AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", queue_name):
                found.append(self.at(["Resources", queue_name], f"no alarm on the age of the oldest message of {queue_name}"))
        for name in resources(cfn, "AWS::Lambda::Function"):
            if not alarmed(cfn, "AWS/Lambda", "Throttles", "FunctionName", name):
                found.append(self.at(["Resources", name], f"no alarm on the throttles of {name}"))
        for name in resources(cfn, "AWS::ApiGatewayV2::Api"):
            if not alarmed(cfn, "AWS/ApiGateway", "5xx", "ApiId", name):
                found.append(self.at(["Resources", name], f"no alarm on the 5xx answers of {name}"))
        return found
