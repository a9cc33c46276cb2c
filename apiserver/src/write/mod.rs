//! The object writes the verbs, server-side apply and the namespace
//! controller share, with kube-apiserver's object semantics: optimistic
//! concurrency on `resourceVersion`, finalizers and `deletionTimestamp`, dry
//! runs and field ownership. Admission decides what is written; this module
//! reads, retries and writes.
//!
//! - [`create`]: a new object;
//! - [`update`]: the read-modify-write loop of update, patch and apply;
//! - [`patch`]: what each kind of PATCH body does to the current object;
//! - [`delete`]: one object's deletion.

pub mod create;
pub mod delete;
pub mod patch;
pub mod update;
