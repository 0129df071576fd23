//! Tests of setup's pure choices: which Debian packages, which toolchain, whether a rustc is new
//! enough. The apt-cache texts are what a Debian 12 machine without rustup downloads printed.

use super::*;

/// `apt-cache search --names-only '^lld-[0-9]+$'` on that machine: no lld-22.
const BOOKWORM_LLD_SEARCH: &str = "\
lld-13 - LLVM-based linker
lld-14 - LLVM-based linker
lld-15 - LLVM-based linker
lld-16 - LLVM-based linker
lld-19 - LLVM-based linker
";

/// `apt-cache policy rustc-web rustc` there: rustc-web 1.85, rustc 1.63.
const BOOKWORM_POLICY: &str = "\
rustc-web:
  Installed: (none)
  Candidate: 1.85.0+dfsg3-1~deb12u3
  Version table:
     1.85.0+dfsg3-1~deb12u3 500
        500 http://mirror.invalid/debian bookworm/main amd64 Packages
rustc:
  Installed: (none)
  Candidate: 1.63.0+dfsg1-2
  Version table:
     1.63.0+dfsg1-2 500
        500 http://mirror.invalid/debian bookworm/main amd64 Packages
";

#[test]
fn debian_packages_pick_the_lld_the_distribution_has() {
    let packages = debian_packages(BOOKWORM_POLICY, BOOKWORM_LLD_SEARCH).unwrap();
    assert_eq!(packages, ["rustc-web", "cargo-web", "rust-web-src", "lld-19"]);
    assert!(!packages.iter().any(|p| p == "lld-22"));
}

#[test]
fn choose_lld_takes_the_highest_number_not_the_last_line() {
    assert_eq!(choose_lld(BOOKWORM_LLD_SEARCH).as_deref(), Some("lld-19"));
    assert_eq!(choose_lld("lld-9 - x\nlld-22 - x\nlld-19 - x\n").as_deref(), Some("lld-22"));
    // Numbers compare as numbers: lld-9 < lld-13.
    assert_eq!(choose_lld("lld-9 - x\nlld-13 - x\n").as_deref(), Some("lld-13"));
    // Other packages a looser search might list are not linkers to install.
    assert_eq!(choose_lld("lld - x\nlld-19-dev - x\nliblld-19 - x\n"), None);
    assert_eq!(choose_lld(""), None);
}

#[test]
fn debian_packages_take_the_newest_rust_set() {
    // A distribution whose own rustc is newer than its -web one, or that has no -web set.
    let policy = "rustc-web:\n  Installed: (none)\n  Candidate: 1.78.0+dfsg1-2\nrustc:\n  Installed: (none)\n  Candidate: 1.85.0+dfsg3-1\n";
    assert_eq!(debian_packages(policy, "lld-19 - x\n").unwrap(), ["rustc", "cargo", "rust-src", "lld-19"]);
    let policy = "rustc-web:\n  Installed: (none)\n  Candidate: (none)\nrustc:\n  Installed: (none)\n  Candidate: 1:1.85.0+dfsg-1\n";
    assert_eq!(debian_packages(policy, "lld-19 - x\n").unwrap()[0], "rustc");
}

#[test]
fn debian_packages_say_what_is_missing() {
    let none = "rustc-web:\n  Installed: (none)\n  Candidate: (none)\nrustc:\n  Installed: (none)\n  Candidate: (none)\n";
    let e = debian_packages(none, BOOKWORM_LLD_SEARCH).unwrap_err();
    assert!(e.contains("rustc-web") && e.contains("rustc"), "{e}");
    let e = debian_packages(BOOKWORM_POLICY, "").unwrap_err();
    assert!(e.contains("lld-N"), "{e}");
    assert!(debian_packages("", "").is_err());
}

#[test]
fn installed_lld_prefers_the_highest_versioned_one() {
    let names = ["ls", "ld.lld-16", "ld.lld", "ld.lld-19", "ld.lld-19.1", "lld-19"];
    assert_eq!(choose_installed_lld(names.into_iter()).as_deref(), Some("ld.lld-19"));
    assert_eq!(choose_installed_lld(["ld.lld", "ld"].into_iter()).as_deref(), Some("ld.lld"));
    assert_eq!(choose_installed_lld(["ld", "lld"].into_iter()), None);
}

#[test]
fn versions_parse_from_rustc_cargo_toml_and_debian() {
    let v = |major, minor, patch| RustVersion { major, minor, patch };
    assert_eq!(
        parse_rustc_version("rustc 1.85.0 (4d91de4e4 2025-02-17) (built from a source tarball)\n"),
        Some(v(1, 85, 0))
    );
    assert_eq!(parse_rustc_version("rustc 1.96.0-nightly (abc 2026-01-01)"), Some(v(1, 96, 0)));
    assert_eq!(parse_rustc_version("cargo 1.85.0"), None);
    assert_eq!(RustVersion::parse("1.91"), Some(v(1, 91, 0)));
    assert_eq!(RustVersion::parse("1.85.1"), Some(v(1, 85, 1)));
    assert_eq!(RustVersion::parse("1.x"), None);
    assert_eq!(RustVersion::parse_debian("1.85.0+dfsg3-1~deb12u3"), Some(v(1, 85, 0)));
    assert_eq!(RustVersion::parse_debian("1:1.85.0+dfsg-1"), Some(v(1, 85, 0)));
    assert!(v(1, 85, 0) < v(1, 91, 0) && v(1, 9, 0) < v(1, 85, 0));
}

