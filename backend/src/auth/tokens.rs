//! Access tokens (EdDSA JWT) and refresh tokens (256-bit random, stored as SHA-256).

use std::collections::HashMap;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use copains_client_core::api::PlatformRole;
use copains_client_core::{DeviceId, SessionId, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// User id (decimal).
    pub sub: String,
    /// Device id.
    pub did: u32,
    /// Login session id (decimal).
    pub sid: String,
    /// Platform role.
    pub role: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Expiry (Unix seconds).
    pub exp: u64,
    /// Issuer.
    pub iss: String,
}

impl AccessClaims {
    /// The user.
    pub fn user_id(&self) -> Result<UserId, TokenError> {
        self.sub.parse().map_err(|_| TokenError::Invalid)
    }
    /// The login session.
    pub fn session_id(&self) -> Result<SessionId, TokenError> {
        self.sid.parse().map_err(|_| TokenError::Invalid)
    }
    /// The device.
    pub fn device_id(&self) -> DeviceId {
        DeviceId(self.did)
    }
}

/// Why a token was refused. The message is safe to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Past `exp`.
    #[error("access token expired")]
    Expired,
    /// Bad signature, algorithm, shape or claims.
    #[error("access token invalid")]
    Invalid,
}

/// One Ed25519 signing key with its key id.
pub struct JwtKeyPair {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for JwtKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeyPair").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl JwtKeyPair {
    /// Loads a key from its PKCS#8 document.
    pub fn from_pkcs8(kid: impl Into<String>, pkcs8: &[u8]) -> Result<Self, String> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).map_err(|e| format!("bad Ed25519 key: {e}"))?;
        Ok(Self {
            kid: kid.into(),
            encoding: EncodingKey::from_ed_der(pkcs8),
            decoding: DecodingKey::from_ed_der(pair.public_key().as_ref()),
        })
    }

    /// Generates a fresh key; returns it with its PKCS#8 document (to store in the key file).
    pub fn generate(kid: impl Into<String>) -> Result<(Self, Vec<u8>), String> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| format!("key generation failed: {e}"))?;
        let pkcs8 = doc.as_ref().to_vec();
        Ok((Self::from_pkcs8(kid, &pkcs8)?, pkcs8))
    }

    /// Its key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

/// Tokens kept in the cache of verified tokens before it is emptied.
const VERIFIED_CACHE_MAX: usize = 65_536;

/// Issues and checks tokens.
pub struct TokenService {
    signing: JwtKeyPair,
    /// Tokens whose signature already verified, by SHA-256 of the token, with their claims.
    /// A token is immutable, so its signature needs checking once; its expiry is still
    /// checked at every use, and the session behind it is looked up by the caller.
    verified: parking_lot::Mutex<HashMap<[u8; 32], AccessClaims>>,
    /// Keys still accepted for verification (rotated-out keys), by kid; includes `signing`.
    verifying: HashMap<String, DecodingKey>,
    validation: Validation,
    issuer: String,
    access_ttl: Duration,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService").field("kid", &self.signing.kid).finish_non_exhaustive()
    }
}

impl TokenService {
    /// `signing` signs new tokens; `retired` keys still verify tokens they signed.
    pub fn new(signing: JwtKeyPair, retired: Vec<JwtKeyPair>, issuer: &str, access_ttl: Duration) -> Self {
        let mut verifying: HashMap<String, DecodingKey> = retired.into_iter().map(|k| (k.kid, k.decoding)).collect();
        verifying.insert(signing.kid.clone(), signing.decoding.clone());
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 5;
        Self {
            signing,
            verified: parking_lot::Mutex::new(HashMap::new()),
            verifying,
            validation,
            issuer: issuer.to_owned(),
            access_ttl,
        }
    }

    /// Lifetime of access tokens.
    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    /// Signs an access token.
    pub fn issue(
        &self,
        user: UserId,
        device: DeviceId,
        session: SessionId,
        role: PlatformRole,
        now_secs: u64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = AccessClaims {
            sub: user.to_string(),
            did: device.0,
            sid: session.to_string(),
            role: role.as_str().to_owned(),
            iat: now_secs,
            exp: now_secs + self.access_ttl.as_secs(),
            iss: self.issuer.clone(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.signing.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.signing.encoding)
    }

    /// Checks signature, algorithm (EdDSA only: `none` and HMAC are refused), issuer and expiry.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        self.verify_at(token, unix_now())
    }

    /// [`TokenService::verify`] at a given time (Unix seconds) for cached tokens.
    fn verify_at(&self, token: &str, now_secs: u64) -> Result<AccessClaims, TokenError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let expired = |c: &AccessClaims| c.exp.saturating_add(self.validation.leeway) < now_secs;
        if let Some(claims) = self.verified.lock().get(&digest).cloned() {
            return if expired(&claims) { Err(TokenError::Expired) } else { Ok(claims) };
        }
        let claims = self.verify_signature(token)?;
        let mut cache = self.verified.lock();
        if cache.len() >= VERIFIED_CACHE_MAX {
            cache.retain(|_, c| !expired(c));
            if cache.len() >= VERIFIED_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(digest, claims.clone());
        Ok(claims)
    }

