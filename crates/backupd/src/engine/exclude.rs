//! Exclude patterns: a small glob matcher, in the spirit of `.gitignore`.
//!
//! `*` matches within one path component, `?` one character, `[abc]`, `[a-z]`, `[!x]` a
//! class, `\` escapes, and a whole component `**` any number of components (zero included).
//! A pattern without `/` matches an entry's base name at any depth; one with a `/` (other
//! than a trailing one) matches the path relative to the source root; a trailing `/`
//! restricts it to directories. Written by hand to keep regex/globset out of the build.

use super::error::EngineError;

/// The compiled exclude patterns of one job.
#[derive(Debug, Clone, Default)]
pub struct ExcludeSet {
    patterns: Vec<Pattern>,
}

impl ExcludeSet {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, EngineError> {
        let patterns = patterns
            .iter()
            .map(|p| Pattern::parse(p.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(ExcludeSet { patterns })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// `rel` is the path relative to the source root, components joined by `/`.
    pub fn is_excluded(&self, rel: &str, is_dir: bool) -> bool {
        if self.patterns.is_empty() {
            return false;
        }
        let components: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
        self.patterns.iter().any(|p| p.matches(&components, is_dir))
    }
}

#[derive(Debug, Clone)]
struct Pattern {
    segments: Vec<Segment>,
    anchored: bool,
    dir_only: bool,
}

#[derive(Debug, Clone)]
enum Segment {
    /// `**`: any number of components.
    AnyDepth,
    Glob(Vec<Token>),
}

#[derive(Debug, Clone)]
enum Token {
    Literal(char),
    AnyChar,
    Star,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Pattern {
    fn parse(raw: &str) -> Result<Self, EngineError> {
        let invalid = |reason| EngineError::InvalidPattern {
            pattern: raw.to_owned(),
            reason,
        };
        let mut body = raw;
        let dir_only = body.ends_with('/');
        body = body.trim_end_matches('/');
        let anchored = body.contains('/');
        body = body.trim_start_matches('/');
        if body.is_empty() {
            return Err(invalid("pattern is empty"));
        }
        let segments: Vec<Segment> = body
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| {
                if s == "**" {
                    Ok(Segment::AnyDepth)
                } else {
                    parse_glob(s).map(Segment::Glob).map_err(invalid)
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Pattern {
            segments,
            anchored,
            dir_only,
        })
    }

    fn matches(&self, components: &[&str], is_dir: bool) -> bool {
        if self.dir_only && !is_dir {
            return false;
        }
        if self.anchored {
            match_segments(&self.segments, components)
        } else {
            match (components.last(), self.segments.as_slice()) {
                (Some(base), [Segment::Glob(tokens)]) => match_glob(tokens, base),
                (Some(_), [Segment::AnyDepth]) => true,
                _ => false,
            }
        }
    }
}

fn parse_glob(s: &str) -> Result<Vec<Token>, &'static str> {
    let mut tokens = Vec::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                // `a**b` is just `a*b`: a run of stars adds nothing within a component.
                if !matches!(tokens.last(), Some(Token::Star)) {
                    tokens.push(Token::Star);
                }
            }
            '?' => tokens.push(Token::AnyChar),
            '\\' => tokens.push(Token::Literal(chars.next().ok_or("trailing backslash")?)),
            '[' => tokens.push(parse_class(&mut chars)?),
            c => tokens.push(Token::Literal(c)),
        }
    }
    Ok(tokens)
}

/// Parses after the `[`; a `]` right after `[` or `[!` is a literal member, as in shells.
fn parse_class(chars: &mut std::str::Chars<'_>) -> Result<Token, &'static str> {
    let mut negated = false;
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = chars.next().ok_or("unclosed '['")?;
        match c {
            '!' | '^' if first && !negated => {
                negated = true;
                continue;
            }
            ']' if !first => return Ok(Token::Class { negated, ranges }),
            _ => {}
        }
        first = false;
        let lo = if c == '\\' {
            chars.next().ok_or("unclosed '['")?
        } else {
            c
        };
        let mut ahead = chars.clone();
        if ahead.next() == Some('-') {
            match ahead.next() {
                Some(']') | None => ranges.push((lo, lo)),
                Some(hi) => {
                    if hi < lo {
                        return Err("range out of order in '[...]'");
                    }
                    chars.next();
                    chars.next();
                    ranges.push((lo, hi));
                }
            }
        } else {
            ranges.push((lo, lo));
        }
    }
}

/// Whether `segments` match all of `components`. Dynamic programming over (segment,
/// component) suffixes, so patterns like `**/*/**/*/x` cost segments × depth, not an
/// exponential search a single request could use to pin a CPU.
fn match_segments(segments: &[Segment], components: &[&str]) -> bool {
    let (s_len, c_len) = (segments.len(), components.len());
    // matches[s][c]: segments[s..] match components[c..].
    let mut matches = vec![vec![false; c_len + 1]; s_len + 1];
    matches[s_len][c_len] = true;
    for s in (0..s_len).rev() {
        for c in (0..=c_len).rev() {
            matches[s][c] = match &segments[s] {
                // Zero components, or one more and `**` again.
                Segment::AnyDepth => matches[s + 1][c] || (c < c_len && matches[s][c + 1]),
                Segment::Glob(tokens) => {
                    c < c_len && matches[s + 1][c + 1] && match_glob(tokens, components[c])
                }
            };
        }
    }
    matches[0][0]
}

/// Classic wildcard matching with one backtrack point for the last `*`.
fn match_glob(tokens: &[Token], text: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    let (mut t, mut s) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while s < text.len() {
        match tokens.get(t) {
            Some(Token::Star) => {
                backtrack = Some((t, s));
                t += 1;
                continue;
            }
            Some(tok) if token_matches(tok, text[s]) => {
                t += 1;
                s += 1;
                continue;
            }
            _ => {}
        }
        match backtrack {
            Some((bt, bs)) => {
                t = bt + 1;
                s = bs + 1;
                backtrack = Some((bt, bs + 1));
            }
            None => return false,
        }
    }
    tokens[t..].iter().all(|tok| matches!(tok, Token::Star))
}

fn token_matches(token: &Token, c: char) -> bool {
    match token {
        Token::Literal(l) => *l == c,
        Token::AnyChar => true,
        Token::Star => false,
        Token::Class { negated, ranges } => {
            ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&c)) != *negated
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(patterns: &[&str]) -> ExcludeSet {
        ExcludeSet::new(patterns).unwrap()
    }

    fn file(s: &ExcludeSet, rel: &str) -> bool {
        s.is_excluded(rel, false)
    }

    fn dir(s: &ExcludeSet, rel: &str) -> bool {
        s.is_excluded(rel, true)
    }

    #[test]
    fn alternating_double_stars_stay_fast() {
        let pattern = format!("{}nomatch", "**/*/".repeat(16));
        let s = set(&[pattern.as_str()]);
        let deep = vec!["d"; 60].join("/");
        assert!(!file(&s, &deep));
        assert!(file(&s, &format!("{deep}/nomatch")));
        // Sixteen `*` need sixteen components before the name.
        assert!(!file(&s, &format!("{}/nomatch", vec!["d"; 15].join("/"))));
        assert!(file(&s, &format!("{}/nomatch", vec!["d"; 16].join("/"))));
    }

    #[test]
    fn repeated_double_stars_stay_fast() {
        // Unmerged, 30 `**` over 60 components would take about 60^30 steps.
        let pattern = format!("{}nothing", "**/".repeat(30));
        let s = set(&[pattern.as_str()]);
        let deep = vec!["d"; 60].join("/");
        assert!(!file(&s, &deep));
        assert!(file(&s, &format!("{deep}/nothing")));
    }

    #[test]
    fn basename_pattern_matches_at_any_depth() {
        let s = set(&["*.tmp"]);
        assert!(file(&s, "a.tmp"));
        assert!(file(&s, "deep/er/b.tmp"));
        assert!(dir(&s, "x.tmp"));
        assert!(!file(&s, "a.tmp.txt"));
        assert!(!file(&s, "tmp"));
        assert!(
            !file(&s, "dir.tmp/file"),
            "only the entry's own base name counts"
        );
    }

    #[test]
    fn star_does_not_cross_slash() {
        let s = set(&["sub/*.log"]);
        assert!(file(&s, "sub/a.log"));
        assert!(!file(&s, "sub/deeper/a.log"));
        assert!(!file(&s, "other/sub/a.log"), "anchored at the source root");
        assert!(!file(&s, "a.log"));
    }

    #[test]
    fn trailing_slash_means_directories_only() {
        let s = set(&["node_modules/", ".cache/"]);
        assert!(dir(&s, "node_modules"));
        assert!(dir(&s, "web/app/node_modules"));
        assert!(!file(&s, "node_modules"));
        assert!(dir(&s, ".cache"));
        assert!(dir(&s, "home/.cache"));
        assert!(!dir(&s, ".cache2"));
    }

    #[test]
    fn double_star_spans_any_number_of_components() {
        let s = set(&["**/x"]);
        assert!(file(&s, "x"));
        assert!(file(&s, "a/x"));
        assert!(file(&s, "a/b/c/x"));
        assert!(!file(&s, "a/xy"));

        let s = set(&["a/**/z.txt"]);
        assert!(file(&s, "a/z.txt"));
        assert!(file(&s, "a/b/c/z.txt"));
        assert!(!file(&s, "b/a/z.txt"));

        let s = set(&["build/**"]);
        assert!(file(&s, "build/a/b"));
        assert!(!file(&s, "src/build/a"));
    }

    #[test]
    fn question_mark_and_classes() {
        let s = set(&["file?.[ch]"]);
        assert!(file(&s, "file1.c"));
        assert!(file(&s, "fileX.h"));
        assert!(!file(&s, "file.c"));
        assert!(!file(&s, "file12.c"));
        assert!(!file(&s, "file1.o"));

        let s = set(&["[a-c]*"]);
        assert!(file(&s, "apple"));
        assert!(file(&s, "cat"));
        assert!(!file(&s, "dog"));

        let s = set(&["[!0-9]?"]);
        assert!(file(&s, "a1"));
        assert!(!file(&s, "11"));

        let s = set(&["[]x]"]);
        assert!(file(&s, "]"));
        assert!(file(&s, "x"));
    }

    #[test]
    fn stars_backtrack() {
        let s = set(&["*a*b*c"]);
        assert!(file(&s, "xxaxxbxxc"));
        assert!(file(&s, "abc"));
        assert!(!file(&s, "acb"));
        let s = set(&["*"]);
        assert!(file(&s, "anything"));
        assert!(file(&s, ".hidden"));
    }

    #[test]
    fn leading_slash_anchors_to_root() {
        let s = set(&["/top.txt"]);
        assert!(file(&s, "top.txt"));
        assert!(!file(&s, "a/top.txt"));
    }

    #[test]
    fn escapes_and_unicode() {
        let s = set(&["\\*literal", "caf?"]);
        assert!(file(&s, "*literal"));
        assert!(!file(&s, "xliteral"));
        assert!(file(&s, "café"));
    }

    #[test]
    fn invalid_patterns_are_rejected() {
        for bad in ["[abc", "a/[!x", "", "/", "x\\", "[z-a]"] {
            assert!(
                matches!(
                    ExcludeSet::new(&[bad]),
                    Err(EngineError::InvalidPattern { .. })
                ),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn empty_set_excludes_nothing() {
        assert!(!file(&ExcludeSet::default(), "a"));
    }
}

/// Property tests of the matcher: no pattern or path makes it panic, and on small random
/// patterns it agrees with a plain backtracking reference written from the module's rules.
/// Inputs are short by construction, so the exponential reference stays fast; the matcher's
/// own cost does not depend on that. A fixed seed (unless `PROPTEST_RNG_SEED` is set) keeps
/// CI deterministic.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;

    fn config() -> ProptestConfig {
        let default = ProptestConfig::default();
        ProptestConfig {
            cases: 1024,
            failure_persistence: None,
            rng_seed: if std::env::var_os("PROPTEST_RNG_SEED").is_some() {
                default.rng_seed
            } else {
                RngSeed::Fixed(0x0065_7863_6c75_6465)
            },
            ..default
        }
    }

    /// One character of a component against one reference token.
    fn reference_token(token: &str, c: char) -> bool {
        match token {
            "?" => true,
            "[ab]" => c == 'a' || c == 'b',
            "[!a]" => c != 'a',
            "\\*" => c == '*',
            literal => literal.chars().eq(std::iter::once(c)),
        }
    }

    /// Splits a component pattern into the tokens the generator uses.
    fn reference_tokens(glob: &str) -> Vec<&str> {
        let mut tokens = Vec::new();
        let mut rest = glob;
        while !rest.is_empty() {
            let len = if rest.starts_with("[ab]") || rest.starts_with("[!a]") {
                4
            } else if rest.starts_with('\\') {
                2
            } else {
                1
            };
            tokens.push(&rest[..len]);
            rest = &rest[len..];
        }
        tokens
    }

    fn reference_glob(tokens: &[&str], text: &[char]) -> bool {
        match tokens.split_first() {
            None => text.is_empty(),
            Some((&"*", rest)) => {
                reference_glob(rest, text)
                    || (!text.is_empty() && reference_glob(tokens, &text[1..]))
            }
            Some((token, rest)) => text
                .split_first()
                .is_some_and(|(&c, more)| reference_token(token, c) && reference_glob(rest, more)),
        }
    }

    fn reference_segments(segments: &[&str], components: &[&str]) -> bool {
        match segments.split_first() {
            None => components.is_empty(),
            Some((&"**", rest)) => {
                reference_segments(rest, components)
                    || (!components.is_empty() && reference_segments(segments, &components[1..]))
            }
            Some((glob, rest)) => components.split_first().is_some_and(|(first, more)| {
                let text: Vec<char> = first.chars().collect();
                reference_glob(&reference_tokens(glob), &text) && reference_segments(rest, more)
            }),
        }
    }

    /// The module's rules, read literally: `None` for a pattern that must be refused.
    fn reference(pattern: &str, rel: &str, is_dir: bool) -> Option<bool> {
        let dir_only = pattern.ends_with('/');
        let body = pattern.trim_end_matches('/');
        let anchored = body.contains('/');
        let segments: Vec<&str> = body.split('/').filter(|s| !s.is_empty()).collect();
        if segments.is_empty() {
            return None;
        }
        let components: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
        if dir_only && !is_dir {
            return Some(false);
        }
        Some(if anchored {
            reference_segments(&segments, &components)
        } else {
            match (components.last(), segments.as_slice()) {
                (Some(_), ["**"]) => true,
                (Some(base), [glob]) => {
                    let text: Vec<char> = base.chars().collect();
                    reference_glob(&reference_tokens(glob), &text)
                }
                _ => false,
            }
        })
    }

    fn pattern() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "a", "b", "*", "?", "[ab]", "[!a]", "\\*", "/", "/", "**", "/**/",
        ]);
        prop::collection::vec(piece, 1..8).prop_map(|pieces| pieces.concat())
    }

