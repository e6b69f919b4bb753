//! SPDY/3 name/value header blocks (section 2.6.10 of the SPDY/3 draft) and their compression:
//! one zlib stream per direction for the whole connection, primed with the protocol's
//! dictionary, each block ended by a sync flush.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// A block's headers in order, names in lowercase; a name with several values (joined by NUL
/// bytes on the wire) appears once per value.
pub(crate) type Headers = Vec<(String, String)>;

/// The first value of `name` (lowercase) in `headers`.
pub(crate) fn get<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Most name/value pairs a block may hold, and the longest name or value, as Go's spdystream
/// reads them.
const MAX_PAIRS: u32 = 1000;
const MAX_FIELD: u32 = 1 << 20;
/// Most bytes one block may inflate to.
const MAX_BLOCK: usize = 16 << 20;

/// Why a header block could not be read: the connection cannot go on after any of these, since
/// the compression context is shared by every block.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum HeaderError {
    #[error("header block: {0}")]
    Malformed(&'static str),
    #[error("header block does not inflate: {0}")]
    Inflate(String),
}

/// The uncompressed block: a 32-bit count, then each name and value with a 32-bit length.
pub(crate) fn encode_block(headers: &[(String, String)]) -> Vec<u8> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        match pairs.iter_mut().find(|(n, _)| *n == name) {
            Some((_, joined)) => {
                joined.push('\0');
                joined.push_str(value);
            }
            None => pairs.push((name, value.clone())),
        }
    }
    let mut block = Vec::new();
    block.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
    for (name, value) in &pairs {
        for field in [name.as_bytes(), value.as_bytes()] {
            block.extend_from_slice(&(field.len() as u32).to_be_bytes());
            block.extend_from_slice(field);
        }
    }
    block
}

/// Reads an uncompressed block; trailing bytes are an error.
pub(crate) fn decode_block(block: &[u8]) -> Result<Headers, HeaderError> {
    let mut rest = block;
    let mut take = |n: usize| -> Result<&[u8], HeaderError> {
        if rest.len() < n {
            return Err(HeaderError::Malformed("truncated"));
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let number = |bytes: &[u8]| u32::from_be_bytes(bytes.try_into().expect("four bytes"));
    let count = number(take(4)?);
    if count > MAX_PAIRS {
        return Err(HeaderError::Malformed("too many headers"));
    }
    let mut headers = Headers::new();
    for _ in 0..count {
        let mut field = || -> Result<String, HeaderError> {
            let length = number(take(4)?);
            if length > MAX_FIELD {
                return Err(HeaderError::Malformed("header field too long"));
            }
            let bytes = take(length as usize)?;
            String::from_utf8(bytes.to_vec()).map_err(|_| HeaderError::Malformed("header field is not UTF-8"))
        };
        let name = field()?.to_ascii_lowercase();
        let value = field()?;
        if name.is_empty() {
            return Err(HeaderError::Malformed("empty header name"));
        }
        for value in value.split('\0') {
            headers.push((name.clone(), value.to_string()));
        }
    }
    if !rest.is_empty() {
        return Err(HeaderError::Malformed("bytes after the last header"));
    }
    Ok(headers)
}

/// The compressing side of a connection.
pub(crate) struct Compressor(Compress);

impl Compressor {
    pub(crate) fn new() -> Self {
        let mut zlib = Compress::new(Compression::default(), true);
        zlib.set_dictionary(&dictionary())
            .expect("a fresh zlib stream takes a dictionary");
        Compressor(zlib)
    }

    /// The compressed form of `headers`, flushed so that the peer can read it whole.
    pub(crate) fn compress(&mut self, headers: &[(String, String)]) -> Vec<u8> {
        let block = encode_block(headers);
        let mut out = Vec::with_capacity(block.len() / 2 + 64);
        let mut consumed = 0;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64));
            }
            let before = self.0.total_in();
            self.0
                .compress_vec(&block[consumed..], &mut out, FlushCompress::Sync)
                .expect("zlib compression into memory does not fail");
            consumed += (self.0.total_in() - before) as usize;
            // Done once everything went in and zlib stopped short of filling the buffer.
            if consumed == block.len() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

/// The decompressing side of a connection.
pub(crate) struct Decompressor(Decompress);

impl Decompressor {
    pub(crate) fn new() -> Self {
        Decompressor(Decompress::new(true))
    }

    /// The headers of one compressed block (the rest of a frame after its fixed fields).
    pub(crate) fn decompress(&mut self, input: &[u8]) -> Result<Headers, HeaderError> {
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        let mut consumed = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_BLOCK {
                    return Err(HeaderError::Malformed("header block too large"));
                }
                out.reserve(out.capacity());
            }
            let (before_in, before_out) = (self.0.total_in(), out.len());
            let result = self
                .0
                .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync);
            consumed += (self.0.total_in() - before_in) as usize;
            match result {
                Ok(Status::StreamEnd) => return Err(HeaderError::Malformed("the header stream ended")),
                Ok(_) => {}
                Err(err) if err.needs_dictionary().is_some() => {
                    self.0
                        .set_dictionary(&dictionary())
                        .map_err(|err| HeaderError::Inflate(err.to_string()))?;
                    continue;
                }
                Err(err) => return Err(HeaderError::Inflate(err.to_string())),
            }
            let stalled = out.len() == before_out && self.0.total_in() == before_in;
            if consumed == input.len() && out.len() < out.capacity() {
                break;
            }
            if stalled && out.len() < out.capacity() {
                return Err(HeaderError::Malformed("incomplete compressed header block"));
            }
        }
        decode_block(&out)
    }
}

