//! In-process stand-ins for the services destinations talk to, speaking their APIs' shapes,
//! for tests, benchmarks and the demo.

pub mod customerio;
pub mod hubspot;
pub mod salesforce;
pub mod webhook;
