//! Query-string parsing that names the parameter at fault: unknown and
//! repeated parameters are refused, and each value is parsed by its handler
//! through these helpers.

use std::collections::HashMap;

use super::error::ApiError;
use crate::vocab::clock::parse_time;

/// The parameters of one request, checked against the names a route accepts.
pub struct Params {
    values: HashMap<String, String>,
}

impl Params {
    /// Parses `query`, refusing names outside `allowed` and repeated names.
    pub fn parse(query: &str, allowed: &[&str]) -> Result<Params, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|e| ApiError::bad("query", format!("malformed query string: {e}")))?;
        let mut values = HashMap::new();
        for (k, v) in pairs {
            if !allowed.contains(&k.as_str()) {
                let takes = if allowed.is_empty() {
                    "takes no parameters".to_owned()
                } else {
                    format!("takes {}", allowed.join(", "))
                };
                return Err(ApiError::bad(
                    &k,
                    format!("unknown parameter `{k}`; this endpoint {takes}"),
                ));
            }
            if values.contains_key(&k) {
                return Err(ApiError::bad(&k, format!("parameter `{k}` given twice")));
            }
            values.insert(k, v);
        }
        Ok(Params { values })
    }

    /// A parameter's raw value; an empty value counts as absent.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// An integer within `min..=max`, or `default` when absent.
    pub fn int(&self, name: &str, default: u64, min: u64, max: u64) -> Result<u64, ApiError> {
        let Some(raw) = self.str(name) else {
            return Ok(default);
        };
        match raw.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad(
                name,
                format!("`{name}` must be an integer from {min} to {max}, not `{raw}`"),
            )),
        }
    }

    /// A timestamp: RFC 3339 or epoch milliseconds.
    pub fn time(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.str(name)
            .map(|raw| {
                parse_time(raw).ok_or_else(|| {
                    ApiError::bad(
                        name,
                        format!(
                            "`{name}` must be an RFC 3339 time or epoch milliseconds, not `{raw}`"
                        ),
                    )
                })
            })
            .transpose()
    }

    /// One of a fixed set of words.
    pub fn choice<'a>(
        &self,
        name: &str,
        choices: &[&'a str],
        default: &'a str,
    ) -> Result<&'a str, ApiError> {
        let Some(raw) = self.str(name) else {
            return Ok(default);
        };
        choices.iter().copied().find(|c| *c == raw).ok_or_else(|| {
            ApiError::bad(
                name,
                format!(
                    "`{name}` must be one of {}, not `{raw}`",
                    choices.join(", ")
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(e: ApiError) -> String {
        match e {
            ApiError::BadParameter { parameter, message } => format!("{parameter}: {message}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unknown_and_repeated_parameters_are_named() {
        let e = Params::parse("limt=5", &["limit"]).err().unwrap();
        assert!(msg(e).starts_with("limt:"));
        let e = Params::parse("limit=5&limit=6", &["limit"]).err().unwrap();
        assert!(msg(e).contains("twice"));
    }

    #[test]
    fn values_are_checked() {
        let p = Params::parse(
            "limit=0&from=yesterday&order=up",
            &["limit", "from", "order"],
        )
        .unwrap();
        assert!(msg(p.int("limit", 100, 1, 1000).unwrap_err()).starts_with("limit:"));
        assert!(msg(p.time("from").unwrap_err()).starts_with("from:"));
        assert!(
            msg(p.choice("order", &["asc", "desc"], "desc").unwrap_err()).starts_with("order:")
        );
        let p = Params::parse("limit=&to=1000", &["limit", "to"]).unwrap();
        assert_eq!(p.int("limit", 100, 1, 1000).unwrap(), 100);
        assert_eq!(p.time("to").unwrap(), Some(1000));
    }
}
