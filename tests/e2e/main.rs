//! The end-to-end suite: the project's own `spin.toml` and `runtime-config.toml` under the
//! real Spin (`$SPIN`, else `../shared/bin/spin`, else `spin` on `PATH`; without one every
//! test prints a line and passes), against a TLS-only `redis-server` with an Azure-shaped
//! password. The test host (tests/host) imitates Spin for fast in-process tests; this suite
//! is the judge of what Spin does.
//!
//! - `contracts`: each service's main contract, with the fast path off and on;
//! - `docs_examples`: every `curl` line of README.md and docs/*.md, as written;
//! - `entra`: outbound Redis with Entra ID only, a stand-in identity endpoint;
//! - `example`: the login example app (examples/login), its pages and its flow in headless
//!   Chromium;
//! - `keep_alive`: hundreds of requests over one connection, as browsers and ingresses send;
//! - `outage`: Redis stopped under load and restarted, and Redis silent, with the documented
//!   bounds, fast path off and on;
//! - `pubsub`: the Redis-triggered subscriber (spin-subscriber.toml) beside the app;
//! - `security`: the attacker's requests of issue 27;
//! - `spin`: the Spin behaviours the test host copies from Spin's sources;
//! - `template`: `spin new` from templates/redis-patterns-rust builds an app that answers;
//! - `write_behind`: a drain killed before its acknowledgement, redelivered after a restart.

mod support;

mod contracts;
mod docs_examples;
mod entra;
mod example;
mod keep_alive;
mod outage;
mod pubsub;
mod security;
mod spin;
mod template;
mod write_behind;
