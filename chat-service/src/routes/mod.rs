//! One file per resource.

pub mod admin;
pub mod channels;
pub mod erase;
pub mod health;
pub mod messages;
pub mod revisions;
pub mod signals;
