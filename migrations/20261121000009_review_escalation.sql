-- Nothing waits forever: a pending review past its `due_at` is escalated once (priority up,
-- a notification for the tenant's reviewers); past its `final_deadline` it takes the policy's
-- default decision (`default_reject`, status `expired`). The sweep that does both locks the
-- rows it takes with SKIP LOCKED, so sweeps may overlap.

alter table reviews
    add column escalated_at timestamptz,
    -- One line for the queue: a proposal's text, or what a transfer moves to whom.
    add column summary text check (length(summary) <= 300);

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

create index reviews_pending_final on reviews (final_deadline) where status = 'pending';
