//! Unify's tests: the identity graph's properties and rules, and runs over a real lake.

mod graph;
mod lake;
mod rules;
