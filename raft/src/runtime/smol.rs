//! The smol adapter: tasks run on smol's global executor.

use crate::io::{NetRuntime, Runtime};
use crate::runtime::pause::PauseGate;
use std::future::Future;
use std::time::{Duration, Instant};

/// Runs raftkv's tasks on smol.
#[derive(Clone, Debug)]
pub struct SmolRuntime {
    origin: Instant,
    /// Tasks spawned through this handle are polled only while this gate is open.
    gate: Option<PauseGate>,
}

impl SmolRuntime {
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            gate: None,
        }
    }
}

impl Default for SmolRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime for SmolRuntime {
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match &self.gate {
            Some(gate) => smol::spawn(gate.wrap(future)).detach(),
            None => smol::spawn(future).detach(),
        }
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        let timer = smol::Timer::after(duration);
        async move {
            timer.await;
        }
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

    /// On smol's pool for blocking work: smol's global executor runs on one thread by
    /// default, so one blocking call there stalls every task.
    fn spawn_blocking<F>(&self, f: F)
    where
        F: FnOnce() + Send + 'static,
    {
        smol::unblock(f).detach();
    }
}

impl NetRuntime for SmolRuntime {
    type TcpStream = smol::Async<std::net::TcpStream>;

    fn register(&self, stream: std::net::TcpStream) -> std::io::Result<Self::TcpStream> {
        smol::Async::new(stream)
    }
}
