//! One file per resource.

pub mod admin;
pub mod health;
pub mod messages;
