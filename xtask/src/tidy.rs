//! Tidy checks over the source tree, as `#[test]`s (rust-analyzer's xtask/src/tidy.rs).
//!
//! `cargo test -p xtask tidy` (the `tidy` ci job) enforces the house rules that neither rustc nor
//! clippy can:
//!
//! - every `.rs` file starts with a `//!` module doc;
//! - every `unsafe {` block and `unsafe impl` has a `// SAFETY:` comment on its line or in the
//!   lines just above it;
//! - `doorway-core` calls `log::`/`defmt::` macros only from `core/src/fmt.rs` (everything else
//!   goes through its `net_*!` macros); `defmt::write!` inside a `defmt::Format` impl is allowed;
//! - `doorway-core` names no `Box`, `Vec`, `String`, `format!` or `vec!` outside test code and
//!   items gated on `cfg(feature = "std")` (no hidden allocation on no_std paths).
//!
//! The scan is textual and deliberately simple: comments and string literals are stripped before
//! looking for names, and `#[cfg(test)]` / `#[cfg(feature = "std")]` items are skipped by brace
//! matching.

#[cfg(test)]
mod tests {
    use crate::util::project_root;
    use std::fs;
    use std::path::{Path, PathBuf};

    /// How many lines above an `unsafe` a `SAFETY:` comment may start.
    const SAFETY_LOOKBACK: usize = 8;

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                if name.starts_with('.') || name == "target" || name == "node_modules" {
                    continue;
                }
                rust_files(&path, out);
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }

    fn all_files() -> Vec<PathBuf> {
        let mut files = Vec::new();
        rust_files(&project_root(), &mut files);
        files.sort();
        assert!(files.len() > 10, "tidy found too few .rs files under {}", project_root().display());
        files
    }

    fn relative(path: &Path) -> String {
        path.strip_prefix(project_root()).unwrap_or(path).display().to_string()
    }

    #[test]
    fn tidy_every_file_has_module_doc() {
        let mut missing = Vec::new();
        for path in all_files() {
            let text = fs::read_to_string(&path).unwrap_or_default();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            // A `#!` interpreter line (build scripts run as scripts) may come first.
            let first = if first.starts_with("#!") && !first.starts_with("#![") {
                text.lines().skip_while(|l| l.starts_with("#!")).find(|l| !l.trim().is_empty()).unwrap_or("")
            } else {
                first
            };
            if !first.trim_start().starts_with("//!") {
                missing.push(relative(&path));
            }
        }
        assert!(missing.is_empty(), "files without a leading `//!` module doc:\n  {}", missing.join("\n  "));
    }

    /// Lines with an `unsafe` block or impl and no `SAFETY:` comment near above.
    fn undocumented_unsafe(text: &str) -> Vec<usize> {
        let lines: Vec<&str> = text.lines().collect();
        let mut bad = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let code = strip_strings(strip_comment(line));
            if !(code.contains("unsafe {") || code.contains("unsafe impl")) {
                continue;
            }
            let start = i.saturating_sub(SAFETY_LOOKBACK);
            let documented = lines[start..=i].iter().any(|l| l.contains("SAFETY:"));
            if !documented {
                bad.push(i + 1);
            }
        }
        bad
    }

    #[test]
    fn tidy_unsafe_has_safety_comment() {
        let mut bad = Vec::new();
        for path in all_files() {
            let text = fs::read_to_string(&path).unwrap_or_default();
            // This file spells the patterns it looks for.
            if path.ends_with("xtask/src/tidy.rs") {
                continue;
            }
            for line in undocumented_unsafe(&text) {
                bad.push(format!("{}:{line}", relative(&path)));
            }
        }
        assert!(bad.is_empty(), "`unsafe` without a `// SAFETY:` comment above:\n  {}", bad.join("\n  "));
    }

    fn core_files() -> Vec<PathBuf> {
        let mut files = Vec::new();
        rust_files(&project_root().join("core/src"), &mut files);
        files.sort();
        files
    }

    /// The code part of a line: before any `//` comment (ignoring `//` inside string literals).
    fn strip_comment(line: &str) -> &str {
        let mut in_str = false;
        let bytes = line.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if in_str => i += 1,
                b'"' => in_str = !in_str,
                b'/' if !in_str && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
                _ => {}
            }
            i += 1;
        }
        line
    }

    /// The line with string literal contents blanked out.
    fn strip_strings(code: &str) -> String {
        let mut out = String::with_capacity(code.len());
        let mut in_str = false;
        let mut escaped = false;
        for c in code.chars() {
            if in_str {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    in_str = false;
                    out.push('"');
                }
                continue;
            }
            if c == '"' {
                in_str = true;
            }
            out.push(c);
        }
        out
    }

    /// Lines of `text` that are neither comments nor inside `#[cfg(test)]` or
    /// `#[cfg(feature = "std")]` items, as (line number, code).
    fn production_lines(text: &str) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        let mut skipping = false;
        let mut depth: i64 = 0;
        let mut opened = false;
        for (i, line) in text.lines().enumerate() {
            let raw = strip_comment(line).trim();
            let code = strip_strings(strip_comment(line));
            let trimmed = code.trim();
            if !skipping {
                let gated = raw.starts_with("#[cfg(")
                    && (raw.contains("test") || raw.contains("feature = \"std\""))
                    && !raw.contains("not(test")
                    && !raw.contains("not(feature = \"std\"");
                if gated {
                    skipping = true;
                    depth = 0;
                    opened = false;
                    continue;
                }
                out.push((i + 1, code));
                continue;
            }
            // Skipping the gated item: until its braces balance, or a `;` ends a brace-less item.
            for c in code.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if (opened && depth <= 0) || (!opened && trimmed.ends_with(';') && !trimmed.starts_with("#[")) {
                skipping = false;
            }
        }
        out
    }

    fn words(code: &str) -> Vec<(String, Option<char>)> {
        let mut out = Vec::new();
        let mut word = String::new();
        for c in code.chars() {
            if c.is_alphanumeric() || c == '_' {
                word.push(c);
            } else if !word.is_empty() {
                out.push((std::mem::take(&mut word), Some(c)));
            }
        }
        if !word.is_empty() {
            out.push((word, None));
        }
        out
    }

    #[test]
    fn tidy_core_logs_only_through_fmt() {
        let mut bad = Vec::new();
        for path in core_files() {
            if path.ends_with("core/src/fmt.rs") {
                continue;
            }
            let text = fs::read_to_string(&path).unwrap_or_default();
            for (n, code) in production_lines(&text) {
                for facade in ["log::", "defmt::"] {
                    let mut rest = code.as_str();
                    while let Some(at) = rest.find(facade) {
                        let before = rest[..at].chars().last();
                        let after = &rest[at + facade.len()..];
                        let name: String =
                            after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                        // `defmt::write!` is how a manual `defmt::Format` impl formats, not a log call.
                        let is_macro =
                            after[name.len()..].starts_with('!') && !(facade == "defmt::" && name == "write");
                        let is_path_start =
                            !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
                        if is_macro && is_path_start {
                            bad.push(format!("{}:{n}: {}", relative(&path), code.trim()));
                        }
                        rest = &rest[at + facade.len()..];
                    }
                }
            }
        }
        assert!(
            bad.is_empty(),
            "core calls log/defmt directly (use net_trace!/net_debug!):\n  {}",
            bad.join("\n  ")
        );
    }

    #[test]
    fn tidy_core_does_not_allocate() {
        let mut bad = Vec::new();
        for path in core_files() {
            let text = fs::read_to_string(&path).unwrap_or_default();
            // A file that is test code as a whole (`mod tests;` behind `#[cfg(test)]`).
            if path.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            for (n, code) in production_lines(&text) {
                for (word, next) in words(&code) {
                    let hit = match word.as_str() {
                        "Box" | "Vec" | "String" => true,
                        "format" | "vec" => next == Some('!'),
                        _ => false,
                    };
                    if hit {
                        bad.push(format!("{}:{n}: {}", relative(&path), code.trim()));
                    }
                }
            }
        }
        assert!(
            bad.is_empty(),
            "allocation in doorway-core outside tests / cfg(feature = \"std\"):\n  {}",
            bad.join("\n  ")
        );
    }

    #[test]
    fn tidy_checks_catch_what_they_should() {
        // The checks themselves: each must flag its bad pattern and pass the good one.
        assert_eq!(undocumented_unsafe("fn f() {\n    let x = unsafe { g() };\n}\n"), [2]);
        assert!(
            undocumented_unsafe("// SAFETY: g has no preconditions.\nlet x = unsafe { g() };\n").is_empty()
        );
        let gated = "fn a() {}\n#[cfg(feature = \"std\")]\nimpl X {\n    fn b() -> Box<u8> { Box::new(1) }\n}\nfn c() {}\n";
        let lines: Vec<usize> = production_lines(gated).into_iter().map(|(n, _)| n).collect();
        assert_eq!(lines, [1, 6]);
        let test_mod = "fn a() {}\n#[cfg(test)]\nmod tests {\n    fn t() { let v = vec![1]; }\n}\n";
        assert_eq!(production_lines(test_mod).len(), 1);
        assert_eq!(production_lines("#[cfg(test)]\nmod tests;\nfn b() {}\n").len(), 1);
        assert_eq!(production_lines("#[cfg(all(test, not(loom)))]\nmod tests {\n}\nfn b() {}\n").len(), 1);
        assert_eq!(production_lines("#[cfg(not(test))]\nfn a() {}\n").len(), 2);
        let ws = words("let s: String = format!(\"x\");");
        assert!(ws.iter().any(|(w, _)| w == "String"));
        assert!(ws.iter().any(|(w, n)| w == "format" && *n == Some('!')));
        assert_eq!(strip_comment("let a = 1; // Box"), "let a = 1; ");
        assert_eq!(strip_strings("f(\"Vec<u8>\")"), "f(\"\")");
    }
}
