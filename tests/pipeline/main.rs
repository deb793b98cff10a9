//! The swarm's pipeline against the real local stack: goal intake over the HITL API router,
//! the planner, whole goals through the swarm under the local event-source runner, and human
//! review over the API and in Mission Control (headless Chromium).

mod agents;
mod browser;
mod cli;
mod console_cache;
mod contention;
mod engagement;
mod errors;
mod events;
mod fleet;
mod gate;
mod hitl;
mod intake;
mod judge;
mod memory;
mod mind;
mod observability;
mod openapi;
mod planner;
mod swarm;
mod voice;
mod wallets;
