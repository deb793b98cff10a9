-- A commit writes the state keys and one narrow, insert-only commit record; it no longer
-- updates the task, and no longer looks the result up.
--
-- Measured with 8 concurrent committers (scripts/bench occ_commit, and pgbench with the same
-- statements): updating the task's row was the dearest part of a commit. The task row is wide,
-- and its status is in an index (`tasks_unfinished`), so every settle was a non-HOT update: a
-- new tuple plus an entry in each of the task's four indexes. Commit / raw conditional UPDATE:
-- settling the task, 56-64%; a narrow record inserted instead, with a lookup of the result in
-- the same statement, 63-72%; the same without the lookup, 72-79%.
--
-- So the OCC commit records what it committed here, and nothing else:
-- - the task's status is workflow, set by the decision that commits (the judge's or a
--   reviewer's), in the same transaction;
-- - a task commits at most one result: the primary key is the task;
-- - the result is not looked up: what is committed is a `Recorded` result (crates/store), which
--   only recording it (refused when it names another agent than its task's) or loading it
--   from `results` makes. Results and a task's agent never change.
-- The record is never changed or removed. It has no foreign keys on purpose: each would lock
-- the referenced row on every commit.

drop view commits;

create table commits (
    task_id               uuid primary key,
    result_id             uuid not null,
    agent_id              uuid not null,
    commit_hash           text not null,
    -- {"key": version} read and checked / written and bumped to.
    input_state_version   jsonb not null check (jsonb_typeof(input_state_version) = 'object'),
    output_state_version  jsonb not null check (jsonb_typeof(output_state_version) = 'object'),
    committed_at          timestamptz not null default now()
);

insert into commits (task_id, result_id, agent_id, commit_hash, input_state_version,
                     output_state_version, committed_at)
    select t.id, t.committed_result, t.agent_id, r.commit_hash, t.input_state_version,
           t.output_state_version, t.committed_at
    from tasks t
    join results r on r.id = t.committed_result;

alter table tasks
    drop constraint tasks_commit_complete,
    drop column committed_result,
    drop column committed_at,
    drop column input_state_version,
    drop column output_state_version;

-- Rows can be inserted, never changed or removed (the owner included). One trigger function
-- serves every append-only table: the audit log and asset events had a copy each.
create function refuse_change() returns trigger language plpgsql as $$
begin
    raise exception '% is append-only: % is not allowed', tg_table_name, tg_op
        using errcode = 'insufficient_privilege';
end
$$;
create trigger commits_no_update_delete before update or delete on commits
    for each statement execute function refuse_change();
create trigger commits_no_truncate before truncate on commits
    for each statement execute function refuse_change();

drop trigger audit_log_no_update_delete on audit_log;
drop trigger audit_log_no_truncate on audit_log;
create trigger audit_log_no_update_delete before update or delete on audit_log
    for each row execute function refuse_change();
create trigger audit_log_no_truncate before truncate on audit_log
    for each statement execute function refuse_change();
drop function audit_log_is_append_only();

drop trigger asset_events_no_update_delete on asset_events;
create trigger asset_events_no_update_delete before update or delete on asset_events
    for each row execute function refuse_change();
drop function asset_events_are_append_only();

-- A commit no longer guards a settle of the task.
drop function occ_refuse_unsettled(uuid, uuid);

-- The general commit, for any read and write sets; see 20261121000006_commit_on_result.sql.
-- It now also says which result a settled task committed (`committed_result`), so its return
-- type changes.
drop function occ_commit(uuid, uuid, uuid, text, text[], bigint[], text[]);
create function occ_commit(
    p_agent_id       uuid,
    p_task_id        uuid,
    p_result_id      uuid,
    p_commit_hash    text,
    p_read_keys      text[],
    p_read_versions  bigint[],
    p_write_keys     text[]
)
returns table (outcome text, input_versions jsonb, output_versions jsonb, moved jsonb,
               committed_result uuid)
language plpgsql as $$
declare
    v_keys     text[];
    v_current  jsonb;
    v_moved    jsonb;
    v_input    jsonb;
    v_output   jsonb;
begin
    if cardinality(p_read_keys) <> cardinality(p_read_versions) then
        raise exception 'occ_commit: % read keys but % versions', cardinality(p_read_keys), cardinality(p_read_versions)
            using errcode = 'invalid_parameter_value';
    end if;

    v_keys := array(select distinct k from unnest(p_read_keys || p_write_keys) as k order by k);

    -- Lock the rows in key order: committers sharing keys queue here and never deadlock.
    select coalesce(jsonb_object_agg(s.key, s.version), '{}'::jsonb) into v_current
        from (select key, version from agent_state
              where agent_id = p_agent_id and key = any (v_keys)
              order by key
              for update) s;

    -- A key never written has no row yet (version 0): create the missing ones, then lock again.
    if (select count(*) from jsonb_object_keys(v_current)) < cardinality(v_keys) then
        insert into agent_state (agent_id, key)
            select p_agent_id, k from unnest(v_keys) as k
            on conflict do nothing;
        select coalesce(jsonb_object_agg(s.key, s.version), '{}'::jsonb) into v_current
            from (select key, version from agent_state
                  where agent_id = p_agent_id and key = any (v_keys)
                  order by key
                  for update) s;
    end if;

    select coalesce(jsonb_agg(jsonb_build_object('key', r.k, 'expected', r.v, 'actual', (v_current ->> r.k)::bigint)
                              order by r.k), '[]'::jsonb)
        into v_moved
        from unnest(p_read_keys, p_read_versions) as r (k, v)
        where (v_current ->> r.k)::bigint is distinct from r.v;

    if jsonb_array_length(v_moved) > 0 then
        -- The task may have committed while this call waited for the locks: this result (a
        -- duplicate, a no-op success) or another one (the task is settled).
        return query
            select case when c.result_id = p_result_id then 'duplicate' else 'settled' end,
                   c.input_state_version, c.output_state_version, '[]'::jsonb, c.result_id
            from commits c
            where c.task_id = p_task_id;
        if not found then
            return query select 'conflict'::text, null::jsonb, null::jsonb, v_moved, null::uuid;
        end if;
        return;
    end if;

    select coalesce(jsonb_object_agg(r.k, r.v), '{}'::jsonb) into v_input
        from unnest(p_read_keys, p_read_versions) as r (k, v);

    with bumped as (
        update agent_state set version = version + 1, updated_at = now()
        where agent_id = p_agent_id and key = any (p_write_keys)
        returning key, version
    )
    select coalesce(jsonb_object_agg(key, version), '{}'::jsonb) into v_output from bumped;

    -- The task's second record is refused by the primary key (unique_violation), which undoes
    -- the bumps too.
    insert into commits (task_id, result_id, agent_id, commit_hash, input_state_version,
                         output_state_version)
        values (p_task_id, p_result_id, p_agent_id, p_commit_hash, v_input, v_output);

    return query select 'committed'::text, v_input, v_output, '[]'::jsonb, p_result_id;
end
$$;
