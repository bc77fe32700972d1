//! Makes etcdctl 3.4's `http://` endpoints work: its gRPC client sends the
//! endpoint itself as the HTTP/2 `:authority` (`http://127.0.0.1:2379`),
//! which the `h2` crate refuses as malformed before any of our code runs
//! (the stream is reset with PROTOCOL_ERROR; h2's maintainers declined to
//! relax it, hyperium/h2#525). etcd's Go server accepts it.
//!
//! `Http2Authority` sits between a client connection and the server and
//! rewrites only the client's header blocks: on an HTTP/2 connection
//! (recognised by its preface; anything else passes through untouched) it
//! decodes the first HEADERS block with HPACK (`loona-hpack`, tracking the
//! client's dynamic table). A client whose first `:authority` is already
//! well formed (every client but etcdctl 3.4 on `http://` endpoints: a
//! gRPC client sends one authority per connection) gets its block, and the
//! rest of the connection, passed through untouched, with no copy and no
//! decoding. Otherwise every block of the connection is decoded, its
//! `:authority` loses its scheme and path, and it is re-encoded with
//! literals that never touch the server's dynamic table, so every block
//! stays decodable on both sides. All other frames, and everything the
//! server sends, pass through unchanged.
//!
//! Decoding and re-encoding every request's headers cost about half of the
//! client port's throughput under load (issue 17's regression), hence the
//! pass-through for everyone else.
//!
//! Bounds: a header block (HEADERS and its CONTINUATIONs) over
//! `MAX_HEADER_BLOCK` bytes, a frame over the protocol's largest, and a
//! block HPACK cannot decode end the connection, as the server would.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The frame size every HTTP/2 peer accepts (SETTINGS_MAX_FRAME_SIZE's
/// default): re-encoded blocks are split at it.
const MIN_MAX_FRAME: usize = 16_384;
/// The largest header block accepted (gRPC's default header list limit is
/// 8 KiB; etcd clients send a few hundred bytes).
const MAX_HEADER_BLOCK: usize = 256 * 1024;
/// The server's SETTINGS_HEADER_TABLE_SIZE (the protocol default; the
/// server does not change it).
const HEADER_TABLE_SIZE: usize = 4096;

fn protocol_error(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

/// `:authority` as a server can take it: without a scheme or a path.
fn normalize_authority(value: &[u8]) -> Vec<u8> {
    let rest = match value.windows(3).position(|w| w == b"://") {
        Some(at) => &value[at + 3..],
        None => value,
    };
    let end = rest.iter().position(|b| *b == b'/').unwrap_or(rest.len());
    rest[..end].to_vec()
}

/// HPACK integer with an `n`-bit prefix whose high bits are `first`.
fn encode_int(out: &mut Vec<u8>, first: u8, n: u8, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A header block of "literal header field without indexing, new name"
/// representations: the server's dynamic table is never touched.
fn encode_literals(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0x00);
        encode_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name);
        encode_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value);
    }
    out
}

fn frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// Where the rewriting stands on one connection.
enum Mode {
    /// Reading the first bytes: HTTP/2's preface or not.
    Detecting,
    /// Not HTTP/2, or HTTP/2 whose first header block needed no rewrite:
    /// bytes pass through.
    PassThrough,
    /// HTTP/2 frames.
    Frames,
}

/// The client-to-server half of the rewriting, independent of any socket
/// (so it is tested on bytes alone).
pub struct Rewriter {
    mode: Mode,
    /// Bytes read from the client, not yet processed.
    input: Vec<u8>,
    /// A payload being passed through: bytes of it still to come.
    passing: usize,
    /// The header block being gathered: stream, END_STREAM, its bytes.
    block: Option<(u32, bool, Vec<u8>)>,
    /// The frames of that block as the client sent them.
    raw_block: Vec<u8>,
    /// Whether the connection's header blocks are rewritten (its first one
    /// needed it).
    rewriting: bool,
    decoder: loona_hpack::Decoder<'static>,
}

impl Default for Rewriter {
    fn default() -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
        Rewriter {
            mode: Mode::Detecting,
            input: Vec::new(),
            passing: 0,
            block: None,
            raw_block: Vec::new(),
            rewriting: false,
            decoder,
        }
    }
}

