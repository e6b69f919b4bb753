//! The scripts of the simulated shell: commands split at newlines, `;`, `&&` and `||`, words
//! with sh's quoting (single quotes, double quotes, backslashes), comments, and `$NAME` or
//! `${NAME}` from the environment, as the Go fake kubelet's `parseScript` reads them.

use std::collections::HashMap;

/// The operator before a command of a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    First,
    Then,
    And,
    Or,
}

/// One command of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) op: Op,
    pub(crate) argv: Vec<String>,
}

/// Splits a script into commands of words, with sh's quoting (single quotes, double quotes,
/// backslashes), comments, and `$NAME`/`${NAME}` from `env` (unknown names are empty).
pub(crate) fn parse_script(text: &str, env: &HashMap<String, String>) -> Vec<Step> {
    let text = text.as_bytes();
    let mut parser = Parser {
        steps: Vec::new(),
        op: Op::First,
        argv: Vec::new(),
        word: Vec::new(),
        in_word: false,
    };
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        match c {
            b'\'' => {
                parser.in_word = true;
                let end = text[i + 1..]
                    .iter()
                    .position(|&b| b == b'\'')
                    .unwrap_or(text.len() - i - 1);
                parser.word.extend_from_slice(&text[i + 1..i + 1 + end]);
                i += end + 2;
            }
            b'"' => {
                parser.in_word = true;
                i += 1;
                while i < text.len() && text[i] != b'"' {
                    if text[i] == b'\\' && i + 1 < text.len() && b"\"\\$`".contains(&text[i + 1]) {
                        parser.word.push(text[i + 1]);
                        i += 2;
                    } else if text[i] == b'$' {
                        i = expand(text, i, env, &mut parser.word);
                    } else {
                        parser.word.push(text[i]);
                        i += 1;
                    }
                }
                i += 1;
            }
            b'\\' if i + 1 < text.len() => {
                parser.in_word = true;
                if text[i + 1] != b'\n' {
                    parser.word.push(text[i + 1]);
                }
                i += 2;
            }
            b'$' => {
                parser.in_word = true;
                i = expand(text, i, env, &mut parser.word);
            }
            b'#' if !parser.in_word => {
                while i < text.len() && text[i] != b'\n' {
                    i += 1;
                }
            }
            b';' | b'\n' => {
                parser.end_command(Op::Then);
                i += 1;
            }
            b'&' | b'|' if text.get(i + 1) == Some(&c) => {
                parser.end_command(if c == b'&' { Op::And } else { Op::Or });
                i += 2;
            }
            b' ' | b'\t' => {
                parser.end_word();
                i += 1;
            }
            _ => {
                parser.in_word = true;
                parser.word.push(c);
                i += 1;
            }
        }
    }
    parser.end_command(Op::First);
    parser.steps
}

/// `text[i]` is `$`: appends the variable's value (or the `$` itself when no name follows) and
/// returns the index after the reference.
fn expand(text: &[u8], i: usize, env: &HashMap<String, String>, word: &mut Vec<u8>) -> usize {
    let mut j = i + 1;
    let mut name: &[u8] = b"";
    if text.get(j) == Some(&b'{') {
        if let Some(end) = text[j..].iter().position(|&b| b == b'}').filter(|&end| end > 0) {
            name = &text[j + 1..j + end];
            j += end + 1;
        }
    } else {
        while j < text.len() && (text[j] == b'_' || text[j].is_ascii_alphanumeric()) {
            j += 1;
        }
        name = &text[i + 1..j];
    }
    if name.is_empty() {
        word.push(b'$');
        return i + 1;
    }
    if let Some(value) = env.get(&*String::from_utf8_lossy(name)) {
        word.extend_from_slice(value.as_bytes());
    }
    j
}

struct Parser {
    steps: Vec<Step>,
    op: Op,
    argv: Vec<String>,
    word: Vec<u8>,
    in_word: bool,
}

impl Parser {
    fn end_word(&mut self) {
        if self.in_word {
            self.argv.push(String::from_utf8_lossy(&self.word).into_owned());
        }
        self.word.clear();
        self.in_word = false;
    }

    fn end_command(&mut self, next: Op) {
        self.end_word();
        if !self.argv.is_empty() {
            self.steps.push(Step {
                op: self.op,
                argv: std::mem::take(&mut self.argv),
            });
        }
        self.op = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HashMap<String, String> {
        HashMap::from([("HOSTNAME".to_string(), "web-0".to_string())])
    }

    fn steps(text: &str) -> Vec<(Op, Vec<&'static str>)> {
        parse_script(text, &env())
            .into_iter()
            .map(|s| {
                let argv = s
                    .argv
                    .into_iter()
                    .map(|a| &*Box::leak(a.into_boxed_str()))
                    .collect();
                (s.op, argv)
            })
            .collect()
    }

    #[test]
    fn scripts_split_into_commands_with_operators() {
        assert_eq!(
            steps("echo a; false && echo b || echo c\nexit 3"),
            vec![
                (Op::First, vec!["echo", "a"]),
                (Op::Then, vec!["false"]),
                (Op::And, vec!["echo", "b"]),
                (Op::Or, vec!["echo", "c"]),
                (Op::Then, vec!["exit", "3"]),
            ]
        );
        assert_eq!(steps("  ;; # only a comment"), vec![]);
        assert_eq!(
            steps("a & b | c"),
            vec![(Op::First, vec!["a", "&", "b", "|", "c"])]
        );
    }

    #[test]
    fn quoting_and_variables_follow_sh() {
        assert_eq!(
            steps(r#"echo 'a  b' "c $HOSTNAME \"d\" \x" e\ f ${HOSTNAME}x $NOPE. $ ${ }"#),
            vec![(
                Op::First,
                vec!["echo", "a  b", "c web-0 \"d\" \\x", "e f", "web-0x", ".", "$", ""]
            )]
        );
        assert_eq!(
            steps("echo it#s # not this"),
            vec![(Op::First, vec!["echo", "it#s"])]
        );
        assert_eq!(steps("echo 'open"), vec![(Op::First, vec!["echo", "open"])]);
        assert_eq!(steps("echo a\\\nb"), vec![(Op::First, vec!["echo", "ab"])]);
        assert_eq!(steps("echo ''"), vec![(Op::First, vec!["echo", ""])]);
    }
}
