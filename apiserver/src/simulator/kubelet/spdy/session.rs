//! The server side of a SPDY/3.1 connection, as Kubernetes' clients (Go's spdystream) use it:
//! the client opens every stream; the server replies to those it takes, half-closes its side
//! with FIN, resets with RST_STREAM, answers pings and ends with GOAWAY.
//!
//! One task reads and dispatches frames, one writes them in order. Flow control: spdystream
//! neither sends WINDOW_UPDATE nor honours it, so nothing here waits for send window; the
//! reader never blocks on a slow stream either (a blocked reader would stop pings and resets
//! of every stream): each stream buffers what it has not read yet, up to [`MAX_BUFFERED`], and
//! is reset past that. WINDOW_UPDATE frames go out as a stream's data is read, for peers that
//! keep windows.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::frame::{self, Decoder, Encoder, Frame};
use super::headers::{self, Headers};

/// Bytes a stream may hold unread before it is reset.
const MAX_BUFFERED: usize = 16 << 20;
/// Largest data frame written (a write of more goes out in several).
const MAX_DATA_FRAME: usize = 32 << 10;
/// How long [`Connection::shutdown`] waits for the client to close after GOAWAY.
const LINGER: Duration = Duration::from_secs(5);
/// Bytes of frames written at once.
const WRITE_BATCH: usize = 64 << 10;
/// RST_STREAM status for a stream that buffered too much.
const FLOW_CONTROL_ERROR: u32 = 7;

/// What the writer task is asked to do.
enum Out {
    Frame(Frame),
    /// Flush and close the write side.
    Shutdown,
}

/// The writer's queue; sending fails once the connection can no longer be written.
#[derive(Clone)]
struct Outbox(mpsc::Sender<Out>);

/// The connection is gone: nothing more can be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the SPDY connection is closed")]
pub(crate) struct Closed;

impl Outbox {
    async fn send(&self, frame: Frame) -> Result<(), Closed> {
        self.0.send(Out::Frame(frame)).await.map_err(|_| Closed)
    }
}

/// A running connection.
pub(crate) struct Connection {
    incoming: mpsc::Receiver<Stream>,
    outbox: Outbox,
    closed: watch::Receiver<bool>,
    last_stream: Arc<AtomicU32>,
    reader: Task,
    writer: Task,
}

/// A task that ends when its handle is dropped (a connection dropped without
/// [`Connection::shutdown`], its session cancelled, closes at once).
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Connection {
    /// Serves SPDY on `io` (the connection after its `101 Switching Protocols`).
    pub(crate) fn start<IO>(io: IO) -> Connection
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(256);
        let (incoming_tx, incoming) = mpsc::channel(32);
        let (closed_tx, closed) = watch::channel(false);
        let outbox = Outbox(out_tx);
        let last_stream = Arc::new(AtomicU32::new(0));
        let reader = Reader {
            outbox: outbox.clone(),
            incoming: incoming_tx,
            streams: HashMap::new(),
            last_stream: last_stream.clone(),
        };
        Connection {
            incoming,
            outbox,
            closed,
            last_stream,
            reader: Task(tokio::spawn(reader.run(read, closed_tx))),
            writer: Task(tokio::spawn(write_frames(write, out_rx))),
        }
    }

    /// The next stream the client opens; `None` once the client's side has ended.
    pub(crate) async fn accept(&mut self) -> Option<Stream> {
        self.incoming.recv().await
    }

    /// Completes when the client's side has ended (closed, reset, GOAWAY or garbage).
    pub(crate) fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut closed = self.closed.clone();
        async move {
            let _ = closed.wait_for(|closed| *closed).await;
        }
    }

    /// Ends the connection as a kubelet does: GOAWAY after everything queued, then the write
    /// side closes; the client's close is awaited (for a while), so that no unread byte makes
    /// the close a reset.
    pub(crate) async fn shutdown(self) {
        let Connection {
            incoming,
            outbox,
            last_stream,
            mut reader,
            writer,
            ..
        } = self;
        drop(incoming);
        let last_good_stream_id = last_stream.load(Ordering::Relaxed);
        let _ = outbox
            .send(Frame::GoAway {
                last_good_stream_id,
                status: frame::GOAWAY_OK,
            })
            .await;
        let _ = outbox.0.send(Out::Shutdown).await;
        drop(outbox);
        let mut writer = writer;
        let _ = (&mut writer.0).await;
        let _ = tokio::time::timeout(LINGER, &mut reader.0).await;
    }
}

