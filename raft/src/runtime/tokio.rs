//! The tokio adapter. The tokio runtime must have its time driver enabled (`enable_time` /
//! `enable_all`, or `#[tokio::main]`).

use crate::io::Runtime;
use std::future::Future;
use std::time::{Duration, Instant};

/// Runs raftkv's tasks on a tokio runtime.
#[derive(Clone, Debug)]
pub struct TokioRuntime {
    handle: tokio::runtime::Handle,
    origin: Instant,
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
        }
    }
}

impl Runtime for TokioRuntime {
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(self.handle.spawn(future));
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        tokio::time::sleep(duration)
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}
