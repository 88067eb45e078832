//! The HTTP publish API, for application servers: `POST /api/publish`,
//! `/api/direct` and `/api/broadcast` with `Authorization: Bearer
//! <API_KEY>`. A message posted here goes through the same broker call as
//! a WebSocket `publish` — the same numbering, history and delivery to
//! every node — and the answer is the position it was stored at. An `id`
//! makes it idempotent exactly like the WebSocket frame's, in the
//! namespace `api` (so API ids never meet a session's).
//!
//! Without `API_KEY` the routes do not exist (404): a node never accepts
//! writes from a key nobody set.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::json;
use serde_json::value::RawValue;
use subtle::ConstantTimeEq;

use crate::broker::now_us;
use crate::idempotency::IdempotencyKey;
use crate::protocol::{self, RoomKind, MAX_ID_LEN};
use crate::store::now_ms;
use crate::Node;

/// The idempotency namespace of API publishes.
pub const NAMESPACE: &str = "api";

/// The `from` of a message posted without one.
pub const DEFAULT_FROM: &str = "api";

/// Add the API's routes to `router`, with request bodies capped at
/// `max_body` bytes (`WS_MAX_MESSAGE_SIZE`, as for a WebSocket frame).
pub fn routes(router: Router<Arc<Node>>, max_body: usize) -> Router<Arc<Node>> {
    let api = Router::new()
        .route("/api/publish", post(publish))
        .route("/api/direct", post(direct))
        .route("/api/broadcast", post(broadcast))
        .layer(DefaultBodyLimit::max(max_body));
    router.merge(api)
}

/// Where a request writes.
enum Target {
    Publish,
    Direct,
    Broadcast,
}

async fn publish(State(node): State<Arc<Node>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&node, &headers, &body, Target::Publish).await
}

async fn direct(State(node): State<Arc<Node>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&node, &headers, &body, Target::Direct).await
}

async fn broadcast(State(node): State<Arc<Node>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&node, &headers, &body, Target::Broadcast).await
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": code, "message": message}))).into_response()
}

/// A refusal on its way out (boxed: a `Response` is large for an `Err`).
type Refused = Box<Response>;

fn refused(status: StatusCode, code: &str, message: &str) -> Refused {
    Box::new(error(status, code, message))
}

/// 401 as RFC 6750 says: a challenge, and `invalid_token` when a wrong
/// key was sent.
fn unauthorized(sent: bool) -> Response {
    let challenge = if sent {
        r#"Bearer realm="ringway", error="invalid_token""#
    } else {
        r#"Bearer realm="ringway""#
    };
    let mut resp = error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Authorization: Bearer <API_KEY> is required",
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    resp
}

/// Whether the request carries the key; compared in constant time, so
/// the time taken says nothing about how much of a guess was right.
fn authorized(key: &str, headers: &HeaderMap) -> Result<(), Refused> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
        });
    match given {
        None => Err(Box::new(unauthorized(false))),
        Some(given) if bool::from(given.as_bytes().ct_eq(key.as_bytes())) => Ok(()),
        Some(_) => Err(Box::new(unauthorized(true))),
    }
}

fn string_field(fields: &HashMap<&str, &RawValue>, name: &str) -> Result<Option<String>, Refused> {
    match fields.get(name) {
        None => Ok(None),
        Some(raw) => serde_json::from_str(raw.get()).map(Some).map_err(|_| {
            refused(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("`{name}` must be a string"),
            )
        }),
    }
}

