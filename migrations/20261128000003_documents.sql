-- Agents as documents: SOUL.md (the persona) and AGENTS.md (the policy), each versioned and
-- content-hashed. `agents.persona` and `policies.document` stay what the pipeline reads (the
-- parsed form of the current version); the documents are kept as written beside them.

alter table agents add column display_name text check (length(display_name) between 1 and 80);
-- The platforms the agent posts on.
alter table agents add column platforms text[] not null default '{}'
    check (cardinality(platforms) <= 10);
alter table agents add column persona_version integer not null default 1
    check (persona_version >= 1);

create table personas (
    agent_id    uuid not null references agents (id),
    version     integer not null check (version >= 1),
    -- SOUL.md as written (null for a persona set before documents), and its SHA-256.
    source      text check (octet_length(source) between 1 and 24576),
    sha256      text check (sha256 ~ '^[0-9a-f]{64}$'),
    persona     jsonb not null check (jsonb_typeof(persona) = 'object'),
    created_by  text check (length(created_by) between 1 and 200),
    created_at  timestamptz not null default now(),
    primary key (agent_id, version),
    check ((source is null) = (sha256 is null))
);
insert into personas (agent_id, version, persona)
    select id, 1, persona from agents;
alter table agents
    add constraint agents_persona_fk foreign key (id, persona_version)
    references personas (agent_id, version) deferrable initially deferred;

-- AGENTS.md as written (null for a policy set before documents), and its SHA-256.
alter table policies add column source text check (octet_length(source) between 1 and 24576);
alter table policies add column sha256 text check (sha256 ~ '^[0-9a-f]{64}$');
alter table policies add column created_by text check (length(created_by) between 1 and 200);
alter table policies add constraint policies_source_hash check ((source is null) = (sha256 is null));
