//! An agent's wallet key: a secp256k1 private key and the address it controls.

use std::fmt;
use std::str::FromStr;

use k256::ecdsa::SigningKey;
use sha3::{Digest, Keccak256};

/// Why a key could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the system's random source failed: {0}")]
    Random(String),
    #[error("not a secp256k1 private key (64 hex digits)")]
    Invalid,
}

/// An EVM address (20 bytes); written `0x` and 40 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(pub [u8; 20]);

/// Why a string is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an address (0x and 40 hex digits)")]
pub struct NotAnAddress(pub String);

impl FromStr for Address {
    type Err = NotAnAddress;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .filter(|d| d.len() == 40)
            .ok_or_else(|| NotAnAddress(s.to_owned()))?;
        let mut bytes = [0u8; 20];
        hex::decode_to_slice(digits, &mut bytes).map_err(|_| NotAnAddress(s.to_owned()))?;
        Ok(Self(bytes))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Address {
    /// The 32-byte word an event topic or a call argument holds it in.
    pub fn word(&self) -> String {
        format!("0x{:0>64}", hex::encode(self.0))
    }

    /// The address in the last 20 bytes of a 32-byte word (`0x` + 64 hex digits).
    pub fn from_word(word: &str) -> Option<Self> {
        let digits = word.strip_prefix("0x")?;
        (digits.len() == 64 && digits[..24].bytes().all(|b| b == b'0'))
            .then(|| format!("0x{}", &digits[24..]).parse().ok())
            .flatten()
    }
}

/// A wallet's private key. Its `Debug` shows the address only; the key's hex leaves this type
/// through [`WalletKey::secret_json`] alone, for the secret store.
pub struct WalletKey(SigningKey);

impl WalletKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        loop {
            let mut bytes = [0u8; 32];
            getrandom::getrandom(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
            // Zero or past the curve's order (about 1 in 2^128): draw again.
            if let Ok(key) = SigningKey::from_slice(&bytes) {
                return Ok(Self(key));
            }
        }
    }

    /// The key written as 64 hex digits (`0x` optional).
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let digits = text.trim().trim_start_matches("0x");
        let bytes = hex::decode(digits).map_err(|_| KeyError::Invalid)?;
        SigningKey::from_slice(&bytes)
            .map(Self)
            .map_err(|_| KeyError::Invalid)
    }

    /// The address this key controls: the last 20 bytes of the Keccak-256 of the public key.
    pub fn address(&self) -> Address {
        let point = self.0.verifying_key().to_encoded_point(false);
        let hash = Keccak256::digest(&point.as_bytes()[1..]);
        let mut bytes = [0u8; 20];
        bytes.copy_from_slice(&hash[12..]);
        Address(bytes)
    }

    /// The secret's JSON: `{"private_key": "0x...", "address": "0x..."}` (what the wallet's MCP
    /// server is given, and nothing else is).
    pub fn secret_json(&self) -> String {
        serde_json::json!({
            "private_key": format!("0x{}", hex::encode(self.0.to_bytes())),
            "address": self.address(),
        })
        .to_string()
    }
}

impl fmt::Debug for WalletKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalletKey")
            .field("address", &self.address())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_key_gives_its_known_address() {
        // Hardhat's first development account.
        let key = WalletKey::from_hex(
            "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
        )
        .unwrap();
        assert_eq!(
            key.address().to_string(),
            "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
        );
    }

    #[test]
    fn generated_keys_differ_and_never_show_in_debug() {
        let a = WalletKey::generate().unwrap();
        let b = WalletKey::generate().unwrap();
        assert_ne!(a.address(), b.address());
        let secret: serde_json::Value = serde_json::from_str(&a.secret_json()).unwrap();
        let hex_key = secret["private_key"].as_str().unwrap();
        assert_eq!(hex_key.len(), 66);
        assert!(!format!("{a:?}").contains(&hex_key[2..]));
        assert_eq!(WalletKey::from_hex(hex_key).unwrap().address(), a.address());
    }

    #[test]
    fn addresses_parse_and_round_trip_through_a_word() {
        let a: Address = "0xF39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
            .parse()
            .unwrap();
        assert_eq!(Address::from_word(&a.word()), Some(a));
        for bad in [
            "",
            "0x12",
            "f39fd6e51aad88f6f4ce6ab8827279cfffb92266",
            "0xzz9fd6e51aad88f6f4ce6ab8827279cfffb92266",
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
    }
}
