//! Route tests of the API over the in-memory control plane. Every scenario runs
//! on SQLite (one test each) and, in `postgres::all_scenarios`, on a throwaway
//! PostgreSQL cluster started once for the whole suite.

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
