-- The work: goals decomposed into a DAG of tasks; results judged, committed or held for review.

create type goal_status as enum
    ('received', 'planning', 'in_progress', 'awaiting_review', 'completed', 'failed', 'cancelled');

create type task_kind as enum
    ('research', 'draft', 'render_media', 'publish', 'reply', 'transact', 'execute');

-- blocked: waiting for dependencies; ready: dependencies met, not yet sent; queued: on the task
-- queue; awaiting_review: a human holds its result; retrying: re-planned with feedback.
create type task_status as enum
    ('blocked', 'ready', 'queued', 'running', 'awaiting_review', 'retrying',
     'committed', 'failed', 'cancelled');

create type disclosure_level as enum ('automated', 'assisted', 'none');

create type review_status as enum ('pending', 'approved', 'rejected', 'expired');

create type decision_kind as enum
    ('auto_approve', 'approve', 'edit_approve', 'reject', 'retry', 'escalate', 'default_reject', 'fail');

create table goals (
    id               uuid primary key,
    tenant_id        uuid not null,
    agent_id         uuid not null,
    kind             text not null check (kind ~ '^[a-z][a-z0-9_]{0,63}$'),
    body             text not null check (length(body) between 1 and 4000),
    constraints      jsonb not null default '{}'::jsonb check (jsonb_typeof(constraints) = 'object'),
    status           goal_status not null default 'received',
    -- An Idempotency-Key header makes a retried POST return the same goal; the request hash
    -- refuses the same key reused for a different body.
    idempotency_key  text check (length(idempotency_key) between 1 and 200),
    request_hash     text check (request_hash ~ '^[0-9a-f]{64}$'),
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    foreign key (tenant_id, agent_id) references agents (tenant_id, id),
    check ((idempotency_key is null) = (request_hash is null)),
    unique (tenant_id, idempotency_key)
);
create index goals_agent_created on goals (agent_id, created_at);
create index goals_open on goals (tenant_id, created_at)
    where status in ('received', 'planning', 'in_progress', 'awaiting_review');

create table tasks (
    id            uuid primary key,
    goal_id       uuid not null references goals (id),
    agent_id      uuid not null references agents (id),
    kind          task_kind not null,
    status        task_status not null,
    attempt       integer not null default 1 check (attempt >= 1),
    max_attempts  integer not null check (max_attempts between 1 and 20),
    inputs        jsonb not null default '{}'::jsonb check (jsonb_typeof(inputs) = 'object'),
    -- {"key": version}: the state the planner read for this task.
    read_set      jsonb not null default '{}'::jsonb check (jsonb_typeof(read_set) = 'object'),
    write_set     text[] not null default '{}',
    feedback      text,
    -- An execute task performs an approved external effect; the approval is its idempotency key.
    approval_id   uuid,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    check (attempt <= max_attempts),
    check ((kind = 'execute') = (approval_id is not null)),
    unique (approval_id)
);
create index tasks_goal on tasks (goal_id);
create index tasks_agent_created on tasks (agent_id, created_at);
create index tasks_unfinished on tasks (agent_id, status)
    where status in ('blocked', 'ready', 'queued', 'running', 'awaiting_review', 'retrying');

create table task_dependencies (
    task_id     uuid not null references tasks (id) on delete cascade,
    depends_on  uuid not null references tasks (id),
    primary key (task_id, depends_on),
    check (task_id <> depends_on)
);
create index task_dependencies_reverse on task_dependencies (depends_on);

create table results (
    id                uuid primary key,
    task_id           uuid not null references tasks (id),
    attempt           integer not null check (attempt >= 1),
    -- sha256 over the artifact and its metadata, hex.
    commit_hash       text not null check (commit_hash ~ '^[0-9a-f]{64}$'),
    artifact          jsonb not null check (jsonb_typeof(artifact) = 'object'),
    confidence        double precision not null check (confidence >= 0 and confidence <= 1),
    risk_tags         text[] not null default '{}',
    disclosure_level  disclosure_level,
    read_set          jsonb not null check (jsonb_typeof(read_set) = 'object'),
    created_at        timestamptz not null default now(),
    unique (task_id, commit_hash)
);
create index results_task on results (task_id, attempt);

-- One row per successful OCC commit. The commit hash is unique: committing the same result
-- twice is a no-op, not a second commit.
create table commits (
    commit_hash           text primary key check (commit_hash ~ '^[0-9a-f]{64}$'),
    result_id             uuid not null unique references results (id),
    agent_id              uuid not null references agents (id),
    -- {"key": version} read and checked / written and bumped to.
    input_state_version   jsonb not null check (jsonb_typeof(input_state_version) = 'object'),
    output_state_version  jsonb not null check (jsonb_typeof(output_state_version) = 'object'),
    committed_at          timestamptz not null default now()
);
create index commits_agent_committed on commits (agent_id, committed_at);

create table reviews (
    id               uuid primary key,
    tenant_id        uuid not null references tenants (id),
    result_id        uuid not null references results (id),
    status           review_status not null default 'pending',
    -- What the reviewer must see and name in a decision.
    artifact_hash    text not null check (artifact_hash ~ '^[0-9a-f]{64}$'),
    policy_version   integer not null check (policy_version >= 1),
    judge_reasoning  text not null,
    risk_tags        text[] not null default '{}',
    confidence       double precision not null check (confidence >= 0 and confidence <= 1),
    financial        boolean not null default false,
    priority         integer not null default 0,
    due_at           timestamptz not null,
    final_deadline   timestamptz not null,
    decision         decision_kind,
    decided_by       text,
    decided_at       timestamptz,
    created_at       timestamptz not null default now(),
    check (final_deadline >= due_at),
    -- A pending review has no decision; a decided one has all of it.
    check ((status = 'pending') = (decision is null)),
    check ((decision is null) = (decided_at is null)),
    check ((decision is null) = (decided_by is null))
);
create unique index reviews_one_pending_per_result on reviews (result_id) where status = 'pending';
create index reviews_pending_queue on reviews (tenant_id, priority desc, created_at) where status = 'pending';
create index reviews_pending_due on reviews (due_at) where status = 'pending';
