//! The foundation: the local stack answers (the local EVM chain with its contracts too), bootstrap creates every resource, migrations and
//! constraints hold, and each function binary runs under its Lambda runtime.

mod bootstrap;
mod lambda_binaries;
mod local_chain;
mod local_model;
mod readme;
mod roles;
mod schema;
mod stack_script;
