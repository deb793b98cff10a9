//! The worker against the real local stack: the MCP client against the project's own MCP
//! server (`chimera-world`, over stdio and Streamable HTTP), and the worker handler against
//! LocalStack (SQS, S3), DynamoDB Local and PostgreSQL.

mod bluesky;
mod handler;
mod mcp;
mod wallet;
