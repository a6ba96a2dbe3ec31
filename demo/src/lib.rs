//! The sample app berth's demo, tests and benchmarks put behind sidecars.
//!
//! [`sample_app`] is a small HTTP/1.1 and HTTP/2 (h2c) server with the routes a rollout needs
//! to be observed: who answered, slow requests, streamed bodies, a switchable health check.

pub mod sample_app;
