//! Who may connect: the JWT check (HS256 with `JWT_SECRET`; `exp` and `nbf`
//! checked, 30 s leeway), dev mode (`?user=` when no secret is set), and
//! the Origin allow-list (`ALLOWED_ORIGINS`).

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::protocol;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// An authenticated client.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The user id (the token's `sub`, or `?user=` in dev mode).
    pub user: String,
    /// Whether it may send `broadcast` frames.
    pub may_broadcast: bool,
    /// The token's `meta` claim, kept with the session.
    pub metadata: serde_json::Value,
}

/// Why a connect was refused (HTTP 401, or 400 for a malformed user id).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// `JWT_SECRET` is set and no token came.
    #[error("a token is required (?token= or Authorization: Bearer)")]
    Missing,
    /// The token failed to verify: bad signature, expired, not yet valid, malformed.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The user id cannot be used (401 when it came from a token, 400 from `?user=`).
    #[error("user ids are 1-64 characters of A-Z a-z 0-9 - _ . : ~ @ +")]
    BadUser {
        /// Whether it came from a verified token.
        from_token: bool,
    },
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    broadcast: bool,
    #[serde(default)]
    meta: serde_json::Value,
}

/// The node's connect policy.
pub struct Auth {
    key: Option<DecodingKey>,
    validation: Validation,
}

impl Auth {
    /// Tokens signed with `secret` are required; `None` is dev mode.
    pub fn new(secret: Option<&str>) -> Auth {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["sub"]);
        Auth {
            key: secret.map(|s| DecodingKey::from_secret(s.as_bytes())),
            validation,
        }
    }

    /// Whether tokens are required.
    pub fn is_enabled(&self) -> bool {
        self.key.is_some()
    }

    /// Work out who is connecting. `dev_user` (`?user=`) only counts in dev
    /// mode; without it the user is `anon-` + the start of the sid.
    pub fn identify(
        &self,
        token: Option<&str>,
        dev_user: Option<&str>,
        sid: &str,
    ) -> Result<Identity, AuthError> {
        let Some(key) = &self.key else {
            let user = match dev_user {
                Some(u) => u.to_owned(),
                None => format!("anon-{}", &sid[..sid.len().min(8)]),
            };
            if !protocol::valid_user(&user) {
                return Err(AuthError::BadUser { from_token: false });
            }
            return Ok(Identity {
                user,
                may_broadcast: true,
                metadata: serde_json::Value::Null,
            });
        };
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let claims = data.claims;
        if !protocol::valid_user(&claims.sub) {
            return Err(AuthError::BadUser { from_token: true });
        }
        Ok(Identity {
            user: claims.sub,
            may_broadcast: claims.broadcast,
            metadata: claims.meta,
        })
    }
}

/// Is a request with this `Origin` allowed? No list allows any; a request
/// without `Origin` (not a browser) is allowed.
pub fn origin_allowed(allowed: Option<&[String]>, origin: Option<&str>) -> bool {
    match (allowed, origin) {
        (None, _) | (_, None) => true,
        (Some(list), Some(origin)) => {
            let origin = origin.trim_end_matches('/');
            list.iter().any(|a| a.eq_ignore_ascii_case(origin))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn token(secret: &str, claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn dev_mode_takes_the_user_or_makes_one() {
        let auth = Auth::new(None);
        assert_eq!(auth.identify(None, Some("ann"), "s").unwrap().user, "ann");
        assert_eq!(
            auth.identify(None, None, "0123456789").unwrap().user,
            "anon-01234567"
        );
        assert_eq!(
            auth.identify(None, Some("a b"), "s"),
            Err(AuthError::BadUser { from_token: false })
        );
    }

    #[test]
    fn tokens_are_checked() {
        let auth = Auth::new(Some("k"));
        let good = token(
            "k",
            json!({"sub": "bob", "exp": now() + 60, "meta": {"plan": "pro"}}),
        );
        let id = auth.identify(Some(&good), Some("mallory"), "s").unwrap();
        assert_eq!(id.user, "bob");
        assert!(!id.may_broadcast);
        assert_eq!(id.metadata["plan"], "pro");

        assert_eq!(
            auth.identify(None, Some("bob"), "s"),
            Err(AuthError::Missing)
        );
        let cases = [
            token("other", json!({"sub": "bob", "exp": now() + 60})),
            token("k", json!({"sub": "bob", "exp": now() - 120})),
            token(
                "k",
                json!({"sub": "bob", "nbf": now() + 120, "exp": now() + 600}),
            ),
            token("k", json!({"exp": now() + 60})),
            "not.a.token".to_owned(),
        ];
        for t in cases {
            assert!(
                matches!(
                    auth.identify(Some(&t), None, "s"),
                    Err(AuthError::Invalid(_))
                ),
                "{t}"
            );
        }
        let admin = token("k", json!({"sub": "ops", "broadcast": true}));
        assert!(
            auth.identify(Some(&admin), None, "s")
                .unwrap()
                .may_broadcast
        );
    }

    #[test]
    fn origins() {
        let list = vec!["https://app.example".to_owned()];
        assert!(origin_allowed(None, Some("https://evil.example")));
        assert!(origin_allowed(Some(&list), None));
        assert!(origin_allowed(Some(&list), Some("https://APP.example/")));
        assert!(!origin_allowed(Some(&list), Some("https://evil.example")));
    }
}
