//! Just enough of Datadog's query languages to find what a template queries: metric queries
//! (`sum:clawdstrike.events.denied{env:production} by {guard}.as_count()`), log searches
//! (`service:clawdstrike @security.guard:(a OR b)`) and monitor queries (`... > 100`,
//! `logs("...").index("*").rollup("count").last("5m") > 0`).

/// The space aggregators of a metric query.
const SPACE_AGGREGATORS: &[&str] = &[
    "avg", "sum", "min", "max", "count", "p50", "p75", "p90", "p95", "p99",
];

/// One metric a query reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MetricRef {
    pub(crate) aggregator: String,
    pub(crate) name: String,
    /// Tag keys in the `{...}` filter.
    pub(crate) filter_keys: Vec<String>,
    /// The `key:value` terms of the filter (not `IN` lists).
    pub(crate) filter_values: Vec<(String, String)>,
    /// Tag keys in `by {...}`.
    pub(crate) group_keys: Vec<String>,
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

/// Every `aggregator:metric{filter} by {groups}` in `query`.
pub(crate) fn metric_refs(query: &str) -> Vec<MetricRef> {
    let chars: Vec<char> = query.chars().collect();
    let mut refs = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if i > 0 && is_word(chars[i - 1]) {
            i += 1;
            continue;
        }
        let Some(aggregator) = SPACE_AGGREGATORS.iter().find(|agg| {
            let end = i + agg.len();
            end < chars.len() && chars[i..end].iter().copied().eq(agg.chars()) && chars[end] == ':'
        }) else {
            i += 1;
            continue;
        };
        let mut j = i + aggregator.len() + 1;
        let start = j;
        while j < chars.len() && is_word(chars[j]) {
            j += 1;
        }
        let name: String = chars[start..j].iter().collect();
        if name.is_empty() {
            i = j;
            continue;
        }
        let mut filter_keys = Vec::new();
        let mut filter_values = Vec::new();
        let mut group_keys = Vec::new();
        if chars.get(j) == Some(&'{') {
            let close = chars[j..]
                .iter()
                .position(|&c| c == '}')
                .map_or(chars.len(), |p| j + p);
            let filter: String = chars[j + 1..close].iter().collect();
            (filter_keys, filter_values) = filter_tag_keys(&filter);
            j = close + 1;
            let mut k = j;
            while k < chars.len() && chars[k] == ' ' {
                k += 1;
            }
            let rest: String = chars[k..].iter().take(3).collect();
            if rest == "by " || rest == "by{" {
                k += 2;
                while k < chars.len() && chars[k] == ' ' {
                    k += 1;
                }
                if chars.get(k) == Some(&'{') {
                    let close = chars[k..]
                        .iter()
                        .position(|&c| c == '}')
                        .map_or(chars.len(), |p| k + p);
                    let groups: String = chars[k + 1..close].iter().collect();
                    group_keys = groups
                        .split(',')
                        .map(|g| g.trim().to_owned())
                        .filter(|g| !g.is_empty())
                        .collect();
                    j = close + 1;
                }
            }
        }
        refs.push(MetricRef {
            aggregator: (*aggregator).to_owned(),
            name,
            filter_keys,
            filter_values,
            group_keys,
        });
        i = j;
    }
    refs
}

/// The tag keys a metric filter (`env:prod,!status_code:202`, `guard IN (a,b)`) uses, and its
/// `key:value` terms.
fn filter_tag_keys(filter: &str) -> (Vec<String>, Vec<(String, String)>) {
    let tokens: Vec<&str> = filter.split([',', ' ']).filter(|t| !t.is_empty()).collect();
    let mut keys = Vec::new();
    let mut values = Vec::new();
    for (n, token) in tokens.iter().enumerate() {
        let token = token
            .trim_start_matches(['!', '(', '-'])
            .trim_end_matches(')');
        if token.is_empty()
            || token == "*"
            || token.starts_with('$')
            || ["AND", "OR", "NOT", "IN"].contains(&token)
        {
            continue;
        }
        if let Some((key, value)) = token.split_once(':') {
            keys.push(key.to_owned());
            values.push((key.to_owned(), value.to_owned()));
        } else if matches!(tokens.get(n + 1), Some(&"IN" | &"NOT")) {
            keys.push(token.to_owned());
        }
    }
    (keys, values)
}

