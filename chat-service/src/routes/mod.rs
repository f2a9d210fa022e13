//! One file per resource.

pub mod admin;
pub mod channels;
pub mod health;
pub mod messages;
pub mod signals;
