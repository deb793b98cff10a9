-- Open goal event streams (`GET /goals/{id}/events`), at most a set number per caller (issue
-- 34): a stream holds a connection and, as deployed, a Lambda execution environment, so one
-- caller's streams must not use up what every tenant shares. A stream's row is its lease:
-- taken when it opens, removed when it ends; one whose process died lapses at `expires_at`.
create table event_streams (
    id          uuid primary key default gen_random_uuid(),
    tenant_id   uuid not null references tenants (id),
    subject     text not null,
    goal_id     uuid not null,
    opened_at   timestamptz not null default now(),
    expires_at  timestamptz not null
);

create index event_streams_caller on event_streams (tenant_id, subject, expires_at);
