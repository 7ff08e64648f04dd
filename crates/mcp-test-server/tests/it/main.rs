//! Integration tests of the `mcp-test-server` binary: a real rmcp client over stdio and over
//! streamable HTTP, fixture scripts, argument errors, the static build, the Docker image and the
//! image of a third-party Python MCP server.

mod common;
#[cfg(feature = "docker")]
mod docker;
mod fixture;
mod http;
#[cfg(feature = "docker")]
mod python_image;
mod static_build;
mod stdio;