/// A stream the client opened.
pub(crate) struct Stream {
    pub(crate) id: u32,
    pub(crate) headers: Headers,
    data: mpsc::UnboundedReceiver<Bytes>,
    buffered: Arc<AtomicUsize>,
    outbox: Outbox,
}

impl Stream {
    /// The first value of header `name`.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        headers::get(&self.headers, name)
    }

    /// Accepts the stream (SYN_REPLY).
    pub(crate) async fn reply(&self) -> Result<(), Closed> {
        self.outbox
            .send(Frame::SynReply {
                stream_id: self.id,
                fin: false,
                headers: Vec::new(),
            })
            .await
    }

    /// The next bytes the client sent; `None` once it half-closed or reset the stream (or the
    /// connection ended).
    pub(crate) async fn read(&mut self) -> Option<Bytes> {
        let chunk = self.data.recv().await?;
        self.buffered.fetch_sub(chunk.len(), Ordering::Relaxed);
        let _ = self
            .outbox
            .send(Frame::WindowUpdate {
                stream_id: self.id,
                delta: chunk.len() as u32,
            })
            .await;
        Some(chunk)
    }

    /// The writing side, to use beside [`Stream::read`].
    pub(crate) fn writer(&self) -> StreamWriter {
        StreamWriter {
            id: self.id,
            outbox: self.outbox.clone(),
        }
    }
}

/// Writes to one stream.
#[derive(Clone)]
pub(crate) struct StreamWriter {
    id: u32,
    outbox: Outbox,
}

impl StreamWriter {
    /// Sends `data` (nothing for an empty slice).
    pub(crate) async fn write(&self, data: Bytes) -> Result<(), Closed> {
        let mut data = data;
        while !data.is_empty() {
            let chunk = data.split_to(data.len().min(MAX_DATA_FRAME));
            self.outbox
                .send(Frame::Data {
                    stream_id: self.id,
                    fin: false,
                    data: chunk,
                })
                .await?;
        }
        Ok(())
    }

    /// Half-closes the stream: the client reads its end.
    pub(crate) async fn finish(&self) -> Result<(), Closed> {
        self.outbox
            .send(Frame::Data {
                stream_id: self.id,
                fin: true,
                data: Bytes::new(),
            })
            .await
    }

    /// Resets the stream (RST_STREAM with `status`).
    pub(crate) async fn reset(&self, status: u32) -> Result<(), Closed> {
        self.outbox
            .send(Frame::RstStream {
                stream_id: self.id,
                status,
            })
            .await
    }
}

/// A stream's inbound side, as the reader task keeps it.
struct Inbound {
    data: mpsc::UnboundedSender<Bytes>,
    buffered: Arc<AtomicUsize>,
}

/// The reader task's state.
struct Reader {
    outbox: Outbox,
    incoming: mpsc::Sender<Stream>,
    streams: HashMap<u32, Inbound>,
    last_stream: Arc<AtomicU32>,
}

