//! The store against the real PostgreSQL: OCC commits under many concurrent writers, the budget
//! ledger under concurrent spends, the effect ledger under
//! concurrent senders, the append-only audit log, human decisions (single-shot,
//! bound to the artifact hash and policy version reviewed), and the outbox under concurrent
//! relays, and what a planner is shown of an agent.

mod audit;
mod budget;
mod decisions;
mod effects;
mod memories;
mod occ;
mod outbox;
mod planning;
mod quotas;
mod schedules;
