//! A fault-injecting HTTP proxy for the EC2 API emulator: it forwards each request
//! to the emulator and, while a fault is set, answers what a broken network or a
//! broken API would: 5xx, throttling, a truncated or malformed body, an empty 200,
//! an HTML page, a body with a field removed, a stall, a reset.
//!
//! HTTP/1.1 only as far as the SDK uses it: requests with Content-Length, many per
//! connection; each is forwarded on its own connection with `Connection: close`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to the requests a fault applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward unchanged.
    Pass,
    /// This status with an EC2 error body carrying `code`.
    Error(u16, &'static str),
    /// This status with an EKS (REST-JSON) error of type `code`.
    JsonError(u16, &'static str),
    /// 200 with an empty JSON object (an EKS answer with nothing in it).
    EmptyJson,
    /// 200 with the real body cut in half.
    Truncated,
    /// 200 with a body that starts like the real one and turns to garbage.
    Garbage,
    /// 200 with an empty body.
    Empty,
    /// 200 with an HTML page (a captive proxy).
    Html,
    /// 200 with the real body less every `<tag>…</tag>` element.
    DropElement(&'static str),
    /// 200 with the real body, every `from` replaced by `to`.
    Replace(String, String),
    /// The real body, but every `<nextToken>` after the first seen is that first one:
    /// an API that hands out the same page token again.
    RepeatNextToken,
    /// No answer until the fault is cleared or 60 s pass.
    Stall,
    /// The connection is reset (RST) instead of answered.
    Reset,
}

#[derive(Debug)]
struct State {
    fault: Fault,
    /// Only requests for this action (`Action=...`; or, starting with "/", EKS
    /// requests whose path starts so, e.g. "/clusters") get the fault; None: all.
    action: Option<&'static str>,
}

/// A running proxy; it stops with the test's runtime.
#[derive(Clone)]
pub struct FaultProxy {
    state: Arc<Mutex<State>>,
    upstream: u16,
    pub port: u16,
    /// Requests the fault was applied to.
    pub faulted: Arc<AtomicU64>,
    /// The first `<nextToken>` seen under [`Fault::RepeatNextToken`].
    first_token: Arc<Mutex<Option<String>>>,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1 in front of the emulator on `upstream`.
    pub async fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = FaultProxy {
            state: Arc::new(Mutex::new(State {
                fault: Fault::Pass,
                action: None,
            })),
            upstream,
            port: listener.local_addr().unwrap().port(),
            faulted: Arc::default(),
            first_token: Arc::default(),
        };
        let p = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(p.clone().serve(client));
            }
        });
        proxy
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Applies `fault` to every request (`action` None) or to one action's.
    pub fn set(&self, fault: Fault, action: Option<&'static str>) {
        *self.state.lock().unwrap() = State { fault, action };
        // A token repeated is one of this fault's calls, not an earlier one's.
        *self.first_token.lock().unwrap() = None;
    }

    pub fn clear(&self) {
        self.set(Fault::Pass, None);
    }

    fn fault_for(&self, request: &[u8]) -> Fault {
        let state = self.state.lock().unwrap();
        let applies = state.action.is_none_or(|a| {
            let text = String::from_utf8_lossy(request);
            if a.starts_with('/') {
                let path = text.split(' ').nth(1).unwrap_or_default();
                return path.starts_with(a);
            }
            let needle = format!("Action={a}&");
            text.contains(&needle) || text.ends_with(&format!("Action={a}"))
        });
        if applies {
            state.fault.clone()
        } else {
            Fault::Pass
        }
    }

    async fn serve(self, mut client: TcpStream) {
        loop {
            let Some(request) = read_message(&mut client, true).await else {
                return;
            };
            let fault = self.fault_for(&request);
            if fault != Fault::Pass {
                self.faulted.fetch_add(1, Ordering::Relaxed);
            }
            let reply = match fault {
                Fault::Stall => {
                    for _ in 0..600 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if self.fault_for(&request) != Fault::Stall {
                            break;
                        }
                    }
                    return;
                }
                Fault::Reset => {
                    let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
                    return;
                }
                Fault::Error(status, code) => response(
                    status,
                    &format!(
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
                         <Message>injected {code}</Message></Error></Errors><RequestID>req-1</RequestID></Response>"
                    ),
                ),
                Fault::JsonError(status, code) => {
                    let body = format!("{{\"message\":\"injected {code}\"}}");
                    format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nX-Amzn-ErrorType: {code}\r\n\
                         Content-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                }
                Fault::EmptyJson => {
                    "HTTP/1.1 200 X\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
                        .to_string()
                }
                Fault::Empty => response(200, ""),
                Fault::Html => response(
                    200,
                    "<html><body><h1>Proxy login required</h1></body></html>",
                ),
                Fault::Pass
                | Fault::Truncated
                | Fault::Garbage
                | Fault::DropElement(_)
                | Fault::Replace(..)
                | Fault::RepeatNextToken => {
                    let Some(upstream) = self.forward(&request).await else {
                        return;
                    };
                    let (status, body) = split_response(&upstream);
                    let body = match fault {
                        Fault::Truncated => body[..body.len() / 2].to_string(),
                        Fault::Garbage => {
                            let cut = body.find("<item>").map_or(body.len() / 2, |i| i + 6);
                            format!("{}<vpcEndpointId>vpce-<<<garbage&&&", &body[..cut])
                        }
                        Fault::DropElement(tag) => drop_elements(&body, tag),
                        Fault::Replace(from, to) => body.replace(&from, &to),
                        Fault::RepeatNextToken => self.repeat_token(body),
                        _ => body,
                    };
                    response(status, &body)
                }
            };
            if client.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    fn repeat_token(&self, body: String) -> String {
        let (open, close) = ("<nextToken>", "</nextToken>");
        let Some(start) = body.find(open).map(|i| i + open.len()) else {
            return body;
        };
        let Some(end) = body[start..].find(close).map(|i| start + i) else {
            return body;
        };
        let mut first = self.first_token.lock().unwrap();
        let first = first.get_or_insert_with(|| body[start..end].to_string());
        format!("{}{first}{}", &body[..start], &body[end..])
    }

    /// The emulator's whole answer to `request`.
    async fn forward(&self, request: &[u8]) -> Option<Vec<u8>> {
        let mut up = TcpStream::connect(("127.0.0.1", self.upstream))
            .await
            .ok()?;
        let text = String::from_utf8_lossy(request);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let head: Vec<&str> = head
            .split("\r\n")
            .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
            .collect();
        let out = format!("{}\r\nConnection: close\r\n\r\n{body}", head.join("\r\n"));
        up.write_all(out.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), up.read_to_end(&mut answer))
            .await
            .ok()?
            .ok()?;
        Some(answer)
    }
}

fn response(status: u16, body: &str) -> String {
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: text/xml;charset=UTF-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Status and body of a whole HTTP response (Content-Length or read to the end).
fn split_response(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(502);
    (status, body.to_string())
}

/// `body` without any `<tag>…</tag>` element.
fn drop_elements(body: &str, tag: &str) -> String {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(i) = rest.find(&open) {
        out.push_str(&rest[..i]);
        match rest[i..].find(&close) {
            Some(j) => rest = &rest[i + j + close.len()..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// One HTTP request (head and Content-Length body) from `s`; None at EOF or error.
async fn read_message(s: &mut TcpStream, _request: bool) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Some(buf);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(120), s.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
