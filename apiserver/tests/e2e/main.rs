//! End-to-end tests of the embedded control plane: a real server on a
//! loopback port with TLS and a token, driven by kube's client, kube-runtime
//! and kubectl.

mod bad_input;
mod common;
mod crud;
mod events;
mod kubectl;
mod watch;
