//! Prefixed resource ids (`ten_…`, `key_…`, `req_…`) and high-entropy random
//! tokens for secrets. Ids are random, so they reveal nothing about order or
//! volume, and their prefix says what they name.

use rand::{Rng, distr::Alphanumeric};

/// Lower-case characters of a resource id after its prefix.
const ID_LENGTH: usize = 24;

/// A random alphanumeric string from the thread's CSPRNG (seeded by the OS);
/// 43 characters carry more than 256 bits.
pub fn random_token(len: usize) -> String {
    let mut token = String::with_capacity(len);
    push_random_token(&mut token, len);
    token
}

/// Appends `len` random alphanumeric characters to `out` (an id with a
/// prefix in one allocation).
pub fn push_random_token(out: &mut String, len: usize) {
    out.extend(rand::rng().sample_iter(Alphanumeric).take(len).map(char::from));
}

/// A new id with its prefix, like `ten_0b5k…` (prefix, `_`, 24 of `[0-9a-z]`).
pub fn new_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let body: String = (0..ID_LENGTH).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("{prefix}_{body}")
}

/// Whether `text` is an id with this prefix, as [`new_id`] makes them.
pub fn is_id(prefix: &str, text: &str) -> bool {
    text.strip_prefix(prefix).and_then(|rest| rest.strip_prefix('_')).is_some_and(|body| {
        body.len() == ID_LENGTH && body.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_prefix_and_validate() {
        let id = new_id("ten");
        assert!(is_id("ten", &id), "{id}");
        assert!(!is_id("usr", &id));
        assert!(!is_id("ten", "ten_short"));
        assert!(!is_id("ten", "ten_ABCDEFGHIJKLMNOPQRSTUVWX"));
        assert_ne!(new_id("ten"), new_id("ten"));
    }

    #[test]
    fn tokens_have_the_requested_length() {
        assert_eq!(random_token(43).len(), 43);
    }
}
