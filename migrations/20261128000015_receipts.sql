-- When a worker last took up a task's current attempt (issue 31): the reconciler tells work
-- that waits in a backlog (never received since it was sent) from work lost on the way (taken
-- up and never finished, or never received while its queue holds nothing).
alter table tasks add column received_at timestamptz;
