//! The frame codec against frames built by hand, byte by byte, and its round trips.

use bytes::{Bytes, BytesMut};

use super::frame::*;
use super::headers::{encode_block, get};

fn decode_all(bytes: &[u8]) -> Vec<Frame> {
    let mut decoder = Decoder::new();
    let mut buffer = BytesMut::from(bytes);
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode(&mut buffer).unwrap() {
        frames.push(frame);
    }
    assert!(buffer.is_empty(), "bytes left over");
    frames
}

#[test]
fn fixed_layout_frames_built_by_hand_decode() {
    let bytes = [
        // DATA on stream 3, FIN, 2 bytes
        0x00, 0x00, 0x00, 0x03, 0x01, 0x00, 0x00, 0x02, b'h', b'i', //
        // RST_STREAM stream 5, CANCEL
        0x80, 0x03, 0x00, 0x03, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 5, 0, 0, 0, 5, //
        // SETTINGS: one entry, initial window size (7) = 65536, flag persist
        0x80, 0x03, 0x00, 0x04, 0x00, 0x00, 0x00, 0x0c, 0, 0, 0, 1, 0x01, 0, 0, 7, 0, 1, 0, 0,
        // PING 1
        0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1, //
        // GOAWAY last good 7, OK
        0x80, 0x03, 0x00, 0x07, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 7, 0, 0, 0, 0, //
        // WINDOW_UPDATE stream 1, delta 4096
        0x80, 0x03, 0x00, 0x09, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 1, 0, 0, 0x10, 0, //
        // CREDENTIAL (10), empty: ignored
        0x80, 0x03, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00,
    ];
    assert_eq!(
        decode_all(&bytes),
        vec![
            Frame::Data {
                stream_id: 3,
                fin: true,
                data: Bytes::from_static(b"hi")
            },
            Frame::RstStream {
                stream_id: 5,
                status: CANCEL
            },
            Frame::Settings {
                settings: vec![(1, 7, 65536)]
            },
            Frame::Ping { id: 1 },
            Frame::GoAway {
                last_good_stream_id: 7,
                status: GOAWAY_OK
            },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 4096
            },
            Frame::Unknown { kind: 10 },
        ]
    );
}

#[test]
fn partial_frames_wait_for_more_bytes() {
    let mut decoder = Decoder::new();
    let whole = [0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 9];
    let mut buffer = BytesMut::new();
    for (i, byte) in whole.iter().enumerate() {
        buffer.extend_from_slice(&[*byte]);
        let frame = decoder.decode(&mut buffer).unwrap();
        assert_eq!(frame.is_some(), i == whole.len() - 1);
    }
}

#[test]
fn syn_stream_built_by_hand_with_uncompressed_stored_headers() {
    // Headers as a peer at compression level 0 sends them: zlib header with the
    // dictionary id, then a stored block.
    let block = encode_block(&[
        ("streamtype".to_string(), "error".to_string()),
        ("port".to_string(), "80".to_string()),
        ("requestid".to_string(), "0".to_string()),
    ]);
    let mut compressed = vec![0x78, 0x20];
    compressed.extend_from_slice(&0xe3c6_a7c2u32.to_be_bytes());
    compressed.push(0);
    compressed.extend_from_slice(&(block.len() as u16).to_le_bytes());
    compressed.extend_from_slice(&(!(block.len() as u16)).to_le_bytes());
    compressed.extend_from_slice(&block);
    let mut bytes = vec![0x80, 0x03, 0x00, 0x01, 0x01];
    bytes.extend_from_slice(&((10 + compressed.len()) as u32).to_be_bytes()[1..]);
    bytes.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0]);
    bytes.extend_from_slice(&compressed);
    let frames = decode_all(&bytes);
    let Frame::SynStream {
        stream_id,
        priority,
        fin,
        unidirectional,
        headers,
        ..
    } = &frames[0]
    else {
        panic!("not a SYN_STREAM: {frames:?}");
    };
    assert_eq!(
        (*stream_id, *priority, *fin, *unidirectional),
        (1, 3, true, false)
    );
    assert_eq!(get(headers, "streamType"), Some("error"));
    assert_eq!(get(headers, "port"), Some("80"));
}

#[test]
fn encoded_frames_decode_to_themselves() {
    let headers = |v: &str| vec![("streamtype".to_string(), v.to_string())];
    let frames = vec![
        Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            fin: false,
            unidirectional: false,
            headers: headers("error"),
        },
        Frame::SynReply {
            stream_id: 1,
            fin: false,
            headers: Vec::new(),
        },
        Frame::Headers {
            stream_id: 1,
            fin: true,
            headers: headers("stdout"),
        },
        Frame::Data {
            stream_id: 1,
            fin: false,
            data: Bytes::from(vec![7; 70_000]),
        },
        Frame::Data {
            stream_id: 1,
            fin: true,
            data: Bytes::new(),
        },
        Frame::RstStream {
            stream_id: 1,
            status: PROTOCOL_ERROR,
        },
        Frame::Ping { id: 2 },
        Frame::GoAway {
            last_good_stream_id: 1,
            status: GOAWAY_PROTOCOL_ERROR,
        },
        Frame::WindowUpdate {
            stream_id: 1,
            delta: 10,
        },
        Frame::Settings { settings: Vec::new() },
    ];
    let mut encoder = Encoder::new();
    let mut bytes = Vec::new();
    for frame in &frames {
        encoder.encode(frame, &mut bytes);
    }
    // Fixed layouts, byte for byte.
    let mut ping = Vec::new();
    encoder.encode(&Frame::Ping { id: 2 }, &mut ping);
    assert_eq!(ping, [0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 2]);
    let mut fin = Vec::new();
    encoder.encode(
        &Frame::Data {
            stream_id: 3,
            fin: true,
            data: Bytes::new(),
        },
        &mut fin,
    );
    assert_eq!(fin, [0, 0, 0, 3, 0x01, 0, 0, 0]);
    assert_eq!(decode_all(&bytes), frames);
}

#[test]
fn other_versions_and_bad_lengths_are_errors() {
    let mut decoder = Decoder::new();
    let mut spdy2 = BytesMut::from(&[0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1][..]);
    assert_eq!(decoder.decode(&mut spdy2), Err(FrameError::Version(2)));
    let mut short_ping = BytesMut::from(&[0x80, 0x03, 0x00, 0x06, 0, 0, 0, 2, 0, 1][..]);
    assert!(matches!(
        Decoder::new().decode(&mut short_ping),
        Err(FrameError::Malformed { what: "PING", .. })
    ));
}
