//! The swarm's pipeline against the real local stack: goal intake over the HITL API router,
//! and the planner.

mod intake;
mod planner;
