//! A session's slug: 8 characters of `[a-z0-9]`, its host `s-<slug>.<exposure>.<domain>`.
//! The api picks one when it creates a Session; the scheduler keeps it, or
//! picks another when it is taken. Both use [`Slug`].

use std::fmt;
use std::str::FromStr;

use rand::Rng;

/// The length of a slug.
pub const LEN: usize = 8;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A valid slug: only [`Slug::random`], [`Slug::unused`] and parsing make one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slug(String);

/// Why a string is not a slug.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a slug: it must be {LEN} characters of a-z and 0-9")]
pub struct InvalidSlug(pub String);

impl Slug {
    /// A random slug (not checked against the ones in use).
    pub fn random() -> Slug {
        let mut rng = rand::rng();
        Slug(
            (0..LEN)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
                .collect(),
        )
    }

    /// A random slug for which `taken` is false.
    pub fn unused(taken: impl Fn(&str) -> bool) -> Slug {
        loop {
            let s = Slug::random();
            if !taken(s.as_str()) {
                return s;
            }
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl FromStr for Slug {
    type Err = InvalidSlug;

    fn from_str(s: &str) -> Result<Slug, InvalidSlug> {
        if is_valid(s) {
            Ok(Slug(s.to_string()))
        } else {
            Err(InvalidSlug(s.to_string()))
        }
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Slug {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<Slug> for String {
    fn from(s: Slug) -> String {
        s.0
    }
}

/// Whether `s` is a slug (`crate::schema::SLUG_PATTERN`).
pub fn is_valid(s: &str) -> bool {
    s.len() == LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_slugs_are_valid_and_unused_skips_taken_ones() {
        for _ in 0..100 {
            assert!(is_valid(Slug::random().as_str()));
        }
        let first = Slug::random();
        let other = Slug::unused(|s| s == first.as_str());
        assert_ne!(other, first);
        assert!(!is_valid("ABCDEFGH") && !is_valid("abc") && !is_valid("abcdefg-"));
    }

    #[test]
    fn a_slug_parses_only_when_valid_and_displays_as_written() {
        let s: Slug = "abc12345".parse().unwrap();
        assert_eq!(s.to_string(), "abc12345");
        assert_eq!(String::from(s), "abc12345");
        let e = "ABC12345".parse::<Slug>().unwrap_err();
        assert!(e.to_string().contains("\"ABC12345\" is not a slug"), "{e}");
        assert!("abc1234".parse::<Slug>().is_err());
        assert!("abc123456".parse::<Slug>().is_err());
    }
}
