//! The swarm's pipeline against the real local stack: goal intake over the HITL API router,
//! the planner, and whole goals through the swarm under the local event-source runner.

mod intake;
mod judge;
mod planner;
mod swarm;