    fn path() -> impl Strategy<Value = String> {
        "[ab*/]{0,12}"
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_pattern_and_path_are_handled_without_panicking(
            pattern in any::<String>(),
            rel in any::<String>(),
            is_dir in any::<bool>(),
        ) {
            if let Ok(set) = ExcludeSet::new(&[pattern]) {
                let _ = set.is_excluded(&rel, is_dir);
            }
        }

        #[test]
        fn glob_like_patterns_are_handled_without_panicking(
            pattern in "[ab*?/\\\\\\[\\]!^\\-]{0,16}",
            rel in path(),
        ) {
            if let Ok(set) = ExcludeSet::new(&[pattern]) {
                let _ = set.is_excluded(&rel, false);
            }
        }

        #[test]
        fn the_matcher_agrees_with_the_reference(
            pattern in pattern(),
            rel in path(),
            is_dir in any::<bool>(),
        ) {
            match (ExcludeSet::new(&[pattern.as_str()]), reference(&pattern, &rel, is_dir)) {
                (Ok(set), Some(expected)) => prop_assert_eq!(
                    set.is_excluded(&rel, is_dir),
                    expected,
                    "pattern {:?} path {:?} dir {}",
                    pattern,
                    rel,
                    is_dir
                ),
                (Err(_), None) => {}
                (parsed, expected) => prop_assert!(
                    false,
                    "pattern {:?}: parsed {:?}, reference {:?}",
                    pattern,
                    parsed.is_ok(),
                    expected
                ),
            }
        }
    }
}
