-- The two places where concurrency decides correctness, each one statement for the caller:
--
-- occ_commit: checks the versions of exactly the state a task read and bumps the versions of
-- exactly what it writes, recording the commit, or reports which keys moved. The rows it touches
-- are locked in key order, so committers sharing keys queue instead of deadlocking, and
-- committers with disjoint keys never wait for each other. A commit hash seen before is a
-- no-op success ('duplicate'): when it moved the versions this commit read, it is found in the
-- conflict branch; when it wrote nothing, the commits primary key refuses the second row
-- (unique_violation, which the caller reads as a duplicate).
--
-- budget_spend: a conditional decrement plus a ledger row, under the budget row's lock: the
-- balance never goes below zero, and a spend key is charged once.

create function occ_commit(
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
    v_prior    commits%rowtype;
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
        select * into v_prior from commits where commit_hash = p_commit_hash;
        if found then
            return query select 'duplicate'::text, v_prior.input_state_version, v_prior.output_state_version, '[]'::jsonb;
        else
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

    insert into commits (commit_hash, result_id, agent_id, input_state_version, output_state_version)
        values (p_commit_hash, p_result_id, p_agent_id, v_input, v_output);

    update tasks set status = 'committed', updated_at = now()
        where id = p_task_id and status <> 'committed';

    return query select 'committed'::text, v_input, v_output, '[]'::jsonb;
end
$$;

create function budget_spend(
    p_agent_id  uuid,
    p_key       text,
    p_amount    bigint,
    p_task_id   uuid,
    p_memo      text
)
returns table (outcome text, balance_cents bigint)
language plpgsql as $$
declare
    v_balance  bigint;
    v_prior    ledger%rowtype;
begin
    if p_amount is null or p_amount <= 0 then
        raise exception 'budget_spend: amount must be positive, got %', p_amount
            using errcode = 'invalid_parameter_value';
    end if;

    -- The budget row's lock serializes every spend of this agent: the key check, the balance
    -- check and the decrement below see one consistent state.
    select b.balance_cents into v_balance from budgets b where b.agent_id = p_agent_id for update;
    if not found then
        return query select 'no_budget'::text, null::bigint;
        return;
    end if;

    select * into v_prior from ledger l where l.agent_id = p_agent_id and l.idempotency_key = p_key;
    if found then
        if v_prior.kind = 'spend' and v_prior.amount_cents = p_amount then
            return query select 'duplicate'::text, v_prior.balance_after;
        else
            return query select 'key_reused'::text, v_balance;
        end if;
        return;
    end if;

    if v_balance < p_amount then
        return query select 'insufficient'::text, v_balance;
        return;
    end if;

    update budgets b set balance_cents = b.balance_cents - p_amount, updated_at = now()
        where b.agent_id = p_agent_id
        returning b.balance_cents into v_balance;
    insert into ledger (agent_id, idempotency_key, kind, amount_cents, balance_after, task_id, memo)
        values (p_agent_id, p_key, 'spend', p_amount, v_balance, p_task_id, p_memo);
    return query select 'spent'::text, v_balance;
end
$$;
