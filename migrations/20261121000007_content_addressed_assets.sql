-- Artifacts are stored under content-addressed keys: two tasks that produce the same bytes share
-- one S3 object, each with its own asset row (its own provenance). The key is no longer unique;
-- an asset is one artifact of one result.

alter table assets drop constraint assets_s3_key_key;
-- The result the artifact belongs to (the worker records assets before the judge records the
-- result, so this is not a foreign key).
alter table assets add column result_id uuid;
create index assets_s3_key on assets (s3_key);
create index assets_task on assets (task_id);