    fn verify_signature(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid);
        }
        let key = header.kid.as_deref().and_then(|kid| self.verifying.get(kid)).ok_or(TokenError::Invalid)?;
        match jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation) {
            Ok(data) => Ok(data.claims),
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => Err(TokenError::Expired),
            Err(_) => Err(TokenError::Invalid),
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A new refresh token and the hash to store.
pub fn new_refresh_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_refresh_token(&token);
    (token, hash)
}

/// SHA-256 (hex) of a refresh token. A fast hash is enough: the token has 256 bits of entropy.
pub fn hash_refresh_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> TokenService {
        let (key, _) = JwtKeyPair::generate("k1").expect("key");
        TokenService::new(key, vec![], "copains", Duration::from_secs(900))
    }

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
    }

    #[test]
    fn round_trip() {
        let svc = service();
        let t = svc.issue(UserId(7), DeviceId(2), SessionId(9), PlatformRole::Admin, now()).expect("issue");
        let c = svc.verify(&t).expect("verify");
        assert_eq!((c.user_id(), c.device_id(), c.session_id()), (Ok(UserId(7)), DeviceId(2), Ok(SessionId(9))));
        assert_eq!(c.role, "admin");
    }

    #[test]
    fn expired_forged_and_none_are_refused() {
        let svc = service();
        let old = svc.issue(UserId(1), DeviceId(1), SessionId(1), PlatformRole::Member, now() - 3600).expect("issue");
        assert_eq!(svc.verify(&old), Err(TokenError::Expired));

        let other = service();
        let foreign = other.issue(UserId(1), DeviceId(1), SessionId(1), PlatformRole::Member, now()).expect("issue");
        assert_eq!(svc.verify(&foreign), Err(TokenError::Invalid), "signed by another key with the same kid");

        let good = svc.issue(UserId(1), DeviceId(1), SessionId(1), PlatformRole::Member, now()).expect("issue");
        let parts: Vec<&str> = good.split('.').collect();
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
        assert_eq!(svc.verify(&format!("{none_header}.{}.", parts[1])), Err(TokenError::Invalid));
        let tampered_claims = URL_SAFE_NO_PAD.encode(
            format!(r#"{{"sub":"2","did":1,"sid":"1","role":"admin","iat":0,"exp":{},"iss":"copains"}}"#, now() + 60).as_bytes(),
        );
        assert_eq!(svc.verify(&format!("{}.{tampered_claims}.{}", parts[0], parts[2])), Err(TokenError::Invalid));
        assert_eq!(svc.verify("garbage"), Err(TokenError::Invalid));
    }

    #[test]
    fn a_cached_token_still_expires_and_a_tampered_one_is_not_cached() {
        let svc = service();
        let t = svc.issue(UserId(3), DeviceId(1), SessionId(4), PlatformRole::Member, now()).expect("issue");
        assert!(svc.verify(&t).is_ok());
        assert!(svc.verify(&t).is_ok(), "from the cache");
        assert_eq!(svc.verify_at(&t, now() + 900 + 6), Err(TokenError::Expired), "the cache keeps the expiry");
        // One character in the middle of the signature changed.
        let mut forged: Vec<char> = t.chars().collect();
        let i = forged.len() - 20;
        forged[i] = if forged[i] == 'A' { 'B' } else { 'A' };
        let forged: String = forged.into_iter().collect();
        assert_eq!(svc.verify(&forged), Err(TokenError::Invalid), "another token is verified on its own");
    }

    #[test]
    fn retired_keys_still_verify() {
        let (old, old_doc) = JwtKeyPair::generate("old").expect("key");
        let old_svc = TokenService::new(old, vec![], "copains", Duration::from_secs(900));
        let token = old_svc.issue(UserId(1), DeviceId(1), SessionId(1), PlatformRole::Member, now()).expect("issue");

        let (new, new_doc) = JwtKeyPair::generate("new").expect("key");
        let retired = JwtKeyPair::from_pkcs8("old", &old_doc).expect("reload");
        let rotated = TokenService::new(new, vec![retired], "copains", Duration::from_secs(900));
        assert!(rotated.verify(&token).is_ok(), "a retired key still verifies its tokens");

        let new_only = TokenService::new(
            JwtKeyPair::from_pkcs8("new", &new_doc).expect("reload"),
            vec![],
            "copains",
            Duration::from_secs(900),
        );
        assert_eq!(new_only.verify(&token), Err(TokenError::Invalid), "unknown kid");
    }

    #[test]
    fn refresh_tokens_are_random_and_hashed() {
        let (a, ha) = new_refresh_token();
        let (b, hb) = new_refresh_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(ha, hash_refresh_token(&a));
        assert_ne!(ha, hb);
        assert_eq!(ha.len(), 64);
    }
}
