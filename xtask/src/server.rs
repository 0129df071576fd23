//! `cargo xtask linux-server`: placeholder.
use crate::util::Result;
pub fn run(_args: &[String]) -> Result {
    Err("linux-server: not built yet".into())
}
