-- The console's reads. The fleet view counts, per agent of a tenant, its goals in flight, its
-- tasks failed in the last day and its last published effects: each from an index over just
-- those rows, instead of a scan of every goal and task of the agent.
create index goals_agent_in_flight on goals (agent_id)
    where status in ('received', 'planning', 'in_progress', 'awaiting_review');
create index tasks_agent_failed on tasks (agent_id, updated_at) where status = 'failed';
create index tasks_agent_published on tasks (agent_id, updated_at desc)
    where kind = 'execute' and status = 'committed';
