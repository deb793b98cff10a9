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

-- What an approval released, as the digest of the effect it approved ({"action", "arguments"}):
-- a worker performs an effect only when the task's arguments hash to it.
alter table reviews add column effect_sha256 text check (effect_sha256 ~ '^[0-9a-f]{64}$');

-- How often the reconciler re-sent the current attempt of a task that made no progress; after
-- a few, the task is failed and surfaced instead of being re-sent for ever.
alter table tasks add column redrives integer not null default 0 check (redrives >= 0);

-- The reconciler looks for work that stopped moving.
create index tasks_moving_since on tasks (updated_at)
    where status in ('blocked', 'queued', 'running', 'retrying');
