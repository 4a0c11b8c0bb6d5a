//! The layout stays true: every `crate::` path in `src/` points to its own layer or one
//! below it, and no state is compared as a string outside its spelling table.
//! `ARCHITECTURE.md` draws the same layers; change both together.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module is placed by its longest prefix here; it may use its
/// own prefix's modules and any lower layer's, never a higher one's nor another module of
/// its own layer. (Two entries at one layer are peers that do not know each other.)
const LAYERS: &[&[&str]] = &[
    // Primitives with no knowledge of callgate's rules.
    &["crypto", "metrics"],
    // The rules and the vocabulary.
    &["domain"],
    &["config"],
    // The outside world: storage, the voice protocols, Stripe's API, logging.
    &["store", "telephony", "stripe", "telemetry"],
    // Writes behind the answer, in groups, that the App holds (below the App, so the App
    // can hold them).
    &["write_behind"],
    // The services, built once.
    &["app"],
    // Features that others build on.
    &["orders", "settlement", "memory"],
    // Messages to customers, about their orders.
    &["notify"],
    // Features.
    &["billing", "import", "recordings", "liveness"],
    &["menu", "bridge"],
    // Routes only.
    &["http"],
    // Wraps the routes with its stand-ins.
    &["demo"],
    // The operator's entry point, and the crate root (lib.rs re-exports).
    &["cli"],
    &[""],
];

/// Names the crate root re-exports, and the module each comes from.
const ROOT_REEXPORTS: &[(&str, &str)] = &[("App", "app"), ("StartError", "app")];

