//! The building blocks of generated configs: how often values are invalid,
//! one generated value and what it must cause, and the document being
//! written with its expected errors.

use std::fmt::Write as _;

use proptest::prelude::*;
use proptest::sample::select;

/// How often generated values are invalid.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Only valid values: the config must load.
    Clean,
    /// Now and then an invalid value.
    Rare,
    /// Many invalid values at once.
    Heavy,
}

impl Mode {
    /// Weights of (absent, valid, invalid value, wrong type). A wrong type
    /// drops its whole table, hiding the other errors in it, so it is rarer.
    pub fn weights(self) -> (u32, u32, u32, u32) {
        match self {
            Mode::Clean => (1, 1, 0, 0),
            Mode::Rare => (12, 12, 1, 0),
            Mode::Heavy => (6, 6, 6, 1),
        }
    }
}

/// One generated value: its TOML literal, whether validation must accept
/// it, whether it is a wrong type (which drops its whole table), and where
/// below its key an error is reported (`[0]` for a list element).
#[derive(Clone, Debug)]
pub struct Pick {
    pub lit: String,
    pub ok: bool,
    pub wrong_type: bool,
    pub suffix: String,
}

impl Pick {
    /// `spec` is a TOML literal; for an invalid value, a leading `!` marks
    /// a wrong type and a trailing `@SUFFIX` where the error is reported.
    pub fn new(spec: &str, ok: bool) -> Self {
        let (spec, wrong_type) = match spec.strip_prefix('!') {
            Some(rest) => (rest, true),
            None => (spec, false),
        };
        let (lit, suffix) = spec.split_once('@').unwrap_or((spec, ""));
        Pick {
            lit: lit.to_owned(),
            ok,
            wrong_type,
            suffix: suffix.to_owned(),
        }
    }

    pub fn int(&self) -> Option<i64> {
        self.lit.parse().ok()
    }
}

pub fn owned(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// The weighted choices among `valid` and `invalid` values (`!` marks a
/// wrong type), each wrapped by `wrap`.
pub fn choices<T: std::fmt::Debug + 'static>(
    m: Mode,
    valid: &[&str],
    invalid: &[&str],
    wrap: fn(Pick) -> T,
) -> Vec<(u32, BoxedStrategy<T>)> {
    let (_, wv, wi, wt) = m.weights();
    let (wrong, bad): (Vec<&str>, Vec<&str>) = invalid.iter().partition(|s| s.starts_with('!'));
    let mut out = Vec::new();
    for (weight, list, ok) in [
        (wv, owned(valid), true),
        (wi, owned(&bad), false),
        (wt, owned(&wrong), false),
    ] {
        if weight > 0 && !list.is_empty() {
            out.push((
                weight,
                select(list)
                    .prop_map(move |s| wrap(Pick::new(&s, ok)))
                    .boxed(),
            ));
        }
    }
    out
}

/// A value that is always written.
pub fn val(m: Mode, valid: &[&str], invalid: &[&str]) -> BoxedStrategy<Pick> {
    proptest::strategy::Union::new_weighted(choices(m, valid, invalid, |p| p)).boxed()
}

/// A key that may be left out.
pub fn key(m: Mode, valid: &[&str], invalid: &[&str]) -> BoxedStrategy<Option<Pick>> {
    let (wa, ..) = m.weights();
    let mut options = vec![(wa, Just(None).boxed())];
    options.extend(choices(m, valid, invalid, Some));
    proptest::strategy::Union::new_weighted(options).boxed()
}

/// An unknown key: absent, or now and then present (never in clean mode).
pub fn unknown(m: Mode) -> BoxedStrategy<Option<Pick>> {
    match m {
        Mode::Clean => Just(None).boxed(),
        _ => prop_oneof![30 => Just(None), 1 => Just(Some(Pick::new("!1", false)))].boxed(),
    }
}

/// Whether an optional table is written.
pub fn present() -> BoxedStrategy<bool> {
    prop_oneof![1 => Just(false), 2 => Just(true)].boxed()
}

pub const DUR_POSITIVE: &[&str] = &["\"1ms\"", "\"2s\"", "\"1h\"", "\"30days\""];
pub const DUR_ANY: &[&str] = &["\"0s\"", "\"1ms\"", "\"2s\"", "\"30days\""];
pub const DUR_BAD: &[&str] = &[
    "\"1000000000h\"",
    "\"31days\"",
    "\"soon\"",
    "\"99999999999999999999999h\"",
    "!5",
];
pub const DUR_BAD_OR_ZERO: &[&str] = &["\"0s\"", "\"1000000000h\"", "\"31days\"", "\"soon\"", "!5"];
pub const BOOL: &[&str] = &["true", "false"];

/// What a generated config must produce.
#[derive(Default, Debug)]
pub struct Expect {
    /// Paths at which an error must be reported.
    pub errors: Vec<String>,
    /// Tables dropped whole because of a wrong type; errors under them are
    /// not required.
    pub dropped: Vec<String>,
}

impl Expect {
    pub fn error(&mut self, path: impl Into<String>) {
        self.errors.push(path.into());
    }

    pub fn valid(&self) -> bool {
        self.errors.is_empty() && self.dropped.is_empty()
    }
}

/// Text and expectations, written section by section.
#[derive(Default, Debug)]
pub struct Doc {
    pub text: String,
    pub expect: Expect,
}

impl Doc {
    pub fn line(&mut self, line: &str) {
        self.text.push_str(line);
        self.text.push('\n');
    }

    /// Write `name = value` in the table at `table` (whose whole is dropped
    /// on a wrong type at `scope`) and record what the value must cause.
    pub fn key(&mut self, table: &str, scope: &str, name: &str, pick: &Option<Pick>) {
        let Some(pick) = pick else { return };
        let _ = writeln!(self.text, "{name} = {}", pick.lit);
        self.judge(&format!("{table}.{name}"), scope, pick);
    }

    pub fn judge(&mut self, path: &str, scope: &str, pick: &Pick) {
        if pick.wrong_type {
            self.expect.dropped.push(scope.to_owned());
        } else if !pick.ok {
            self.expect.error(format!("{path}{}", pick.suffix));
        }
    }
}