/// The room a request writes into, checked as a WebSocket frame's would be.
fn room_of(target: &Target, fields: &HashMap<&str, &RawValue>) -> Result<String, Refused> {
    let bad = |code: &str, m: &str| refused(StatusCode::BAD_REQUEST, code, m);
    match target {
        Target::Broadcast => Ok(protocol::BROADCAST_ROOM.to_owned()),
        Target::Direct => match string_field(fields, "to")? {
            Some(to) if protocol::valid_user(&to) => Ok(protocol::inbox(&to)),
            Some(_) => Err(bad(
                "bad_request",
                "`to` must be a user id (1-64 characters of A-Z a-z 0-9 - _ . : ~ @ +)",
            )),
            None => Err(bad("bad_request", "`to` is required")),
        },
        Target::Publish => {
            let room = string_field(fields, "room")?
                .ok_or_else(|| bad("bad_request", "`room` is required"))?;
            match protocol::room_kind(&room) {
                Ok(RoomKind::Plain) => Ok(room),
                Ok(RoomKind::Inbox(_)) => Err(bad("bad_room", "inboxes take /api/direct")),
                Ok(RoomKind::Broadcast) => Err(bad("bad_room", "`*` takes /api/broadcast")),
                Err(e) => Err(bad("bad_room", &e.message)),
            }
        }
    }
}

async fn handle(node: &Node, headers: &HeaderMap, body: &[u8], target: Target) -> Response {
    let Some(key) = node.config.api_key.as_deref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Err(resp) = authorized(key, headers) {
        return *resp;
    }
    let fields: HashMap<&str, &RawValue> = match serde_json::from_slice(body) {
        Ok(f) => f,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_json",
                "the body must be a JSON object",
            )
        }
    };
    let room = match room_of(&target, &fields) {
        Ok(room) => room,
        Err(resp) => return *resp,
    };
    let Some(data) = fields.get("data").copied() else {
        return error(StatusCode::BAD_REQUEST, "bad_request", "`data` is required");
    };
    let id = fields.get("id").copied();
    if let Some(id) = id {
        let first = id.get().as_bytes()[0];
        if !(first == b'"' || first == b'-' || first.is_ascii_digit())
            || id.get().len() > MAX_ID_LEN
        {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("`id` must be a string or a number of at most {MAX_ID_LEN} bytes of JSON"),
            );
        }
    }
    let from = match string_field(&fields, "from") {
        Ok(Some(from)) if protocol::valid_user(&from) => from,
        Ok(Some(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "`from` must be a user id",
            )
        }
        Ok(None) => DEFAULT_FROM.to_owned(),
        Err(resp) => return *resp,
    };
    let body = protocol::message_body(&from, now_ms(), data);
    let key = id.map(|id| IdempotencyKey::new(NAMESPACE, id.get()));
    match node
        .broker
        .publish(&room, &body, now_us(), key.as_ref())
        .await
    {
        Ok(published) => {
            if published.repeated {
                node.metrics.publishes_repeated.inc();
            }
            let p = &published.position;
            Json(json!({
                "room": room,
                "epoch": p.epoch,
                "offset": p.offset,
                "repeated": published.repeated,
            }))
            .into_response()
        }
        Err(e) => {
            node.redis_error(&e);
            let outcome = if e.did_nothing() {
                protocol::Outcome::NotStored
            } else {
                protocol::Outcome::Unknown
            };
            let body = json!({
                "error": "unavailable",
                "message": "the message store is unreachable or did not answer; retry with the same `id`",
                "outcome": outcome.as_str(),
            });
            let mut resp = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_must_match_exactly() {
        let key = "0123456789abcdef-key";
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            h
        };
        assert!(authorized(key, &with(&format!("Bearer {key}"))).is_ok());
        assert!(authorized(key, &with(&format!("bearer {key}"))).is_ok());
        for wrong in [
            format!("Bearer {key}x"),
            "Bearer 0123456789abcdef-ke".to_owned(),
            format!("Basic {key}"),
            "Bearer".to_owned(),
        ] {
            let resp = authorized(key, &with(&wrong)).unwrap_err();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{wrong}");
            assert!(resp.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer"));
        }
        let resp = authorized(key, &HeaderMap::new()).unwrap_err();
        assert_eq!(
            resp.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer realm="ringway""#
        );
    }
}
