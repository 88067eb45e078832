use std::os::fd::AsRawFd;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use super::*;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";

/// A deadline no healthy test run comes near.
const LONG: Duration = Duration::from_secs(30);

/// A v2 header: signature, version/command byte, family/protocol byte, then
/// `body` (addresses and TLVs) with its length.
fn v2(version_command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(version_command);
    out.push(family);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn v2_tcp4() -> Vec<u8> {
    v2(
        0x21,
        0x11,
        &[192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0x01, 0xbb],
    )
}

/// IPv6 source `::ffff:192.0.2.9` (IPv4-mapped), destination `2001:db8::2`.
fn v2_tcp6_mapped() -> Vec<u8> {
    let mut body = vec![0u8; 10];
    body.extend_from_slice(&[0xff, 0xff, 192, 0, 2, 9]);
    body.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    body.extend_from_slice(&[0; 11]);
    body.push(2);
    body.extend_from_slice(&[0x13, 0x88, 0x01, 0xbb]);
    v2(0x21, 0x21, &body)
}

fn complete(buf: &[u8]) -> ProxyHeader {
    match parse(buf) {
        Parsed::Complete(h) => h,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
    }
}

fn invalid(buf: &[u8]) -> Invalid {
    match parse(buf) {
        Parsed::Invalid(e) => e,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
    }
}

fn addr(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
}

#[test]
fn v1_tcp4_names_the_client_and_ends_at_the_line_feed() {
    let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
    let mut buf = line.to_vec();
    buf.extend_from_slice(REQUEST);
    let h = complete(&buf);
    assert_eq!(h.header_len, line.len());
    assert_eq!(h.source, addr("192.0.2.1:56324"));
    assert_eq!(h.destination, addr("198.51.100.2:443"));
}

#[test]
fn v1_tcp6_and_mapped_addresses() {
    let h = complete(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 443\r\n");
    assert_eq!(h.source, addr("[2001:db8::1]:4000"));
    let h = complete(b"PROXY TCP6 ::ffff:192.0.2.9 2001:db8::2 4000 443\r\n");
    assert_eq!(h.source, addr("192.0.2.9:4000"));
}

#[test]
fn v1_unknown_names_nobody() {
    for line in [
        &b"PROXY UNKNOWN\r\n"[..],
        b"PROXY UNKNOWN ffff:f::ffff ffff:f::ffff 65535 65535\r\n",
    ] {
        let h = complete(line);
        assert_eq!(
            (h.header_len, h.source, h.destination),
            (line.len(), None, None)
        );
    }
}

#[test]
fn v2_tcp4_and_tcp6() {
    let mut buf = v2_tcp4();
    let len = buf.len();
    buf.extend_from_slice(REQUEST);
    let h = complete(&buf);
    assert_eq!(h.header_len, len);
    assert_eq!(h.source, addr("192.0.2.1:56324"));
    assert_eq!(h.destination, addr("198.51.100.2:443"));
    let h = complete(&v2_tcp6_mapped());
    assert_eq!(h.header_len, 16 + 36);
    assert_eq!(h.source, addr("192.0.2.9:5000"));
    assert_eq!(h.destination, addr("[2001:db8::2]:443"));
}

#[test]
fn v2_local_and_unspec_name_nobody() {
    // LOCAL (a health check from the balancer itself), even with addresses.
    let local = v2(0x20, 0x11, &[192, 0, 2, 1, 198, 51, 100, 2, 0, 1, 0, 2]);
    assert_eq!(
        complete(&local),
        ProxyHeader {
            header_len: local.len(),
            source: None,
            destination: None
        }
    );
    let unspec = v2(0x21, 0x00, &[]);
    assert_eq!(complete(&unspec).source, None);
}

#[test]
fn v2_tlvs_are_part_of_the_header() {
    let mut body = v2_tcp4()[16..].to_vec();
    body.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']); // ALPN
    body.extend_from_slice(&[0x02, 0x00, 0x03, b'a', b'.', b'b']); // authority
    let header = v2(0x21, 0x11, &body);
    let mut buf = header.clone();
    buf.extend_from_slice(REQUEST);
    let h = complete(&buf);
    assert_eq!(h.header_len, header.len());
    assert_eq!(h.source, addr("192.0.2.1:56324"));
    // A TLV that claims more bytes than the header has.
    let mut broken = v2_tcp4()[16..].to_vec();
    broken.extend_from_slice(&[0x01, 0x00, 0x09, b'h']);
    assert!(matches!(invalid(&v2(0x21, 0x11, &broken)), Invalid::V2(_)));
}

#[test]
fn every_prefix_of_a_header_is_incomplete() {
    let headers = [
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n".to_vec(),
        b"PROXY UNKNOWN\r\n".to_vec(),
        v2_tcp4(),
        v2_tcp6_mapped(),
    ];
    for h in headers {
        for k in 0..h.len() {
            assert_eq!(parse(&h[..k]), Parsed::Incomplete, "{:?}", &h[..k]);
        }
        assert!(matches!(parse(&h), Parsed::Complete(_)));
    }
}

#[test]
fn garbage_is_refused_at_its_first_wrong_byte() {
    assert_eq!(invalid(b"G"), Invalid::Signature);
    assert_eq!(invalid(REQUEST), Invalid::Signature);
    assert_eq!(invalid(b"PROXX"), Invalid::Signature);
    assert_eq!(invalid(b"\r\n\r\n\0\r\nQUIX"), Invalid::Signature);
    assert!(matches!(invalid(b"PROXY TCP5 "), Invalid::V1(_)));
    assert!(matches!(invalid(b"PROXY UNKNOWX"), Invalid::V1(_)));
    assert!(matches!(
        invalid(b"PROXY TCP4 192.0.2 198.51.100.2 1 2\r\n"),
        Invalid::V1(_)
    ));
    assert!(matches!(
        invalid(b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n"),
        Invalid::V1(_)
    ));
    assert!(matches!(
        invalid(b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\rx\n"),
        Invalid::V1(_)
    ));
}

#[test]
fn oversize_headers_are_refused_before_they_arrive() {
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(V1_MAX_BYTES, b'x');
    assert_eq!(invalid(&long), Invalid::V1TooLong);
    // A v2 preamble announcing 12 address bytes and 4,097 of TLVs: refused
    // with only its 16 bytes read.
    let preamble = &v2(0x21, 0x11, &vec![0; 12 + V2_MAX_TLV_BYTES + 1])[..16];
    assert_eq!(invalid(preamble), Invalid::V2TooLong(V2_MAX_TLV_BYTES + 1));
    // Exactly at the cap: one NOOP TLV filling 4,096 bytes.
    let mut body = v2_tcp4()[16..].to_vec();
    body.extend_from_slice(&[0x04, 0x0f, 0xfd]);
    body.resize(12 + V2_MAX_TLV_BYTES, 0);
    let at_cap = v2(0x21, 0x11, &body);
    assert_eq!(parse(&at_cap[..16]), Parsed::Incomplete);
    assert_eq!(complete(&at_cap).header_len, 16 + 12 + V2_MAX_TLV_BYTES);
}

#[test]
fn v2_version_command_family_and_length_are_checked() {
    let body = &v2_tcp4()[16..];
    assert_eq!(invalid(&v2(0x11, 0x11, body)), Invalid::V2Version(1));
    assert_eq!(invalid(&v2(0x22, 0x11, body)), Invalid::V2Command(2));
    assert_eq!(invalid(&v2(0x21, 0x41, body)), Invalid::V2Family(0x41));
    assert_eq!(invalid(&v2(0x21, 0x13, body)), Invalid::V2Family(0x13));
    // UDP over a stream connection.
    assert_eq!(invalid(&v2(0x21, 0x12, body)), Invalid::V2Family(0x12));
    // Too short for its IPv6 addresses.
    assert!(matches!(invalid(&v2(0x21, 0x21, body)), Invalid::V2(_)));
}

/// A connected pair over loopback: (client, server side).
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

/// Bytes received on `fd` and not read yet.
fn unread(fd: std::os::fd::RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to the pointer given; `fd` is an open socket.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "FIONREAD: {}", io::Error::last_os_error());
    usize::try_from(n).unwrap_or(0)
}

/// What is left in `server` after the header: the client's own bytes.
async fn rest(server: &mut TcpStream, client: &mut TcpStream) -> Vec<u8> {
    client.shutdown().await.unwrap();
    let mut out = Vec::new();
    server.read_to_end(&mut out).await.unwrap();
    out
}

/// Send `parts` one at a time, each only after the reader has taken every
/// byte of the previous one, and check the reader is still waiting then.
async fn read_in_parts(parts: &[&[u8]]) -> (ProxyHeader, Vec<u8>) {
    let (mut client, mut server) = pair().await;
    let fd = server.as_raw_fd();
    let reader = tokio::spawn(async move {
        let h = read_header(&mut server, LONG).await;
        (h, server)
    });
    let (last, first) = parts.split_last().unwrap();
    for part in first {
        client.write_all(part).await.unwrap();
        while unread(fd) != 0 {
            tokio::task::yield_now().await;
        }
        assert!(!reader.is_finished(), "finished before {last:?}");
    }
    client.write_all(last).await.unwrap();
    let (header, mut server) = reader.await.unwrap();
    (header.unwrap(), rest(&mut server, &mut client).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_takes_a_v1_header_split_across_reads_and_nothing_more() {
    let (h, rest) = read_in_parts(&[
        b"PROXY TCP4 1",
        b"92.0.2.1 198.51.100.2 5",
        b"6324 443\r",
        b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    ])
    .await;
    assert_eq!(h.source, addr("192.0.2.1:56324"));
    assert_eq!(rest, REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_takes_a_v2_header_split_across_reads_and_nothing_more() {
    let mut body = v2_tcp4()[16..].to_vec();
    body.extend_from_slice(&[0x05, 0x00, 0x04, 1, 2, 3, 4]); // unique id
    let header = v2(0x21, 0x11, &body);
    let mut last = header[20..].to_vec();
    last.extend_from_slice(REQUEST);
    let (h, rest) = read_in_parts(&[&header[..5], &header[5..15], &header[15..20], &last]).await;
    assert_eq!(h.header_len, header.len());
    assert_eq!(h.source, addr("192.0.2.1:56324"));
    assert_eq!(rest, REQUEST);
}

#[tokio::test]
async fn reader_leaves_the_request_when_it_arrives_with_the_header() {
    for header in [
        b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 443\r\n".to_vec(),
        v2_tcp6_mapped(),
    ] {
        let (mut client, mut server) = pair().await;
        let mut all = header.clone();
        all.extend_from_slice(REQUEST);
        client.write_all(&all).await.unwrap();
        let h = read_header(&mut server, LONG).await.unwrap();
        assert_eq!(h.header_len, header.len());
        assert_eq!(rest(&mut server, &mut client).await, REQUEST);
    }
}

/// What the reader makes of a peer that sends `bytes` and then closes its
/// side (`close`) or waits; the deadline is `deadline`.
async fn read_after(bytes: &[u8], close: bool, deadline: Duration) -> ReadError {
    let (mut client, mut server) = pair().await;
    client.write_all(bytes).await.unwrap();
    if close {
        client.shutdown().await.unwrap();
    }
    read_header(&mut server, deadline).await.unwrap_err()
}

#[tokio::test]
async fn reader_refuses_garbage_and_oversize_at_once() {
    let err = read_after(REQUEST, false, LONG).await;
    assert!(
        matches!(err, ReadError::Invalid(Invalid::Signature)),
        "{err}"
    );
    let huge = v2(0x21, 0x11, &vec![0; 12 + 60_000]);
    let err = read_after(&huge[..16], false, LONG).await;
    assert!(
        matches!(err, ReadError::Invalid(Invalid::V2TooLong(_))),
        "{err}"
    );
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(200, b'x');
    let err = read_after(&long, false, LONG).await;
    assert!(
        matches!(err, ReadError::Invalid(Invalid::V1TooLong)),
        "{err}"
    );
}

#[tokio::test]
async fn reader_gives_up_at_the_deadline_or_when_the_peer_leaves() {
    let partial = b"PROXY TCP4 192.0.2.1";
    let err = read_after(partial, false, Duration::from_millis(100)).await;
    assert!(matches!(err, ReadError::Timeout(_)), "{err}");
    let err = read_after(partial, true, LONG).await;
    assert!(matches!(err, ReadError::Closed), "{err}");
    let err = read_after(&v2_tcp4()[..20], true, LONG).await;
    assert!(matches!(err, ReadError::Closed), "{err}");
}
