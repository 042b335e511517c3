//! The Prometheus text exposition that sipfront's `/metrics` serves: the one parser the tests
//! and benches share, and sums over matching series.

use std::collections::BTreeMap;

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the Prometheus text format (comments skipped; timestamps ignored).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => (&line[..i], &line[i..]),
            None => continue,
        };
        let mut labels = BTreeMap::new();
        let rest = if let Some(r) = rest.strip_prefix('{') {
            // label="value",... with \" \\ \n escapes inside values
            let mut chars = r.char_indices().peekable();
            let mut end = r.len();
            loop {
                while let Some(&(_, c)) = chars.peek() {
                    if c == ',' || c == ' ' {
                        chars.next();
                    } else {
                        break;
                    }
                }
                match chars.peek() {
                    Some(&(i, '}')) => {
                        end = i + 1;
                        break;
                    }
                    None => break,
                    _ => {}
                }
                let mut key = String::new();
                for (_, c) in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    key.push(c);
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    break;
                }
                let mut val = String::new();
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next().map(|(_, c)| c) {
                            Some('n') => val.push('\n'),
                            Some(o) => val.push(o),
                            None => break,
                        },
                        '"' => break,
                        o => val.push(o),
                    }
                }
                labels.insert(key.trim().to_string(), val);
            }
            &r[end.min(r.len())..]
        } else {
            rest
        };
        let Some(v) = rest.split_whitespace().next() else {
            continue;
        };
        let value = match v {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => match v.parse() {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

/// Sum of the samples called `name` whose labels include all of `labels` (so an empty or
/// partial label list adds up several series); 0 if there is none.
/// `metric(text, "sipfront_drops_total", &[("reason", "not_sip")])`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    find_metric(text, name, labels).unwrap_or(0.0)
}

/// Like [`metric`], `None` when no sample matches (the metric is not published yet).
pub fn find_metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    parse_metrics(text)
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .reduce(|a, b| a + b)
}

/// Whether any sample called `name` is present at all.
pub fn has_metric(text: &str, name: &str) -> bool {
    parse_metrics(text).iter().any(|s| s.name == name)
}

/// All `sipfront_drops_total` samples with a non-zero value, as `reason -> count`.
pub fn nonzero_drops(text: &str) -> BTreeMap<String, f64> {
    parse_metrics(text)
        .into_iter()
        .filter(|s| s.name == "sipfront_drops_total" && s.value != 0.0)
        .map(|s| (s.labels.get("reason").cloned().unwrap_or_default(), s.value))
        .collect()
}
