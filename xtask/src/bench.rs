//! `cargo xtask bench`: placeholder.
use crate::util::Result;
pub fn run(_quick: bool, _args: &[String]) -> Result {
    Err("bench: not built yet".into())
}
