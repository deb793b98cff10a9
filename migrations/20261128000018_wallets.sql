-- One wallet per agent on an EVM chain (issue 33). The key lives in Secrets Manager
-- (`<stage>/agents/<agent id>/wallet`); PostgreSQL knows the address only.
alter table agents add column wallet_address text
    check (wallet_address ~ '^0x[0-9a-f]{40}$');
create unique index agents_wallet_address on agents (wallet_address)
    where wallet_address is not null;

-- A transfer's budget is spent when it is approved. When its execute task fails or is
-- cancelled and nothing reached the chain (no effect, or one that never left `intended`, or
-- one the chain or the wallet refused), the spend goes back to the budget as a `release`
-- row, once. An effect that was sent and whose outcome is unknown keeps its spend: the money
-- may have moved, and the reconciler tells.
create or replace function release_transfer() returns trigger
language plpgsql as $$
declare
    v_key     text := 'approval:' || new.approval_id;
    v_spent   bigint;
    v_balance bigint;
begin
    select amount_micros into v_spent from ledger
    where agent_id = new.agent_id and idempotency_key = v_key
      and kind = 'spend' and category = 'transfer';
    if not found then
        return null;
    end if;
    if exists (select 1 from effects
               where approval_id = new.approval_id and state not in ('intended', 'failed')) then
        return null;
    end if;
    if exists (select 1 from ledger
               where agent_id = new.agent_id and idempotency_key = v_key || ':release') then
        return null;
    end if;
    update budgets set balance_micros = balance_micros + v_spent, updated_at = now()
    where agent_id = new.agent_id
    returning balance_micros into v_balance;
    insert into ledger (agent_id, idempotency_key, kind, category, amount_micros,
                        balance_after_micros, task_id, memo)
    values (new.agent_id, v_key || ':release', 'release', 'transfer', v_spent, v_balance, new.id,
            'the transfer did not happen: its spend is released');
    return null;
end
$$;

create trigger tasks_release_transfer
    after update of status on tasks
    for each row
    when (new.kind = 'execute' and new.approval_id is not null
          and new.status in ('failed', 'cancelled')
          and old.status is distinct from new.status)
    execute function release_transfer();

-- What the reconciler last found comparing each wallet with the chain: the settled transfers
-- of the effect ledger against the token's transfers and balance on chain. A difference is
-- audited once, when it appears or changes.
create table wallet_checks (
    agent_id        uuid primary key references agents (id),
    address         text not null,
    checked_at      timestamptz not null,
    block           bigint not null,
    -- The token's balance on chain, and what the ledger says it should be (everything the
    -- wallet received, less the transfers Chimera confirmed), in the token's smallest units.
    balance_units   numeric not null,
    expected_units  numeric not null,
    -- Each difference found, as a sentence; empty when ledger and chain agree.
    differences     text[] not null default '{}'
);
