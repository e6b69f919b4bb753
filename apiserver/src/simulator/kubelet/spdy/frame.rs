//! SPDY/3 frames and their wire form (sections 2.2 to 2.6 of the SPDY/3 draft): a control
//! frame is `1 | version(15) | type(16) | flags(8) | length(24) | payload`, a data frame
//! `0 | stream id(31) | flags(8) | length(24) | data`. Header blocks go through the
//! connection's compression contexts ([`super::headers`]).

use bytes::{Buf, Bytes, BytesMut};

use super::headers::{Compressor, Decompressor, HeaderError, Headers};

/// The protocol version spoken.
pub(crate) const VERSION: u16 = 3;

/// Control frame types.
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// Flags: FIN on any frame of a stream, UNIDIRECTIONAL on SYN_STREAM.
const FLAG_FIN: u8 = 0x01;
const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// The longest payload a frame can say it has (24 bits).
pub(crate) const MAX_PAYLOAD: usize = (1 << 24) - 1;

/// RST_STREAM status codes used here.
pub(crate) const PROTOCOL_ERROR: u32 = 1;
pub(crate) const REFUSED_STREAM: u32 = 3;
pub(crate) const CANCEL: u32 = 5;
/// GOAWAY status codes.
pub(crate) const GOAWAY_OK: u32 = 0;
pub(crate) const GOAWAY_PROTOCOL_ERROR: u32 = 1;

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    /// Each setting: flags, id, value.
    Settings {
        settings: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    /// A control frame of a type SPDY/3 does not define (or CREDENTIAL): ignored, as the
    /// protocol asks.
    Unknown {
        kind: u16,
    },
}

/// Why the peer's bytes are not SPDY/3: the connection ends.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum FrameError {
    #[error("SPDY version {0} is not 3")]
    Version(u16),
    #[error("{what} frame of {length} bytes is malformed")]
    Malformed { what: &'static str, length: usize },
    #[error(transparent)]
    Headers(#[from] HeaderError),
}

/// Reads frames; owns the connection's inbound header compression context.
pub(crate) struct Decoder {
    headers: Decompressor,
}

impl Decoder {
    pub(crate) fn new() -> Self {
        Decoder {
            headers: Decompressor::new(),
        }
    }

    /// Takes one whole frame off the front of `buffer`; `None` while it holds less than one.
    pub(crate) fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buffer.len() < 8 {
            return Ok(None);
        }
        let length = u32::from_be_bytes([0, buffer[5], buffer[6], buffer[7]]) as usize;
        if buffer.len() < 8 + length {
            buffer.reserve(8 + length - buffer.len());
            return Ok(None);
        }
        let first = u32::from_be_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]);
        let flags = buffer[4];
        buffer.advance(8);
        let payload = buffer.split_to(length).freeze();
        let fin = flags & FLAG_FIN != 0;
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: first & 0x7fff_ffff,
                fin,
                data: payload,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        let kind = (first & 0xffff) as u16;
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        self.control(kind, flags, payload).map(Some)
    }

    fn control(&mut self, kind: u16, flags: u8, payload: Bytes) -> Result<Frame, FrameError> {
        let length = payload.len();
        let malformed = |what| FrameError::Malformed { what, length };
        let word =
            |at: usize| u32::from_be_bytes([payload[at], payload[at + 1], payload[at + 2], payload[at + 3]]);
        let id = |at: usize| word(at) & 0x7fff_ffff;
        let fin = flags & FLAG_FIN != 0;
        Ok(match kind {
            SYN_STREAM => {
                if length < 10 {
                    return Err(malformed("SYN_STREAM"));
                }
                Frame::SynStream {
                    stream_id: id(0),
                    associated_to: id(4),
                    priority: payload[8] >> 5,
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers: self.headers.decompress(&payload[10..])?,
                }
            }
            SYN_REPLY | HEADERS => {
                if length < 4 {
                    return Err(malformed(if kind == SYN_REPLY { "SYN_REPLY" } else { "HEADERS" }));
                }
                let (stream_id, headers) = (id(0), self.headers.decompress(&payload[4..])?);
                match kind {
                    SYN_REPLY => Frame::SynReply {
                        stream_id,
                        fin,
                        headers,
                    },
                    _ => Frame::Headers {
                        stream_id,
                        fin,
                        headers,
                    },
                }
            }
            RST_STREAM if length == 8 => Frame::RstStream {
                stream_id: id(0),
                status: word(4),
            },
            RST_STREAM => return Err(malformed("RST_STREAM")),
            SETTINGS => {
                if length < 4 || (word(0) as usize).saturating_mul(8) != length - 4 {
                    return Err(malformed("SETTINGS"));
                }
                let settings = (0..word(0) as usize)
                    .map(|i| {
                        let at = 4 + 8 * i;
                        (payload[at], word(at) & 0x00ff_ffff, word(at + 4))
                    })
                    .collect();
                Frame::Settings { settings }
            }
            PING if length == 4 => Frame::Ping { id: word(0) },
            PING => return Err(malformed("PING")),
            GOAWAY if length == 8 => Frame::GoAway {
                last_good_stream_id: id(0),
                status: word(4),
            },
            GOAWAY => return Err(malformed("GOAWAY")),
            WINDOW_UPDATE if length == 8 => Frame::WindowUpdate {
                stream_id: id(0),
                delta: id(4),
            },
            WINDOW_UPDATE => return Err(malformed("WINDOW_UPDATE")),
            kind => Frame::Unknown { kind },
        })
    }
}

