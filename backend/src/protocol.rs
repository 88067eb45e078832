//! Client protocol v1 (`docs/PROTOCOL.md`): parsing client frames and
//! rendering server frames. Pure: no I/O, no state.
//!
//! Parsing is two-stage so that every failure has the right code: first the
//! frame must be a JSON object with a string `type` (else `bad_json`), then
//! each field is read with its own type (else `bad_request`, naming the
//! field). Publish payloads stay raw JSON text from socket to subscribers:
//! they are never re-serialized.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::history::Position;

/// Close code: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code: the node is going away (shutdown); reconnect elsewhere.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: policy violation (the rate limit kept being exceeded).
pub const CLOSE_POLICY: u16 = 1008;
/// Close code: a message too big to process.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code: try again later (the client read too slowly).
pub const CLOSE_TRY_AGAIN: u16 = 1013;
/// Close code: the session was resumed on another connection.
pub const CLOSE_SUPERSEDED: u16 = 4001;
/// Close code: the connection's token expired (its `exp`, plus
/// `JWT_LEEWAY`) and no `refresh` brought a later one; reconnect with a
/// fresh token.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4401;
/// Close code: the client stopped answering heartbeats.
pub const CLOSE_HEARTBEAT_TIMEOUT: u16 = 4408;

/// Longest room name, in bytes.
pub const MAX_ROOM_LEN: usize = 128;
/// Longest user id, in bytes.
pub const MAX_USER_LEN: usize = 64;
/// Longest session id, in bytes.
pub const MAX_SID_LEN: usize = 128;
/// The room every connection is in; `broadcast` writes into it.
pub const BROADCAST_ROOM: &str = "*";

/// The `code` of an error frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Not a JSON object with a string `type`.
    BadJson,
    /// `type` names no client frame.
    UnknownType,
    /// A field is missing or of the wrong type.
    BadRequest,
    /// A room name breaks the naming rules.
    BadRoom,
    /// The user may not do this (another's inbox, a reserved room).
    Forbidden,
    /// A binary frame; the protocol is JSON text.
    BinaryUnsupported,
    /// The per-connection rate, or the user's publish or direct rate, was
    /// exceeded; the frame was dropped.
    RateLimited,
    /// A `refresh` token failed to verify or names another user.
    Unauthorized,
    /// Redis is unreachable or did not answer in time (a publish says
    /// whether its message may be stored: [`Outcome`]).
    Unavailable,
}

impl ErrorCode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::BadRoom => "bad_room",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::BinaryUnsupported => "binary_unsupported",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

/// A frame the client sent, with borrowed raw JSON where it is passed on.
#[derive(Debug)]
pub enum ClientFrame<'a> {
    /// Join a room, optionally recovering from a position.
    Join {
        /// The room.
        room: String,
        /// Last position the client received.
        since: Option<Position>,
    },
    /// Leave a room.
    Leave {
        /// The room.
        room: String,
    },
    /// Store and deliver to a room.
    Publish {
        /// The room.
        room: String,
        /// The payload, verbatim.
        data: &'a RawValue,
    },
    /// Deliver to every connection of a user.
    Direct {
        /// The recipient user id.
        to: String,
        /// The payload, verbatim.
        data: &'a RawValue,
    },
    /// Deliver to every connection.
    Broadcast {
        /// The payload, verbatim.
        data: &'a RawValue,
    },
    /// Who is in a room.
    Presence {
        /// The room.
        room: String,
    },
    /// A new token for this connection, before the current one expires.
    Refresh {
        /// The JWT.
        token: String,
    },
    /// Liveness check.
    Ping,
}

/// Longest request `id`, as JSON text, in bytes: it is part of the key a
/// publish is remembered under.
pub const MAX_ID_LEN: usize = 128;

/// What an `unavailable` answer to a publish knows about the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Certainly not stored: a retry (with or without `id`) is safe.
    NotStored,
    /// No answer came in time: it may be stored. Only a retry with the
    /// same `id` is safe (it is acked with the original position).
    Unknown,
}

impl Outcome {
    /// The wire name (the error frame's `outcome`).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::NotStored => "not_stored",
            Outcome::Unknown => "unknown",
        }
    }
}

/// A parsed client frame and the `id` to echo in its answer.
#[derive(Debug)]
pub struct Request<'a> {
    /// What was asked.
    pub frame: ClientFrame<'a>,
    /// The client's request id (a JSON string or number), verbatim.
    pub id: Option<&'a RawValue>,
}

/// Why a client frame was refused: the error frame to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    /// The error code.
    pub code: ErrorCode,
    /// A sentence for humans.
    pub message: String,
    /// The client's request id, verbatim JSON, if it could be read.
    pub id: Option<String>,
    /// For a failed publish: whether the message may have been stored.
    pub outcome: Option<Outcome>,
}

