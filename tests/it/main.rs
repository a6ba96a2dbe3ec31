//! berth's integration tests: real processes on 127.0.0.1, a real rnacos, real HTTP, the real
//! Helm chart rendered and validated against the Kubernetes schemas.

mod chart;
mod config;
mod drain;
mod injector;
mod provider;
mod support;
