//! Model-name patterns (globs) with fast paths for the common shapes.

use std::fmt;

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A glob over model names: `*`, `gpt-4o*`, `claude-*-sonnet`, `o[13]*`. Most patterns are an exact name, a
/// prefix or `*`: those skip the glob engine.
#[derive(Clone)]
pub struct ModelPattern {
    raw: Box<str>,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Any,
    Exact,
    Prefix(Box<str>),
    Glob(GlobMatcher),
}

/// An invalid glob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid model pattern {pattern:?}: {reason}")]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// Why it does not compile.
    pub reason: String,
}

impl ModelPattern {
    /// Compiles a pattern.
    pub fn new(raw: &str) -> Result<Self, PatternError> {
        let err = |reason: String| PatternError { pattern: raw.to_string(), reason };
        if raw.is_empty() {
            return Err(err("empty pattern".into()));
        }
        let is_meta = |c: char| matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\');
        let kind = if raw == "*" {
            Kind::Any
        } else if !raw.contains(is_meta) {
            Kind::Exact
        } else if let Some(p) = raw.strip_suffix('*').filter(|p| !p.contains(is_meta)) {
            Kind::Prefix(p.into())
        } else {
            let g = Glob::new(raw).map_err(|e| err(e.kind().to_string()))?;
            Kind::Glob(g.compile_matcher())
        };
        Ok(Self { raw: raw.into(), kind })
    }

    /// Whether `model` matches.
    pub fn matches(&self, model: &str) -> bool {
        match &self.kind {
            Kind::Any => true,
            Kind::Exact => &*self.raw == model,
            Kind::Prefix(p) => model.starts_with(&**p),
            Kind::Glob(g) => g.is_match(model),
        }
    }

    /// Whether this pattern names exactly one model (no wildcard).
    pub fn is_exact(&self) -> bool {
        matches!(self.kind, Kind::Exact)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Conservative test that every name matched by `self` is matched by `other` (used to refuse widening).
    /// Exact: true only when provable from the shapes (`*` covers all, a prefix covers longer prefixes and
    /// exact names); a general glob is covered only by `*` or an identical pattern.
    pub fn is_covered_by(&self, other: &ModelPattern) -> bool {
        match (&self.kind, &other.kind) {
            (_, Kind::Any) => true,
            (Kind::Exact, _) => other.matches(&self.raw),
            (Kind::Prefix(a), Kind::Prefix(b)) => a.starts_with(&**b),
            _ => self.raw == other.raw,
        }
    }
}

impl PartialEq for ModelPattern {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}
impl Eq for ModelPattern {}

impl fmt::Debug for ModelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.raw, f)
    }
}

impl fmt::Display for ModelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl Serialize for ModelPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for ModelPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ModelPattern::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_match() {
        let p = |s| ModelPattern::new(s).unwrap();
        assert!(p("*").matches("anything"));
        assert!(p("gpt-4o").matches("gpt-4o") && !p("gpt-4o").matches("gpt-4o-mini"));
        assert!(p("gpt-4o*").matches("gpt-4o-mini") && !p("gpt-4o*").matches("gpt-5"));
        assert!(p("claude-*-sonnet").matches("claude-3-5-sonnet") && !p("claude-*-sonnet").matches("claude-3-opus"));
        assert!(p("o[13]*").matches("o1-mini") && p("o[13]*").matches("o3") && !p("o[13]*").matches("o4"));
        assert!(ModelPattern::new("[").is_err());
        assert!(ModelPattern::new("").is_err());
    }

    #[test]
    fn coverage_is_conservative() {
        let p = |s| ModelPattern::new(s).unwrap();
        assert!(p("gpt-4o-mini").is_covered_by(&p("gpt-4o*")));
        assert!(p("gpt-4o*").is_covered_by(&p("gpt-*")));
        assert!(!p("gpt-*").is_covered_by(&p("gpt-4o*")));
        assert!(p("claude-*-sonnet").is_covered_by(&p("*")));
        assert!(!p("claude-*-sonnet").is_covered_by(&p("claude-*")));
    }
}
