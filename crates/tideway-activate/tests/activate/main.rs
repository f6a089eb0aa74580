//! Activation tests: the differ's golden cases, crash and failure properties of sync runs,
//! the destinations against fakes that speak their APIs, and the sync files.

mod conformance;
mod golden;
mod properties;
mod support;
mod webhook;