impl ProtocolError {
    /// An error without a request id.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtocolError {
            code,
            message: message.into(),
            id: None,
            outcome: None,
        }
    }

    /// Say what is known about a failed publish's message.
    pub fn with_outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = Some(outcome);
        self
    }

    /// Attach the request id it answers.
    pub fn with_id(mut self, id: Option<&RawValue>) -> Self {
        self.id = id.map(|r| r.get().to_owned());
        self
    }

    /// The error frame.
    pub fn frame(&self) -> String {
        let mut frame = error_frame(self.code, &self.message, self.id.as_deref());
        if let Some(outcome) = self.outcome {
            frame.pop();
            let _ = write!(frame, r#","outcome":"{}"}}"#, outcome.as_str());
        }
        frame
    }
}

#[derive(Deserialize)]
struct Since {
    epoch: String,
    offset: u64,
}

/// Parse one text frame.
pub fn parse(text: &str) -> Result<Request<'_>, ProtocolError> {
    let fields: HashMap<&str, &RawValue> = serde_json::from_str(text)
        .map_err(|_| ProtocolError::new(ErrorCode::BadJson, "a frame must be a JSON object"))?;
    let id = fields.get("id").copied();
    if let Some(raw) = id {
        let t = raw.get().as_bytes()[0];
        if !(t == b'"' || t == b'-' || t.is_ascii_digit()) {
            return Err(ProtocolError::new(
                ErrorCode::BadRequest,
                "`id` must be a string or a number",
            ));
        }
        if raw.get().len() > MAX_ID_LEN {
            return Err(ProtocolError::new(
                ErrorCode::BadRequest,
                format!("`id` must be at most {MAX_ID_LEN} bytes of JSON"),
            ));
        }
    }
    let kind: String = match fields.get("type") {
        Some(raw) => serde_json::from_str(raw.get()).map_err(|_| {
            ProtocolError::new(ErrorCode::BadJson, "`type` must be a string").with_id(id)
        })?,
        None => {
            return Err(
                ProtocolError::new(ErrorCode::BadJson, "a frame needs a `type`").with_id(id),
            )
        }
    };
    let frame = match kind.as_str() {
        "join" => ClientFrame::Join {
            room: field(&fields, "room")?,
            since: optional::<Since>(&fields, "since")?.map(|s| Position {
                epoch: s.epoch,
                offset: s.offset,
            }),
        },
        "leave" => ClientFrame::Leave {
            room: field(&fields, "room")?,
        },
        "publish" => ClientFrame::Publish {
            room: field(&fields, "room")?,
            data: raw_field(&fields, "data")?,
        },
        "direct" => ClientFrame::Direct {
            to: field(&fields, "to")?,
            data: raw_field(&fields, "data")?,
        },
        "broadcast" => ClientFrame::Broadcast {
            data: raw_field(&fields, "data")?,
        },
        "presence" => ClientFrame::Presence {
            room: field(&fields, "room")?,
        },
        "refresh" => ClientFrame::Refresh {
            token: field(&fields, "token")?,
        },
        "ping" => ClientFrame::Ping,
        other => {
            return Err(ProtocolError::new(
                ErrorCode::UnknownType,
                format!("unknown frame type `{}`", truncate(other, 64)),
            )
            .with_id(id))
        }
    };
    Ok(Request { frame, id })
}

fn field<T: serde::de::DeserializeOwned>(
    fields: &HashMap<&str, &RawValue>,
    name: &str,
) -> Result<T, ProtocolError> {
    optional(fields, name)?.ok_or_else(|| {
        ProtocolError::new(ErrorCode::BadRequest, format!("`{name}` is required"))
            .with_id(fields.get("id").copied())
    })
}

fn optional<T: serde::de::DeserializeOwned>(
    fields: &HashMap<&str, &RawValue>,
    name: &str,
) -> Result<Option<T>, ProtocolError> {
    match fields.get(name) {
        None => Ok(None),
        Some(raw) if raw.get() == "null" => Ok(None),
        Some(raw) => serde_json::from_str(raw.get()).map(Some).map_err(|_| {
            ProtocolError::new(
                ErrorCode::BadRequest,
                format!("`{name}` has the wrong type"),
            )
            .with_id(fields.get("id").copied())
        }),
    }
}

fn raw_field<'a>(
    fields: &HashMap<&str, &'a RawValue>,
    name: &str,
) -> Result<&'a RawValue, ProtocolError> {
    fields.get(name).copied().ok_or_else(|| {
        ProtocolError::new(ErrorCode::BadRequest, format!("`{name}` is required"))
            .with_id(fields.get("id").copied())
    })
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// What kind of room a name denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomKind<'a> {
    /// An ordinary room.
    Plain,
    /// A user's inbox, `@<user>`.
    Inbox(&'a str),
    /// The broadcast room `*`.
    Broadcast,
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.:~@+".contains(&b)
}

