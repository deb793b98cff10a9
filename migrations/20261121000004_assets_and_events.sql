-- Media and artifact metadata (blobs live in S3; rows hold keys and hashes), their lineage
-- (prompt -> renders -> edits -> final), the tool provenance, and a time-partitioned
-- append-only event table for high-velocity metadata.

create type asset_kind as enum ('text', 'image', 'video', 'audio', 'json');

create table assets (
    id            uuid primary key,
    tenant_id     uuid not null,
    agent_id      uuid not null,
    task_id       uuid references tasks (id),
    kind          asset_kind not null,
    s3_key        text not null unique check (length(s3_key) between 1 and 1024),
    sha256        text not null check (sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes    bigint not null check (size_bytes >= 0),
    media_type    text not null check (media_type ~ '^[a-z]+/[a-z0-9.+-]+$'),
    -- Normalized provenance fields for queries; the whole tool call snapshot in JSONB.
    tool_name     text not null check (length(tool_name) between 1 and 200),
    tool_version  text,
    platform      text,
    provenance    jsonb not null check (jsonb_typeof(provenance) = 'object'),
    created_at    timestamptz not null default now(),
    foreign key (tenant_id, agent_id) references agents (tenant_id, id)
);
create index assets_agent_created on assets (agent_id, created_at);
create index assets_sha256 on assets (sha256);
create index assets_tool on assets (tool_name, created_at);

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
create function asset_events_are_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'asset_events is append-only: % is not allowed', tg_op
        using errcode = 'insufficient_privilege';
end
$$;
create trigger asset_events_no_update_delete before update or delete on asset_events
    for each row execute function asset_events_are_append_only();

select ensure_asset_event_partitions(now() - interval '1 week', 6);
