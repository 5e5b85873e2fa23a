//! Just enough EDN (Clojure's data notation) for Jepsen and Porcupine logs: `nil`, integers,
//! strings, keywords, vectors and flat maps with keyword keys.

/// An EDN value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    Nil,
    Int(i64),
    Str(String),
    /// A keyword, without its leading `:`.
    Keyword(String),
    Vector(Vec<Value>),
}

impl Value {
    /// A short name of the value's kind, for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Int(_) => "an integer",
            Value::Str(_) => "a string",
            Value::Keyword(_) => "a keyword",
            Value::Vector(_) => "a vector",
        }
    }
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    /// Skips whitespace and commas (EDN treats commas as whitespace).
    fn skip_space(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() || c == ',' {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        self.skip_space();
        match self.peek() {
            Some(d) if d == c => {
                self.pos += 1;
                Ok(())
            }
            Some(d) => Err(format!(
                "expected {c:?} at column {}, found {d:?}",
                self.pos + 1
            )),
            None => Err(format!(
                "expected {c:?} at column {}, found the end of the line",
                self.pos + 1
            )),
        }
    }

    /// A bare token: up to whitespace, a comma or a closing bracket.
    fn token(&mut self) -> &str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_whitespace() || matches!(c, ',' | '}' | ']' | '{' | '[' | '"') {
                break;
            }
            self.pos += c.len_utf8();
        }
        &self.s[start..self.pos]
    }

    fn value(&mut self) -> Result<Value, String> {
        self.skip_space();
        let column = self.pos + 1;
        match self.peek() {
            None => Err(format!(
                "expected a value at column {column}, found the end of the line"
            )),
            Some('"') => self.string(),
            Some('[') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_space();
                    match self.peek() {
                        Some(']') => {
                            self.pos += 1;
                            return Ok(Value::Vector(items));
                        }
                        None => return Err(format!("unclosed vector opened at column {column}")),
                        Some(_) => items.push(self.value()?),
                    }
                }
            }
            Some(':') => {
                self.pos += 1;
                let name = self.token();
                if name.is_empty() {
                    return Err(format!("empty keyword at column {column}"));
                }
                Ok(Value::Keyword(name.to_string()))
            }
            Some(_) => {
                let token = self.token();
                if token == "nil" {
                    Ok(Value::Nil)
                } else if let Ok(i) = token.parse::<i64>() {
                    Ok(Value::Int(i))
                } else if token.is_empty() {
                    Err(format!("unexpected character at column {column}"))
                } else {
                    Err(format!("cannot read {token:?} at column {column}"))
                }
            }
        }
    }

    fn string(&mut self) -> Result<Value, String> {
        let column = self.pos + 1;
        self.pos += 1; // the opening quote
        let mut out = String::new();
        let mut chars = self.s[self.pos..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(Value::Str(out));
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, 'r')) => out.push('\r'),
                    Some((_, c @ ('"' | '\\'))) => out.push(c),
                    Some((_, c)) => {
                        return Err(format!(
                            "unknown escape \\{c} in the string at column {column}"
                        ))
                    }
                    None => break,
                },
                c => out.push(c),
            }
        }
        Err(format!("unterminated string opened at column {column}"))
    }

    fn end(&mut self) -> Result<(), String> {
        self.skip_space();
        match self.peek() {
            None => Ok(()),
            Some(c) => Err(format!(
                "unexpected {c:?} at column {} after the end",
                self.pos + 1
            )),
        }
    }
}

/// Parses one whole value.
pub(crate) fn parse_value(s: &str) -> Result<Value, String> {
    let mut p = Parser { s, pos: 0 };
    let v = p.value()?;
    p.end()?;
    Ok(v)
}

/// Parses a flat map with keyword keys, `{:a 1, :b "x"}`, into (key without `:`, value) pairs
/// in order.
pub(crate) fn parse_map(s: &str) -> Result<Vec<(String, Value)>, String> {
    let mut p = Parser { s, pos: 0 };
    p.expect('{')?;
    let mut entries = Vec::new();
    loop {
        p.skip_space();
        if p.peek() == Some('}') {
            p.pos += 1;
            break;
        }
        let column = p.pos + 1;
        let key = match p.value()? {
            Value::Keyword(k) => k,
            other => {
                return Err(format!(
                    "expected a keyword key at column {column}, found {}",
                    other.kind()
                ))
            }
        };
        p.skip_space();
        if matches!(p.peek(), Some('}') | None) {
            return Err(format!("key :{key} has no value"));
        }
        entries.push((key, p.value()?));
    }
    p.end()?;
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_porcupine_and_jepsen_values() {
        let m =
            parse_map(r#"{:process 9, :type :invoke, :f :append, :key "0", :value "x 9 \"0\" y"}"#)
                .unwrap();
        assert_eq!(m[0], ("process".into(), Value::Int(9)));
        assert_eq!(m[2], ("f".into(), Value::Keyword("append".into())));
        assert_eq!(m[4], ("value".into(), Value::Str("x 9 \"0\" y".into())));
        assert_eq!(
            parse_value("[3 0]").unwrap(),
            Value::Vector(vec![Value::Int(3), Value::Int(0)])
        );
        assert_eq!(parse_value("nil").unwrap(), Value::Nil);
        assert_eq!(
            parse_value(":timed-out").unwrap(),
            Value::Keyword("timed-out".into())
        );
    }

    #[test]
    fn rejects_malformed_input_without_panicking() {
        for bad in [
            "{:a 1",
            "{:a}",
            "{1 2}",
            "{:a \"x}",
            "{:a 1} x",
            "",
            "{:a [1 2}",
            "{:a \"\\q\"}",
            "{:a 99999999999999999999}",
            "{:a é}",
        ] {
            assert!(parse_map(bad).is_err(), "{bad:?} should not parse");
        }
        for bad in ["[1", "", ":", "1 2", "\"é"] {
            assert!(parse_value(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
