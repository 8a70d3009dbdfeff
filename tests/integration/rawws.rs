//! A bare WebSocket client over a socket with a small receive buffer, so a
//! test can play a client that reads slowly or not at all and actually jam
//! the connection (a normal client's buffers would absorb minutes of feed).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A frame from the server: opcode and payload.
pub type RawFrame = (u8, Vec<u8>);

impl RawWs {
    /// Connects to `/ws` with a receive buffer of `rcvbuf` bytes.
    pub async fn connect(addr: SocketAddr, rcvbuf: usize) -> RawWs {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(rcvbuf).unwrap();
        sock.connect(&addr.into()).unwrap();
        sock.set_nonblocking(true).unwrap();
        let mut stream = TcpStream::from_std(sock.into()).unwrap();
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut ws = RawWs {
            stream,
            buf: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let end = loop {
            if let Some(i) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(Instant::now() < deadline, "no handshake response");
            ws.fill(Duration::from_secs(5)).await;
        };
        let head = String::from_utf8_lossy(&ws.buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        ws.buf.drain(..end);
        ws
    }

    async fn fill(&mut self, within: Duration) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(within, self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    /// Sends a masked text frame.
    pub async fn send_text(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mask = [0x11u8, 0x22, 0x33, 0x44];
        let mut frame = vec![0x81];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65_536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await.unwrap();
    }

    fn parse(&mut self) -> Option<RawFrame> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let opcode = b[0] & 0x0f;
        let (len, start) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().ok()?) as usize, 10),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        if b.len() < start + len {
            return None;
        }
        let payload = b[start..start + len].to_vec();
        self.buf.drain(..start + len);
        Some((opcode, payload))
    }

    /// The next frame within `within`; `None` on timeout or end of stream.
    pub async fn frame(&mut self, within: Duration) -> Option<RawFrame> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(f) = self.parse() {
                return Some(f);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            if !self.fill(left).await {
                return None;
            }
        }
    }

    /// The next text message parsed as JSON, skipping control frames.
    pub async fn next_json(&mut self, within: Duration) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let (op, payload) = self.frame(left).await?;
            if op == 1 {
                return Some(serde_json::from_slice(&payload).unwrap());
            }
            if op == 8 {
                return None;
            }
        }
    }

    /// Reads until the connection ends; true if it did within `within`.
    pub async fn ends_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut chunk = [0u8; 64 * 1024];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
        false
    }
}
