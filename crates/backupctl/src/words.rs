//! Splits a command line typed as one argument (`--before 'pg_dump -U app app'`) into the argv
//! the daemon runs without a shell, as a POSIX shell would split it: words part at unquoted
//! blanks; `'…'` keeps everything literally; in `"…"` a backslash takes only `$`, `` ` ``, `"`,
//! `\` and a newline; a backslash outside quotes takes the next character as it is (a newline:
//! none); a `#` beginning a word comments out the rest of its line. No variables, globs or
//! pipes: write `sh -c '…'` for those.

/// Why a command line cannot be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WordsError {
    #[error("unterminated quote in {0:?}")]
    Unterminated(String),
    #[error("empty command")]
    Empty,
}

/// The words of `line`.
pub fn split(line: &str) -> Result<Vec<String>, WordsError> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    let unterminated = || WordsError::Unterminated(line.to_owned());
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => words.extend(word.take()),
            '\'' => {
                let current = word.get_or_insert_with(String::new);
                loop {
                    match chars.next().ok_or_else(unterminated)? {
                        '\'' => break,
                        c => current.push(c),
                    }
                }
            }
            '"' => {
                let current = word.get_or_insert_with(String::new);
                loop {
                    match chars.next().ok_or_else(unterminated)? {
                        '"' => break,
                        '\\' => match chars.next().ok_or_else(unterminated)? {
                            c @ ('"' | '\\' | '$' | '`') => current.push(c),
                            '\n' => {}
                            c => {
                                current.push('\\');
                                current.push(c);
                            }
                        },
                        c => current.push(c),
                    }
                }
            }
            '\\' => match chars.next().ok_or_else(unterminated)? {
                '\n' => {}
                next => word.get_or_insert_with(String::new).push(next),
            },
            '#' if word.is_none() => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    if words.is_empty() {
        return Err(WordsError::Empty);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_like_a_shell_without_expansion() {
        assert_eq!(
            split("pg_dump  -U app app").unwrap(),
            ["pg_dump", "-U", "app", "app"]
        );
        assert_eq!(
            split(r#"sh -c 'echo "$HOME" | wc -c'"#).unwrap(),
            ["sh", "-c", r#"echo "$HOME" | wc -c"#]
        );
        assert_eq!(
            split(r#"a "b \"c\" \d" e\ f ''"#).unwrap(),
            ["a", r#"b "c" \d"#, "e f", ""]
        );
        assert_eq!(
            split("sqlite3 /srv/my\\ app.db .dump").unwrap()[1],
            "/srv/my app.db"
        );
        assert_eq!(
            split("x 'unterminated").unwrap_err(),
            WordsError::Unterminated("x 'unterminated".into())
        );
        assert_eq!(split("  ").unwrap_err(), WordsError::Empty);
    }

    #[test]
    fn backslashes_in_double_quotes_and_comments_are_a_shell_s() {
        // `printf [%s] "price \$5" "\`x\`" # comment` in sh prints `[price $5][`x`]`.
        assert_eq!(
            split(r#"printf [%s] "price \$5" "\`x\`" # comment"#).unwrap(),
            ["printf", "[%s]", "price $5", "`x`"]
        );
        assert_eq!(split("a#b '#c' #d\ne").unwrap(), ["a#b", "#c", "e"]);
        assert_eq!(split("a\\\nb \"c\\\nd\"").unwrap(), ["ab", "cd"]);
    }
}
