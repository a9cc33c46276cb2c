//! The GPU scheduler: `placement` decides (no I/O), `controller` watches,
//! decides one session at a time and writes bindings.

pub mod controller;
pub mod placement;
