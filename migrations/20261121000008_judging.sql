-- What the judge records: why a review was opened, and the risk types reviewers filter by.
--
-- A review is opened for a result a human must see (sensitive, medium confidence, missing
-- disclosure, financial, or failed after its last attempt), and also, already decided, for an
-- effect the judge approved on its own: the approval's id is the effect's idempotency key and
-- the `execute` task's `approval_id`.

alter table reviews
    -- The judge's reasons, as the routing policy gave them ([{"reason": "sensitive", ...}]).
    add column reasons     jsonb not null default '[]'::jsonb check (jsonb_typeof(reasons) = 'array'),
    add column risk_types  text[] not null default '{}'
        check (risk_types <@ array['sensitive', 'medium_confidence', 'missing_disclosure',
                                   'financial', 'failed_after_retries']::text[]),
    -- The task attempt the reviewed result belongs to.
    add column task_id     uuid references tasks (id);

create index reviews_task on reviews (task_id);
create index reviews_pending_risk on reviews using gin (risk_types) where status = 'pending';
