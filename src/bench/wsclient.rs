//! A minimal WebSocket client for load generation and tests: enough of RFC
//! 6455 to speak vigil's live feed (text frames out, masked; text, ping and
//! close frames in; pings answered). It keeps no buffers beyond one frame,
//! so a thousand of them fit on a small machine, and it can shrink its
//! socket's receive buffer to play a slow client convincingly.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The close code, if the server gave one.
    Close(Option<u16>),
}

/// Why the client could not go on.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("handshake refused: {0}")]
    Handshake(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("connection closed")]
    Closed,
}

/// One connection to `/ws`.
pub struct WsClient {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Answer pings automatically (a client that does not is "silent").
    pub answer_pings: bool,
}

impl WsClient {
    /// Connects and upgrades; `rcvbuf` shrinks the socket's receive buffer.
    pub async fn connect(addr: SocketAddr, rcvbuf: Option<usize>) -> Result<WsClient, WsError> {
        let domain = if addr.is_ipv4() {
            socket2::Domain::IPV4
        } else {
            socket2::Domain::IPV6
        };
        let sock = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
        if let Some(bytes) = rcvbuf {
            sock.set_recv_buffer_size(bytes)?;
        }
        sock.set_nonblocking(true)?;
        match sock.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(115) => {} // EINPROGRESS
            Err(e) => return Err(e.into()),
        }
        let stream = TcpStream::from_std(sock.into())?;
        stream.writable().await?;
        if let Some(e) = stream.take_error()? {
            return Err(e.into());
        }
        let mut ws = WsClient {
            stream,
            buf: Vec::with_capacity(4096),
            answer_pings: true,
        };
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        ws.stream.write_all(request.as_bytes()).await?;
        let end = loop {
            if let Some(i) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if ws.buf.len() > 16 * 1024 || !ws.fill().await? {
                return Err(WsError::Handshake("no response".into()));
            }
        };
        let head = String::from_utf8_lossy(&ws.buf[..end]).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            return Err(WsError::Handshake(
                head.lines().next().unwrap_or_default().to_owned(),
            ));
        }
        ws.buf.drain(..end);
        Ok(ws)
    }

    /// Reads more bytes; false at end of stream.
    async fn fill(&mut self) -> Result<bool, WsError> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> Result<(), WsError> {
        let mask: [u8; 4] = fastrand::u32(..).to_be_bytes();
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
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
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    /// Sends a text message.
    pub async fn send_text(&mut self, text: &str) -> Result<(), WsError> {
        self.send_frame(0x1, text.as_bytes()).await
    }

    /// Takes one whole frame from the buffer, if it holds one.
    fn parse(&mut self) -> Result<Option<Frame>, WsError> {
        let b = &self.buf;
        if b.len() < 2 {
            return Ok(None);
        }
        if b[1] & 0x80 != 0 {
            return Err(WsError::Protocol("server frames must not be masked".into()));
        }
        let (len, start) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(n) as usize, 10)
            }
            126 | 127 => return Ok(None),
            n => (n as usize, 2),
        };
        if b.len() < start + len {
            return Ok(None);
        }
        let opcode = b[0] & 0x0f;
        let payload: Vec<u8> = self.buf.drain(..start + len).skip(start).collect();
        Ok(Some(match opcode {
            0x1 => Frame::Text(
                String::from_utf8(payload)
                    .map_err(|_| WsError::Protocol("text frame is not UTF-8".into()))?,
            ),
            0x2 => Frame::Binary(payload),
            0x8 => Frame::Close(
                (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
            ),
            0x9 => Frame::Ping(payload),
            0xA => Frame::Pong(payload),
            other => return Err(WsError::Protocol(format!("unexpected opcode {other}"))),
        }))
    }

    /// The next frame; pings are answered (unless `answer_pings` is off)
    /// and returned too. Errors with `Closed` at end of stream.
    pub async fn frame(&mut self) -> Result<Frame, WsError> {
        loop {
            if let Some(f) = self.parse()? {
                if let Frame::Ping(p) = &f
                    && self.answer_pings
                {
                    let p = p.clone();
                    self.send_frame(0xA, &p).await?;
                }
                return Ok(f);
            }
            if !self.fill().await? {
                return Err(WsError::Closed);
            }
        }
    }

    /// The next text message within `within`, skipping control frames;
    /// `Ok(None)` on timeout, `Err(Closed)` if the server closed.
    pub async fn next_text(&mut self, within: Duration) -> Result<Option<String>, WsError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.frame()).await {
                Err(_) => return Ok(None),
                Ok(Ok(Frame::Text(t))) => return Ok(Some(t)),
                Ok(Ok(Frame::Close(_))) => return Err(WsError::Closed),
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    /// Reads until the connection ends; true if it did within `within`.
    pub async fn ends_within(&mut self, within: Duration) -> bool {
        let drain = async {
            let mut chunk = [0u8; 64 * 1024];
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(within, drain).await.is_ok()
    }
}
