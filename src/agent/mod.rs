//! The running agent: the shared state of `serve` (configuration, domains, trust store, spool,
//! sinks, caches) and its pipelines. [`inbound`] turns a spooled message into sink deliveries or
//! a quarantine record; [`outbound`] seals and queues messages and delivers queued entries.

mod context;
pub mod inbound;
pub mod notify;
pub mod pingpong;

pub use context::{Context, SealRefusal};
pub mod outbound;
pub mod serve;
