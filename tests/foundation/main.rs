//! The foundation: the local stack answers, bootstrap creates every resource, migrations and
//! constraints hold, and each function binary runs under its Lambda runtime.

mod bootstrap;
mod lambda_binaries;
mod local_model;
mod schema;
mod stack_script;
