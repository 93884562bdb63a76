//! Identifiers. Snowflake ids (64-bit, time-ordered) travel as decimal strings in JSON so
//! that JavaScript clients keep every bit; device ids are small per-user numbers, because
//! that is what a Signal protocol address `(user, device)` uses.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What the API's document says an id looks like: decimal digits of a positive 64-bit
/// number (up to 9,219,999,999,999,999,999; every such string parses).
pub const ID_PATTERN: &str = "^([0-9]{1,18}|[1-8][0-9]{18}|9[01][0-9]{17}|92[01][0-9]{16})$";

macro_rules! snowflake_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub i64);

        impl $name {
            /// The raw 64-bit value.
            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse::<i64>().map(Self)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // Accept the canonical string form, and a bare number for hand-written tools.
                #[derive(Deserialize)]
                #[serde(untagged)]
                enum Repr<'a> {
                    Str(&'a str),
                    String(String),
                    Num(i64),
                }
                match Repr::deserialize(d)? {
                    Repr::Str(s) => s.parse().map_err(serde::de::Error::custom),
                    Repr::String(s) => s.parse().map_err(serde::de::Error::custom),
                    Repr::Num(n) => Ok(Self(n)),
                }
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some("64-bit snowflake id as a decimal string"))
                    .pattern(Some($crate::ids::ID_PATTERN))
                    .examples([serde_json::json!("1234567890123456789")])
                    .into()
            }
        }
        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}
    };
}

snowflake_id!(
    /// A user account.
    UserId
);
snowflake_id!(
    /// An envelope in a device's queue.
    EnvelopeId
);
snowflake_id!(
    /// A login session (one per signed-in device); its refresh tokens rotate, its id does not.
    SessionId
);

snowflake_id!(
    /// A server (guild); its `@everyone` role has the same id.
    ServerId
);
snowflake_id!(
    /// A channel of a server (text, voice or category), or a group DM.
    ChannelId
);
snowflake_id!(
    /// A role of a server (the `@everyone` role's id is the server's).
    RoleId
);
snowflake_id!(
    /// A message of a channel (also the id of the thread it starts).
    MessageId
);
snowflake_id!(
    /// A reaction to a channel message.
    ReactionId
);

/// A device of a user: a small number, unique per user (1..=127, the range of a Signal
/// protocol device id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct DeviceId(pub u32);

impl DeviceId {
    /// Highest device id a user can hold.
    pub const MAX: u32 = 127;
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snowflakes_travel_as_strings() {
        let id = UserId(9_007_199_254_740_993); // above 2^53: a JS number would lose it
        let json = serde_json::to_string(&id).expect("serialize");
        assert_eq!(json, "\"9007199254740993\"");
        let back: UserId = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, id);
        let from_number: UserId = serde_json::from_str("42").expect("number form");
        assert_eq!(from_number, UserId(42));
        assert!(serde_json::from_str::<UserId>("\"12ab\"").is_err());
    }
}