/// The spellings of the call's states, end reasons and Twilio statuses, the transcript's
/// speakers and the overage blocks: compared only through their enums, never as text.
const STATE_FILES: &[&str] = &["domain/call.rs", "domain/charge.rs", "domain/order.rs"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/menu/flow.rs` -> `menu::flow`; `src/menu/mod.rs` -> `menu`; `src/lib.rs` -> ``.
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The layer and the entry that place `module`.
fn place(module: &str) -> Option<(usize, &'static str)> {
    let mut best: Option<(usize, &'static str)> = None;
    for (layer, entries) in LAYERS.iter().enumerate() {
        for &entry in *entries {
            let matches =
                entry.is_empty() || module == entry || module.starts_with(&format!("{entry}::"));
            if matches && best.is_none_or(|(_, b)| entry.len() > b.len()) {
                best = Some((layer, entry));
            }
        }
    }
    best
}

/// Strips comments, string literals and the unit tests at the end of a file (a `super::`
/// there means the file's own module), so only the module's code is searched.
fn code_only(text: &str) -> String {
    let text = text
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                    }
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// Every module path a file names through `crate::` (`use crate::{a::b, c}` included), and
/// through `super::`, resolved against the file's own module.
fn references(module: &str, code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let bytes = code.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let read_path = |mut i: usize| -> (String, usize) {
        let start = i;
        while i < bytes.len() && (ident(bytes[i]) || bytes[i] == b':') {
            i += 1;
        }
        (code[start..i].trim_end_matches(':').to_string(), i)
    };
    for (at, _) in code.match_indices("crate::") {
        if at > 0 && (ident(bytes[at - 1]) || bytes[at - 1] == b'$') {
            continue;
        }
        let after = at + "crate::".len();
        if bytes.get(after) == Some(&b'{') {
            // A group: each item at depth one is a path from the root.
            let mut depth = 0;
            let mut item = String::new();
            for &b in &bytes[after..] {
                match b {
                    b'{' => {
                        depth += 1;
                        if depth > 1 {
                            item.push('{');
                        }
                    }
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            found.insert(first_segments(&item));
                            break;
                        }
                        item.push('}');
                    }
                    b',' if depth == 1 => {
                        found.insert(first_segments(&item));
                        item.clear();
                    }
                    _ => item.push(b as char),
                }
            }
        } else {
            let (path, _) = read_path(after);
            found.insert(path);
        }
    }
    for (at, _) in code.match_indices("super::") {
        if at > 0 && (ident(bytes[at - 1]) || bytes[at - 1] == b':') {
            continue;
        }
        let mut base: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
        let mut rest = &code[at..];
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        let (path, _) = read_path(code.len() - rest.len());
        let mut full: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        full.extend(path.split("::").map(String::from));
        found.insert(full.join("::"));
    }
    found.retain(|p| !p.is_empty() && p != "self");
    found
}

/// `a::b::{c, d}` -> `a::b`; `a::b` -> `a::b`.
fn first_segments(item: &str) -> String {
    let item: String = item.chars().filter(|c| !c.is_whitespace()).collect();
    item.split('{')
        .next()
        .unwrap_or_default()
        .trim_end_matches(':')
        .to_string()
}

/// The module a path names: its lower-case leading segments (`menu::flow::code` names
/// `menu::flow`, and a re-exported root name its module).
fn target_module(path: &str) -> String {
    let segments: Vec<&str> = path.split("::").collect();
    if let Some((_, module)) = ROOT_REEXPORTS
        .iter()
        .find(|(name, _)| segments.first() == Some(name))
    {
        return module.to_string();
    }
    segments
        .iter()
        .take_while(|s| s.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
        .copied()
        .collect::<Vec<_>>()
        .join("::")
}

/// Every reference in `files` that points up, or sideways to a peer.
fn violations(files: &[(String, String)]) -> Vec<String> {
    let mut bad = Vec::new();
    for (module, text) in files {
        let Some((from_layer, from_entry)) = place(module) else {
            bad.push(format!("{module}: in no layer (add it to LAYERS)"));
            continue;
        };
        for path in references(module, &code_only(text)) {
            let target = target_module(&path);
            let Some((to_layer, to_entry)) = place(&target) else {
                bad.push(format!("{module} -> {path}: the target is in no layer"));
                continue;
            };
            let own = to_entry == from_entry && !from_entry.is_empty();
            let allowed = own || to_layer < from_layer || from_entry.is_empty();
            if !allowed {
                let how = if to_layer > from_layer {
                    "a higher layer"
                } else {
                    "a peer"
                };
                bad.push(format!(
                    "{module} -> crate::{path}: `{to_entry}` is {how} of `{from_entry}`"
                ));
            }
        }
    }
    bad
}

fn sources() -> Vec<(String, String)> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    files
        .iter()
        .filter(|f| !f.ends_with("main.rs"))
        .map(|f| (module_of(f), std::fs::read_to_string(f).unwrap()))
        .collect()
}

#[test]
fn every_import_points_down() {
    let bad = violations(&sources());
    assert!(
        bad.is_empty(),
        "imports against the layers (see ARCHITECTURE.md):\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_check_catches_an_upward_import_and_a_peer() {
    // Proof the check can fail: the store reaching for a route, a feature for another.
    let files = vec![
        (
            "store::sql".to_string(),
            "use crate::http::AppState;\nfn f() {}".to_string(),
        ),
        (
            "menu::flow".to_string(),
            "use crate::{bridge::session, domain::money::Seconds};".to_string(),
        ),
        (
            "domain::ledger".to_string(),
            "fn f() { super::super::app::App::x(); }".to_string(),
        ),
        (
            "http::voice".to_string(),
            "// crate::cli in a comment is fine\nlet s = \"crate::cli\";".to_string(),
        ),
    ];
    let bad = violations(&files);
    assert_eq!(bad.len(), 3, "{bad:#?}");
    assert!(
        bad[0].contains("store::sql -> crate::http::AppState"),
        "{bad:#?}"
    );
    assert!(bad[1].contains("`bridge` is a peer of `menu`"), "{bad:#?}");
    assert!(
        bad[2].contains("domain::ledger -> crate::app::App"),
        "{bad:#?}"
    );
}

/// The spellings declared in `text_enum!` tables of the state files.
fn state_spellings() -> BTreeSet<String> {
    let mut spellings = BTreeSet::new();
    for file in STATE_FILES {
        let text = std::fs::read_to_string(src().join(file)).unwrap();
        for line in text.lines() {
            let line = line.trim();
            if let Some((variant, rest)) = line.split_once(" = \"") {
                if variant.chars().all(|c| c.is_ascii_alphanumeric()) {
                    if let Some(spelling) = rest.strip_suffix("\",") {
                        spellings.insert(spelling.to_string());
                    }
                }
            }
        }
    }
    spellings
}

/// A state's spelling compared or matched as text: `== "ended"`, `"ended" =>`,
/// `Some("time_up")`, `.contains(&"busy")`.
fn string_comparisons(text: &str, spellings: &BTreeSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        for s in spellings {
            let quoted = format!("\"{s}\"");
            let compared = [
                format!("== {quoted}"),
                format!("!= {quoted}"),
                format!("{quoted} =>"),
                format!("{quoted} |"),
                format!("| {quoted}"),
                format!("Some({quoted})"),
            ];
            if compared.iter().any(|c| code.contains(c.as_str())) {
                found.push(format!("line {}: {}", n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn no_state_is_compared_as_a_string_outside_its_spelling_table() {
    let spellings = state_spellings();
    assert!(
        spellings.contains("time_up") && spellings.contains("no-answer"),
        "the spelling tables were not read: {spellings:?}"
    );
    let mut bad = Vec::new();
    for (module, text) in sources() {
        // The spelling tables themselves.
        if module.starts_with("domain") || module == "stripe::intent" {
            continue;
        }
        for hit in string_comparisons(&text, &spellings) {
            bad.push(format!("{module} {hit}"));
        }
    }
    assert!(
        bad.is_empty(),
        "compare these through their enums:\n{}",
        bad.join("\n")
    );
    // And the check can fail.
    let caught = string_comparisons(
        "match reason.as_deref() { Some(\"time_up\") => 1, _ => 0 }",
        &spellings,
    );
    assert_eq!(caught.len(), 1);
}

/// A state's spelling written into a query: `'ended'` in SQL text, or `"ended"` as a value in
/// a MongoDB filter or update (`"status": "ended"`, `["pending", ...]`, `"pending".into()`).
/// The stores take them from the enums (`store::sql`'s `statement!`, `as_str()` in filters).
fn spellings_in_queries(text: &str, spellings: &BTreeSet<String>) -> Vec<String> {
    let text = text
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        // Comments, and a spelling table's own rows (`Claimed = "claimed",`).
        if trimmed.starts_with("//")
            || trimmed
                .split_once(" = \"")
                .is_some_and(|(v, _)| v.chars().all(|c| c.is_ascii_alphanumeric()))
        {
            continue;
        }
        let written = |s: &String| {
            [
                format!("'{s}'"),
                format!(": \"{s}\""),
                format!("[\"{s}\""),
                format!(", \"{s}\"]"),
                format!("\"{s}\".into()"),
            ]
            .iter()
            .any(|w| line.contains(w.as_str()))
        };
        if spellings.iter().any(written) {
            found.push(format!("line {}: {trimmed}", n + 1));
        }
    }
    found
}

#[test]
fn no_state_spelling_is_written_into_a_query() {
    let spellings = state_spellings();
    let mut bad = Vec::new();
    let mut read = 0;
    for (module, text) in sources() {
        if !module.starts_with("store") {
            continue;
        }
        read += 1;
        for hit in spellings_in_queries(&text, &spellings) {
            bad.push(format!("{module} {hit}"));
        }
    }
    assert!(read >= 5, "the store's files were not read");
    assert!(
        bad.is_empty(),
        "take these from the enums' spelling tables:\n{}",
        bad.join("\n")
    );
    // And the check can fail, on SQL text and on a MongoDB filter.
    let caught = spellings_in_queries(
        "    \"UPDATE calls SET status = 'ended' WHERE call_sid = $1\",\n\
         \x20   doc! { \"_id\": id, \"status\": \"pending\" },\n\
         \x20   doc! { \"state\": { \"$in\": [\"declined\", \"failed\"] } },\n\
         \x20   Done = \"done\",\n",
        &spellings,
    );
    assert_eq!(caught.len(), 3, "{caught:#?}");
}

/// The marks of a peer's protocol written out (read in the raw text, strings included): a
/// Twilio signature, a media stream's `start`, an agent's metadata, a PaymentIntent made up.
/// Outside `peers/` only callgate's own side of each protocol may carry them.
const PEER_MARKS: &[&str] = &[
    "Hmac::<Sha1>",
    "\"customParameters\"",
    "conversation_initiation_metadata_event",
    "\"object\": \"payment_intent\"",
];

fn peer_copies(files: &[(String, String)]) -> Vec<String> {
    let mut hits = Vec::new();
    for (name, text) in files {
        for mark in PEER_MARKS {
            if text.contains(mark) {
                hits.push(format!("{name}: {mark}"));
            }
        }
    }
    hits
}

fn files_under(dir: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    rust_files(dir, &mut files);
    files
        .iter()
        .map(|f| (f.display().to_string(), std::fs::read_to_string(f).unwrap()))
        .collect()
}

/// The Twilio caller, the agent and the Stripe stand-in live once, in `peers/`: the tests'
/// support, the tools and the demo use it and write no peer of their own; and the peers
/// depend on nothing of callgate's, so a test against them is not callgate testing itself.
#[test]
fn peers_are_written_once() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut outside = files_under(&root.join("tests/api/support"));
    outside.extend(files_under(&root.join("tools/src")));
    outside.extend(files_under(&root.join("src/demo")));
    assert!(
        outside.len() >= 8,
        "the support, tools and demo files were not read"
    );
    let copies = peer_copies(&outside);
    assert!(
        copies.is_empty(),
        "use callgate-peers instead:\n{}",
        copies.join("\n")
    );
    let peers = files_under(&root.join("peers/src"));
    assert!(
        peer_copies(&peers).len() >= 4,
        "the marks no longer find the peers"
    );
    let manifest = std::fs::read_to_string(root.join("peers/Cargo.toml")).unwrap();
    assert!(
        !manifest.contains("callgate ="),
        "peers/ must not depend on callgate"
    );
    for (name, text) in &peers {
        assert!(
            !code_only(text).contains("callgate::"),
            "{name} uses callgate"
        );
    }
    // And the check can fail.
    let copy = [(
        "copy.rs".to_string(),
        "let m = Hmac::<Sha1>::new_from_slice(t);".to_string(),
    )];
    assert_eq!(peer_copies(&copy).len(), 1);
}
