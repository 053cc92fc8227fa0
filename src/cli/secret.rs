//! `herald secret`: prints a fresh random secret (256 bits, base64url) for
//! `HERALD_CLUSTER_SECRET`, `HERALD_JWT_SECRET` or `HERALD_API_KEY`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

/// Bytes of randomness in a secret.
const SECRET_BYTES: usize = 32;

pub fn run() -> anyhow::Result<()> {
    println!("{}", generate()?);
    Ok(())
}

/// A fresh secret: 32 random bytes from the operating system, as 43 base64url characters.
pub fn generate() -> anyhow::Result<String> {
    let mut bytes = [0u8; SECRET_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the operating system gave no randomness"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_enough_and_fresh() {
        let (a, b) = (generate().unwrap(), generate().unwrap());
        assert_eq!(a.len(), 43);
        assert!(a.len() >= crate::config::MIN_CLUSTER_SECRET_LEN);
        assert_ne!(a, b);
    }
}
