-- A platform's own write limits as part of the quota model (issue 32): Bluesky's PDS charges
-- each record it creates 3 points, 5,000 points an hour and 35,000 a day per account, posts and
-- replies alike. They are counted like the policy's quotas, in windows of their own
-- (`points_hour`, `points_day`), an effect taking as many units as it costs; an effect
-- reserves in every window that counts it.
alter table quota_windows drop constraint quota_windows_kind_check;
alter table quota_windows add constraint quota_windows_kind_check
    check (kind in ('post', 'reply', 'points_hour', 'points_day'));

alter table quota_reservations add column units integer not null default 1 check (units >= 1);
alter table quota_reservations drop constraint quota_reservations_pkey;
alter table quota_reservations add primary key (task_id, kind);

create or replace function release_quota() returns trigger
language plpgsql as $$
begin
    with released as (
        update quota_reservations set released_at = now()
        where task_id = new.id and released_at is null
        returning agent_id, platform, kind, window_start, units
    )
    update quota_windows w set used = greatest(w.used - r.units, 0)
    from released r
    where w.agent_id = r.agent_id and w.platform = r.platform and w.kind = r.kind
      and w.window_start = r.window_start and w.used > 0;
    return null;
end
$$;
