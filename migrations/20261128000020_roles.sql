-- Least privilege in the database (issue 34): the migrations' runner owns every table; each
-- function works as a role of its own that can do only what that function does, granted here
-- table by table. No role but the owner may alter a table, disable a trigger, or update,
-- delete or truncate the audit log (the planner cannot even read it). Roles are the cluster's
-- (shared by its databases): created once, NOLOGIN; as deployed, `migrate` gives each the
-- password of its secret (LOGIN), locally the runner's pools take their role when they connect.
do $$
declare
    name text;
begin
    foreach name in array array['chimera_planner', 'chimera_worker', 'chimera_judge', 'chimera_api', 'chimera_sweep'] loop
        if not exists (select 1 from pg_roles where rolname = name) then
            begin
                execute format('create role %I nologin', name);
            exception when duplicate_object or unique_violation then
                null; -- created meanwhile by another database's migration
            end;
        end if;
    end loop;
end
$$;

revoke create on schema public from public;
grant usage on schema public to chimera_planner, chimera_worker, chimera_judge, chimera_api, chimera_sweep;

-- The engagement collector (the worker) makes next weeks' asset_events partitions: DDL, so
-- the function runs as its owner, and only the worker may call it.
alter function ensure_asset_event_partitions(timestamptz, integer) security definer set search_path = public, pg_temp;
revoke execute on function ensure_asset_event_partitions(timestamptz, integer) from public;
grant execute on function ensure_asset_event_partitions(timestamptz, integer) to chimera_worker;

-- The planner: plans goals, releases ready tasks, replans; reads the agent's context, week and
-- memories; meters its model calls.
grant select on agents, policies, personas, results, commits, assets, asset_events, memories to chimera_planner;
grant select, update on goals, budgets to chimera_planner;
grant select, insert, update on tasks, outbox to chimera_planner;
grant select, insert on task_dependencies, agent_state, ledger to chimera_planner;

-- The worker: admits, produces, defers and refuses attempts; the effect ledger; assets and
-- engagement; meters its model calls. Failing an execute task fires the release triggers
-- (quota and transfer reservations).
grant select on task_dependencies, reviews, results, commits, agents, policies, personas to chimera_worker;
grant select, update on tasks, goals, budgets, quota_reservations, quota_windows to chimera_worker;
grant select, insert, update on outbox, effects to chimera_worker;
grant select, insert on assets, asset_events, ledger to chimera_worker;
grant insert, select (id) on audit_log to chimera_worker;

-- The judge: records, judges and settles results; commits; holds for review; schedules
-- effects with their quota and budget; remembers; releases what a commit unblocks.
grant select on agents, policies, personas, effects, assets to chimera_judge;
grant select, update on goals, budgets to chimera_judge;
grant select, insert, update on tasks, agent_state, reviews, quota_windows, quota_reservations, outbox to chimera_judge;
grant select, insert on task_dependencies, results, commits, ledger, memories to chimera_judge;
grant insert, select (id) on audit_log to chimera_judge;

-- The API: tenants, agents and their documents, goals, decisions, budgets, the console's
-- reads, event stream leases. It reads the audit log (the trail, a goal's view).
grant select on results, effects, assets, asset_events, memories, notifications, schedule_ticks, wallet_checks to chimera_api;
grant select, insert on tenants, personas, policies, task_dependencies, commits, ledger, audit_log to chimera_api;
grant select, update on reviews to chimera_api;
grant select, insert, update on agents, goals, tasks, agent_state, budgets, quota_windows, quota_reservations, outbox to chimera_api;
grant select, insert, delete on event_streams to chimera_api;

-- The sweep: review deadlines, the reconciler, outdated holds, recurring goals, wallets
-- against the chain, the outbox (relayed and pruned).
grant select on task_dependencies, agents, policies, results, effects to chimera_sweep;
grant select, update on reviews, tasks, budgets, quota_reservations, quota_windows to chimera_sweep;
grant select, insert, update on goals, schedule_ticks, wallet_checks to chimera_sweep;
grant select, insert, update, delete on outbox to chimera_sweep;
grant select, insert on ledger to chimera_sweep;
grant select, insert on notifications to chimera_sweep;
grant insert, select (id) on audit_log to chimera_sweep;
