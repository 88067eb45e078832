//! Who may connect: the JWT check (HS256 with `JWT_SECRET`; `exp`
//! required, `nbf` checked, `JWT_LEEWAY` of clock skew, `aud` and `iss`
//! when `JWT_AUDIENCE` / `JWT_ISSUER` are set), dev mode (`?user=` when no
//! secret is set), and the Origin allow-list (`ALLOWED_ORIGINS`). A token
//! also says what its user may do: broadcast, and which rooms
//! ([`crate::permissions`]); and until when (`exp`).

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::AuthSettings;
use crate::permissions::{Permissions, RoomsClaim};
use crate::protocol;

/// An authenticated client.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The user id (the token's `sub`, or `?user=` in dev mode).
    pub user: String,
    /// Whether it may send `broadcast` frames.
    pub may_broadcast: bool,
    /// The token's `meta` claim, kept with the session.
    pub metadata: serde_json::Value,
    /// The rooms it may join and publish into.
    pub permissions: Permissions,
    /// The token's `exp` (Unix seconds); `None` in dev mode. The connection
    /// is closed once it passes (plus the leeway) unless a `refresh` brings
    /// a later one.
    pub expires: Option<u64>,
}

/// Why a connect was refused (HTTP 401, or 400 for a malformed user id).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// `JWT_SECRET` is set and no token came.
    #[error("a token is required (?token= or Authorization: Bearer)")]
    Missing,
    /// The token failed to verify: bad signature, expired, not yet valid,
    /// no `exp`, wrong `aud` or `iss`, malformed claims.
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
    exp: u64,
    #[serde(default)]
    broadcast: bool,
    #[serde(default)]
    meta: serde_json::Value,
    #[serde(default)]
    rooms: Option<RoomsClaim>,
}

/// The node's connect policy.
pub struct Auth {
    key: Option<DecodingKey>,
    validation: Validation,
    leeway: Duration,
}

impl Auth {
    /// Tokens checked as `settings` say; no secret is dev mode.
    pub fn new(settings: &AuthSettings) -> Auth {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = settings.leeway.as_secs();
        validation.validate_nbf = true;
        validation.validate_exp = true;
        let mut required = vec!["sub", "exp"];
        match &settings.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            // jsonwebtoken refuses any `aud` unless told which to expect.
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &settings.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Auth {
            key: settings
                .secret
                .as_ref()
                .map(|s| DecodingKey::from_secret(s.as_bytes())),
            validation,
            leeway: settings.leeway,
        }
    }

    /// Whether tokens are required.
    pub fn is_enabled(&self) -> bool {
        self.key.is_some()
    }