/// The literal values of a search term's value: `(a OR "b c")` gives `a` and `b c`; none for
/// wildcards, ranges and template placeholders, which are not compared.
pub(crate) fn literal_values(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = value.trim();
    let grouped = rest.starts_with('(') && rest.ends_with(')');
    if grouped {
        rest = &rest[1..rest.len() - 1];
    }
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in rest.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c.is_whitespace() && !quoted && grouped => {
                parts.push(std::mem::take(&mut current));
            }
            c => current.push(c),
        }
    }
    parts.push(current);
    for part in parts {
        let part = part.trim();
        if part.is_empty() || ["OR", "AND", "NOT"].contains(&part) {
            continue;
        }
        let part = part.trim_start_matches(['-', '!']).trim_matches('"');
        if part.contains(['*', '?', '[', ']', '$', '{', '}']) || part.is_empty() {
            continue;
        }
        out.push(part.to_owned());
    }
    out
}

/// One `key:value` term of a log search. `key` keeps its `@` (an attribute) or has none (a
/// reserved key or a tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SearchTerm {
    pub(crate) key: String,
    pub(crate) value: String,
}

/// Every `key:value` term of a log search.
pub(crate) fn search_terms(query: &str) -> Vec<SearchTerm> {
    let chars: Vec<char> = query.chars().collect();
    let mut terms = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() || c == '(' || c == ')' || c == '-' || c == '!' {
            i += 1;
            continue;
        }
        if c == '"' {
            i = skip_quoted(&chars, i);
            continue;
        }
        let start = i;
        while i < chars.len()
            && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '@' | '_' | '.' | '-'))
        {
            i += 1;
        }
        if i < chars.len() && chars[i] == ':' && i > start {
            let key: String = chars[start..i].iter().collect();
            i += 1;
            let value_start = i;
            if chars.get(i) == Some(&'(') {
                let mut depth = 0;
                while i < chars.len() {
                    match chars[i] {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                        '"' => {
                            i = skip_quoted(&chars, i);
                            continue;
                        }
                        _ => {}
                    }
                    i += 1;
                }
            } else if chars.get(i) == Some(&'"') {
                i = skip_quoted(&chars, i);
            } else {
                while i < chars.len() && !chars[i].is_whitespace() && chars[i] != ')' {
                    i += 1;
                }
            }
            let value: String = chars[value_start..i].iter().collect();
            terms.push(SearchTerm { key, value });
        } else {
            // Free text (or a word): skip to the next separator.
            while i < chars.len() && !chars[i].is_whitespace() && chars[i] != ')' {
                i += 1;
            }
            if i == start {
                i += 1;
            }
        }
    }
    terms
}

fn skip_quoted(chars: &[char], start: usize) -> usize {
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    chars.len()
}

/// A monitor's comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Comparator {
    Above,
    AboveOrEqual,
    Below,
    BelowOrEqual,
    Equal,
    NotEqual,
}

impl Comparator {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Comparator::Above => ">",
            Comparator::AboveOrEqual => ">=",
            Comparator::Below => "<",
            Comparator::BelowOrEqual => "<=",
            Comparator::Equal => "==",
            Comparator::NotEqual => "!=",
        }
    }

    /// Whether the alert fires on high values (`>`, `>=`).
    pub(crate) fn fires_above(self) -> Option<bool> {
        match self {
            Comparator::Above | Comparator::AboveOrEqual => Some(true),
            Comparator::Below | Comparator::BelowOrEqual => Some(false),
            Comparator::Equal | Comparator::NotEqual => None,
        }
    }
}