/// Writes frames; owns the connection's outbound header compression context.
pub(crate) struct Encoder {
    headers: Compressor,
}

impl Encoder {
    pub(crate) fn new() -> Self {
        Encoder {
            headers: Compressor::new(),
        }
    }

    /// Appends `frame` to `out`. A data frame longer than [`MAX_PAYLOAD`] is the caller's bug.
    pub(crate) fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) {
        let fin = |fin: bool| if fin { FLAG_FIN } else { 0 };
        match frame {
            Frame::Data {
                stream_id,
                fin: f,
                data,
            } => {
                assert!(
                    data.len() <= MAX_PAYLOAD,
                    "a SPDY data frame holds at most 16 MiB"
                );
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                header_tail(out, fin(*f), data.len());
                out.extend_from_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                fin: f,
                unidirectional,
                headers,
            } => {
                let block = self.headers.compress(headers);
                let flags = fin(*f) | if *unidirectional { FLAG_UNIDIRECTIONAL } else { 0 };
                control(out, SYN_STREAM, flags, 10 + block.len());
                out.extend_from_slice(&stream_id.to_be_bytes());
                out.extend_from_slice(&associated_to.to_be_bytes());
                out.extend_from_slice(&[(priority & 0x7) << 5, 0]);
                out.extend_from_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                fin: f,
                headers,
            }
            | Frame::Headers {
                stream_id,
                fin: f,
                headers,
            } => {
                let kind = if matches!(frame, Frame::SynReply { .. }) {
                    SYN_REPLY
                } else {
                    HEADERS
                };
                let block = self.headers.compress(headers);
                control(out, kind, fin(*f), 4 + block.len());
                out.extend_from_slice(&stream_id.to_be_bytes());
                out.extend_from_slice(&block);
            }
            Frame::RstStream { stream_id, status } => {
                control(out, RST_STREAM, 0, 8);
                out.extend_from_slice(&stream_id.to_be_bytes());
                out.extend_from_slice(&status.to_be_bytes());
            }
            Frame::Settings { settings } => {
                control(out, SETTINGS, 0, 4 + 8 * settings.len());
                out.extend_from_slice(&(settings.len() as u32).to_be_bytes());
                for (flags, id, value) in settings {
                    out.extend_from_slice(&((u32::from(*flags) << 24) | (id & 0x00ff_ffff)).to_be_bytes());
                    out.extend_from_slice(&value.to_be_bytes());
                }
            }
            Frame::Ping { id } => {
                control(out, PING, 0, 4);
                out.extend_from_slice(&id.to_be_bytes());
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                control(out, GOAWAY, 0, 8);
                out.extend_from_slice(&last_good_stream_id.to_be_bytes());
                out.extend_from_slice(&status.to_be_bytes());
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control(out, WINDOW_UPDATE, 0, 8);
                out.extend_from_slice(&stream_id.to_be_bytes());
                out.extend_from_slice(&delta.to_be_bytes());
            }
            Frame::Unknown { kind } => control(out, *kind, 0, 0),
        }
    }
}

/// The first eight bytes of a control frame.
fn control(out: &mut Vec<u8>, kind: u16, flags: u8, length: usize) {
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    header_tail(out, flags, length);
}

/// Flags and the 24-bit length.
fn header_tail(out: &mut Vec<u8>, flags: u8, length: usize) {
    let length = length as u32;
    out.extend_from_slice(&((u32::from(flags) << 24) | (length & 0x00ff_ffff)).to_be_bytes());
}
