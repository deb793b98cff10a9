-- The effect ledger (issue 32): every approved effect, from before it reaches its platform to
-- the platform's id for it. A platform that does not honour an idempotency key (Bluesky) can
-- commit a post and lose the answer; an effect whose outcome is unknown is looked up on the
-- platform before it is ever sent again.
create type effect_state as enum ('intended', 'sent', 'confirmed', 'unknown', 'failed');

create table effects (
    -- The approval that released the effect (the execute task's approval id).
    approval_id     uuid primary key references tasks (approval_id),
    agent_id        uuid not null references agents (id),
    -- publish, reply or transfer (the operation of the server profile).
    op              text not null check (op in ('publish', 'reply', 'transfer')),
    -- The platform it lands on ('' for a transfer).
    platform        text not null,
    state           effect_state not null default 'intended',
    -- How often it was handed to the tool.
    sends           integer not null default 0 check (sends >= 0),
    -- The platform's id of what was done (a post URI, a transfer id) and what its tool
    -- answered, as the profile maps it, with the tool that did it.
    platform_ref    text,
    receipt         jsonb,
    tool            text,
    server          text,
    server_version  text,
    -- The last failure, for a person reading the ledger.
    error           text,
    intended_at     timestamptz not null default now(),
    sent_at         timestamptz,
    -- When the last call came back without a usable answer: a look-up waits out the
    -- platform's indexing lag from here.
    answered_at     timestamptz,
    settled_at      timestamptz,
    check ((state = 'confirmed') = (receipt is not null)),
    check ((state in ('confirmed', 'failed')) = (settled_at is not null)),
    check (state = 'intended' or sent_at is not null)
);
-- One platform object answers for one effect: a look-up never claims another's post.
create unique index effects_platform_ref on effects (platform, platform_ref)
    where platform_ref is not null;
create index effects_unsettled on effects (sent_at) where state in ('sent', 'unknown');
