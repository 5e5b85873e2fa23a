//! [`Runtime`](crate::Runtime) adapters: tokio (feature `tokio`), smol (feature `smol`), and the
//! deterministic simulation runtime ([`sim`]), which also provides a simulated network and a
//! simulated disk. tokio and smol are named only in their adapter modules.

pub mod pause;
pub mod sim;
#[cfg(feature = "smol")]
pub mod smol;
#[cfg(feature = "tokio")]
pub mod tokio;
