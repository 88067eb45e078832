//! Connect tokens for tests: HS256 JWTs as an application's identity
//! service would mint them, with `exp` (the node requires it) and a secret
//! long enough for the node to accept.

use serde_json::{json, Value};

/// A `JWT_SECRET` for tests: the node refuses secrets under 32 bytes.
pub const TEST_JWT_SECRET: &str = "ringway-test-secret-0123456789-abcdef";

/// Seconds since the Unix epoch, for token claims.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// An HS256 token with these claims, signed with `secret`. Claims are
/// taken as given: a test of a token without `exp` leaves it out.
pub fn mint_token(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token encodes")
}

/// A token for `user` valid for `ttl_secs` from now, with these extra claims
/// (`rooms`, `broadcast` …) merged in.
pub fn user_token(secret: &str, user: &str, ttl_secs: u64, extra: Value) -> String {
    let mut claims = json!({"sub": user, "exp": unix_now() + ttl_secs});
    if let (Some(c), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    mint_token(secret, &claims)
}
