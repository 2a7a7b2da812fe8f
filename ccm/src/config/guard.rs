//! Limits on the configuration text, checked before it is parsed: `check-config` is meant
//! for files nobody vetted, and the parser the `config` crate uses (yaml-rust2) copies an
//! anchored node at every alias, so a few hundred bytes of nested aliases (a "billion
//! laughs") would expand into billions of values and exhaust memory before any key is
//! checked.
//!
//! The text is read as a stream of parser events, without building anything: each alias
//! counts the size its anchor expands to, and the running total of values, the nesting
//! depth and the size of the text are capped. A configuration Portway accepts is far below
//! every cap (a pool is a handful of values); what exceeds one is refused with the cap and
//! what to do, in about the time it takes to read the text.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, Parser};

/// The largest file read: a ConfigMap holds at most 1 MiB, so no deployed configuration is
/// larger.
pub(super) const MAX_BYTES: usize = 1 << 20;
/// Values (scalars and collections) after aliases are expanded.
pub(super) const MAX_VALUES: u64 = 100_000;
/// Collections within collections.
pub(super) const MAX_DEPTH: usize = 64;

/// Refuses a text over any cap, saying which and what to do (the whole file is the key
/// path). Syntax errors are left to the parser, which reports them with their position.
pub(super) fn check(text: &str) -> Result<(), String> {
    if text.len() > MAX_BYTES {
        return Err(format!(
            "the configuration is {} bytes, more than the {MAX_BYTES} a ConfigMap can hold",
            text.len()
        ));
    }
    let too_many = || {
        format!(
            "the configuration expands to more than {MAX_VALUES} values through YAML aliases \
             (*name repeating an &name anchor); write the values out, or use fewer aliases"
        )
    };
    // Sizes of anchored nodes, and the open collections: (anchor id, size so far).
    let mut anchors: HashMap<usize, u64> = HashMap::new();
    let mut open: Vec<(usize, u64)> = Vec::new();
    let mut total: u64 = 0;
    let mut parser = Parser::new_from_str(text);
    loop {
        let Ok((event, _)) = parser.next_token() else {
            return Ok(());
        };
        // The size of a finished node, and its anchor (0: none).
        let finished = match event {
            Event::StreamEnd => return Ok(()),
            Event::Scalar(_, _, anchor, _) => Some((anchor, 1)),
            Event::Alias(id) => Some((0, anchors.get(&id).copied().unwrap_or(1))),
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if open.len() >= MAX_DEPTH {
                    return Err(format!(
                        "the configuration nests deeper than {MAX_DEPTH} levels"
                    ));
                }
                open.push((anchor, 1));
                None
            }
            Event::SequenceEnd | Event::MappingEnd => open.pop(),
            _ => None,
        };
        if let Some((anchor, size)) = finished {
            if anchor != 0 {
                anchors.insert(anchor, size);
            }
            match open.last_mut() {
                Some((_, parent)) => *parent = parent.saturating_add(size),
                None => total = total.saturating_add(size),
            }
            // A node is counted whole once it is finished; what is still open is checked
            // as it grows.
            let open_sum = open.iter().fold(0u64, |a, (_, s)| a.saturating_add(*s));
            if size > MAX_VALUES || total.saturating_add(open_sum) > MAX_VALUES {
                return Err(too_many());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nine levels of ten aliases each: 10⁹ strings once expanded.
    fn billion_laughs() -> String {
        let mut s = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for w in names.windows(2) {
            let (prev, next) = (w[0], w[1]);
            let refs = vec![format!("*{prev}"); 10].join(",");
            s.push_str(&format!("{next}: &{next} [{refs}]\n"));
        }
        s
    }

    #[test]
    fn an_alias_bomb_is_refused_by_its_expanded_size() {
        let e = check(&billion_laughs()).expect_err("refused");
        assert!(e.contains("aliases"), "{e}");
    }

    #[test]
    fn ordinary_aliases_and_deep_nesting() {
        check("pools:\n- &p {name: a, addresses: [10.0.0.0/24]}\nl2: {pools: [a]}\nx: *p\n")
            .expect("a few aliases are fine");
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let e = check(&deep).expect_err("too deep");
        assert!(e.contains("deeper"), "{e}");
        let big = format!("defaultClass: portway.dev/l2\n#{}\n", "x".repeat(MAX_BYTES));
        assert!(check(&big).expect_err("too big").contains("ConfigMap"));
    }
}
