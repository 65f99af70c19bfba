//! A one-route HTTP/1.1 server on 127.0.0.1 standing in for a webhook (a mailer, an event
//! sink): it records each request's head and body and answers with the statuses a test sets.
//! Shared by the OTP webhook tests and the subscriber's end-to-end test.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// One request as received: its headers by lower-case name (the request line under
/// `:request`), and its body.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    /// The body as JSON (panics when it is not: the senders under test send JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// What the server answers: the queued statuses first, one per request, then `status`.
struct Replies {
    queued: VecDeque<u16>,
    status: u16,
}

/// The running stand-in; it lives until the test process ends.
pub struct Webhook {
    port: u16,
    replies: Arc<Mutex<Replies>>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Webhook {
    /// Starts it, answering 204 to every request until told otherwise.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let replies = Arc::new(Mutex::new(Replies { queued: VecDeque::new(), status: 204 }));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (answer, log) = (replies.clone(), received.clone());
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let Some(request) = read_request(&mut BufReader::new(stream.try_clone().unwrap()))
                else {
                    continue;
                };
                // Recorded before answering: once the sender has its answer, the test sees
                // the request.
                log.lock().unwrap().push(request);
                let status = {
                    let mut replies = answer.lock().unwrap();
                    let fallback = replies.status;
                    replies.queued.pop_front().unwrap_or(fallback)
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Self { port, replies, received }
    }

    /// `http://127.0.0.1:PORT`, for `allowed_outbound_hosts` and the URL under test.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The status of every answer from now on (after any queued ones).
    pub fn answer_with(&self, status: u16) {
        self.replies.lock().unwrap().status = status;
    }

    /// The status of the next answer only, after any queued before it.
    pub fn then_answer(&self, status: u16) {
        self.replies.lock().unwrap().queued.push_back(status);
    }

    /// Every request received so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// Reads one request with a `content-length` body; `None` when the peer sent no whole one.
fn read_request(reader: &mut impl BufRead) -> Option<Received> {
    let mut headers = HashMap::new();
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    headers.insert(":request".to_owned(), line.trim_end().to_owned());
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let Some((name, value)) = line.trim_end().split_once(':') else { break };
        headers.insert(name.to_ascii_lowercase(), value.trim().to_owned());
    }
    let length = headers.get("content-length").map_or(Some(0), |l| l.parse().ok())?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Received { headers, body })
}
