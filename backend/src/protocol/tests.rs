//! Parsing and rendering of protocol v1 frames, kept beside the module
//! so the module itself stays short.

use super::*;
use serde_json::Value;

fn code_of(text: &str) -> ErrorCode {
    parse(text).unwrap_err().code
}

#[test]
fn frames_parse() {
    let r = parse(r#"{"type":"join","room":"lobby","since":{"epoch":"e1","offset":4}}"#).unwrap();
    match r.frame {
        ClientFrame::Join { room, since } => {
            assert_eq!(room, "lobby");
            assert_eq!(
                since,
                Some(Position {
                    epoch: "e1".into(),
                    offset: 4
                })
            );
        }
        other => panic!("{other:?}"),
    }
    let r = parse(r#"{"type":"publish","room":"r","data":{"a":[1,2]},"id":7}"#).unwrap();
    match r.frame {
        ClientFrame::Publish { data, .. } => assert_eq!(data.get(), r#"{"a":[1,2]}"#),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.id.unwrap().get(), "7");
    assert!(matches!(
        parse(r#"{"type":"ping"}"#).unwrap().frame,
        ClientFrame::Ping
    ));
    assert!(matches!(
        parse(r#"{"type":"refresh","token":"a.b.c"}"#).unwrap().frame,
        ClientFrame::Refresh { token } if token == "a.b.c"
    ));
    assert_eq!(code_of(r#"{"type":"refresh"}"#), ErrorCode::BadRequest);
    assert!(matches!(
        parse(r#"{"type":"join","room":"r","since":null}"#)
            .unwrap()
            .frame,
        ClientFrame::Join { since: None, .. }
    ));
}

#[test]
fn bad_frames_get_their_codes() {
    assert_eq!(code_of("not json"), ErrorCode::BadJson);
    assert_eq!(code_of("[1,2]"), ErrorCode::BadJson);
    assert_eq!(code_of(r#"{"room":"x"}"#), ErrorCode::BadJson);
    assert_eq!(code_of(r#"{"type":5}"#), ErrorCode::BadJson);
    assert_eq!(code_of(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
    assert_eq!(code_of(r#"{"type":"join"}"#), ErrorCode::BadRequest);
    assert_eq!(
        code_of(r#"{"type":"join","room":3}"#),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code_of(r#"{"type":"publish","room":"r"}"#),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code_of(r#"{"type":"join","room":"r","since":{"epoch":"e"}}"#),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code_of(r#"{"type":"ping","id":{"x":1}}"#),
        ErrorCode::BadRequest
    );
}

#[test]
fn errors_echo_the_request_id() {
    let e = parse(r#"{"type":"dance","id":"q1"}"#).unwrap_err();
    let v: Value = serde_json::from_str(&e.frame()).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["code"], "unknown_type");
    assert_eq!(v["id"], "q1");
}

#[test]
fn publish_failures_say_whether_the_message_may_be_stored() {
    let e = ProtocolError::new(ErrorCode::Unavailable, "x")
        .with_outcome(Outcome::Unknown)
        .with_id(Some(
            &*serde_json::from_str::<Box<RawValue>>("\"p1\"").unwrap(),
        ));
    let v: Value = serde_json::from_str(&e.frame()).unwrap();
    assert_eq!(v["outcome"], "unknown");
    assert_eq!(v["id"], "p1");
    let v: Value =
        serde_json::from_str(&ProtocolError::new(ErrorCode::Forbidden, "no").frame()).unwrap();
    assert!(v.get("outcome").is_none());
}

#[test]
fn long_ids_are_refused() {
    let id = "9".repeat(MAX_ID_LEN + 1);
    let frame = format!(r#"{{"type":"ping","id":{id}}}"#);
    assert_eq!(code_of(&frame), ErrorCode::BadRequest);
    let frame = format!(r#"{{"type":"ping","id":{}}}"#, "9".repeat(MAX_ID_LEN));
    assert!(parse(&frame).is_ok());
}

#[test]
fn room_names() {
    assert_eq!(room_kind("lobby/eu-1").unwrap(), RoomKind::Plain);
    assert_eq!(room_kind("@alice").unwrap(), RoomKind::Inbox("alice"));
    assert_eq!(room_kind("*").unwrap(), RoomKind::Broadcast);
    for bad in ["", "@", "a b", "a{b}", "x*", &"r".repeat(129)] {
        assert_eq!(
            room_kind(bad).unwrap_err().code,
            ErrorCode::BadRoom,
            "{bad:?}"
        );
    }
    assert!(valid_user("bob@example.com"));
    assert!(!valid_user("bob/x"));
    assert!(valid_sid("9b1c-aa:1"));
    assert!(!valid_sid("a b"));
}

#[test]
fn rendered_frames_are_json() {
    let data: Box<RawValue> = serde_json::from_str(r#"{"text":"hé \"q\""}"#).unwrap();
    let body = message_body("bo\"b", 12, &data);
    let frame = message_frame("lobby", "ep", 42, &body);
    let v: Value = serde_json::from_str(&frame).unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["from"], "bo\"b");
    assert_eq!(v["offset"], 42);
    assert_eq!(v["data"]["text"], "hé \"q\"");
    let pos = Position {
        epoch: "e".into(),
        offset: 3,
    };
    for f in [
        joined_frame("r", &pos, true),
        reset_frame("r", &pos),
        ack_frame("\"id\"", "r", &pos),
        left_frame("r"),
        presence_frame("r", &["a".into()]),
        error_frame(ErrorCode::Forbidden, "no", Some("1")),
        welcome_frame("s", "w", "u", false, &["*".into()]),
        refreshed_frame(Some(5), Some("\"r1\"")),
        refreshed_frame(None, None),
    ] {
        serde_json::from_str::<Value>(&f).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
}
