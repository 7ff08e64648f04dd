//! Integration tests of the `mcp-test-server` binary: a real rmcp client over stdio and over
//! streamable HTTP, fixture scripts, argument errors, the static build and the Docker image.

mod common;
#[cfg(feature = "docker")]
mod docker;
mod fixture;
mod http;
mod static_build;
mod stdio;
