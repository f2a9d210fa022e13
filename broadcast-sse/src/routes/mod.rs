//! One file per resource.

pub mod events;
pub mod health;
