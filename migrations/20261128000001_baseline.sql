-- The baseline schema, squashed from the Phase 1 migrations (20261121000001 to 20261121000011)
-- and the outbox migration (20261128000012), before anything was deployed. Applied to an empty
-- database it gives exactly the schema those migrations gave.
--
-- Later schema changes are new migration files, never edits of this one: sqlx checks the
-- checksum of every applied migration.

-- ---------------------------------------------------------------------------------------------
-- Tenants, agents with their versioned policies, and the versioned agent state that OCC checks.
--
-- Agent state is one row per (agent, key): a task records the exact keys and versions it read
-- (its read set), and a commit checks and bumps only those rows, so tasks of one agent that
-- touch disjoint keys never conflict.

create type agent_status as enum ('active', 'paused', 'retired');

create table tenants (
    id          uuid primary key,
    name        text not null unique check (length(name) between 1 and 200),
    created_at  timestamptz not null default now()
);

create table agents (
    id              uuid primary key,
    tenant_id       uuid not null references tenants (id),
    handle          text not null check (handle ~ '^[a-z0-9_]{1,64}$'),
    persona         jsonb not null check (jsonb_typeof(persona) = 'object'),
    status          agent_status not null default 'active',
    -- The policy in force; points into policies (deferred: an agent and its first policy are
    -- inserted in one transaction).
    policy_version  integer not null check (policy_version >= 1),
    created_at      timestamptz not null default now(),
    unique (tenant_id, handle),
    -- Target of composite foreign keys that pin child rows to the agent's own tenant.
    unique (tenant_id, id)
);

-- Routing thresholds, sensitive topics, attempt limits and review deadlines, versioned: a
-- result is judged under one version, and a human decision names the version it saw.
create table policies (
    agent_id    uuid not null references agents (id),
    version     integer not null check (version >= 1),
    document    jsonb not null check (jsonb_typeof(document) = 'object'),
    created_at  timestamptz not null default now(),
    primary key (agent_id, version)
);

alter table agents
    add constraint agents_policy_fk foreign key (id, policy_version)
    references policies (agent_id, version) deferrable initially deferred;

create table agent_state (
    agent_id    uuid not null references agents (id),
    key         text not null check (key ~ '^[a-z][a-z0-9_.:-]{0,127}$'),
    version     bigint not null default 0 check (version >= 0),
    value       jsonb not null default '{}'::jsonb,
    updated_at  timestamptz not null default now(),
    primary key (agent_id, key)
);

-- ---------------------------------------------------------------------------------------------
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

-- Pages keep free space (fillfactor 80), so an update of a row can stay in its page (HOT).
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
    -- How often the reconciler re-sent the current attempt of a task that made no progress;
    -- after a few, the task is failed and surfaced instead of being re-sent for ever.
    redrives      integer not null default 0 check (redrives >= 0),
    check (attempt <= max_attempts),
    check ((kind = 'execute') = (approval_id is not null)),
    unique (approval_id)
) with (fillfactor = 80);
create index tasks_goal on tasks (goal_id);
create index tasks_agent_created on tasks (agent_id, created_at);
-- The reconciler looks for work that stopped moving.
create index tasks_moving_since on tasks (updated_at)
    where status in ('blocked', 'queued', 'running', 'retrying');

create table task_dependencies (
    task_id     uuid not null references tasks (id) on delete cascade,
    depends_on  uuid not null references tasks (id),
    primary key (task_id, depends_on),
    check (task_id <> depends_on)
);
create index task_dependencies_reverse on task_dependencies (depends_on);