/// Check a room name and say what kind it is.
pub fn room_kind(room: &str) -> Result<RoomKind<'_>, ProtocolError> {
    if room == BROADCAST_ROOM {
        return Ok(RoomKind::Broadcast);
    }
    let bad = || {
        ProtocolError::new(
            ErrorCode::BadRoom,
            format!(
                "room names are 1-{MAX_ROOM_LEN} characters of A-Z a-z 0-9 - _ . : ~ @ + /; `@user` is an inbox and `*` the broadcast room"
            ),
        )
    };
    if room.is_empty() || room.len() > MAX_ROOM_LEN {
        return Err(bad());
    }
    if let Some(user) = room.strip_prefix('@') {
        return if valid_user(user) {
            Ok(RoomKind::Inbox(user))
        } else {
            Err(bad())
        };
    }
    if room.bytes().all(|b| is_name_byte(b) || b == b'/') {
        Ok(RoomKind::Plain)
    } else {
        Err(bad())
    }
}

/// Is this a usable user id (1-64 characters of `A-Z a-z 0-9 - _ . : ~ @ +`)?
pub fn valid_user(user: &str) -> bool {
    !user.is_empty() && user.len() <= MAX_USER_LEN && user.bytes().all(is_name_byte)
}

/// Is this a usable session id (1-128 characters of `A-Z a-z 0-9 - _ . : ~`)?
pub fn valid_sid(sid: &str) -> bool {
    !sid.is_empty()
        && sid.len() <= MAX_SID_LEN
        && sid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:~".contains(&b))
}

/// The inbox room of a user.
pub fn inbox(user: &str) -> String {
    format!("@{user}")
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// `{"type":"welcome",…}`.
pub fn welcome_frame(
    sid: &str,
    worker_id: &str,
    user: &str,
    resumed: bool,
    rooms: &[String],
) -> String {
    serde_json::json!({
        "type": "welcome",
        "sid": sid,
        "worker_id": worker_id,
        "user": user,
        "resumed": resumed,
        "rooms": rooms,
    })
    .to_string()
}

/// `{"type":"joined",…}`.
pub fn joined_frame(room: &str, position: &Position, recovered: bool) -> String {
    format!(
        r#"{{"type":"joined","room":{},"epoch":{},"offset":{},"recovered":{recovered}}}"#,
        json_str(room),
        json_str(&position.epoch),
        position.offset
    )
}

/// An unprompted `{"type":"joined",…,"recovered":false,"reset":true}`:
/// continuity of a joined room broke (its history was reset, or a gap in
/// live delivery could not be filled); delivery continues after `position`.
pub fn reset_frame(room: &str, position: &Position) -> String {
    format!(
        r#"{{"type":"joined","room":{},"epoch":{},"offset":{},"recovered":false,"reset":true}}"#,
        json_str(room),
        json_str(&position.epoch),
        position.offset
    )
}

/// `{"type":"left",…}`.
pub fn left_frame(room: &str) -> String {
    format!(r#"{{"type":"left","room":{}}}"#, json_str(room))
}

/// `{"type":"ack",…}`: `id` is verbatim JSON.
pub fn ack_frame(id: &str, room: &str, position: &Position) -> String {
    format!(
        r#"{{"type":"ack","id":{id},"room":{},"epoch":{},"offset":{}}}"#,
        json_str(room),
        json_str(&position.epoch),
        position.offset
    )
}

/// `{"type":"presence",…}`.
pub fn presence_frame(room: &str, users: &[String]) -> String {
    serde_json::json!({"type": "presence", "room": room, "users": users}).to_string()
}

/// `{"type":"refreshed","exp":…}`: the connection now lives until `exp`
/// (`null`: no expiry, dev mode); `id` is verbatim JSON.
pub fn refreshed_frame(exp: Option<u64>, id: Option<&str>) -> String {
    let exp = exp.map_or_else(|| "null".to_owned(), |e| e.to_string());
    match id {
        Some(id) => format!(r#"{{"type":"refreshed","exp":{exp},"id":{id}}}"#),
        None => format!(r#"{{"type":"refreshed","exp":{exp}}}"#),
    }
}

/// `{"type":"pong"}`.
pub const PONG_FRAME: &str = r#"{"type":"pong"}"#;

/// `{"type":"error",…}`: `id` is verbatim JSON.
pub fn error_frame(code: ErrorCode, message: &str, id: Option<&str>) -> String {
    let mut out = format!(
        r#"{{"type":"error","code":"{}","message":{}"#,
        code.as_str(),
        json_str(message)
    );
    if let Some(id) = id {
        let _ = write!(out, r#","id":{id}"#);
    }
    out.push('}');
    out
}

/// The stored and published part of a message, rendered once by the
/// publisher: `"from":…,"ts":…,"data":…`. Nodes splice it into each
/// `message` frame without parsing it.
pub fn message_body(from: &str, ts_ms: u64, data: &RawValue) -> String {
    format!(
        r#""from":{},"ts":{ts_ms},"data":{}"#,
        json_str(from),
        data.get()
    )
}

/// `{"type":"message",…}` from a stored body.
pub fn message_frame(room: &str, epoch: &str, offset: u64, body: &str) -> String {
    format!(
        r#"{{"type":"message","room":{},"epoch":{},"offset":{offset},{body}}}"#,
        json_str(room),
        json_str(epoch)
    )
}

#[cfg(test)]
mod tests;
