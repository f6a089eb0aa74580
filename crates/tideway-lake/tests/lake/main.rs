//! The lake's integration tests: one binary (see STYLE.md), one module per concern.
//!
//! Behaviour tests are data files: `tests/slt/*.slt` (SQL) and `tests/golden/evolve/*.case`
//! (schema evolution). `TIDEWAY_BLESS=1 cargo nextest run -p tideway-lake` rewrites their
//! expected output; review the diff.

mod evolve_golden;
mod slt;
mod txn;
mod writes;

pub fn bless() -> bool {
    std::env::var_os("TIDEWAY_BLESS").is_some()
}