/// `cargo metadata` output reduced to what [`requirement`] reads: a board depending on smoltcp
/// (rust-version 1.91), an edition-2024 crate, and a dev-dependency that must not count.
const METADATA: &str = r#"{
  "packages": [
    {"name": "board", "version": "0.1.0", "id": "path+file:///b#0.1.0", "edition": "2021", "rust_version": null},
    {"name": "smoltcp", "version": "0.13.0", "id": "registry+x#smoltcp@0.13.0", "edition": "2021", "rust_version": "1.91"},
    {"name": "cortex-m", "version": "0.7.7", "id": "registry+x#cortex-m@0.7.7", "edition": "2024", "rust_version": null},
    {"name": "proptest", "version": "1.9.0", "id": "registry+x#proptest@1.9.0", "edition": "2021", "rust_version": "1.99"}
  ],
  "resolve": {"nodes": [
    {"id": "path+file:///b#0.1.0", "deps": [
      {"name": "smoltcp", "pkg": "registry+x#smoltcp@0.13.0", "dep_kinds": [{"kind": null, "target": null}]},
      {"name": "proptest", "pkg": "registry+x#proptest@1.9.0", "dep_kinds": [{"kind": "dev", "target": null}]}
    ]},
    {"id": "registry+x#smoltcp@0.13.0", "deps": [
      {"name": "cortex_m", "pkg": "registry+x#cortex-m@0.7.7", "dep_kinds": [{"kind": "build", "target": null}]}
    ]},
    {"id": "registry+x#cortex-m@0.7.7", "deps": []},
    {"id": "registry+x#proptest@1.9.0", "deps": []}
  ]}
}"#;

#[test]
fn requirement_is_the_highest_over_the_build_closure() {
    let metadata = json::parse(METADATA).unwrap();
    let need = requirement(&metadata, "board").unwrap().unwrap();
    assert_eq!(need.version, RustVersion { major: 1, minor: 91, patch: 0 });
    assert_eq!(need.package, "smoltcp@0.13.0");
    assert_eq!(need.reason, "rust-version = \"1.91\"");
    // From cortex-m alone, the edition sets the bar.
    let need = requirement(&metadata, "cortex-m").unwrap().unwrap();
    assert_eq!((need.version.minor, need.reason.as_str()), (85, "edition = \"2024\""));
    assert!(requirement(&metadata, "nope").is_err());
}

#[test]
fn check_rustc_names_both_versions_when_too_old() {
    let metadata = json::parse(METADATA).unwrap();
    let need = requirement(&metadata, "board").unwrap();
    let debian = "rustc 1.85.0 (4d91de4e4 2025-02-17) (built from a source tarball)";
    let e = check_rustc(debian, "board", need.as_ref()).unwrap_err();
    for part in ["1.85.0", "1.91.0", "smoltcp@0.13.0", "board", "rust-version = \"1.91\""] {
        assert!(e.contains(part), "`{part}` missing from: {e}");
    }
    assert_eq!(check_rustc("rustc 1.96.0 (x 2026-04-01)", "board", need.as_ref()), Ok(()));
    assert_eq!(check_rustc(debian, "board", None), Ok(()));
    assert!(check_rustc("garbage", "board", None).is_err());
}

#[test]
fn doorway_cross_toolchain_forces_the_debian_path() {
    use Toolchain::{Debian, Rustup};
    assert_eq!(forced_toolchain(Some("debian")), Ok(Some(Debian)));
    assert_eq!(forced_toolchain(Some("rustup")), Ok(Some(Rustup)));
    assert_eq!(forced_toolchain(None), Ok(None));
    assert!(forced_toolchain(Some("Debian")).unwrap_err().contains("DOORWAY_CROSS_TOOLCHAIN"));
    // Forced: the Debian toolchain even where rustup's targets are ready; provisioned (None),
    // not swapped for rustup, when it is not ready.
    assert_eq!(choose_toolchain(Some(Debian), true, true), Some(Debian));
    assert_eq!(choose_toolchain(Some(Debian), true, false), None);
    assert_eq!(choose_toolchain(Some(Rustup), false, true), None);
    // Not forced: rustup first, then Debian.
    assert_eq!(choose_toolchain(None, true, true), Some(Rustup));
    assert_eq!(choose_toolchain(None, false, true), Some(Debian));
    assert_eq!(choose_toolchain(None, false, false), None);
}

#[test]
fn debian_cargo_builds_core_from_source_with_the_distribution_lld() {
    let cmd = cross_cargo_with(Toolchain::Debian, "build", "thumbv7em-none-eabihf");
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    assert_eq!(
        args,
        ["run", "debian", "cargo", "build", "--target", "thumbv7em-none-eabihf", "-Zbuild-std=core"]
    );
    let env = |key: &str| {
        cmd.get_envs().find(|(k, _)| *k == key).map(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
    };
    assert_eq!(env("RUSTC_BOOTSTRAP"), Some(Some("1".to_string())));
    assert_eq!(env("RUSTUP_TOOLCHAIN"), Some(None), "the outer toolchain must not leak in");
    assert_eq!(linker_var("thumbv7em-none-eabihf"), "CARGO_TARGET_THUMBV7EM_NONE_EABIHF_LINKER");
}

#[test]
fn flash_provisions_only_the_target_and_probe_rs() {
    assert_eq!(FLASH, [Piece::Cross, Piece::Tool(PROBE_RS)]);
    assert!(!FLASH.contains(&Piece::Qemu));
    assert!(!EVERYTHING.contains(&Piece::Tool(PROBE_RS)));
}
