//! In-process stand-ins for the services destinations talk to, speaking their APIs' shapes,
//! for tests, benchmarks and the demo.

pub mod customerio;
pub mod hubspot;
pub mod salesforce;
pub mod webhook;

/// Injected failures spread evenly: with a rate of 0.25, every fourth call fails.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Failures {
    rate: f64,
    debt: f64,
}

impl Failures {
    /// Failures at `rate` (0.0 to 1.0) of the calls.
    pub fn new(rate: f64) -> Self {
        Failures {
            rate: rate.clamp(0.0, 1.0),
            debt: 0.0,
        }
    }

    /// Whether this call fails.
    pub fn strike(&mut self) -> bool {
        self.debt += self.rate;
        if self.debt >= 1.0 - 1e-9 {
            self.debt -= 1.0;
            true
        } else {
            false
        }
    }
}