/// The words SPDY/3's dictionary starts with, each preceded by its 32-bit length there.
const DICTIONARY_WORDS: [&str; 65] = [
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// What follows the words: status codes and phrases, dates and common values, unprefixed.
const DICTIONARY_TAIL: [&str; 7] = [
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request\
     401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented\
     503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,\
     text/plain,text/javascript,",
    "publicprivatemax-age=gzip,deflate,sdch",
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
];

/// The zlib dictionary of SPDY/3 header compression (1,423 bytes).
pub(crate) fn dictionary() -> Vec<u8> {
    let mut dictionary = Vec::with_capacity(1423);
    for word in DICTIONARY_WORDS {
        dictionary.extend_from_slice(&(word.len() as u32).to_be_bytes());
        dictionary.extend_from_slice(word.as_bytes());
    }
    for part in DICTIONARY_TAIL {
        dictionary.extend_from_slice(part.as_bytes());
    }
    dictionary
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Headers {
        list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    fn adler32(bytes: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for byte in bytes {
            a = (a + u32::from(*byte)) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        let dictionary = dictionary();
        assert_eq!(dictionary.len(), 1423);
        // The DICTID every SPDY/3 peer puts in its zlib header.
        assert_eq!(adler32(&dictionary), 0xe3c6_a7c2);
    }

    #[test]
    fn blocks_are_counted_length_prefixed_pairs() {
        let block = encode_block(&pairs(&[("streamType", "error"), ("port", "80"), ("port", "81")]));
        let mut expected = vec![0, 0, 0, 2];
        for field in ["streamtype", "error", "port", "80\u{0}81"] {
            expected.extend_from_slice(&(field.len() as u32).to_be_bytes());
            expected.extend_from_slice(field.as_bytes());
        }
        assert_eq!(block, expected);
        assert_eq!(
            decode_block(&block).unwrap(),
            pairs(&[("streamtype", "error"), ("port", "80"), ("port", "81")])
        );
    }

    #[test]
    fn malformed_blocks_are_refused() {
        assert!(decode_block(&[0, 0]).is_err());
        assert!(decode_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'a']).is_err());
        assert!(decode_block(&[0, 0, 0, 0, 7]).is_err());
        assert!(decode_block(&[0xff, 0xff, 0xff, 0xff]).is_err());
        assert_eq!(decode_block(&[0, 0, 0, 0]).unwrap(), Headers::new());
    }

    #[test]
    fn compressed_blocks_carry_the_dictionary_id_and_share_one_stream() {
        let mut compressor = Compressor::new();
        let first = compressor.compress(&pairs(&[("streamtype", "stdout")]));
        // zlib header with FDICT set, then the dictionary's Adler-32.
        assert_eq!(first[0], 0x78);
        assert_ne!(first[1] & 0x20, 0);
        assert_eq!(first[2..6], 0xe3c6_a7c2u32.to_be_bytes());
        // Each block ends in a sync flush's empty stored block.
        assert_eq!(first[first.len() - 4..], [0, 0, 0xff, 0xff]);
        let second = compressor.compress(&pairs(&[("streamtype", "stderr")]));
        let mut decompressor = Decompressor::new();
        assert_eq!(
            decompressor.decompress(&first).unwrap(),
            pairs(&[("streamtype", "stdout")])
        );
        assert_eq!(
            decompressor.decompress(&second).unwrap(),
            pairs(&[("streamtype", "stderr")])
        );
        // A fresh context cannot read the second block alone: the stream is shared.
        assert!(Decompressor::new().decompress(&second).is_err());
    }

    #[test]
    fn stored_blocks_built_by_hand_inflate() {
        // A peer that does not compress: zlib header with the dictionary id, then a stored
        // block per header block, as a sync flush at level 0 writes it.
        let block = encode_block(&pairs(&[("port", "8080"), ("requestid", "0")]));
        let mut stream = vec![0x78, 0x20]; // FDICT, level 0, the check bits right
        assert_eq!((0x78u32 * 256 + u32::from(stream[1])) % 31, 0);
        stream.extend_from_slice(&0xe3c6_a7c2u32.to_be_bytes());
        stream.push(0); // stored, not final
        stream.extend_from_slice(&(block.len() as u16).to_le_bytes());
        stream.extend_from_slice(&(!(block.len() as u16)).to_le_bytes());
        stream.extend_from_slice(&block);
        let headers = Decompressor::new().decompress(&stream).unwrap();
        assert_eq!(get(&headers, "port"), Some("8080"));
        assert_eq!(get(&headers, "requestID"), Some("0"));
        assert_eq!(get(&headers, "streamtype"), None);
    }

    #[test]
    fn large_blocks_round_trip() {
        let value = "x".repeat(100_000);
        let headers = pairs(&[("big", &value), ("small", "1")]);
        let mut compressor = Compressor::new();
        let mut decompressor = Decompressor::new();
        for _ in 0..3 {
            let compressed = compressor.compress(&headers);
            assert_eq!(decompressor.decompress(&compressed).unwrap(), headers);
        }
    }
}
