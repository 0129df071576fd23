//! Adds the linker scripts: cortex-m-rt's `link.x` (embassy-stm32's `memory-x` feature supplies
//! `memory.x` for the chip) and defmt's `defmt.x` when the `defmt` feature is on.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-arg-bins=--nmagic");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    if std::env::var_os("CARGO_FEATURE_DEFMT").is_some() {
        println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
    }
}
