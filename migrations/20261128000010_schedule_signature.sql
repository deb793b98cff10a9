-- The pattern and zone each schedule's bookmark was kept under: a schedule that changes (or is
-- removed and declared again) starts after the policy that declared it, not from the old
-- bookmark, which would submit the new pattern's occurrences since then in a burst.
alter table schedule_ticks add column signature text not null default '';
alter table schedule_ticks alter column signature drop default;
