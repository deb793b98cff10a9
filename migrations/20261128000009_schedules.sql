-- Recurring goals: how far each schedule of an agent has been submitted. Each goal carries its
-- occurrence in its idempotency key, so an occurrence is one goal however often the scheduler
-- runs; this row spares the scheduler from submitting it again, and tells it which ticks were
-- missed while it was not running.
create table schedule_ticks (
    agent_id         uuid not null references agents (id),
    schedule         text not null check (schedule ~ '^[a-z0-9_-]{1,48}$'),
    last_occurrence  timestamptz not null,
    primary key (agent_id, schedule)
);
-- The policies that declare schedules (the scheduler reads the agents' current ones).
create index policies_scheduled on policies (agent_id, version) where document ? 'schedules';