    /// Clock skew tolerated on `exp`: a connection lives this long past it.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// Work out who is connecting. `dev_user` (`?user=`) only counts in dev
    /// mode; without it the user is `anon-` + the start of the sid.
    pub fn identify(
        &self,
        token: Option<&str>,
        dev_user: Option<&str>,
        sid: &str,
    ) -> Result<Identity, AuthError> {
        if self.key.is_none() {
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
                permissions: Permissions::all(),
                expires: None,
            });
        }
        self.verify(token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?)
    }

    /// Check a token (at connect, or a `refresh` on a live connection).
    /// In dev mode there are no tokens: it is refused as invalid.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let Some(key) = &self.key else {
            return Err(AuthError::Invalid("dev mode takes no tokens".into()));
        };
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let claims = data.claims;
        if !protocol::valid_user(&claims.sub) {
            return Err(AuthError::BadUser { from_token: true });
        }
        let permissions = match &claims.rooms {
            Some(rooms) => Permissions::from_claim(rooms).map_err(AuthError::Invalid)?,
            None => Permissions::none(),
        };
        Ok(Identity {
            user: claims.sub,
            may_broadcast: claims.broadcast,
            metadata: claims.meta,
            permissions,
            expires: Some(claims.exp),
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

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn settings(audience: Option<&str>, issuer: Option<&str>) -> AuthSettings {
        AuthSettings {
            secret: Some(KEY.into()),
            audience: audience.map(Into::into),
            issuer: issuer.map(Into::into),
            leeway: Duration::from_secs(30),
        }
    }

    #[test]
    fn dev_mode_takes_the_user_or_makes_one() {
        let auth = Auth::new(&AuthSettings {
            secret: None,
            audience: None,
            issuer: None,
            leeway: Duration::from_secs(30),
        });
        let id = auth.identify(None, Some("ann"), "s").unwrap();
        assert_eq!(id.user, "ann");
        assert!(id.permissions.may_publish("any/room"));
        assert_eq!(id.expires, None);
        assert_eq!(
            auth.identify(None, None, "0123456789").unwrap().user,
            "anon-01234567"
        );
        assert_eq!(
            auth.identify(None, Some("a b"), "s"),
            Err(AuthError::BadUser { from_token: false })
        );
        assert!(auth.verify("a.b.c").is_err(), "no tokens in dev mode");
    }

    #[test]
    fn tokens_are_checked() {
        let auth = Auth::new(&settings(None, None));
        let exp = now() + 60;
        let good = token(
            KEY,
            json!({"sub": "bob", "exp": exp, "meta": {"plan": "pro"}, "aud": "anyone"}),
        );
        let id = auth.identify(Some(&good), Some("mallory"), "s").unwrap();
        assert_eq!(id.user, "bob");
        assert!(!id.may_broadcast);
        assert_eq!(id.metadata["plan"], "pro");
        assert_eq!(id.expires, Some(exp));
        assert!(
            !id.permissions.may_join("lobby"),
            "no rooms claim: no rooms"
        );

        assert_eq!(
            auth.identify(None, Some("bob"), "s"),
            Err(AuthError::Missing)
        );
        let cases = [
            (
                "wrong key",
                token("other", json!({"sub": "bob", "exp": now() + 60})),
            ),
            (
                "expired",
                token(KEY, json!({"sub": "bob", "exp": now() - 120})),
            ),
            (
                "not yet valid",
                token(
                    KEY,
                    json!({"sub": "bob", "nbf": now() + 120, "exp": now() + 600}),
                ),
            ),
            ("no sub", token(KEY, json!({"exp": now() + 60}))),
            (
                "no exp",
                token(KEY, json!({"sub": "ops", "broadcast": true})),
            ),
            (
                "bad pattern",
                token(
                    KEY,
                    json!({"sub": "bob", "exp": now() + 60, "rooms": {"join": ["a*b"]}}),
                ),
            ),
            ("garbage", "not.a.token".to_owned()),
        ];
        for (why, t) in cases {
            assert!(
                matches!(
                    auth.identify(Some(&t), None, "s"),
                    Err(AuthError::Invalid(_))
                ),
                "{why}"
            );
        }
        let within_leeway = token(KEY, json!({"sub": "bob", "exp": now() - 10}));
        assert!(auth.verify(&within_leeway).is_ok(), "30 s of skew allowed");
        let admin = token(
            KEY,
            json!({"sub": "ops", "broadcast": true, "exp": now() + 60,
                   "rooms": {"join": ["team/*"], "publish": ["team/1"]}}),
        );
        let id = auth.identify(Some(&admin), None, "s").unwrap();
        assert!(id.may_broadcast);
        assert!(id.permissions.may_join("team/9"));
        assert!(id.permissions.may_publish("team/1"));
        assert!(!id.permissions.may_publish("team/9"));
    }

    #[test]
    fn audience_and_issuer_are_checked_when_set() {
        let auth = Auth::new(&settings(Some("chat"), Some("https://id.example")));
        let exp = now() + 60;
        let with = |claims: serde_json::Value| auth.verify(&token(KEY, claims));
        assert!(
            with(json!({"sub": "b", "exp": exp, "aud": "chat", "iss": "https://id.example"}))
                .is_ok()
        );
        assert!(with(
            json!({"sub": "b", "exp": exp, "aud": ["x", "chat"], "iss": "https://id.example"})
        )
        .is_ok());
        assert!(
            with(json!({"sub": "b", "exp": exp, "aud": "other", "iss": "https://id.example"}))
                .is_err()
        );
        assert!(
            with(json!({"sub": "b", "exp": exp, "iss": "https://id.example"})).is_err(),
            "aud required"
        );
        assert!(with(json!({"sub": "b", "exp": exp, "aud": "chat", "iss": "evil"})).is_err());
        assert!(
            with(json!({"sub": "b", "exp": exp, "aud": "chat"})).is_err(),
            "iss required"
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
