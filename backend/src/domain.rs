//! Values checked once at the edge: handlers only see parsed, valid values.

use copains_client_core::limits;

/// A validation failure, shown to the user as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// A username as typed (case kept) with its case-folded form used for uniqueness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username {
    display: String,
    folded: String,
}

impl Username {
    /// 2–32 characters from `a-z A-Z 0-9 _ . -`, not starting or ending with `.` or `-`.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let len = raw.chars().count();
        if !(limits::USERNAME_MIN..=limits::USERNAME_MAX).contains(&len) {
            return Err(Invalid(format!(
                "username must be {} to {} characters long",
                limits::USERNAME_MIN,
                limits::USERNAME_MAX
            )));
        }
        if !raw.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
            return Err(Invalid("username may only contain letters a-z, digits, '_', '.' and '-'".into()));
        }
        if raw.starts_with(['.', '-']) || raw.ends_with(['.', '-']) {
            return Err(Invalid("username may not start or end with '.' or '-'".into()));
        }
        Ok(Self { display: raw.to_owned(), folded: raw.to_ascii_lowercase() })
    }

    /// As typed.
    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// Lowercase form, unique across the platform.
    pub fn folded(&self) -> &str {
        &self.folded
    }
}

/// A password that meets the rules. Never logged: `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl Password {
    /// At least 8 characters, at most 1024 bytes.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.len() > limits::PASSWORD_MAX_BYTES {
            return Err(Invalid(format!("password must be at most {} bytes", limits::PASSWORD_MAX_BYTES)));
        }
        if raw.chars().count() < limits::PASSWORD_MIN_CHARS {
            return Err(Invalid(format!("password must be at least {} characters", limits::PASSWORD_MIN_CHARS)));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The secret.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Free text shown to others: trimmed, bounded, no control characters.
fn short_text(raw: &str, what: &str, min: usize, max: usize) -> Result<String, Invalid> {
    let text = raw.trim();
    let len = text.chars().count();
    if len < min || len > max {
        return Err(Invalid(format!("{what} must be {min} to {max} characters long")));
    }
    if text.chars().any(char::is_control) {
        return Err(Invalid(format!("{what} may not contain control characters")));
    }
    Ok(text.to_owned())
}

/// A display name: 1–64 characters.
pub fn display_name(raw: &str) -> Result<String, Invalid> {
    short_text(raw, "display name", 1, limits::DISPLAY_NAME_MAX)
}

/// A status text: 0–190 characters (empty clears it).
pub fn status_text(raw: &str) -> Result<Option<String>, Invalid> {
    let text = short_text(raw, "status text", 0, limits::STATUS_TEXT_MAX)?;
    Ok((!text.is_empty()).then_some(text))
}

/// A device name: 1–64 characters; a default when none is given.
pub fn device_name(raw: Option<&str>) -> Result<String, Invalid> {
    match raw {
        None => Ok("Unnamed device".to_owned()),
        Some(raw) => short_text(raw, "device name", 1, limits::DEVICE_NAME_MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert_eq!(Username::parse("Alice_01").map(|u| u.folded().to_owned()), Ok("alice_01".into()));
        assert!(Username::parse("a").is_err());
        assert!(Username::parse(&"a".repeat(33)).is_err());
        assert!(Username::parse("al ice").is_err());
        assert!(Username::parse("élise").is_err());
        assert!(Username::parse(".alice").is_err());
        assert!(Username::parse("alice-").is_err());
        assert!(Username::parse("a.b-c").is_ok());
    }

    #[test]
    fn passwords() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse("eightchr").is_ok());
        assert!(Password::parse("ééééééé").is_err(), "7 characters even if 14 bytes");
        assert!(Password::parse(&"x".repeat(1024)).is_ok());
        assert!(Password::parse(&"x".repeat(1025)).is_err());
        assert_eq!(format!("{:?}", Password::parse("hunter2hunter2").ok()), "Some(Password(<redacted>))");
    }

    #[test]
    fn texts() {
        assert_eq!(display_name("  Alice  "), Ok("Alice".into()));
        assert!(display_name("   ").is_err());
        assert!(display_name("a\u{7}b").is_err());
        assert_eq!(status_text(""), Ok(None));
        assert!(status_text(&"s".repeat(191)).is_err());
        assert_eq!(device_name(None), Ok("Unnamed device".into()));
    }
}
