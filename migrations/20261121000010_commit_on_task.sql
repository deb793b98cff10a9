-- A commit is recorded on the task it settles, not on the result.
--
-- Measured with 8 concurrent committers (scripts/bench occ_commit): a commit wrote three rows
-- (the state key, the result marked committed, the task's status) where the raw conditional
-- UPDATE writes one, and each row updated costs its own tuple, WAL record and check
-- constraints. The task's row changes anyway (its status becomes `committed`), so the result it
-- committed and the versions checked and written go there: a commit now writes the state keys
-- and the task. A result is written once, when it is recorded, and never updated.
--
-- A task commits at most one result; committing the same result again is a no-op success
-- (the commit hash covers the task id, and a task's results are unique by commit hash).
-- `committed_result` has no foreign key on purpose: the check would lock the result's row on
-- every commit. The commit statements check that the result was recorded under the task.

do $$
begin
    if exists (select 1 from results where committed_at is not null
               group by task_id having count(*) > 1) then
        raise exception 'a task has more than one committed result; resolve it before this migration';
    end if;
end
$$;

alter table tasks
    add column committed_result uuid,
    add column committed_at timestamptz,
    -- {"key": version} read and checked / written and bumped to.
    add column input_state_version jsonb,
    add column output_state_version jsonb,
    add constraint tasks_commit_complete check (
        (committed_result is null) = (committed_at is null)
        and (committed_result is null) = (input_state_version is null)
        and (committed_result is null) = (output_state_version is null));

update tasks t
    set committed_result = r.id,
        committed_at = r.committed_at,
        input_state_version = r.input_state_version,
        output_state_version = r.output_state_version
    from results r
    where r.task_id = t.id and r.committed_at is not null;

drop view commits;
alter table results
    drop constraint results_commit_complete,
    drop column committed_at,
    drop column input_state_version,
    drop column output_state_version;

-- What was committed, for readers (one row per commit).
create view commits as
    select r.commit_hash, r.id as result_id, t.agent_id, t.input_state_version,
           t.output_state_version, t.committed_at, t.id as task_id
    from tasks t
    join results r on r.id = t.committed_result
    where t.committed_result is not null;

drop function occ_refuse_unclaimed(uuid);

-- Raised inside a commit statement to undo it: the versions were bumped but the task could not
-- be settled (it committed a result before, or the result was not recorded under it).
create function occ_refuse_unsettled(p_task_id uuid, p_result_id uuid)
returns boolean
language plpgsql as $$
begin
    raise exception 'occ_commit: task % committed before, or result % was not recorded under it',
        p_task_id, p_result_id
        using errcode = 'CH001';
end
$$;

-- The general commit, for any read and write sets; see 20261121000006_commit_on_result.sql.
create or replace function occ_commit(
    p_agent_id       uuid,
    p_task_id        uuid,
    p_result_id      uuid,
    p_commit_hash    text,
    p_read_keys      text[],
    p_read_versions  bigint[],
    p_write_keys     text[]
)
returns table (outcome text, input_versions jsonb, output_versions jsonb, moved jsonb)
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
        -- The same result may have committed while this call waited for the locks.
        return query
            select 'duplicate'::text, t.input_state_version, t.output_state_version, '[]'::jsonb
            from tasks t
            where t.id = p_task_id and t.committed_result = p_result_id;
        if not found then
            return query select 'conflict'::text, null::jsonb, null::jsonb, v_moved;
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

    update tasks
        set status = 'committed', committed_result = p_result_id, committed_at = now(),
            input_state_version = v_input, output_state_version = v_output, updated_at = now()
        where id = p_task_id and agent_id = p_agent_id and committed_result is null
          and exists (select 1 from results r
                      where r.id = p_result_id and r.task_id = p_task_id
                        and r.commit_hash = p_commit_hash);
    if not found then
        perform occ_refuse_unsettled(p_task_id, p_result_id);
    end if;

    return query select 'committed'::text, v_input, v_output, '[]'::jsonb;
end
$$;
