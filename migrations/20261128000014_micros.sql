-- Money below a cent (issue 30): a model call costs a fraction of a cent, so the budget and its
-- ledger keep integer micros (millionths of the currency unit: 10,000 to the cent) and sum
-- exactly. Transfers, limits and top-ups stay in whole cents at the API; a cent is 10,000
-- micros here. `budgets.balance_cents` remains, read-only, as the whole cents of the balance
-- (rounded down) for the views that show it.
alter table budgets add column balance_micros bigint;
update budgets set balance_micros = balance_cents * 10000;
alter table budgets alter column balance_micros set not null;
alter table budgets add constraint budgets_balance_micros_check check (balance_micros >= 0);
alter table budgets drop column balance_cents;
alter table budgets add column balance_cents bigint
    generated always as (balance_micros / 10000) stored;

alter table ledger add column amount_micros bigint;
alter table ledger add column balance_after_micros bigint;
update ledger set amount_micros = amount_cents * 10000,
                  balance_after_micros = balance_after * 10000;
alter table ledger alter column amount_micros set not null;
alter table ledger alter column balance_after_micros set not null;
alter table ledger add constraint ledger_amount_micros_check check (amount_micros > 0);
alter table ledger add constraint ledger_balance_after_micros_check
    check (balance_after_micros >= 0);
alter table ledger drop column amount_cents;
alter table ledger drop column balance_after;

-- budget_spend, in micros: a conditional decrement plus a ledger row, under the budget row's
-- lock, in one statement for the caller: the balance never goes below zero, and a spend key is
-- charged once.
drop function budget_spend(uuid, text, bigint, uuid, text);
create function budget_spend(
    p_agent_id  uuid,
    p_key       text,
    p_micros    bigint,
    p_task_id   uuid,
    p_memo      text
)
returns table (outcome text, balance_micros bigint)
language plpgsql as $$
declare
    v_balance  bigint;
    v_prior    ledger%rowtype;
begin
    if p_micros is null or p_micros <= 0 then
        raise exception 'budget_spend: amount must be positive, got %', p_micros
            using errcode = 'invalid_parameter_value';
    end if;

    select b.balance_micros into v_balance from budgets b where b.agent_id = p_agent_id for update;
    if not found then
        return query select 'no_budget'::text, null::bigint;
        return;
    end if;

    select * into v_prior from ledger l where l.agent_id = p_agent_id and l.idempotency_key = p_key;
    if found then
        if v_prior.kind = 'spend' and v_prior.amount_micros = p_micros then
            return query select 'duplicate'::text, v_prior.balance_after_micros;
        else
            return query select 'key_reused'::text, v_balance;
        end if;
        return;
    end if;

    if v_balance < p_micros then
        return query select 'insufficient'::text, v_balance;
        return;
    end if;

    update budgets b set balance_micros = b.balance_micros - p_micros, updated_at = now()
        where b.agent_id = p_agent_id
        returning b.balance_micros into v_balance;
    insert into ledger (agent_id, idempotency_key, kind, amount_micros, balance_after_micros,
                        task_id, memo)
        values (p_agent_id, p_key, 'spend', p_micros, v_balance, p_task_id, p_memo);
    return query select 'spent'::text, v_balance;
end
$$;
