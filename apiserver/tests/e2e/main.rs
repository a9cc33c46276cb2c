//! End-to-end tests of the embedded control plane: a real server on a
//! loopback port with TLS and a token, driven by kube's client, kube-runtime,
//! kubectl, and a client that speaks only Kubernetes protobuf.

mod bad_input;
mod common;
mod crud;
mod events;
mod kubectl;
mod protobuf;
mod rbac;
mod watch;
