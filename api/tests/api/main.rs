//! Route tests of the API. Every scenario runs on SQLite and on PostgreSQL,
//! each its own test (`<module>::on_sqlite::<name>`, `…::on_postgres::…`),
//! over the in-memory control plane or, for sessions and snapshots, the
//! embedded control plane with the real scheduler and a node agent
//! (`common::cluster`).
//! Which scenario runs where: `docs/testing.md`, "The api's route tests".

mod common;

mod accounts;
mod admin;
mod auth;
mod contract;
mod events;
mod fuzz;
mod kube_backend;
mod packs;
mod postgres;
mod proxy;
mod sessions;
mod snapshots;
mod validation;