/// Splits `left <op> number` at its last top-level comparison (outside quotes, parentheses
/// and braces).
pub(crate) fn split_comparison(query: &str) -> Option<(String, Comparator, f64)> {
    let chars: Vec<char> = query.chars().collect();
    let mut depth = 0i32;
    let mut last = None;
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '"' => {
                i = skip_quoted(&chars, i);
                continue;
            }
            '(' | '{' => depth += 1,
            ')' | '}' => depth -= 1,
            '>' | '<' | '=' | '!' if depth == 0 => {
                let next = chars.get(i + 1).copied();
                let (cmp, width) = match (chars[i], next) {
                    ('>', Some('=')) => (Some(Comparator::AboveOrEqual), 2),
                    ('<', Some('=')) => (Some(Comparator::BelowOrEqual), 2),
                    ('=', Some('=')) => (Some(Comparator::Equal), 2),
                    ('!', Some('=')) => (Some(Comparator::NotEqual), 2),
                    ('>', _) => (Some(Comparator::Above), 1),
                    ('<', _) => (Some(Comparator::Below), 1),
                    _ => (None, 1),
                };
                if let Some(cmp) = cmp {
                    last = Some((i, cmp, width));
                }
                i += width;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    let (at, cmp, width) = last?;
    let left: String = chars[..at].iter().collect();
    let right: String = chars[at + width..].iter().collect();
    let threshold = right.trim().parse::<f64>().ok()?;
    Some((left.trim().to_owned(), cmp, threshold))
}

/// The parts of a log monitor query `logs("<search>").index(..).rollup(..).by(..).last(..)`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LogMonitorQuery {
    pub(crate) search: String,
    /// Facets of `rollup("cardinality", "@x")` and `by("@a,@b")`.
    pub(crate) facets: Vec<String>,
}

const ROLLUPS: &[&str] = &[
    "count",
    "cardinality",
    "sum",
    "avg",
    "min",
    "max",
    "median",
    "pc75",
    "pc90",
    "pc95",
    "pc98",
    "pc99",
];

/// Parses the left side of a log monitor query.
pub(crate) fn parse_log_monitor(left: &str) -> Result<LogMonitorQuery, String> {
    let chars: Vec<char> = left.chars().collect();
    let prefix: Vec<char> = "logs(\"".chars().collect();
    if !chars.starts_with(&prefix) {
        return Err("a log monitor query starts with `logs(\"<search>\")`".to_owned());
    }
    let end = skip_quoted(&chars, prefix.len() - 1);
    let search: String = chars[prefix.len()..end.saturating_sub(1)]
        .iter()
        .collect::<String>()
        .replace("\\\"", "\"");
    if chars.get(end) != Some(&')') {
        return Err("`logs(\"<search>\")` is not closed".to_owned());
    }
    let mut i = end + 1;
    let mut facets = Vec::new();
    let mut rollup = None;
    let mut last = None;
    while i < chars.len() {
        if chars[i] != '.' {
            return Err(format!("expected `.method(...)` at column {}", i + 1));
        }
        let open = chars[i..]
            .iter()
            .position(|&c| c == '(')
            .map(|p| i + p)
            .ok_or("a method call has no `(`")?;
        let method: String = chars[i + 1..open].iter().collect();
        let mut args = Vec::new();
        let mut j = open + 1;
        loop {
            while j < chars.len() && (chars[j] == ' ' || chars[j] == ',') {
                j += 1;
            }
            match chars.get(j) {
                Some('"') => {
                    let close = skip_quoted(&chars, j);
                    args.push(chars[j + 1..close - 1].iter().collect::<String>());
                    j = close;
                }
                Some(')') => {
                    j += 1;
                    break;
                }
                _ => return Err(format!("malformed arguments of `.{method}(...)`")),
            }
        }
        match method.as_str() {
            "index" => {}
            "rollup" => {
                let Some(first) = args.first() else {
                    return Err("`.rollup()` needs a method".to_owned());
                };
                if !ROLLUPS.contains(&first.as_str()) {
                    return Err(format!(
                        "unknown rollup `{first}`, expected one of {}",
                        ROLLUPS.join(", ")
                    ));
                }
                facets.extend(args.iter().skip(1).cloned());
                rollup = Some(first.clone());
            }
            "by" => facets.extend(
                args.iter()
                    .flat_map(|a| a.split(',').map(|f| f.trim().to_owned())),
            ),
            "last" => {
                let window = args.first().cloned().unwrap_or_default();
                let digits = window.trim_end_matches(['m', 'h', 'd']);
                if digits.is_empty()
                    || digits.len() == window.len()
                    || digits.parse::<u32>().is_err()
                {
                    return Err(format!(
                        "`.last(\"{window}\")` needs a window like \"5m\", \"1h\" or \"1d\""
                    ));
                }
                last = Some(window);
            }
            other => return Err(format!("unknown log monitor method `.{other}()`")),
        }
        i = j;
    }
    if rollup.is_none() {
        return Err(
            "a log monitor query needs `.rollup(\"count\")` (or another rollup)".to_owned(),
        );
    }
    if last.is_none() {
        return Err("a log monitor query needs `.last(\"5m\")` (its evaluation window)".to_owned());
    }
    Ok(LogMonitorQuery { search, facets })
}

