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
