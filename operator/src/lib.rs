//! MedForge's controllers: the scheduler that gives out whole GPUs, and the
//! node agent that turns bound Sessions into containers and workspaces.
#![forbid(unsafe_code)]

pub mod agent;
pub mod gpu;
pub mod image;
pub mod isolation;
pub mod leader;
pub mod node;
pub mod scheduler;
