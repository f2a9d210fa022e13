//! Validated message fields: once a value is an `Author` or a `Text`, it is within
//! the limits and safe to store.

use crate::config::Limits;
use crate::error::ChatError;

/// Who wrote a message: 1 to `max_author_chars` characters after trimming, no
/// control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author(String);

/// The message text: 1 to `max_text_chars` characters, not only whitespace; line
/// breaks and tabs are kept, other control characters are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(String);

/// A message as submitted, before it has an id.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub author: Author,
    pub text: Text,
    /// Public information about the sender, from its token (or an admin's bulk
    /// post), broadcast with the message.
    pub user: Option<serde_json::Value>,
}

impl Author {
    pub fn parse(raw: Option<&str>, limits: &Limits) -> Result<Self, ChatError> {
        let invalid = |why: String| ChatError::InvalidAuthor(why);
        let author = raw
            .ok_or_else(|| invalid("author is required".into()))?
            .trim();
        if author.is_empty() {
            return Err(invalid("author must not be empty".into()));
        }
        if author.chars().count() > limits.max_author_chars {
            return Err(invalid(format!(
                "author must be at most {} characters",
                limits.max_author_chars
            )));
        }
        if author.chars().any(char::is_control) {
            return Err(invalid("author must not contain control characters".into()));
        }
        Ok(Author(author.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Text {
    pub fn parse(raw: Option<&str>, limits: &Limits) -> Result<Self, ChatError> {
        let invalid = |why: String| ChatError::InvalidText(why);
        let text = raw.ok_or_else(|| invalid("text is required".into()))?;
        if text.trim().is_empty() {
            return Err(invalid("text must not be empty".into()));
        }
        if text.chars().count() > limits.max_text_chars {
            return Err(invalid(format!(
                "text must be at most {} characters",
                limits.max_text_chars
            )));
        }
        if text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(invalid(
                "text must not contain control characters other than line breaks and tabs".into(),
            ));
        }
        Ok(Text(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text of a deletion entry: none (the store keeps no text for it).
    pub fn of_deletion() -> Self {
        Text(String::new())
    }
}

impl NewMessage {
    pub fn parse(
        author: Option<&str>,
        text: Option<&str>,
        limits: &Limits,
    ) -> Result<Self, ChatError> {
        Ok(NewMessage {
            author: Author::parse(author, limits)?,
            text: Text::parse(text, limits)?,
            user: None,
        })
    }

    pub fn with_user(mut self, user: Option<serde_json::Value>) -> Self {
        self.user = user;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_author_chars: 5,
        max_text_chars: 10,
        max_body_bytes: 1024,
        post_rate_per_sec: 0,
        post_burst: 1,
    };

    #[test]
    fn author_is_trimmed_and_counted_in_characters() {
        let author = Author::parse(Some("  éééé "), &LIMITS).expect("4 characters fit");
        assert_eq!(author.as_str(), "éééé");
        assert!(Author::parse(Some("éééééé"), &LIMITS).is_err(), "6 > 5");
    }

    #[test]
    fn bad_authors_are_refused() {
        for (raw, why) in [
            (None, "missing"),
            (Some(""), "empty"),
            (Some("   "), "blank"),
            (Some("a\u{0}b"), "control character"),
        ] {
            assert!(Author::parse(raw, &LIMITS).is_err(), "{why}");
        }
    }

    #[test]
    fn text_keeps_line_breaks_but_refuses_other_controls() {
        assert!(Text::parse(Some("a\nb\tc"), &LIMITS).is_ok());
        assert!(Text::parse(Some("a\u{7}b"), &LIMITS).is_err());
        assert!(Text::parse(Some(" \n "), &LIMITS).is_err(), "blank");
        assert!(
            Text::parse(Some("12345678901"), &LIMITS).is_err(),
            "11 > 10"
        );
        assert!(Text::parse(None, &LIMITS).is_err(), "missing");
    }
}
