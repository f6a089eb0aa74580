//! Activation tests: the differ's golden cases, crash and failure properties of sync runs,
//! the destinations against fakes that speak their APIs, the sync files, and live connections
//! over the collector's event log.

mod commit;
mod conformance;
mod forward;
mod golden;
mod kafka;
mod modes;
mod postgres;
mod properties;
mod redis;
mod support;
mod webhook;
