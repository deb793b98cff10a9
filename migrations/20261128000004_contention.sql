-- Contention and quotas: conflicts that do not use up attempts, work that waits for its time,
-- and platform quotas as atomic counters.

-- A conflict (the state a task read moved before it committed) is not the task's fault: its
-- replan is another attempt, but not one of the policy's. `conflicts` counts them; the attempts
-- the policy counts are `attempt - conflicts`.
alter table tasks add column conflicts integer not null default 0 check (conflicts >= 0);
alter table tasks drop constraint tasks_check;
alter table tasks add constraint tasks_counted_attempts check (attempt - conflicts <= max_attempts);
-- When the task may go: a replan after a conflict backs off; an approved effect over its
-- platform's quota waits for the window it reserved. Null: now.
alter table tasks add column not_before timestamptz;

-- The tasks of an agent in flight: after a conflict, how many others contend for its keys.
create index tasks_agent_in_flight on tasks (agent_id) where status in ('queued', 'running', 'retrying');

-- When a message is to be delivered (null: as soon as it is sent). The relay sends it with a
-- delivery delay once it is due within the queue's longest delay.
alter table outbox add column deliver_at timestamptz;

-- Platform quotas: per agent, platform and kind of post, one counter per fixed window (a UTC day
-- for posts, a UTC hour for replies). An approval reserves in the same transaction with
-- `used = used + 1 where used < limit`, in the first window with room: commutative, so
-- approvals of one agent never conflict over it.
create table quota_windows (
    agent_id      uuid not null references agents (id),
    platform      text not null check (length(platform) between 1 and 40),
    kind          text not null check (kind in ('post', 'reply')),
    window_start  timestamptz not null,
    used          integer not null default 0 check (used >= 0),
    primary key (agent_id, platform, kind, window_start)
);

-- The reservation of one approved effect (its `execute` task), released once if the effect
-- fails for good or is cancelled.
create table quota_reservations (
    task_id       uuid primary key references tasks (id),
    agent_id      uuid not null,
    platform      text not null,
    kind          text not null,
    window_start  timestamptz not null,
    -- The window's limit when the reservation was made.
    quota         integer not null check (quota >= 1),
    reserved_at   timestamptz not null default now(),
    released_at   timestamptz,
    foreign key (agent_id, platform, kind, window_start)
        references quota_windows (agent_id, platform, kind, window_start)
);

-- Whatever fails or cancels an effect (the worker's refusal, the reconciler giving up, a
-- cancelled goal), its reservation goes back to the window.
create function release_quota() returns trigger
language plpgsql as $$
begin
    with released as (
        update quota_reservations set released_at = now()
        where task_id = new.id and released_at is null
        returning agent_id, platform, kind, window_start
    )
    update quota_windows w set used = w.used - 1
    from released r
    where w.agent_id = r.agent_id and w.platform = r.platform and w.kind = r.kind
      and w.window_start = r.window_start and w.used > 0;
    return null;
end
$$;

create trigger tasks_release_quota
    after update of status on tasks
    for each row
    when (new.kind = 'execute' and new.status in ('failed', 'cancelled')
          and old.status is distinct from new.status)
    execute function release_quota();
