//! `cargo xtask setup`: placeholder.
use crate::util::Result;
pub fn run() -> Result {
    ensure()
}
pub fn ensure() -> Result {
    Ok(())
}
