//! The deployed system's description, `infra/template.yaml`, against the code and against
//! LocalStack's CloudFormation.

mod deploy;
mod preflight;
mod template;
