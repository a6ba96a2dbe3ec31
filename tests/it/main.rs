//! berth's integration tests: real processes on 127.0.0.1, a real rnacos, real HTTP, the real
//! Helm chart rendered and validated against the Kubernetes schemas.

// In tests an unwrap is an assertion; clippy's allow-unwrap-in-tests misses the helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod chart;
mod chart_sidecar;
mod cluster;
mod config;
mod consumer;
mod ctl;
mod drain;
mod drain_wire;
mod faults_inbound;
mod faults_outbound;
mod gateway;
mod gateway_faults;
mod grpc;
mod image;
mod injector;
mod kubelet;
mod lanes;
mod mixed;
mod outbound;
mod page;
mod page_browser;
mod provider;
mod rollout;
mod support;
mod version;
mod vocabulary;
