//! `cargo xtask qemu` and `flash`: placeholder.
use crate::util::Result;
pub fn run(_board: &str, _port: u16, _test: bool) -> Result {
    Err("qemu: not built yet".into())
}
pub fn flash(_board: &str) -> Result {
    Err("flash: not built yet".into())
}
