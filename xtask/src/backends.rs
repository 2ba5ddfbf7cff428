//! The backends as `cargo xtask` sees them, read from each backend crate's
//! `[package.metadata.allframe]` (the facade's `allframe::backends::BACKENDS` describes the same
//! backends for code; `tests/tidy.rs` checks that the two agree). The dependency guards and the
//! size probes are derived from here, so a new backend crate brings its own.

use crate::util::root;

/// One backend crate's description.
#[derive(Debug, Clone)]
pub struct Backend {
    /// The crate (`allframe-backend-rocksdb`).
    pub crate_name: String,
    /// Its address scheme and name in reports (`rocksdb`).
    pub scheme: String,
    /// The facade feature that compiles it in (`cqrs-rocksdb`).
    pub feature: String,
    /// Dependencies only this backend may bring into the facade (`rocksdb`, `librocksdb-sys`).
    pub heavy: Vec<String>,
    /// Dependencies of its optional features that no facade feature may bring in by default.
    pub optional_heavy: Vec<String>,
}

/// Every backend crate under `crates/`, the facade's base backend (feature `cqrs`) first,
/// then by scheme.
pub fn all() -> Result<Vec<Backend>, String> {
    let crates = root().join("crates");
    let entries = std::fs::read_dir(&crates).map_err(|e| format!("read {}: {e}", crates.display()))?;
    let mut backends = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let manifest = entry.path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
        if let Some(backend) = parse(&text).map_err(|e| format!("{}: {e}", manifest.display()))? {
            backends.push(backend);
        }
    }
    backends.sort_by(|a, b| (a.feature != "cqrs", &a.scheme).cmp(&(b.feature != "cqrs", &b.scheme)));
    if backends.is_empty() {
        return Err("no crate under crates/ has a [package.metadata.allframe] section".into());
    }
    Ok(backends)
}

/// The heavy dependencies a facade feature must not pull in: every other backend's, and every
/// backend's optional ones.
pub fn banned_for(backends: &[Backend], feature: &str) -> Vec<String> {
    let mut banned: Vec<String> = backends
        .iter()
        .flat_map(|b| b.optional_heavy.iter().chain(b.heavy.iter().filter(|_| b.feature != feature)))
        .cloned()
        .collect();
    banned.sort();
    banned.dedup();
    banned
}

/// The `[package.metadata.allframe]` section of a manifest, if it has one.
fn parse(manifest: &str) -> Result<Option<Backend>, String> {
    let mut lines = manifest.lines().skip_while(|line| line.trim() != "[package.metadata.allframe]");
    if lines.next().is_none() {
        return Ok(None);
    }
    let name = manifest.lines().find_map(|line| line.strip_prefix("name = ")).map(unquote).ok_or("no package name")?;
    let mut backend = Backend {
        crate_name: name,
        scheme: String::new(),
        feature: String::new(),
        heavy: Vec::new(),
        optional_heavy: Vec::new(),
    };
    for line in lines.take_while(|line| !line.starts_with('[')) {
        let Some((key, value)) = line.split_once('=') else { continue };
        match key.trim() {
            "scheme" => backend.scheme = unquote(value),
            "feature" => backend.feature = unquote(value),
            "heavy-dependencies" => backend.heavy = list(value),
            "optional-heavy-dependencies" => backend.optional_heavy = list(value),
            other => return Err(format!("unknown key `{other}` in [package.metadata.allframe]")),
        }
    }
    if backend.scheme.is_empty() || backend.feature.is_empty() {
        return Err("[package.metadata.allframe] needs `scheme` and `feature`".into());
    }
    Ok(Some(backend))
}

fn unquote(value: &str) -> String {
    value.trim().trim_matches('"').to_string()
}

fn list(value: &str) -> Vec<String> {
    value
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(unquote)
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_section_and_derives_guards() {
        let manifest = "[package]\nname = \"b\"\n\n[package.metadata.allframe]\nscheme = \"b\"\nfeature = \"cqrs-b\"\nheavy-dependencies = [\"x\", \"y\"]\n\n[dependencies]\n";
        let b = parse(manifest).unwrap().unwrap();
        assert_eq!((b.scheme.as_str(), b.feature.as_str(), b.heavy.len()), ("b", "cqrs-b", 2));
        let a = Backend {
            crate_name: "a".into(),
            scheme: "a".into(),
            feature: "cqrs".into(),
            heavy: vec![],
            optional_heavy: vec!["z".into()],
        };
        assert_eq!(banned_for(&[a.clone(), b.clone()], "cqrs"), ["x", "y", "z"]);
        assert_eq!(banned_for(&[a, b], "cqrs-b"), ["z"]);
        assert!(parse("[package]\nname = \"c\"\n").unwrap().is_none());
    }
}
