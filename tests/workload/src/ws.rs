//! RFC 6455 websocket pieces: the handshake key and frame encoding/decoding.

use std::fmt;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest payload of a single frame (and of a reassembled message) we accept.
pub const MAX_PAYLOAD: u64 = 16 * 1024 * 1024;

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.trim().as_bytes());
    sha.update(GUID.as_bytes());
    base64(&sha.digest().bytes())
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Frame opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    pub fn from_u8(b: u8) -> Option<Opcode> {
        Some(match b {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    pub fn as_u8(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// One decoded frame, payload already unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: Opcode,
    /// Whether the sender masked it (clients must).
    pub masked: bool,
    pub payload: Vec<u8>,
}

/// A protocol violation, with the close code to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    ReservedBits,
    UnknownOpcode(u8),
    ControlTooLong,
    ControlFragmented,
    TooLarge,
    NonMinimalLength,
}

impl FrameError {
    /// The close status code for this error (RFC 6455 7.4.1).
    pub fn close_code(self) -> u16 {
        match self {
            FrameError::TooLarge => 1009,
            _ => 1002,
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::ReservedBits => f.write_str("reserved bits set"),
            FrameError::UnknownOpcode(op) => write!(f, "unknown opcode {op:#x}"),
            FrameError::ControlTooLong => f.write_str("control frame payload over 125 bytes"),
            FrameError::ControlFragmented => f.write_str("fragmented control frame"),
            FrameError::TooLarge => f.write_str("frame too large"),
            FrameError::NonMinimalLength => f.write_str("payload length not minimally encoded"),
        }
    }
}

/// Decodes one frame from the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, or the frame and the number
/// of bytes it used.
pub fn decode_frame(buf: &[u8], max_payload: u64) -> Result<Option<(Frame, usize)>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    if buf[0] & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let opcode = Opcode::from_u8(buf[0] & 0x0F).ok_or(FrameError::UnknownOpcode(buf[0] & 0x0F))?;
    let masked = buf[1] & 0x80 != 0;
    let len7 = buf[1] & 0x7F;
    let mut pos = 2;
    let len: u64 = match len7 {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            pos = 4;
            let len = u64::from(u16::from_be_bytes([b[0], b[1]]));
            if len < 126 {
                return Err(FrameError::NonMinimalLength);
            }
            len
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            pos = 10;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            let len = u64::from_be_bytes(a);
            if len <= u64::from(u16::MAX) || len >> 63 != 0 {
                return Err(FrameError::NonMinimalLength);
            }
            len
        }
        n => u64::from(n),
    };
    if opcode.is_control() {
        if len > 125 {
            return Err(FrameError::ControlTooLong);
        }
        if !fin {
            return Err(FrameError::ControlFragmented);
        }
    }
    if len > max_payload {
        return Err(FrameError::TooLarge);
    }
    let mask = if masked {
        let Some(m) = buf.get(pos..pos + 4) else {
            return Ok(None);
        };
        pos += 4;
        Some([m[0], m[1], m[2], m[3]])
    } else {
        None
    };
    // len <= max_payload, which fits in usize on the targets we build for.
    let len = usize::try_from(len).map_err(|_| FrameError::TooLarge)?;
    let Some(data) = buf.get(pos..pos + len) else {
        return Ok(None);
    };
    let mut payload = data.to_vec();
    if let Some(mask) = mask {
        apply_mask(&mut payload, mask);
    }
    Ok(Some((
        Frame {
            fin,
            opcode,
            masked,
            payload,
        },
        pos + len,
    )))
}

/// XORs `data` with the 4-byte mask (masking and unmasking are the same).
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// Encodes one frame; servers send unmasked frames (`mask: None`).
pub fn encode_frame(fin: bool, opcode: Opcode, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | opcode.as_u8());
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        // len < 126 fits in 7 bits.
        out.push(mask_bit | len as u8);
    } else if let Ok(len16) = u16::try_from(len) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&len16.to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            let start = out.len();
            out.extend_from_slice(payload);
            apply_mask(&mut out[start..], m);
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// The payload of a close frame answering `received` (echo its code, or 1000).
pub fn close_reply(received: &[u8]) -> Vec<u8> {
    if received.len() >= 2 {
        received[..2].to_vec()
    } else {
        1000u16.to_be_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_example() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn base64_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn decodes_rfc_masked_hello() {
        // RFC 6455 section 5.7: a masked "Hello".
        let raw = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (frame, used) = decode_frame(&raw, MAX_PAYLOAD).unwrap().unwrap();
        assert_eq!(used, raw.len());
        assert!(frame.fin && frame.masked);
        assert_eq!(frame.opcode, Opcode::Text);
        assert_eq!(frame.payload, b"Hello");
        assert_eq!(
            encode_frame(true, Opcode::Text, b"Hello", Some([0x37, 0xfa, 0x21, 0x3d])),
            raw
        );
    }

    #[test]
    fn encodes_unmasked_and_extended_lengths() {
        assert_eq!(
            encode_frame(true, Opcode::Text, b"Hello", None),
            [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        );
        for len in [0usize, 125, 126, 65535, 65536, 70000] {
            let payload = vec![7u8; len];
            let raw = encode_frame(false, Opcode::Binary, &payload, Some([1, 2, 3, 4]));
            let (frame, used) = decode_frame(&raw, MAX_PAYLOAD).unwrap().unwrap();
            assert_eq!(used, raw.len());
            assert!(!frame.fin);
            assert_eq!(frame.opcode, Opcode::Binary);
            assert_eq!(frame.payload, payload);
            // Every strict prefix needs more bytes.
            for cut in [0, 1, raw.len() / 2, raw.len() - 1] {
                if cut < raw.len() {
                    assert_eq!(decode_frame(&raw[..cut], MAX_PAYLOAD).unwrap(), None);
                }
            }
        }
    }

    #[test]
    fn rejects_protocol_violations() {
        assert_eq!(
            decode_frame(&[0xC1, 0x80, 0, 0, 0, 0], MAX_PAYLOAD).unwrap_err(),
            FrameError::ReservedBits
        );
        assert_eq!(
            decode_frame(&[0x83, 0x80, 0, 0, 0, 0], MAX_PAYLOAD).unwrap_err(),
            FrameError::UnknownOpcode(3)
        );
        assert_eq!(
            decode_frame(&[0x09, 0x80, 0, 0, 0, 0], MAX_PAYLOAD).unwrap_err(),
            FrameError::ControlFragmented
        );
        assert_eq!(
            decode_frame(&[0x89, 0xFE, 0, 200], MAX_PAYLOAD).unwrap_err(),
            FrameError::ControlTooLong
        );
        assert_eq!(
            decode_frame(&[0x82, 0xFE, 0, 10], MAX_PAYLOAD).unwrap_err(),
            FrameError::NonMinimalLength
        );
        let big = encode_frame(true, Opcode::Binary, &[0; 200], None);
        assert_eq!(decode_frame(&big, 100).unwrap_err(), FrameError::TooLarge);
        assert_eq!(FrameError::TooLarge.close_code(), 1009);
    }

    #[test]
    fn close_reply_echoes_code() {
        assert_eq!(close_reply(&[0x03, 0xE9, b'x']), vec![0x03, 0xE9]);
        assert_eq!(close_reply(&[]), 1000u16.to_be_bytes().to_vec());
    }
}
