//! The REST routes, one router per area.

pub mod admin;
pub mod auth;
pub mod channel_messages;
pub mod channels;
pub mod devices;
pub mod health;
pub mod invites;
pub mod keys;
pub mod messages;
pub mod moderation;
pub mod servers;
pub mod social;
pub mod users;
pub mod voice;
