//! A session's slug: 8 characters of `[a-z0-9]`, its host `s-<slug>.<exposure>.<domain>`.
//! The api picks one when it creates a Session; the scheduler keeps it, or
//! picks another when it is taken. Both use these.

use rand::Rng;

/// The length of a slug.
pub const LEN: usize = 8;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A random slug (not checked against the ones in use).
pub fn random() -> String {
    let mut rng = rand::rng();
    (0..LEN)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A random slug for which `taken` is false.
pub fn unused(taken: impl Fn(&str) -> bool) -> String {
    loop {
        let s = random();
        if !taken(&s) {
            return s;
        }
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
            assert!(is_valid(&random()));
        }
        let first = random();
        let other = unused(|s| s == first);
        assert_ne!(other, first);
        assert!(!is_valid("ABCDEFGH") && !is_valid("abc") && !is_valid("abcdefg-"));
    }
}