impl Reader {
    async fn run<R: AsyncRead + Unpin>(mut self, mut io: R, closed: watch::Sender<bool>) {
        let mut decoder = Decoder::new();
        let mut buffer = BytesMut::with_capacity(16 << 10);
        'read: loop {
            loop {
                match decoder.decode(&mut buffer) {
                    Ok(Some(frame)) => {
                        if !self.on_frame(frame).await {
                            break 'read;
                        }
                    }
                    Ok(None) => break,
                    Err(err) => {
                        tracing::debug!(error = %err, "SPDY: unreadable frame; going away");
                        let _ = self
                            .outbox
                            .send(Frame::GoAway {
                                last_good_stream_id: self.last_stream.load(Ordering::Relaxed),
                                status: frame::GOAWAY_PROTOCOL_ERROR,
                            })
                            .await;
                        break 'read;
                    }
                }
            }
            match io.read_buf(&mut buffer).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(err) => {
                    tracing::debug!(error = %err, "SPDY: read failed");
                    break;
                }
            }
        }
        // Every stream reads its end; no more streams come.
        self.streams.clear();
        drop(self.incoming);
        let _ = closed.send(true);
    }

    /// Acts on one frame; false when the connection is over.
    async fn on_frame(&mut self, frame: Frame) -> bool {
        match frame {
            Frame::SynStream {
                stream_id,
                fin,
                headers,
                ..
            } => return self.open(stream_id, fin, headers).await,
            Frame::Data { stream_id, fin, data } => {
                if let Some(inbound) = self.streams.get(&stream_id) {
                    if !data.is_empty() {
                        let buffered = inbound.buffered.fetch_add(data.len(), Ordering::Relaxed) + data.len();
                        if buffered > MAX_BUFFERED {
                            tracing::debug!(stream_id, "SPDY: a stream buffered too much; reset");
                            self.streams.remove(&stream_id);
                            let _ = self
                                .outbox
                                .send(Frame::RstStream {
                                    stream_id,
                                    status: FLOW_CONTROL_ERROR,
                                })
                                .await;
                            return true;
                        }
                        if inbound.data.send(data).is_err() {
                            // Nobody reads the stream any more.
                            self.streams.remove(&stream_id);
                        }
                    }
                    if fin {
                        self.streams.remove(&stream_id);
                    }
                }
            }
            Frame::Headers {
                stream_id, fin: true, ..
            }
            | Frame::RstStream { stream_id, .. } => {
                self.streams.remove(&stream_id);
            }
            Frame::Ping { id } => {
                // Odd ids are the client's; even ones would answer pings of ours (none are sent).
                if id % 2 == 1 {
                    let _ = self.outbox.send(Frame::Ping { id }).await;
                }
            }
            Frame::GoAway { .. } => return false,
            Frame::SynReply { .. }
            | Frame::Headers { .. }
            | Frame::Settings { .. }
            | Frame::WindowUpdate { .. }
            | Frame::Unknown { .. } => {}
        }
        true
    }

    /// A SYN_STREAM: a new stream for the handler, unless its id breaks the rules.
    async fn open(&mut self, stream_id: u32, fin: bool, headers: Headers) -> bool {
        let last = self.last_stream.load(Ordering::Relaxed);
        if stream_id.is_multiple_of(2) || stream_id <= last {
            let _ = self
                .outbox
                .send(Frame::RstStream {
                    stream_id,
                    status: frame::PROTOCOL_ERROR,
                })
                .await;
            return true;
        }
        self.last_stream.store(stream_id, Ordering::Relaxed);
        let (data_tx, data) = mpsc::unbounded_channel();
        let buffered = Arc::new(AtomicUsize::new(0));
        if !fin {
            self.streams.insert(
                stream_id,
                Inbound {
                    data: data_tx,
                    buffered: buffered.clone(),
                },
            );
        }
        let stream = Stream {
            id: stream_id,
            headers,
            data,
            buffered,
            outbox: self.outbox.clone(),
        };
        if self.incoming.send(stream).await.is_err() {
            self.streams.remove(&stream_id);
            let _ = self
                .outbox
                .send(Frame::RstStream {
                    stream_id,
                    status: frame::REFUSED_STREAM,
                })
                .await;
        }
        true
    }
}

/// The writer task: frames in order, batched into few writes.
async fn write_frames<W: AsyncWrite + Unpin>(mut io: W, mut queue: mpsc::Receiver<Out>) {
    let mut encoder = Encoder::new();
    let mut bytes = Vec::with_capacity(WRITE_BATCH);
    while let Some(first) = queue.recv().await {
        let mut shutdown = false;
        let mut next = Some(first);
        while let Some(out) = next.take() {
            match out {
                Out::Frame(frame) => encoder.encode(&frame, &mut bytes),
                Out::Shutdown => {
                    shutdown = true;
                    break;
                }
            }
            if bytes.len() < WRITE_BATCH {
                next = queue.try_recv().ok();
            }
        }
        if io.write_all(&bytes).await.is_err() || io.flush().await.is_err() {
            return;
        }
        bytes.clear();
        if shutdown {
            break;
        }
    }
    let _ = io.shutdown().await;
}
