//! berth's integration tests: real processes on 127.0.0.1, a real rnacos, real HTTP.

mod admin;
mod config;
mod ctl;
mod drain;
mod provider;
mod support;
