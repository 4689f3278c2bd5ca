//! What R2 answers when a put's bytes do not have the SHA-256 the put was given: R2 hashes an
//! upload natively as it stores it, so a claimed SHA-256 is checked there.

/// Whether a failed put's error `message` is R2's checksum refusal, and if so the SHA-256 the
/// bytes had, when the message says (`Some(None)`: a refusal that does not say).
pub fn sha256_refusal(message: &str) -> Option<Option<String>> {
    if !message.contains("SHA-256 checksum you specified did not match") {
        return None;
    }
    let actual = message
        .split_once("Actual SHA-256 was: ")
        .map(|(_, rest)| {
            rest.chars()
                .take_while(char::is_ascii_hexdigit)
                .collect::<String>()
        })
        .filter(|hex| hex.len() == 64);
    Some(actual)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_and_the_actual_checksum_are_read() {
        let actual = "a1dcd1df6b3f304c6ff71856fad4048f639c64f6684c57e5cd1bf3c7b3596476";
        let message = format!(
            "Error: put: The SHA-256 checksum you specified did not match what we received.\n\
             You provided a SHA-256 checksum with value: {}\nActual SHA-256 was: {actual} (10037)",
            "0".repeat(64)
        );
        assert_eq!(sha256_refusal(&message), Some(Some(actual.to_owned())));
        assert_eq!(
            sha256_refusal(
                "put: The SHA-256 checksum you specified did not match what we received."
            ),
            Some(None)
        );
        assert_eq!(sha256_refusal("Error: Network connection lost."), None);
        assert_eq!(
            sha256_refusal(
                "The SHA-256 checksum you specified did not match. Actual SHA-256 was: abc"
            ),
            Some(None)
        );
    }
}
