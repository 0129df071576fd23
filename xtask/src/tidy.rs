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
//!   items gated on `cfg(feature = "std")` (no hidden allocation on no_std paths);
//! - the repository stands on its own: no tracked file cites a path outside it (a `../` that climbs
//!   above the root, or the workplace's shared folder), every `.md` file a comment or document
//!   cites exists in the repository (or is a term the glossary of `docs/ARCHITECTURE.md`
//!   defines), and every relative link in `README.md` and `docs/*.md`, anchors included, resolves
//!   to a file in the repository.
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

    /// Files git tracks, relative to the root; a walk of the tree when git cannot say.
    fn tracked_files() -> Vec<String> {
        let root = project_root();
        let listed = std::process::Command::new("git").arg("ls-files").arg("-z").current_dir(&root).output();
        if let Ok(out) = listed {
            if out.status.success() && !out.stdout.is_empty() {
                let text = String::from_utf8_lossy(&out.stdout);
                return text.split('\0').filter(|p| !p.is_empty()).map(str::to_string).collect();
            }
        }
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            let Ok(entries) = fs::read_dir(dir) else { return };
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if path.is_dir() {
                    if !(name.starts_with('.') && name != ".ci" && name != ".cargo") && name != "target" {
                        walk(root, &path, out);
                    }
                } else if let Ok(rel) = path.strip_prefix(root) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        let mut out = Vec::new();
        walk(&root, &root, &mut out);
        out
    }

    /// `rel` joined to the directory `dir` (both relative to the root, `/`-separated), with `.`
    /// and `..` resolved lexically; `None` when it climbs above the root.
    fn resolve(dir: &str, rel: &str) -> Option<String> {
        let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
        for part in rel.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop()?;
                }
                _ => parts.push(part),
            }
        }
        Some(parts.join("/"))
    }

    /// The directory part of a root-relative path.
    fn dir_of(path: &str) -> &str {
        path.rsplit_once('/').map_or("", |(dir, _)| dir)
    }

    fn is_path_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '*' | '#')
    }

    /// The path-like words of `text` (runs of path characters).
    fn path_words(text: &str) -> Vec<(usize, &str)> {
        let mut out = Vec::new();
        let mut start = None;
        for (i, c) in text.char_indices().chain(std::iter::once((text.len(), ' '))) {
            match (start, is_path_char(c)) {
                (None, true) => start = Some(i),
                (Some(s), false) => {
                    out.push((s, &text[s..i]));
                    start = None;
                }
                _ => {}
            }
        }
        out
    }

    /// The workplace folder the design notes came from; spelled in two pieces so this file does
    /// not cite it.
    const SHARED: &str = concat!("..", "/shared/");

    /// Paths in `line` of the file `file` that lead outside the repository.
    fn outside_citations(file: &str, line: &str) -> Vec<String> {
        let mut bad = Vec::new();
        if line.contains(SHARED) {
            bad.push(SHARED.to_string());
        }
        for (_, word) in path_words(line) {
            let word = word.trim_end_matches(['.', '#']);
            if word.starts_with("../") && resolve(dir_of(file), word).is_none() {
                bad.push(word.to_string());
            }
        }
        bad
    }

    /// The text of `line` where citations are looked for: comments in Rust (code names output
    /// paths, not documents), the whole line elsewhere.
    fn citing_text<'a>(file: &str, line: &'a str) -> &'a str {
        if !file.ends_with(".rs") {
            return line;
        }
        let code = strip_comment(line);
        &line[code.len()..]
    }

    /// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
    fn slug(heading: &str) -> String {
        heading
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect()
    }

    /// The anchors of a markdown text's headings (outside code blocks).
    fn anchors(markdown: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut fenced = false;
        for line in markdown.lines() {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
            } else if !fenced && line.starts_with('#') {
                out.push(slug(line.trim_start_matches('#')));
            }
        }
        out
    }

    /// The terms the glossary of docs/ARCHITECTURE.md defines (its bold words).
    fn glossary_terms(architecture: &str) -> String {
        architecture.split_once("\n## Glossary").map_or(String::new(), |(_, glossary)| glossary.to_string())
    }

    /// Why a citation `target` (a path, maybe with `#anchor`) made in `file` does not resolve, if
    /// it does not. A bare name (no `/`) is the file of that name beside the citing file, else any
    /// tracked file's name; a path is taken relative to the citing file, then to the root. `read`
    /// gives a tracked file's text.
    fn unresolved(
        file: &str,
        target: &str,
        tracked: &[String],
        read: &dyn Fn(&str) -> Option<String>,
    ) -> Option<String> {
        let (path, anchor) = match target.split_once('#') {
            Some((path, anchor)) => (path, Some(anchor)),
            None => (target, None),
        };
        let found = if path.is_empty() {
            Some(file.to_string())
        } else if !path.contains('/') {
            resolve(dir_of(file), path)
                .filter(|beside| tracked.contains(beside))
                .or_else(|| tracked.iter().find(|t| t.rsplit('/').next() == Some(path)).cloned())
        } else {
            let candidates = [resolve(dir_of(file), path), resolve("", path)];
            let mut found = None;
            for candidate in candidates.into_iter().flatten() {
                let candidate = candidate.trim_end_matches('/').to_string();
                let is_dir = tracked.iter().any(|t| t.starts_with(&format!("{candidate}/")));
                if tracked.contains(&candidate) || is_dir {
                    found = Some(candidate);
                    break;
                }
            }
            found
        };
        let Some(found) = found else {
            return Some(format!("{target}: no such file in the repository"));
        };
        match anchor {
            Some(anchor) if found.ends_with(".md") => {
                let text = read(&found).unwrap_or_default();
                (!anchors(&text).iter().any(|a| a == anchor))
                    .then(|| format!("{target}: {found} has no heading #{anchor}"))
            }
            _ => None,
        }
    }

    /// The relative link targets of a markdown text: `[text](target)`, skipping URLs.
    fn markdown_links(markdown: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut fenced = false;
        for line in markdown.lines() {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                continue;
            }
            if fenced {
                continue;
            }
            let mut rest = line;
            while let Some(at) = rest.find("](") {
                let after = &rest[at + 2..];
                let Some(end) = after.find(')') else { break };
                let target = after[..end].split_whitespace().next().unwrap_or("");
                if !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
                    out.push(target.to_string());
                }
                rest = &after[end..];
            }
        }
        out
    }

    fn read_tracked(path: &str) -> Option<String> {
        fs::read_to_string(project_root().join(path)).ok()
    }

    #[test]
    fn tidy_nothing_cites_outside_the_repository() {
        let mut bad = Vec::new();
        for file in tracked_files() {
            // This file spells the patterns it looks for.
            if file == "xtask/src/tidy.rs" {
                continue;
            }
            let Some(text) = read_tracked(&file) else { continue };
            for (n, line) in text.lines().enumerate() {
                for path in outside_citations(&file, line) {
                    bad.push(format!("{file}:{}: {path}", n + 1));
                }
            }
        }
        assert!(
            bad.is_empty(),
            "paths outside the repository (bring the file in, under docs/):\n  {}",
            bad.join("\n  ")
        );
    }

    #[test]
    fn tidy_cited_documents_exist() {
        let tracked = tracked_files();
        let glossary = glossary_terms(&read_tracked("docs/ARCHITECTURE.md").unwrap_or_default());
        let mut bad = Vec::new();
        for file in &tracked {
            if file == "xtask/src/tidy.rs" {
                continue;
            }
            let Some(text) = read_tracked(file) else { continue };
            for (n, line) in text.lines().enumerate() {
                let citing = citing_text(file, line);
                for (at, word) in path_words(citing) {
                    let word = word.trim_end_matches('.');
                    let (path, _) = word.split_once('#').unwrap_or((word, ""));
                    let after_colon = citing[..at].ends_with(':');
                    if !path.ends_with(".md")
                        || path.contains('*')
                        || path.starts_with("target/")
                        || after_colon
                    {
                        continue;
                    }
                    if !path.contains('/') && glossary.contains(&format!("{path} ")) {
                        continue;
                    }
                    if let Some(why) = unresolved(file, word, &tracked, &read_tracked) {
                        bad.push(format!("{file}:{}: {why}", n + 1));
                    }
                }
            }
        }
        assert!(bad.is_empty(), "cited documents that are not in the repository:\n  {}", bad.join("\n  "));
    }

    #[test]
    fn tidy_markdown_links_resolve() {
        let tracked = tracked_files();
        let docs =
            tracked.iter().filter(|f| *f == "README.md" || (f.starts_with("docs/") && f.ends_with(".md")));
        let mut bad = Vec::new();
        let mut n_docs = 0;
        for file in docs {
            n_docs += 1;
            let text = read_tracked(file).unwrap_or_default();
            for target in markdown_links(&text) {
                if let Some(why) = unresolved_link(file, &target, &tracked) {
                    bad.push(format!("{file}: {why}"));
                }
            }
        }
        assert!(n_docs >= 3, "README.md, docs/PROTOCOL.md and docs/ARCHITECTURE.md should be tracked");
        assert!(bad.is_empty(), "markdown links that do not resolve:\n  {}", bad.join("\n  "));
    }

    /// A markdown link resolves relative to its file only (never by bare name or from the root).
    fn unresolved_link(file: &str, target: &str, tracked: &[String]) -> Option<String> {
        let path = target.split_once('#').map_or(target, |(path, _)| path);
        if !path.is_empty() && resolve(dir_of(file), path).is_none() {
            return Some(format!("{target}: leaves the repository"));
        }
        let relative = match resolve(dir_of(file), path) {
            Some(p) if !path.is_empty() => format!("./{p}{}", target.strip_prefix(path).unwrap_or("")),
            _ => target.to_string(),
        };
        // `./p` has a `/`, so `unresolved` takes it as a path, relative to the root: `p` is
        // already resolved against the linking file.
        unresolved("", &relative, tracked, &read_tracked)
    }

    #[test]
    fn tidy_link_checks_catch_what_they_should() {
        let tracked: Vec<String> = [
            "README.md",
            "docs/PROTOCOL.md",
            "docs/ARCHITECTURE.md",
            "bench/RESULTS.md",
            "lars/RESULTS.md",
            "core/src/lib.rs",
        ]
        .map(str::to_string)
        .to_vec();
        let read = |path: &str| match path {
            "docs/ARCHITECTURE.md" => Some("# A\n## The four roles\n```\n# not a heading\n```\n".to_string()),
            "lars/RESULTS.md" => Some("# Lars\n## One loop\n".to_string()),
            _ => Some(String::new()),
        };
        // Outside the repository.
        assert_eq!(outside_citations("README.md", &format!("see [p]({SHARED}PROTOCOL.md)")).len(), 2);
        assert_eq!(outside_citations("core/src/lib.rs", "path = \"../../../etc\""), ["../../../etc"]);
        assert!(outside_citations("boards/b/Cargo.toml", "path = \"../../core\"").is_empty());
        // Cited documents.
        assert_eq!(unresolved("core/src/lib.rs", "PROTOCOL.md", &tracked, &read), None);
        assert_eq!(
            unresolved("core/src/lib.rs", "docs/ARCHITECTURE.md#the-four-roles", &tracked, &read),
            None
        );
        assert!(
            unresolved("core/src/lib.rs", "docs/ARCHITECTURE.md#not-a-heading", &tracked, &read).is_some()
        );
        assert!(unresolved("core/src/lib.rs", "DESIGN.md", &tracked, &read).is_some());
        assert!(unresolved("core/src/lib.rs", "docs/DESIGN.md", &tracked, &read).is_some());
        assert_eq!(unresolved("docs/PROTOCOL.md", "ARCHITECTURE.md", &tracked, &read), None);
        // A bare name is first the file beside the citing one (lars/RESULTS.md, not bench's).
        assert_eq!(unresolved("lars/README.md", "RESULTS.md#one-loop", &tracked, &read), None);
        assert_eq!(citing_text("a.rs", "let p = \"x.md\"; // see y.md"), "// see y.md");
        // Markdown links.
        let links = markdown_links(
            "[a](docs/PROTOCOL.md) [b](https://x.invalid/c.md) [c](#frame)\n```\n[d](no.md)\n```\n",
        );
        assert_eq!(links, ["docs/PROTOCOL.md", "#frame"]);
        assert!(unresolved_link("README.md", "docs/PROTOCOL.md", &tracked).is_none());
        assert!(unresolved_link("docs/PROTOCOL.md", "ARCHITECTURE.md", &tracked).is_none());
        assert!(unresolved_link("docs/PROTOCOL.md", "../bench/RESULTS.md", &tracked).is_none());
        assert!(
            unresolved_link("docs/PROTOCOL.md", "PROTOCOL.md#x", &tracked).is_none_or(|e| e.contains("#x"))
        );
        assert!(
            unresolved_link("README.md", "ARCHITECTURE.md", &tracked).is_some(),
            "bare names are relative"
        );
        assert!(unresolved_link("README.md", "../shared/PROTOCOL.md", &tracked).is_some());
        assert_eq!(slug(" Models: fused and `pipeline`"), "models-fused-and-pipeline");
        assert_eq!(anchors(&read("docs/ARCHITECTURE.md").unwrap()), ["a", "the-four-roles"]);
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
