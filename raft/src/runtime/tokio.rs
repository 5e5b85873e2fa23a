//! The tokio adapter. The tokio runtime must have its time driver enabled (`enable_time` /
//! `enable_all`, or `#[tokio::main]`).

use crate::io::{NetRuntime, Runtime};
use crate::runtime::pause::PauseGate;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Runs raftkv's tasks on a tokio runtime.
#[derive(Clone, Debug)]
pub struct TokioRuntime {
    handle: tokio::runtime::Handle,
    origin: Instant,
    /// Tasks spawned through this handle are polled only while this gate is open.
    gate: Option<PauseGate>,
}

impl TokioRuntime {
    /// The runtime of the calling context. Panics outside a tokio runtime (tokio's rule).
    pub fn current() -> Self {
        Self::new(tokio::runtime::Handle::current())
    }

    pub fn new(handle: tokio::runtime::Handle) -> Self {
        Self {
            handle,
            origin: Instant::now(),
            gate: None,
        }
    }
}

impl Runtime for TokioRuntime {
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match &self.gate {
            Some(gate) => drop(self.handle.spawn(gate.wrap(future))),
            None => drop(self.handle.spawn(future)),
        }
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        tokio::time::sleep(duration)
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn with_pause_gate(&self, gate: PauseGate) -> Option<Self> {
        Some(Self {
            gate: Some(gate),
            ..self.clone()
        })
    }

    /// On tokio's blocking pool.
    fn spawn_blocking<F>(&self, f: F)
    where
        F: FnOnce() + Send + 'static,
    {
        drop(self.handle.spawn_blocking(f));
    }

    /// tokio's own yield: besides the tasks already queued, the worker may poll its I/O
    /// driver before this task resumes (the wake is deferred until the worker runs out of
    /// queued tasks).
    fn yield_now(&self) -> impl Future<Output = ()> + Send + 'static {
        tokio::task::yield_now()
    }
}

impl NetRuntime for TokioRuntime {
    type TcpStream = TokioTcpStream;

    fn register(&self, stream: std::net::TcpStream) -> io::Result<TokioTcpStream> {
        stream.set_nonblocking(true)?;
        let _context = self.handle.enter();
        tokio::net::TcpStream::from_std(stream).map(TokioTcpStream)
    }
}

/// A tokio socket seen through the `futures` I/O traits, which the runtime-generic code uses.
#[derive(Debug)]
pub struct TokioTcpStream(tokio::net::TcpStream);

impl futures::io::AsyncRead for TokioTcpStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut read = tokio::io::ReadBuf::new(buf);
        match tokio::io::AsyncRead::poll_read(Pin::new(&mut self.0), cx, &mut read) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(read.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl futures::io::AsyncWrite for TokioTcpStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write(Pin::new(&mut self.0), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_flush(Pin::new(&mut self.0), cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_shutdown(Pin::new(&mut self.0), cx)
    }
}