-- A result is written once, when it is recorded, and never updated; what a commit settles is
-- recorded in `commits`.
create table results (
    id                uuid primary key,
    task_id           uuid not null references tasks (id),
    attempt           integer not null check (attempt >= 1),
    -- sha256 over the artifact and its metadata, hex. It covers the task id, so a commit hash
    -- names one result of one task.
    commit_hash       text not null check (commit_hash ~ '^[0-9a-f]{64}$'),
    artifact          jsonb not null check (jsonb_typeof(artifact) = 'object'),
    confidence        double precision not null check (confidence >= 0 and confidence <= 1),
    risk_tags         text[] not null default '{}',
    disclosure_level  disclosure_level,
    read_set          jsonb not null check (jsonb_typeof(read_set) = 'object'),
    created_at        timestamptz not null default now(),
    unique (task_id, commit_hash)
) with (fillfactor = 80);
create index results_task on results (task_id, attempt);

-- Rows of an append-only table (commits, the audit log, asset events) can be inserted, never
-- changed or removed, the owner included.
create function refuse_change() returns trigger language plpgsql as $$
begin
    raise exception '% is append-only: % is not allowed', tg_table_name, tg_op
        using errcode = 'insufficient_privilege';
end
$$;

-- One narrow, insert-only record per committed task. The OCC commit writes the state keys and
-- this record, and nothing else:
-- - the task's status is workflow, set by the decision that commits (the judge's or a
--   reviewer's), in the same transaction;
-- - a task commits at most one result: the primary key is the task;
-- - the result is not looked up: what is committed is a `Recorded` result (crates/store), which
--   only recording it (refused when it names another agent than its task's) or loading it
--   from `results` makes. Results and a task's agent never change.
-- The record is never changed or removed. It has no foreign keys on purpose: each would lock
-- the referenced row on every commit.
create table commits (
    task_id               uuid primary key,
    result_id             uuid not null,
    agent_id              uuid not null,
    commit_hash           text not null,
    -- {"key": version} read and checked / written and bumped to.
    input_state_version   jsonb not null check (jsonb_typeof(input_state_version) = 'object'),
    output_state_version  jsonb not null check (jsonb_typeof(output_state_version) = 'object'),
    committed_at          timestamptz not null default now()
);
create trigger commits_no_update_delete before update or delete on commits
    for each statement execute function refuse_change();
create trigger commits_no_truncate before truncate on commits
    for each statement execute function refuse_change();

-- ---------------------------------------------------------------------------------------------
-- Reviews, decisions and notifications.
--
-- A review is opened for a result a human must see (sensitive, medium confidence, missing
-- disclosure, financial, or failed after its last attempt), and also, already decided, for an
-- effect the judge approved on its own: the approval's id is the effect's idempotency key and
-- the `execute` task's `approval_id`.
--
-- Nothing waits forever: a pending review past its `due_at` is escalated once (priority up,
-- a notification for the tenant's reviewers); past its `final_deadline` it takes the policy's
-- default decision (`default_reject`, status `expired`). The sweep that does both locks the
-- rows it takes with SKIP LOCKED, so sweeps may overlap.

create type review_status as enum ('pending', 'approved', 'rejected', 'expired');

create type decision_kind as enum
    ('auto_approve', 'approve', 'edit_approve', 'reject', 'retry', 'escalate', 'default_reject', 'fail');

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
    -- The judge's reasons, as the routing policy gave them ([{"reason": "sensitive", ...}]).
    reasons          jsonb not null default '[]'::jsonb check (jsonb_typeof(reasons) = 'array'),
    -- The risk types reviewers filter by.
    risk_types       text[] not null default '{}'
        check (risk_types <@ array['sensitive', 'medium_confidence', 'missing_disclosure',
                                   'financial', 'failed_after_retries']::text[]),
    -- The task attempt the reviewed result belongs to.
    task_id          uuid references tasks (id),
    escalated_at     timestamptz,
    -- One line for the queue: a proposal's text, or what a transfer moves to whom.
    summary          text check (length(summary) <= 300),
    -- What an approval released, as the digest of the effect it approved ({"action",
    -- "arguments"}): a worker performs an effect only when the task's arguments hash to it.
    effect_sha256    text check (effect_sha256 ~ '^[0-9a-f]{64}$'),
    check (final_deadline >= due_at),
    -- A pending review has no decision; a decided one has all of it.
    check ((status = 'pending') = (decision is null)),
    check ((decision is null) = (decided_at is null)),
    check ((decision is null) = (decided_by is null))
);
create unique index reviews_one_pending_per_result on reviews (result_id) where status = 'pending';
create index reviews_pending_queue on reviews (tenant_id, priority desc, created_at) where status = 'pending';
create index reviews_pending_due on reviews (due_at) where status = 'pending';
create index reviews_task on reviews (task_id);
create index reviews_pending_risk on reviews using gin (risk_types) where status = 'pending';
create index reviews_pending_final on reviews (final_deadline) where status = 'pending';

-- What humans are told: one row per escalation or default, read by dashboards and by whatever
-- delivers notifications (e-mail, chat) in a deployment.
create table notifications (
    id          bigint generated always as identity primary key,
    tenant_id   uuid not null references tenants (id),
    review_id   uuid references reviews (id),
    kind        text not null check (kind in ('review_escalated', 'review_defaulted')),
    message     text not null check (length(message) between 1 and 2000),
    created_at  timestamptz not null default now(),
    -- One notification of each kind per review, however often the sweep runs.
    unique (review_id, kind)
);
create index notifications_tenant_created on notifications (tenant_id, created_at);

-- ---------------------------------------------------------------------------------------------
-- Governance: the append-only audit log, budgets and their ledger.

create table audit_log (
    id                    bigint generated always as identity primary key,
    tenant_id             uuid not null references tenants (id),
    at                    timestamptz not null default now(),
    -- A reviewer's subject claim, or 'judge' / 'planner' / 'system'.
    actor                 text not null check (length(actor) between 1 and 200),
    action                text not null check (action ~ '^[a-z][a-z0-9_.]{0,63}$'),
    goal_id               uuid references goals (id),
    task_id               uuid references tasks (id),
    review_id             uuid references reviews (id),
    artifact_hash         text check (artifact_hash ~ '^[0-9a-f]{64}$'),
    edited_artifact_hash  text check (edited_artifact_hash ~ '^[0-9a-f]{64}$'),
    policy_version        integer,
    reasoning             text,
    request_id            text,
    details               jsonb not null default '{}'::jsonb check (jsonb_typeof(details) = 'object')
);
create index audit_log_goal on audit_log (goal_id, at) where goal_id is not null;
create index audit_log_review on audit_log (review_id, at) where review_id is not null;
create index audit_log_tenant_at on audit_log (tenant_id, at);

-- Append-only for everyone, the owner included: rows can be inserted, never changed or removed.
create trigger audit_log_no_update_delete before update or delete on audit_log
    for each row execute function refuse_change();
create trigger audit_log_no_truncate before truncate on audit_log
    for each statement execute function refuse_change();

-- Money is integer minor units (cents); a balance can never go below zero.
create table budgets (
    agent_id       uuid primary key references agents (id),
    currency       text not null check (currency ~ '^[A-Z]{3,5}$'),
    balance_cents  bigint not null check (balance_cents >= 0),
    updated_at     timestamptz not null default now()
);

create type ledger_kind as enum ('spend', 'top_up');

create table ledger (
    id               bigint generated always as identity primary key,
    agent_id         uuid not null references budgets (agent_id),
    idempotency_key  text not null check (length(idempotency_key) between 1 and 200),
    kind             ledger_kind not null,
    amount_cents     bigint not null check (amount_cents > 0),
    balance_after    bigint not null check (balance_after >= 0),
    task_id          uuid references tasks (id),
    memo             text,
    created_at       timestamptz not null default now(),
    -- A retried spend with the same key is charged once.
    unique (agent_id, idempotency_key)
);
create index ledger_agent_created on ledger (agent_id, created_at);

-- budget_spend: a conditional decrement plus a ledger row, under the budget row's lock, in one
-- statement for the caller: the balance never goes below zero, and a spend key is charged once.
create function budget_spend(
    p_agent_id  uuid,
    p_key       text,
    p_amount    bigint,
    p_task_id   uuid,
    p_memo      text
)
returns table (outcome text, balance_cents bigint)
language plpgsql as $$
declare
    v_balance  bigint;
    v_prior    ledger%rowtype;
begin
    if p_amount is null or p_amount <= 0 then
        raise exception 'budget_spend: amount must be positive, got %', p_amount
            using errcode = 'invalid_parameter_value';
    end if;

    -- The budget row's lock serializes every spend of this agent: the key check, the balance
    -- check and the decrement below see one consistent state.
    select b.balance_cents into v_balance from budgets b where b.agent_id = p_agent_id for update;
    if not found then
        return query select 'no_budget'::text, null::bigint;
        return;
    end if;

    select * into v_prior from ledger l where l.agent_id = p_agent_id and l.idempotency_key = p_key;
    if found then
        if v_prior.kind = 'spend' and v_prior.amount_cents = p_amount then
            return query select 'duplicate'::text, v_prior.balance_after;
        else
            return query select 'key_reused'::text, v_balance;
        end if;
        return;
    end if;

    if v_balance < p_amount then
        return query select 'insufficient'::text, v_balance;
        return;
    end if;

    update budgets b set balance_cents = b.balance_cents - p_amount, updated_at = now()
        where b.agent_id = p_agent_id
        returning b.balance_cents into v_balance;
    insert into ledger (agent_id, idempotency_key, kind, amount_cents, balance_after, task_id, memo)
        values (p_agent_id, p_key, 'spend', p_amount, v_balance, p_task_id, p_memo);
    return query select 'spent'::text, v_balance;
end
$$;

-- ---------------------------------------------------------------------------------------------
-- occ_commit: the general OCC commit, for any read and write sets, in one statement for the
-- caller (the store tries a one-statement path first for the common single-key commit, and
-- comes here when that one did not apply).
--
-- It checks the versions of exactly the state a task read and bumps the versions of exactly
-- what it writes, and inserts the task's commit record, or reports which keys moved. The rows
-- it touches are locked in key order, so committers sharing keys queue instead of deadlocking,
-- and committers with disjoint keys never wait for each other. A task that committed while
-- this call waited is reported from its record: 'duplicate' (the same result, a no-op success)
-- or 'settled' (another result; `committed_result` says which). A second record for a task is
-- refused by the primary key of `commits` (unique_violation), which undoes the bumps too.
create function occ_commit(
    p_agent_id       uuid,
    p_task_id        uuid,
    p_result_id      uuid,
    p_commit_hash    text,
    p_read_keys      text[],
    p_read_versions  bigint[],
    p_write_keys     text[]
)
returns table (outcome text, input_versions jsonb, output_versions jsonb, moved jsonb,
               committed_result uuid)
language plpgsql as $$
declare
    v_keys     text[];
    v_current  jsonb;
    v_moved    jsonb;
    v_input    jsonb;
    v_output   jsonb;
begin
    if cardinality(p_read_keys) <> cardinality(p_read_versions) then
        raise exception 'occ_commit: % read keys but % versions', cardinality(p_read_keys), cardinality(p_read_versions)
            using errcode = 'invalid_parameter_value';
    end if;

    v_keys := array(select distinct k from unnest(p_read_keys || p_write_keys) as k order by k);

    -- Lock the rows in key order: committers sharing keys queue here and never deadlock.
    select coalesce(jsonb_object_agg(s.key, s.version), '{}'::jsonb) into v_current
        from (select key, version from agent_state
              where agent_id = p_agent_id and key = any (v_keys)
              order by key
              for update) s;

    -- A key never written has no row yet (version 0): create the missing ones, then lock again.
    if (select count(*) from jsonb_object_keys(v_current)) < cardinality(v_keys) then
        insert into agent_state (agent_id, key)
            select p_agent_id, k from unnest(v_keys) as k
            on conflict do nothing;
        select coalesce(jsonb_object_agg(s.key, s.version), '{}'::jsonb) into v_current
            from (select key, version from agent_state
                  where agent_id = p_agent_id and key = any (v_keys)
                  order by key
                  for update) s;
    end if;

    select coalesce(jsonb_agg(jsonb_build_object('key', r.k, 'expected', r.v, 'actual', (v_current ->> r.k)::bigint)
                              order by r.k), '[]'::jsonb)
        into v_moved
        from unnest(p_read_keys, p_read_versions) as r (k, v)
        where (v_current ->> r.k)::bigint is distinct from r.v;

    if jsonb_array_length(v_moved) > 0 then
        -- The task may have committed while this call waited for the locks: this result (a
        -- duplicate, a no-op success) or another one (the task is settled).
        return query
            select case when c.result_id = p_result_id then 'duplicate' else 'settled' end,
                   c.input_state_version, c.output_state_version, '[]'::jsonb, c.result_id
            from commits c
            where c.task_id = p_task_id;
        if not found then
            return query select 'conflict'::text, null::jsonb, null::jsonb, v_moved, null::uuid;
        end if;
        return;
    end if;

    select coalesce(jsonb_object_agg(r.k, r.v), '{}'::jsonb) into v_input
        from unnest(p_read_keys, p_read_versions) as r (k, v);

    with bumped as (
        update agent_state set version = version + 1, updated_at = now()
        where agent_id = p_agent_id and key = any (p_write_keys)
        returning key, version
    )
    select coalesce(jsonb_object_agg(key, version), '{}'::jsonb) into v_output from bumped;

    -- The task's second record is refused by the primary key (unique_violation), which undoes
    -- the bumps too.
    insert into commits (task_id, result_id, agent_id, commit_hash, input_state_version,
                         output_state_version)
        values (p_task_id, p_result_id, p_agent_id, p_commit_hash, v_input, v_output);

    return query select 'committed'::text, v_input, v_output, '[]'::jsonb, p_result_id;
end
$$;

-- ---------------------------------------------------------------------------------------------
-- Media and artifact metadata (blobs live in S3; rows hold keys and hashes), their lineage
-- (prompt -> renders -> edits -> final), the tool provenance, and a time-partitioned
-- append-only event table for high-velocity metadata.

create type asset_kind as enum ('text', 'image', 'video', 'audio', 'json');

-- Artifacts are stored under content-addressed keys: two tasks that produce the same bytes share
-- one S3 object, each with its own asset row (its own provenance), so the key is not unique. An
-- asset is one artifact of one result.
create table assets (
    id            uuid primary key,
    tenant_id     uuid not null,
    agent_id      uuid not null,
    task_id       uuid references tasks (id),
    kind          asset_kind not null,
    s3_key        text not null check (length(s3_key) between 1 and 1024),
    sha256        text not null check (sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes    bigint not null check (size_bytes >= 0),
    media_type    text not null check (media_type ~ '^[a-z]+/[a-z0-9.+-]+$'),
    -- Normalized provenance fields for queries; the whole tool call snapshot in JSONB.
    tool_name     text not null check (length(tool_name) between 1 and 200),
    tool_version  text,
    platform      text,
    provenance    jsonb not null check (jsonb_typeof(provenance) = 'object'),
    created_at    timestamptz not null default now(),
    -- The result the artifact belongs to (the worker records assets before the judge records
    -- the result, so this is not a foreign key).
    result_id     uuid,
    foreign key (tenant_id, agent_id) references agents (tenant_id, id)
);
create index assets_agent_created on assets (agent_id, created_at);
create index assets_sha256 on assets (sha256);
create index assets_tool on assets (tool_name, created_at);
create index assets_s3_key on assets (s3_key);
create index assets_task on assets (task_id);

create table asset_lineage (
    asset_id   uuid not null references assets (id),
    parent_id  uuid not null references assets (id),
    relation   text not null check (relation in ('derived_from', 'edit_of', 'render_of', 'variant_of')),
    primary key (asset_id, parent_id),
    check (asset_id <> parent_id)
);
create index asset_lineage_parent on asset_lineage (parent_id);

create type asset_event_type as enum
    ('created', 'rendered', 'edited', 'reviewed', 'approved', 'rejected', 'published', 'engagement');

create table asset_events (
    id           bigint generated always as identity,
    occurred_at  timestamptz not null default now(),
    asset_id     uuid not null references assets (id),
    agent_id     uuid not null,
    event_type   asset_event_type not null,
    platform     text,
    status       text,
    payload      jsonb not null default '{}'::jsonb check (jsonb_typeof(payload) = 'object'),
    primary key (occurred_at, id)
) partition by range (occurred_at);

-- Rows outside every weekly partition land here rather than failing the insert.
create table asset_events_default partition of asset_events default;

create index asset_events_agent_time on asset_events (agent_id, occurred_at);
create index asset_events_asset_time on asset_events (asset_id, occurred_at);
create index asset_events_open on asset_events (agent_id, occurred_at)
    where status in ('pending', 'review', 'failed');

-- Creates the weekly partitions covering [from, from + weeks), skipping those that exist.
create function ensure_asset_event_partitions(from_ts timestamptz, weeks integer)
returns integer language plpgsql as $$
declare
    week_start timestamptz := date_trunc('week', from_ts);
    created integer := 0;
    part text;
begin
    for i in 0 .. greatest(weeks, 1) - 1 loop
        part := format('asset_events_%s', to_char(week_start, 'IYYY"w"IW'));
        if to_regclass(part) is null then
            execute format(
                'create table %I partition of asset_events for values from (%L) to (%L)',
                part, week_start, week_start + interval '1 week');
            created := created + 1;
        end if;
        week_start := week_start + interval '1 week';
    end loop;
    return created;
end
$$;

-- Append-only, like the audit log.
create trigger asset_events_no_update_delete before update or delete on asset_events
    for each row execute function refuse_change();

select ensure_asset_event_partitions(now() - interval '1 week', 6);

-- ---------------------------------------------------------------------------------------------
-- The transactional outbox: every message a decision causes is a row written in the decision's
-- own transaction, and a relay sends the committed rows to their queue (SendMessageBatch) and
-- marks them sent. A message is therefore never sent for state that did not commit, and never
-- lost for state that did.

create table outbox (
    id            bigint generated always as identity primary key,
    queue         text not null check (queue in ('goal', 'task', 'review')),
    -- The envelope, exactly as it goes on the queue (SQS takes at most 256 KiB).
    body          text not null check (octet_length(body) between 2 and 262144),
    -- One row per message identity (`task:<id>:<attempt>`, `replan:<id>:<attempt>`...): writing
    -- the same message again adds nothing, and the reconciler re-arms the row to send it again.
    dedup_key     text unique check (length(dedup_key) between 1 and 200),
    -- The goal the message is about: a handler relays the rows of the goals it touched.
    goal_id       uuid references goals (id),
    created_at    timestamptz not null default now(),
    -- When the relay may (next) send it: a failed send backs off.
    available_at  timestamptz not null default now(),
    sent_at       timestamptz,
    attempts      integer not null default 0 check (attempts >= 0),
    last_error    text
);
create index outbox_unsent on outbox (available_at, id) where sent_at is null;
create index outbox_unsent_goal on outbox (goal_id, id) where sent_at is null;
create index outbox_sent on outbox (sent_at) where sent_at is not null;
