-- Model calls are paid by reservation (issue 30): the worst case is reserved under the budget's
-- lock before the call (a `spend` row), and what the call did not use is given back when it is
-- settled (a `release` row, under the reservation's key with `:release`).
alter type ledger_kind add value 'release';
