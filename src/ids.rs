//! Prefixed resource ids (`ten_…`, `key_…`, `req_…`) and high-entropy random
//! tokens for secrets. Ids are random, so they reveal nothing about order or
//! volume, and their prefix says what they name.

use rand::{Rng, RngCore};

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
///
/// Each character takes six random bits, and the two values past the
/// alphabet are drawn again, so every character is uniform over the 62 and
/// carries log2(62) ≈ 5.95 bits, as `rand`'s `Alphanumeric` does; ten
/// characters come from one `u64` where `Alphanumeric` draws a `u32` each
/// (every call's request id is made here).
pub fn push_random_token(out: &mut String, len: usize) {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    out.reserve(len);
    let mut left = len;
    while left > 0 {
        let mut bits = rng.next_u64();
        for _ in 0..10 {
            if let Some(&c) = ALPHABET.get((bits & 63) as usize) {
                out.push(char::from(c));
                left -= 1;
                if left == 0 {
                    break;
                }
            }
            bits >>= 6;
        }
    }
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
        for len in [0, 1, 9, 10, 11, 20, 43, 100] {
            let token = random_token(len);
            assert_eq!(token.len(), len);
            assert!(token.bytes().all(|b| b.is_ascii_alphanumeric()), "{token}");
        }
    }

    #[test]
    fn token_characters_are_uniform_over_the_alphabet() {
        // 620,000 characters, 10,000 expected of each of the 62. A character
        // drawn from the rejected values (or a skewed mapping) would land
        // thousands away; chance alone stays within 500 (5 sigma: sigma ≈ 99).
        let mut counts = [0u32; 128];
        for _ in 0..10_000 {
            for b in random_token(62).bytes() {
                counts[usize::from(b)] += 1;
            }
        }
        let seen: Vec<_> = counts.iter().enumerate().filter(|(_, n)| **n > 0).collect();
        assert_eq!(seen.len(), 62, "{seen:?}");
        for (b, n) in seen {
            assert!((9_500..=10_500).contains(n), "{:?} drawn {n} times", char::from(b as u8));
        }
    }
}
