//! A small parser for the expressions Datadog evaluates over named queries: detection-rule case
//! conditions (`attempts >= 10 && paths >= 5`) and widget formulas (`100 * depth / capacity`).
//!
//! It accepts numbers, query names, function calls (`abs(a)`, `top(a, 10, 'sum', 'desc')`),
//! quoted strings as function arguments, `+ - * / %`, comparisons (`> >= < <= == !=`),
//! `&& || !` and parentheses, and returns the query names the expression uses.

/// A token of an expression.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Number,
    Str,
    Op(&'static str),
    Open,
    Close,
    Comma,
}

fn tokenize(input: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            tokens.push(Token::Number);
        } else if c == '\'' || c == '"' {
            let end = chars[i + 1..]
                .iter()
                .position(|&d| d == c)
                .ok_or_else(|| format!("unterminated string at column {}", i + 1))?;
            i += end + 2;
            tokens.push(Token::Str);
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let op = match two.as_str() {
                ">=" => Some(">="),
                "<=" => Some("<="),
                "==" => Some("=="),
                "!=" => Some("!="),
                "&&" => Some("&&"),
                "||" => Some("||"),
                _ => None,
            };
            if let Some(op) = op {
                tokens.push(Token::Op(op));
                i += 2;
                continue;
            }
            tokens.push(match c {
                '>' => Token::Op(">"),
                '<' => Token::Op("<"),
                '+' => Token::Op("+"),
                '-' => Token::Op("-"),
                '*' => Token::Op("*"),
                '/' => Token::Op("/"),
                '%' => Token::Op("%"),
                '!' => Token::Op("!"),
                '(' => Token::Open,
                ')' => Token::Close,
                ',' => Token::Comma,
                other => {
                    return Err(format!(
                        "unexpected character `{other}` at column {}",
                        i + 1
                    ));
                }
            });
            i += 1;
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    names: Vec<String>,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn eat_op(&mut self, ops: &[&str]) -> bool {
        if let Some(Token::Op(op)) = self.peek()
            && ops.contains(op)
        {
            self.pos += 1;
            return true;
        }
        false
    }

    fn binary(&mut self, level: usize) -> Result<(), String> {
        const LEVELS: &[&[&str]] = &[
            &["||"],
            &["&&"],
            &[">", ">=", "<", "<=", "==", "!="],
            &["+", "-"],
            &["*", "/", "%"],
        ];
        if level == LEVELS.len() {
            return self.unary();
        }
        self.binary(level + 1)?;
        while self.eat_op(LEVELS[level]) {
            self.binary(level + 1)?;
        }
        Ok(())
    }

    fn unary(&mut self) -> Result<(), String> {
        if self.eat_op(&["!", "-"]) {
            return self.unary();
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<(), String> {
        let token = self.peek().cloned();
        self.pos += 1;
        match token {
            Some(Token::Number | Token::Str) => Ok(()),
            Some(Token::Ident(name)) => {
                if self.peek() == Some(&Token::Open) {
                    self.pos += 1;
                    if self.peek() == Some(&Token::Close) {
                        self.pos += 1;
                        return Ok(());
                    }
                    loop {
                        self.binary(0)?;
                        match self.peek() {
                            Some(Token::Comma) => self.pos += 1,
                            Some(Token::Close) => {
                                self.pos += 1;
                                return Ok(());
                            }
                            _ => {
                                return Err(format!(
                                    "expected `,` or `)` in the arguments of `{name}`"
                                ));
                            }
                        }
                    }
                }
                self.names.push(name);
                Ok(())
            }
            Some(Token::Open) => {
                self.binary(0)?;
                if self.peek() == Some(&Token::Close) {
                    self.pos += 1;
                    Ok(())
                } else {
                    Err("missing `)`".to_owned())
                }
            }
            Some(other) => Err(format!("unexpected {}", describe(&other))),
            None => Err("unexpected end of expression".to_owned()),
        }
    }
}

fn describe(token: &Token) -> String {
    match token {
        Token::Ident(name) => format!("`{name}`"),
        Token::Number => "number".to_owned(),
        Token::Str => "string".to_owned(),
        Token::Op(op) => format!("`{op}`"),
        Token::Open => "`(`".to_owned(),
        Token::Close => "`)`".to_owned(),
        Token::Comma => "`,`".to_owned(),
    }
}

/// Parses `input` and returns the query names it uses (function names excluded), in order.
pub(crate) fn names_used(input: &str) -> Result<Vec<String>, String> {
    let tokens = tokenize(input)?;
    if tokens.is_empty() {
        return Err("empty expression".to_owned());
    }
    let mut parser = Parser {
        tokens,
        pos: 0,
        names: Vec::new(),
    };
    parser.binary(0)?;
    if let Some(token) = parser.peek() {
        return Err(format!(
            "unexpected {} after a complete expression",
            describe(token)
        ));
    }
    Ok(parser.names)
}

#[cfg(test)]
mod tests {
    use super::names_used;

    #[test]
    fn conditions_and_formulas_parse() {
        assert_eq!(
            names_used("attempts >= 10 && paths >= 5").unwrap(),
            ["attempts", "paths"]
        );
        assert_eq!(
            names_used("100 * depth / capacity").unwrap(),
            ["depth", "capacity"]
        );
        assert_eq!(names_used("top(a, 10, 'sum', 'desc')").unwrap(), ["a"]);
        assert_eq!(names_used("!(a > 0) || -b < 1.5").unwrap(), ["a", "b"]);
    }

    #[test]
    fn malformed_expressions_fail() {
        assert_eq!(
            names_used("a >").unwrap_err(),
            "unexpected end of expression"
        );
        assert_eq!(
            names_used("a > 0 )").unwrap_err(),
            "unexpected `)` after a complete expression"
        );
        assert_eq!(names_used("(a > 0").unwrap_err(), "missing `)`");
        assert_eq!(
            names_used("a $ 0").unwrap_err(),
            "unexpected character `$` at column 3"
        );
        assert_eq!(names_used("  ").unwrap_err(), "empty expression");
    }
}
