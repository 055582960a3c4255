//! zstd decompression in pure Rust (`ruzstd`): the crate then builds for every target we claim
//! without a C cross compiler (the `zstd` crate compiles libzstd). A zstd stream may be several
//! frames one after another (pzstd, concatenated files); they are decoded in turn, as zstd(1)
//! does.

use std::io::{self, BufRead, Read};

use ruzstd::decoding::{FrameDecoder, StreamingDecoder};

/// A reader of the decompressed bytes of every frame in `R`.
pub struct ZstdFrames<R: BufRead> {
    frame: Option<StreamingDecoder<R, FrameDecoder>>,
}

impl<R: BufRead> ZstdFrames<R> {
    /// Reads the first frame header now, so a stream that is not zstd fails here.
    pub fn new(src: R) -> io::Result<ZstdFrames<R>> {
        let frame = StreamingDecoder::new(src).map_err(io::Error::other)?;
        Ok(ZstdFrames { frame: Some(frame) })
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(frame) = self.frame.as_mut() else {
                return Ok(0);
            };
            let n = frame.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // This frame is done: another one follows unless the input is at its end.
            let Some(frame) = self.frame.take() else {
                return Ok(0);
            };
            let mut src = frame.into_inner();
            if src.fill_buf()?.is_empty() {
                return Ok(0);
            }
            self.frame = Some(StreamingDecoder::new(src).map_err(io::Error::other)?);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ruzstd::encoding::{compress_to_vec, CompressionLevel};

    #[test]
    fn concatenated_frames_decode_in_turn() {
        let a = b"first frame ".repeat(1000);
        let b = b"second frame".repeat(3000);
        let mut stream = compress_to_vec(&a[..], CompressionLevel::Fastest);
        stream.extend(compress_to_vec(&b[..], CompressionLevel::Fastest));
        let mut out = Vec::new();
        ZstdFrames::new(&stream[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, [a, b].concat());
    }

    #[test]
    fn not_zstd_fails_at_once() {
        assert!(ZstdFrames::new(&b"plain tar bytes"[..]).is_err());
    }
}
