//! Puts `memory.x` and an empty `device.x` (our interrupt table is in `src/main.rs`) where the
//! linker finds them, and adds the linker scripts: cortex-m-rt's `link.x`, and defmt's `defmt.x`
//! when the `defmt` feature is on. The knobs read at compile time (`DOORWAY_IDLE_TIMEOUT_MS`,
//! `DOORWAY_CONNECTIONS`, `DOORWAY_DRAIN_TIMEOUT_MS`) are tracked, so a change rebuilds.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("memory.x"), include_bytes!("memory.x")).expect("write memory.x");
    fs::write(out.join("device.x"), b"/* interrupt vectors: __INTERRUPTS in src/main.rs */\n")
        .expect("write device.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DOORWAY_IDLE_TIMEOUT_MS");
    println!("cargo:rerun-if-env-changed=DOORWAY_CONNECTIONS");
    println!("cargo:rerun-if-env-changed=DOORWAY_DRAIN_TIMEOUT_MS");
    println!("cargo:rustc-link-arg-bins=--nmagic");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    if env::var_os("CARGO_FEATURE_DEFMT").is_some() {
        println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
    }
}
