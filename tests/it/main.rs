//! berth's integration tests: real processes on 127.0.0.1, a real rnacos, real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod config;
mod consumer;
mod drain;
mod provider;
mod rollout;
mod support;
