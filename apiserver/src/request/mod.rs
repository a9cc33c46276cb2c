//! Request parsing: from a resource path, its headers, query and body to
//! what the handlers work on. Nothing here reads or writes the store.
//!
//! - [`target`]: which kind, namespace, name and subresource a path names;
//! - [`negotiate`]: the media type of the answer, from `Accept`;
//! - [`query`] and [`options`]: the query parameters of each verb;
//! - [`selectors`]: label and field selectors, checked against the kind;
//! - [`continue_token`]: the `continue` tokens of paginated lists;
//! - [`body`]: request bodies (JSON, YAML, protobuf) and their kind.

pub mod body;
pub mod continue_token;
pub mod negotiate;
pub mod options;
pub mod query;
pub mod selectors;
pub mod target;

#[cfg(test)]
mod tests;