impl Rewriter {
    /// Whether everything from now on passes through untouched.
    pub fn passes_through(&self) -> bool {
        matches!(self.mode, Mode::PassThrough)
    }

    /// Takes bytes from the client; appends what the server should get
    /// to `out`. An error ends the connection.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        self.input.extend_from_slice(bytes);
        loop {
            match self.mode {
                Mode::PassThrough => {
                    out.append(&mut self.input);
                    return Ok(());
                }
                Mode::Detecting => {
                    let n = self.input.len().min(PREFACE.len());
                    if self.input[..n] != PREFACE[..n] {
                        self.mode = Mode::PassThrough;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    out.extend(self.input.drain(..PREFACE.len()));
                    self.mode = Mode::Frames;
                }
                Mode::Frames => {
                    if self.passing > 0 {
                        let n = self.passing.min(self.input.len());
                        out.extend(self.input.drain(..n));
                        self.passing -= n;
                        if self.passing > 0 {
                            return Ok(());
                        }
                    }
                    if self.input.len() < FRAME_HEADER {
                        return Ok(());
                    }
                    let h = &self.input[..FRAME_HEADER];
                    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
                    let (kind, flags) = (h[3], h[4]);
                    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                    let header_frame = kind == HEADERS || kind == CONTINUATION;
                    if !header_frame && self.block.is_none() {
                        // Passed on as it arrives, header and payload.
                        out.extend(self.input.drain(..FRAME_HEADER));
                        self.passing = len;
                        continue;
                    }
                    if self.input.len() < FRAME_HEADER + len {
                        if len > MAX_HEADER_BLOCK {
                            return Err(protocol_error("header frame too large"));
                        }
                        return Ok(());
                    }
                    let raw: Vec<u8> = self.input.drain(..FRAME_HEADER + len).collect();
                    self.header_frame(kind, flags, stream, &raw, out)?;
                }
            }
        }
    }

    /// One HEADERS or CONTINUATION frame, `raw` with its frame header (or,
    /// between them, anything else, which the protocol forbids).
    fn header_frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream: u32,
        raw: &[u8],
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        let payload = &raw[FRAME_HEADER..];
        let fragment = match (kind, &mut self.block) {
            (HEADERS, None) => {
                let mut p = payload;
                let mut pad = 0;
                if flags & PADDED != 0 {
                    pad = *p
                        .first()
                        .ok_or_else(|| protocol_error("empty padded frame"))?
                        as usize;
                    p = &p[1..];
                }
                if flags & PRIORITY != 0 {
                    p = p.get(5..).ok_or_else(|| protocol_error("short priority"))?;
                }
                let end = p
                    .len()
                    .checked_sub(pad)
                    .ok_or_else(|| protocol_error("padding past the frame"))?;
                self.block = Some((stream, flags & END_STREAM != 0, Vec::new()));
                &p[..end]
            }
            (CONTINUATION, Some((open, _, _))) if *open == stream => payload,
            _ => return Err(protocol_error("frame out of place inside a header block")),
        };
        let (_, _, block) = self.block.as_mut().expect("a block is open");
        if block.len() + fragment.len() > MAX_HEADER_BLOCK {
            return Err(protocol_error("header block too large"));
        }
        block.extend_from_slice(fragment);
        if !self.rewriting {
            self.raw_block.extend_from_slice(raw);
        }
        if flags & END_HEADERS == 0 {
            return Ok(());
        }
        let (stream, end_stream, block) = self.block.take().expect("a block is open");
        let mut headers = self
            .decoder
            .decode(&block)
            .map_err(|e| protocol_error(format!("HPACK: {e}")))?;
        let mut changed = false;
        for (name, value) in headers.iter_mut() {
            if name == b":authority" {
                let normal = normalize_authority(value);
                changed |= normal != *value;
                *value = normal;
            }
        }
        if !self.rewriting {
            if !changed {
                // The server decodes the block as the client encoded it,
                // and everything after it unseen.
                out.append(&mut self.raw_block);
                self.mode = Mode::PassThrough;
                return Ok(());
            }
            self.rewriting = true;
            self.raw_block = Vec::new();
        }
        let encoded = encode_literals(&headers);
        let mut chunks = encoded.chunks(MIN_MAX_FRAME).peekable();
        let mut first = true;
        loop {
            let chunk = chunks.next().unwrap_or(&[]);
            let last = chunks.peek().is_none();
            let mut flags = if last { END_HEADERS } else { 0 };
            let kind = if first {
                if end_stream {
                    flags |= END_STREAM;
                }
                HEADERS
            } else {
                CONTINUATION
            };
            frame_header(out, chunk.len(), kind, flags, stream);
            out.extend_from_slice(chunk);
            first = false;
            if last {
                return Ok(());
            }
        }
    }
}

