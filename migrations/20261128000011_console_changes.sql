-- The console's reads (review queue, cards, fleet view) are kept for a moment by each API
-- process. A change to what a reviewer decides on tells every process at once, on commit:
-- - a row of `reviews` written (a held item, a decision, an edit, an expiry) sends
--   `review <tenant> <review>`: that card and the tenant's lists are read again;
-- - a row of `agents` written (onboarded, renamed, paused, a new policy) sends
--   `agent <tenant>`: everything of the tenant is read again.
-- PostgreSQL sends identical notifications of one transaction once, and a write that changes
-- no row sends none, so the losers of a decision race notify nobody. Figures that move with
-- the swarm's work (goals in flight, spend, quota windows) do not notify: the processes keep
-- them at most a second.
create function notify_console_changed() returns trigger
language plpgsql as $$
declare
    changed record;
begin
    if tg_op = 'DELETE' then
        changed := old;
    else
        changed := new;
    end if;
    if tg_table_name = 'reviews' then
        perform pg_notify('console_changed', 'review ' || changed.tenant_id || ' ' || changed.id);
    else
        perform pg_notify('console_changed', 'agent ' || changed.tenant_id);
    end if;
    return null;
end
$$;

create trigger reviews_console_changed
    after insert or update or delete on reviews
    for each row execute function notify_console_changed();

create trigger agents_console_changed
    after insert or update or delete on agents
    for each row execute function notify_console_changed();
