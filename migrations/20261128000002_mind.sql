-- The mind: what a ledger row paid for, and who made a goal's plan.

-- Transfers (approved wallet transfers), inference (model calls), paid tools, or a top-up.
create type ledger_category as enum ('top_up', 'transfer', 'inference', 'tool');
alter table ledger add column category ledger_category not null default 'transfer';
update ledger set category = 'top_up' where kind = 'top_up';

-- Which planner and model made the goal's plan: {"planner", "model", "prompt_sha256",
-- "input_tokens", "output_tokens", "cents", "attempts", "fallback"}; null until it is planned.
alter table goals add column plan_meta jsonb check (plan_meta is null or jsonb_typeof(plan_meta) = 'object');
