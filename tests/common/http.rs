//! A minimal HTTP/1.1 client over std's TcpStream (one request per
//! connection), for tests that need to send what no polite client sends:
//! bodies that stop, stall or lie about their length.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use serde_json::Value;

pub fn multipart(filename: &str, data: &[u8]) -> (String, Vec<u8>) {
    let boundary = "colloquy-test-boundary-7d9a";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A multipart form with a text field `field` = `value` before the file.
pub fn multipart_with(field: &str, value: &str, filename: &str, data: &[u8]) -> (String, Vec<u8>) {
    let (ct, mut body) = multipart(filename, data);
    let head = format!(
        "--colloquy-test-boundary-7d9a\r\nContent-Disposition: form-data; name=\"{field}\"\r\n\r\n{value}\r\n"
    );
    body.splice(0..0, head.into_bytes());
    (ct, body)
}

pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Value) {
    let (code, _, body) = raw_request(addr, method, path, headers, body);
    let v = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    (code, v)
}

pub fn raw_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    read_response(&mut s)
}

pub fn read_response(s: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("http response head");
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = buf[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (code, head, body)
}

pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            break;
        };
        let n =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
    out
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct Event {
    pub event: String,
    pub data: Value,
}

/// A Server-Sent Events stream read as it arrives (chunked transfer).
pub struct EventStream {
    reader: std::io::BufReader<TcpStream>,
    pending: String,
    pub status: u16,
}

impl EventStream {
    /// GETs `path` with `headers`; reads the response head.
    pub fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> EventStream {
        use std::io::BufRead;
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        let mut head =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        let mut reader = std::io::BufReader::new(s);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).unwrap();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        EventStream {
            reader,
            pending: String::new(),
            status,
        }
    }

    /// The next event (comments and `retry:` lines skipped); None when the
    /// server ended the stream.
    pub fn next(&mut self) -> Option<Event> {
        use std::io::BufRead;
        loop {
            while let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let (mut event, mut data) = (String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if !event.is_empty() {
                    let data = serde_json::from_str(&data).expect("event data is JSON");
                    return Some(Event { event, data });
                }
            }
            // one chunk: its size in hex, the bytes, CRLF; size 0 ends the body
            let mut size = String::new();
            if self.reader.read_line(&mut size).ok()? == 0 {
                return None;
            }
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 {
                return None;
            }
            let mut chunk = vec![0u8; n + 2];
            self.reader.read_exact(&mut chunk).ok()?;
            self.pending.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    }
}

/// A callback receiver: answers each POST with the next status of
/// `answers` (the last one again when they run out) and keeps the bodies.
pub fn hook_receiver(answers: Vec<u16>) -> (String, std::sync::mpsc::Receiver<Value>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (i, conn) in listener.incoming().enumerate() {
            let Ok(mut s) = conn else { return };
            let (_, head, body) = {
                // the request: head, then Content-Length bytes
                use std::io::{BufRead, Read};
                let mut r = std::io::BufReader::new(s.try_clone().unwrap());
                let mut head = String::new();
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                (0, head, body)
            };
            assert!(head.starts_with("POST /hook"), "{head}");
            let _ = tx.send(serde_json::from_slice(&body).unwrap());
            let code = answers[i.min(answers.len() - 1)];
            let _ = write!(
                s,
                "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (url, rx)
}
