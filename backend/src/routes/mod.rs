//! The REST routes, one router per area.

pub mod auth;
pub mod devices;
pub mod health;
pub mod keys;
pub mod messages;
pub mod users;
