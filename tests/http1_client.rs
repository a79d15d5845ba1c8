//! The socket-owning HTTP/1.1 client (plain `http://` targets) against raw
//! servers that exercise what the simulator does not: `Content-Length`
//! bodies, keep-alive reuse, interim `100 Continue` heads, chunks split at
//! odd places and delivered apart, and a server that closes without answering.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use throtl::api::{ApiKind, GenRequest};
use throtl::engine::record::{ErrorClass, RequestRecord};
use throtl::engine::request::{execute, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const STREAM: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}]}\n\n\
data: [DONE]\n\n";

/// Reads one request (head and `content-length` body); false at EOF.
async fn read_request(sock: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + len {
                return true;
            }
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A server answering every request on a connection with `respond`; counts
/// the connections it accepted.
async fn server<F, Fut>(respond: F) -> (String, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let respond = Arc::new(respond);
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(respond(sock));
        }
    });
    (url, accepted)
}

fn transport(url: &str) -> Transport {
    Transport::new(
        url,
        Default::default(),
        Arc::from(ApiKind::OpenaiChat.protocol()),
        Duration::from_secs(5),
    )
}

async fn one(t: &Transport) -> RequestRecord {
    let req = GenRequest::single("m", "hello", 2, false);
    let mut rec = RequestRecord::new(0, false, Instant::now(), 4);
    execute(t, &req, &mut rec, &CancellationToken::new()).await;
    rec
}

#[tokio::test]
async fn content_length_bodies_reuse_one_keep_alive_connection() {
    let (url, accepted) = server(|mut sock| async move {
        while read_request(&mut sock).await {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n",
                STREAM.len()
            );
            sock.write_all(head.as_bytes()).await.unwrap();
            sock.write_all(STREAM.as_bytes()).await.unwrap();
        }
    })
    .await;
    let t = transport(&url);
    for _ in 0..3 {
        let rec = one(&t).await;
        assert_eq!(rec.error, None, "{:?}", rec.error_sample);
        assert_eq!(rec.token_times.len(), 2);
    }
    assert_eq!(accepted.load(Ordering::Relaxed), 1, "connection not reused");
}

#[tokio::test]
async fn interim_heads_are_skipped_and_split_chunks_keep_their_arrival_times() {
    let (url, _) = server(|mut sock| async move {
        read_request(&mut sock).await;
        let w = |b: &'static [u8]| b;
        sock.write_all(w(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        ))
        .await
        .unwrap();
        // The first event, then the size line of the second split from its data.
        let first = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n";
        let second =
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}]}\n\ndata: [DONE]\n\n";
        sock.write_all(format!("{:x}\r\n{first}\r\n{:x}", first.len(), second.len()).as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        sock.write_all(format!("\r\n{second}\r\n0\r\n\r\n").as_bytes())
            .await
            .unwrap();
    })
    .await;
    let rec = one(&transport(&url)).await;
    assert_eq!(rec.error, None, "{:?}", rec.error_sample);
    assert_eq!(rec.status, Some(200));
    assert_eq!(rec.token_times.len(), 2);
    let gap = rec.token_times[1] - rec.token_times[0];
    assert!(gap >= Duration::from_millis(45), "gap {gap:?}");
}

#[tokio::test]
async fn a_server_that_closes_without_answering_is_an_io_error_sent_once() {
    // The first request is answered on a keep-alive connection; the second,
    // on that reused connection, is read and left unanswered. A client that
    // retried it on a new connection would send it twice.
    let (url, accepted) = server(|mut sock| async move {
        read_request(&mut sock).await;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n",
            STREAM.len()
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        sock.write_all(STREAM.as_bytes()).await.unwrap();
        read_request(&mut sock).await;
        drop(sock);
    })
    .await;
    let t = transport(&url);
    assert_eq!(one(&t).await.error, None);
    let rec = one(&t).await;
    assert_eq!(rec.error, Some(ErrorClass::Io));
    assert!(rec
        .error_sample
        .unwrap()
        .contains("closed the connection without answering"));
    assert_eq!(
        accepted.load(Ordering::Relaxed),
        1,
        "a written request was re-sent"
    );
}

#[tokio::test]
async fn a_chunked_body_cut_mid_stream_is_truncated() {
    let (url, _) = server(|mut sock| async move {
        read_request(&mut sock).await;
        let first = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n";
        let msg = format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n",
            first.len()
        );
        sock.write_all(msg.as_bytes()).await.unwrap();
    })
    .await;
    let rec = one(&transport(&url)).await;
    assert_eq!(rec.error, Some(ErrorClass::Truncated));
    assert_eq!(rec.token_times.len(), 1);
}

#[tokio::test]
async fn an_unreachable_port_is_a_connect_error_naming_it() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let rec = one(&transport(&format!("http://{addr}"))).await;
    assert_eq!(rec.error, Some(ErrorClass::Connect));
    assert!(rec.error_sample.unwrap().contains(&addr.to_string()));
}

#[tokio::test]
async fn preconnect_opens_the_connection_the_first_request_then_uses() {
    let (url, accepted) = server(|mut sock| async move {
        while read_request(&mut sock).await {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n",
                STREAM.len()
            );
            sock.write_all(head.as_bytes()).await.unwrap();
            sock.write_all(STREAM.as_bytes()).await.unwrap();
        }
    })
    .await;
    let t = transport(&url);
    t.preconnect().await;
    for _ in 0..100 {
        if accepted.load(Ordering::Relaxed) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(accepted.load(Ordering::Relaxed), 1, "no connection opened");
    let rec = one(&t).await;
    assert_eq!(rec.error, None, "{:?}", rec.error_sample);
    assert_eq!(
        accepted.load(Ordering::Relaxed),
        1,
        "preconnected socket unused"
    );
}
