//! The store against the real PostgreSQL: OCC commits under many concurrent writers, the budget
//! ledger under concurrent spends, the append-only audit log, and human decisions (single-shot,
//! bound to the artifact hash and policy version reviewed).

mod audit;
mod budget;
mod decisions;
mod occ;
