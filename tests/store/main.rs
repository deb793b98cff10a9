//! The store against the real PostgreSQL: OCC commits under many concurrent writers, the budget
//! ledger under concurrent spends, and the append-only audit log.

mod audit;
mod budget;
mod occ;
