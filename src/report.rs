//! The check report: one pass, warn or fail line per check, as text or JSON lines.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mark {
    Pass,
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub result: Mark,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

pub fn pass(name: &str, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        result: Mark::Pass,
        detail: detail.into(),
        hint: None,
    }
}

pub fn warn(name: &str, detail: impl Into<String>, hint: Option<String>) -> Check {
    Check {
        name: name.into(),
        result: Mark::Warn,
        detail: detail.into(),
        hint,
    }
}

pub fn fail(name: &str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        result: Mark::Fail,
        detail: detail.into(),
        hint: Some(hint.into()),
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn count(&self, m: Mark) -> usize {
        self.checks.iter().filter(|c| c.result == m).count()
    }

    pub fn failed(&self) -> bool {
        self.count(Mark::Fail) > 0
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let mark = match c.result {
                Mark::Pass => "[pass]",
                Mark::Warn => "[warn]",
                Mark::Fail => "[FAIL]",
            };
            out.push_str(&format!("{mark} {}: {}\n", c.name, c.detail));
            if let (Mark::Fail | Mark::Warn, Some(h)) = (c.result, &c.hint) {
                out.push_str(&format!("       hint: {h}\n"));
            }
        }
        let w = self.count(Mark::Warn);
        out.push_str(&format!(
            "{} passed, {w} warning{}, {} failed\n",
            self.count(Mark::Pass),
            if w == 1 { "" } else { "s" },
            self.count(Mark::Fail)
        ));
        out
    }

    /// One `check` event per line, then a summary, as the other commands' `-o json`.
    pub fn to_json_lines(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let mut v = serde_json::to_value(c).unwrap_or_default();
            if let Some(m) = v.as_object_mut() {
                m.insert("event".into(), "check".into());
            }
            out.push_str(&format!("{v}\n"));
        }
        let summary = serde_json::json!({
            "event": "summary",
            "result": if self.failed() { "fail" } else { "pass" },
            "passed": self.count(Mark::Pass),
            "warnings": self.count(Mark::Warn),
            "failed": self.count(Mark::Fail),
        });
        out.push_str(&format!("{summary}\n"));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_and_warnings_carry_their_hint_and_the_counts_close_the_text() {
        let r = Report {
            checks: vec![
                pass("a", "fine"),
                warn("b", "hmm", Some("look".into())),
                fail("c", "broken", "fix it"),
            ],
        };
        assert!(r.failed());
        let text = r.to_text();
        assert!(
            text.contains("[FAIL] c: broken\n       hint: fix it\n"),
            "{text}"
        );
        assert!(text.ends_with("1 passed, 1 warning, 1 failed\n"), "{text}");
        let json = r.to_json_lines();
        let last: serde_json::Value = serde_json::from_str(json.lines().last().unwrap()).unwrap();
        assert_eq!(last["result"], "fail");
        assert_eq!(json.lines().count(), 4);
    }
}
