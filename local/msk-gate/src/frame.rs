//! Kafka's framing: a 4-byte big-endian length, then the request or response.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame accepted once a client is authenticated, and from the broker.
pub(crate) const MAX_FRAME: usize = 100 * 1024 * 1024;

pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;

pub(crate) async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Bytes>, Error> {
    read_frame_up_to(r, MAX_FRAME).await
}

/// One length-prefixed frame of at most `max` bytes; the length is checked before anything is
/// allocated.
pub async fn read_frame_up_to<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Bytes>, Error> {
    let len = match r.read_i32().await {
        Ok(n) => usize::try_from(n).map_err(|_| "negative frame size")?,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if len > max {
        return Err(format!("frame of {len} bytes is over the limit").into());
    }
    let mut buf = vec![0; len];
    r.read_exact(&mut buf).await?;
    Ok(Some(Bytes::from(buf)))
}

/// Writes one frame, its length and its bytes in one vectored write (one segment on a TCP
/// socket, not two: a 4-byte write followed by the frame, with Nagle's algorithm on the socket,
/// waited for the peer's delayed ACK — about 40 ms per request each way), and flushes it.
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    frame: &[u8],
) -> Result<(), Error> {
    queue_frame(w, frame).await?;
    w.flush().await?;
    Ok(())
}

/// Writes one frame without flushing: for a writer that sends several frames, then flushes once.
pub(crate) async fn queue_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    frame: &[u8],
) -> Result<(), Error> {
    let len = i32::try_from(frame.len())?.to_be_bytes();
    let mut both = bytes::Buf::chain(&len[..], frame);
    w.write_all_buf(&mut both).await?;
    Ok(())
}