/// The time aggregations a metric monitor query starts with (`avg(last_5m):`).
const TIME_AGGREGATIONS: &[&str] = &[
    "avg(",
    "sum(",
    "min(",
    "max(",
    "change(",
    "pct_change(",
    "percentile(",
];

/// Checks the `time_aggr(time_window):` head of a metric monitor query.
pub(crate) fn check_metric_monitor_head(left: &str) -> Result<(), String> {
    let ok = TIME_AGGREGATIONS.iter().any(|agg| left.starts_with(agg))
        && left.contains("):")
        && left.contains("last_");
    if ok {
        Ok(())
    } else {
        Err("a metric monitor query starts with a time aggregation over a window, like `avg(last_5m):`".to_owned())
    }
}

/// A composite monitor's query: monitor ids joined by `&&` and `||`, with `!` and parentheses
/// (`12345 && !(67890 || 13579)`).
pub(crate) fn check_composite(query: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "a composite query is monitor ids joined by `&&` and `||`, with `!` and parentheses: {why}"
        ))
    };
    let text = query.as_bytes();
    let (mut i, mut depth, mut want_operand) = (0, 0usize, true);
    while i < text.len() {
        match text[i] {
            b' ' | b'\t' | b'\n' => i += 1,
            b'0'..=b'9' if want_operand => {
                while i < text.len() && text[i].is_ascii_digit() {
                    i += 1;
                }
                want_operand = false;
            }
            b'!' if want_operand => i += 1,
            b'(' if want_operand => {
                depth += 1;
                i += 1;
            }
            b')' if !want_operand && depth > 0 => {
                depth -= 1;
                i += 1;
            }
            b'&' | b'|' if !want_operand && text.get(i + 1) == Some(&text[i]) => {
                want_operand = true;
                i += 2;
            }
            _ => {
                return bad(&format!(
                    "unexpected `{}` at {}",
                    query[i..].chars().next().unwrap_or(' '),
                    i + 1
                ));
            }
        }
    }
    if want_operand {
        return bad("it ends without a monitor id");
    }
    if depth > 0 {
        return bad("a parenthesis is not closed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_refs_find_names_filters_and_groups() {
        let refs = metric_refs(
            "avg(last_5m):100 * avg:p.exporter.queue.depth{env:prod,!status_code:202} by {exporter} / max:p.b{*}",
        );
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[0].name, "p.exporter.queue.depth");
        assert_eq!(refs[0].filter_keys, ["env", "status_code"]);
        assert_eq!(refs[0].group_keys, ["exporter"]);
        assert_eq!(refs[1].aggregator, "max");
        assert!(refs[1].filter_keys.is_empty());
        let refs = metric_refs(
            "top(sum:a.b{guard IN (x,y) AND env:z} by {severity,guard}.as_count(), 5, 'sum', 'desc')",
        );
        assert_eq!(refs[0].filter_keys, ["guard", "env"]);
        assert_eq!(refs[0].group_keys, ["severity", "guard"]);
    }

    #[test]
    fn search_terms_find_keys() {
        let terms = search_terms(
            "service:x -@security.guard:(a OR b) \"free: text\" status:critical word @a.b:\"q r\"",
        );
        let keys: Vec<&str> = terms.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["service", "@security.guard", "status", "@a.b"]);
        assert_eq!(terms[1].value, "(a OR b)");
    }

    #[test]
    fn monitor_queries_split_and_parse() {
        let (left, cmp, n) = split_comparison("sum(last_5m):sum:a{x:y}.as_count() >= 10").unwrap();
        assert_eq!(
            (left.as_str(), cmp, n),
            (
                "sum(last_5m):sum:a{x:y}.as_count()",
                Comparator::AboveOrEqual,
                10.0
            )
        );
        let (left, _, _) = split_comparison(
            "logs(\"a:b > 3\").index(\"*\").rollup(\"count\").by(\"@x,@y\").last(\"5m\") > 0",
        )
        .unwrap();
        let parsed = parse_log_monitor(&left).unwrap();
        assert_eq!(parsed.search, "a:b > 3");
        assert_eq!(parsed.facets, ["@x", "@y"]);
        assert!(
            parse_log_monitor("logs(\"a\").index(\"*\").last(\"5m\")")
                .unwrap_err()
                .contains("rollup")
        );
        assert!(check_metric_monitor_head("sum:a{*}").is_err());
    }
}