/// A client connection whose reads go through a `Rewriter`.
pub struct Http2Authority<S> {
    inner: S,
    rewriter: Rewriter,
    /// Rewritten bytes not yet handed to the server.
    ready: Vec<u8>,
    at: usize,
}

impl<S> Http2Authority<S> {
    pub fn new(inner: S) -> Self {
        Http2Authority {
            inner,
            rewriter: Rewriter::default(),
            ready: Vec::new(),
            at: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Http2Authority<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.at < this.ready.len() {
                let n = (this.ready.len() - this.at).min(buf.remaining());
                buf.put_slice(&this.ready[this.at..this.at + n]);
                this.at += n;
                return Poll::Ready(Ok(()));
            }
            this.ready.clear();
            this.at = 0;
            if this.rewriter.passes_through() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut raw = [0u8; 16 * 1024];
            let mut raw_buf = ReadBuf::new(&mut raw);
            match Pin::new(&mut this.inner).poll_read(cx, &mut raw_buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if raw_buf.filled().is_empty() => {
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(())) => {
                    this.rewriter.feed(raw_buf.filled(), &mut this.ready)?;
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Http2Authority<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for Http2Authority<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame_header(&mut out, payload.len(), kind, flags, stream);
        out.extend_from_slice(payload);
        out
    }

    /// Splits a client's byte stream into frames (after the preface).
    fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert!(bytes.starts_with(PREFACE));
        bytes = &bytes[PREFACE.len()..];
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
            let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
            out.push((bytes[3], bytes[4], stream, bytes[9..9 + len].to_vec()));
            bytes = &bytes[9 + len..];
        }
        out
    }

    fn request_headers(authority: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":scheme".to_vec(), b"http".to_vec()),
            (
                b":path".to_vec(),
                b"/etcdserverpb.Maintenance/Status".to_vec(),
            ),
            (b":authority".to_vec(), authority.to_vec()),
            (b"content-type".to_vec(), b"application/grpc".to_vec()),
        ]
    }

    /// A client's stream (encoded with HPACK's dynamic table, as Go's
    /// gRPC does, and fed in small pieces) reaches the server with every
    /// authority fixed and every block decodable by a fresh decoder, the
    /// other frames unchanged.
    #[test]
    fn authorities_lose_their_scheme_and_the_rest_is_untouched() {
        let mut client = loona_hpack::Encoder::new();
        let mut stream = PREFACE.to_vec();
        let settings = frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]);
        stream.extend(&settings);
        for (id, authority) in [
            (1, "http://127.0.0.1:2379"),
            (3, "http://127.0.0.1:2379"),
            (5, "h:1"),
        ] {
            let headers = request_headers(authority.as_bytes());
            let block = client.encode(headers.iter().map(|(n, v)| (&n[..], &v[..])));
            // Split across HEADERS and CONTINUATION, with padding.
            let (a, b) = block.split_at(block.len() / 2);
            let mut padded = vec![3];
            padded.extend_from_slice(a);
            padded.extend_from_slice(&[0, 0, 0]);
            stream.extend(frame(HEADERS, PADDED, id, &padded));
            stream.extend(frame(CONTINUATION, END_HEADERS, id, b));
            stream.extend(frame(0x0, END_STREAM, id, b"grpc body"));
        }
        let mut rewriter = Rewriter::default();
        let mut out = Vec::new();
        for piece in stream.chunks(7) {
            rewriter.feed(piece, &mut out).unwrap();
        }
        let got = frames(&out);
        assert_eq!(got[0], (0x4, 0, 0, settings[9..].to_vec()));
        let mut server = loona_hpack::Decoder::new();
        let mut seen = Vec::new();
        for (kind, flags, stream_id, payload) in &got[1..] {
            match *kind {
                HEADERS => {
                    assert_eq!(*flags, END_HEADERS);
                    let headers = server.decode(payload).unwrap();
                    let authority = headers.iter().find(|(n, _)| n == b":authority").unwrap();
                    seen.push((*stream_id, String::from_utf8(authority.1.clone()).unwrap()));
                    assert_eq!(headers.len(), 5);
                }
                0x0 => assert_eq!((*flags, &payload[..]), (END_STREAM, &b"grpc body"[..])),
                other => panic!("unexpected frame type {other}"),
            }
        }
        assert_eq!(
            seen,
            vec![
                (1, "127.0.0.1:2379".to_string()),
                (3, "127.0.0.1:2379".to_string()),
                (5, "h:1".to_string())
            ]
        );
    }

    /// A client whose first authority is well formed (Rust's and Go's
    /// gRPC, etcdctl 3.5) reaches the server byte for byte, however its
    /// stream is cut into reads; after that first block nothing more is
    /// decoded or copied.
    #[test]
    fn a_well_formed_first_authority_passes_the_connection_through() {
        let mut client = loona_hpack::Encoder::new();
        let mut stream = PREFACE.to_vec();
        stream.extend(frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]));
        for id in [1, 3] {
            let headers = request_headers(b"127.0.0.1:2379");
            let block = client.encode(headers.iter().map(|(n, v)| (&n[..], &v[..])));
            let (a, b) = block.split_at(block.len() / 2);
            stream.extend(frame(HEADERS, 0, id, a));
            stream.extend(frame(CONTINUATION, END_HEADERS, id, b));
            stream.extend(frame(0x0, END_STREAM, id, b"grpc body"));
        }
        for piece_len in [1, 7, 4096] {
            let mut rewriter = Rewriter::default();
            let mut out = Vec::new();
            for piece in stream.chunks(piece_len) {
                rewriter.feed(piece, &mut out).unwrap();
            }
            assert_eq!(out, stream, "pieces of {piece_len}");
            assert!(rewriter.passes_through());
        }
        // Fed up to the end of the first block only: not yet decided
        // before its last frame, passing through after it.
        let first_block_end = PREFACE.len() + 15 + 2 * 9 + {
            let headers = request_headers(b"127.0.0.1:2379");
            loona_hpack::Encoder::new()
                .encode(headers.iter().map(|(n, v)| (&n[..], &v[..])))
                .len()
        };
        let mut rewriter = Rewriter::default();
        let mut out = Vec::new();
        rewriter
            .feed(&stream[..first_block_end - 1], &mut out)
            .unwrap();
        assert!(!rewriter.passes_through());
        rewriter
            .feed(&stream[first_block_end - 1..first_block_end], &mut out)
            .unwrap();
        assert!(rewriter.passes_through());
        assert_eq!(out, &stream[..first_block_end]);
    }

    #[test]
    fn http1_passes_through() {
        let mut rewriter = Rewriter::default();
        let mut out = Vec::new();
        let request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
        rewriter.feed(&request[..3], &mut out).unwrap();
        rewriter.feed(&request[3..], &mut out).unwrap();
        assert_eq!(out, request);
    }

    /// Garbage after the preface ends the connection or passes, never
    /// panics; a header block over the bound is refused.
    #[test]
    fn hostile_bytes_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut bytes = PREFACE.to_vec();
            for _ in 0..(seed % 300) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                bytes.push(seed as u8);
            }
            // Mostly header frames, so the decoder sees the garbage.
            if bytes.len() > PREFACE.len() + 4 {
                bytes[PREFACE.len() + 3] = if seed.is_multiple_of(2) {
                    HEADERS
                } else {
                    CONTINUATION
                };
            }
            let _ = Rewriter::default().feed(&bytes, &mut Vec::new());
        }
        let mut big = PREFACE.to_vec();
        big.extend(frame(HEADERS, 0, 1, &vec![0; 200_000]));
        big.extend(frame(CONTINUATION, 0, 1, &vec![0; 100_000]));
        assert!(Rewriter::default().feed(&big, &mut Vec::new()).is_err());
    }

    #[test]
    fn authorities_normalize() {
        assert_eq!(normalize_authority(b"http://h:1"), b"h:1");
        assert_eq!(normalize_authority(b"https://h:1/x/y"), b"h:1");
        assert_eq!(normalize_authority(b"h:1"), b"h:1");
    }
}
