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
create function audit_log_is_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'audit_log is append-only: % is not allowed', tg_op
        using errcode = 'insufficient_privilege';
end
$$;
create trigger audit_log_no_update_delete before update or delete on audit_log
    for each row execute function audit_log_is_append_only();
create trigger audit_log_no_truncate before truncate on audit_log
    for each statement execute function audit_log_is_append_only();

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
