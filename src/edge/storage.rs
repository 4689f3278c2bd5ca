//! Where bytes live in R2. The URL path of a channel file is its object key.

/// A package file or derived artifact: `<channel>/<subdir>/<filename>`.
pub fn file_key(channel: &str, subdir: &str, filename: &str) -> String {
    format!("{channel}/{subdir}/{filename}")
}

/// Where an upload is written while it is checked. Channel names cannot start with '.', so
/// nothing here is ever served.
pub fn staging_key(channel: &str, upload_id: &str) -> String {
    format!(".staging/{channel}/{upload_id}")
}

/// A fresh random identifier (128 bits, hex).
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the platform provides randomness");
    hex::encode(bytes)
}
