//! `--format` for the listing commands (images; ps and inspect use the same), in podman's
//! spelling: `json`, `table` (the command's default columns), `table {{.A}}\t{{.B}}` (a
//! header row made from the field names, then tab-aligned columns) and a plain template
//! `{{.A}} {{.B}}` (one line per row, nothing aligned).
//!
//! Data path: each row is any `serde::Serialize` value → `serde_json::Value` → fields
//! looked up by name (`.A.B` walks nested objects) → text. Only the small part of Go's
//! text/template that people use in `--format` is supported: `{{.Field}}`, `{{.}}`,
//! `{{json .}}`, `{{json .Field}}`, `{{upper .Field}}`, `{{lower .Field}}`. Written here
//! rather than taken from a crate because the template engines on crates.io (tera,
//! handlebars, minijinja) use another syntax, and users copy podman's format strings.

use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use serde_json::Value;

/// What `--format` asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A JSON array of the rows.
    Json,
    /// A template applied to each row; `table` adds a header and aligns the columns.
    Template { table: bool, template: Template },
}

impl Output {
    /// Parses `--format`. `default_table` is the command's own column template, used for
    /// `table` alone (and for `text`, the older spelling of the default).
    pub fn parse(spec: &str, default_table: &str) -> Result<Output> {
        let trimmed = spec.trim();
        if trimmed == "json" {
            return Ok(Output::Json);
        }
        if trimmed.is_empty() || trimmed == "table" || trimmed == "text" {
            return Ok(Output::Template {
                table: true,
                template: Template::parse(default_table)?,
            });
        }
        if let Some(rest) = trimmed.strip_prefix("table ") {
            return Ok(Output::Template {
                table: true,
                template: Template::parse(rest)?,
            });
        }
        if !spec.contains("{{") {
            bail!(
                "unsupported --format {spec:?}: use json, table, `table {{{{.Field}}}}\\t...` or a \
                 template such as `{{{{.Field}}}} {{{{.Other}}}}`"
            );
        }
        Ok(Output::Template {
            table: false,
            template: Template::parse(spec)?,
        })
    }

    /// Checks every field the template names against `sample` (one row, e.g. its
    /// `Default`), so that a typo fails even when there are no rows to print.
    pub fn check<T: Serialize>(&self, sample: &T) -> Result<()> {
        if let Output::Template { template, .. } = self {
            template.render(&serde_json::to_value(sample)?)?;
        }
        Ok(())
    }

    /// Formats `rows`. `headers` renames columns in a table's header row (podman's
    /// `{{.ID}}` heads a column `IMAGE ID` in `images`); other names are derived from the
    /// field: `RepoDigests` → `REPO DIGESTS`.
    pub fn render<T: Serialize>(&self, rows: &[T], headers: &[(&str, &str)]) -> Result<String> {
        match self {
            Output::Json => {
                let mut text = serde_json::to_string_pretty(rows)?;
                text.push('\n');
                Ok(text)
            }
            Output::Template { table, template } => {
                let mut lines = Vec::with_capacity(rows.len() + 1);
                if *table {
                    lines.push(template.header(headers));
                }
                for row in rows {
                    lines.push(template.render(&serde_json::to_value(row)?)?);
                }
                let mut text = if *table {
                    align(&lines)
                } else {
                    lines.join("\n")
                };
                if !lines.is_empty() {
                    text.push('\n');
                }
                Ok(text)
            }
        }
    }
}

/// A parsed template: literal text and `{{...}}` actions.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Field { func: Func, path: Vec<String> },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Func {
    Plain,
    Json,
    Upper,
    Lower,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            push_text(&mut parts, &rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| anyhow!("unclosed {{{{ in --format {text:?}"))?;
            parts.push(parse_action(after[..end].trim())?);
            rest = &after[end + 2..];
        }
        push_text(&mut parts, rest);
        Ok(Template { parts })
    }

    fn render(&self, row: &Value) -> Result<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field { func, path } => {
                    let value = lookup(row, path)?;
                    match func {
                        Func::Plain => out.push_str(&go_string(value)),
                        Func::Json => out.push_str(&serde_json::to_string(value)?),
                        Func::Upper => out.push_str(&go_string(value).to_uppercase()),
                        Func::Lower => out.push_str(&go_string(value).to_lowercase()),
                    }
                }
            }
        }
        Ok(out)
    }

    /// The header row: each action replaced by its column's name, text kept (so tabs
    /// still separate the columns).
    fn header(&self, renames: &[(&str, &str)]) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field { path, .. } => {
                    let name = path.last().map_or("", String::as_str);
                    match renames.iter().find(|(field, _)| *field == name) {
                        Some((_, header)) => out.push_str(header),
                        None if name.is_empty() => out.push_str("VALUE"),
                        None => out.push_str(&header_name(name)),
                    }
                }
            }
        }
        out
    }
}

/// Literal text, with the escapes people type in shell-quoted formats (`\t`, `\n`)
/// turned into the characters (as podman does).
fn push_text(parts: &mut Vec<Part>, text: &str) {
    if !text.is_empty() {
        parts.push(Part::Text(text.replace("\\t", "\t").replace("\\n", "\n")));
    }
}

fn parse_action(action: &str) -> Result<Part> {
    let unsupported = || {
        anyhow!(
            "unsupported --format action {{{{{action}}}}}: nook understands {{{{.Field}}}}, \
             {{{{.Field.Sub}}}}, {{{{.}}}}, {{{{json .Field}}}}, {{{{upper .Field}}}} and \
             {{{{lower .Field}}}}"
        )
    };
    let mut words = action.split_whitespace();
    let (func, arg) = match (words.next(), words.next(), words.next()) {
        (Some(arg), None, None) => (Func::Plain, arg),
        (Some("json"), Some(arg), None) => (Func::Json, arg),
        (Some("upper"), Some(arg), None) => (Func::Upper, arg),
        (Some("lower"), Some(arg), None) => (Func::Lower, arg),
        _ => return Err(unsupported()),
    };
    let Some(path) = arg.strip_prefix('.') else {
        return Err(unsupported());
    };
    let path: Vec<String> = if path.is_empty() {
        Vec::new()
    } else {
        path.split('.').map(str::to_string).collect()
    };
    if path.iter().any(String::is_empty) {
        return Err(unsupported());
    }
    Ok(Part::Field { func, path })
}

/// Walks `.A.B` down from the row; a missing name is an error listing the names there.
fn lookup<'v>(row: &'v Value, path: &[String]) -> Result<&'v Value> {
    let mut value = row;
    for (i, name) in path.iter().enumerate() {
        value = match value {
            Value::Object(map) => map.get(name).ok_or_else(|| {
                let mut known: Vec<&str> = map.keys().map(String::as_str).collect();
                known.sort_unstable();
                anyhow!(
                    "--format: no field {:?}; valid fields{}: {}",
                    path[..=i].join("."),
                    if i == 0 {
                        String::new()
                    } else {
                        format!(" of .{}", path[..i].join("."))
                    },
                    known
                        .iter()
                        .map(|k| format!(".{k}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?,
            // Go prints nothing useful for a field of nil either; an empty cell is kinder
            // than an error for optional data.
            Value::Null => return Ok(&Value::Null),
            _ => bail!(
                "--format: .{} is not an object, it has no field {name:?}",
                path[..i].join(".")
            ),
        };
    }
    Ok(value)
}

/// A value as Go's templates print it: strings bare, lists as `[a b]`, objects as JSON.
fn go_string(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(go_string).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(_) => value.to_string(),
    }
}

/// `RepoDigests` → `REPO DIGESTS`, `ID` → `ID`, `CreatedAt` → `CREATED AT`.
fn header_name(field: &str) -> String {
    let chars: Vec<char> = field.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let starts_word = i > 0
            && c.is_uppercase()
            && (chars[i - 1].is_lowercase()
                || chars.get(i + 1).is_some_and(|n| n.is_lowercase()) && chars[i - 1] != ' ');
        if starts_word && !out.ends_with(' ') {
            out.push(' ');
        }
        out.extend(c.to_uppercase());
    }
    out
}

/// Tab-separated cells → columns padded to their widest cell plus two spaces (the
/// last column is not padded).
fn align(lines: &[String]) -> String {
    let rows: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let mut widths: Vec<usize> = Vec::new();
    for row in &rows {
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            let w = cell.chars().count();
            match widths.get_mut(i) {
                Some(max) => *max = (*max).max(w),
                None => widths.push(w),
            }
        }
    }
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count() + 2;
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push(line.trim_end().to_string());
    }
    out.join("\n")
}

/// `inspect --format`: JSON (the default), or a template applied to each object.
pub fn print_inspected(objects: &[serde_json::Value], format: Option<&str>) -> Result<i32> {
    match format {
        None | Some("json") => println!("{}", serde_json::to_string_pretty(objects)?),
        Some(template) => {
            let output = Output::parse(template, "")?;
            print!("{}", output.render(objects, &[])?);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Default)]
    #[serde(rename_all = "PascalCase")]
    struct Row {
        repository: String,
        tag: String,
        size: u64,
        names: Vec<String>,
        config: Inner,
    }

    #[derive(Serialize, Default)]
    #[serde(rename_all = "PascalCase")]
    struct Inner {
        user: String,
    }

    fn rows() -> Vec<Row> {
        vec![
            Row {
                repository: "docker.io/library/alpine".into(),
                tag: "latest".into(),
                size: 7_800_000,
                names: vec!["a".into(), "b".into()],
                config: Inner {
                    user: "root".into(),
                },
            },
            Row {
                repository: "x".into(),
                tag: "v1".into(),
                size: 1,
                names: vec![],
                config: Inner::default(),
            },
        ]
    }

    const DEFAULT: &str = "table {{.Repository}}\t{{.Tag}}\t{{.Size}}";

    fn render(spec: &str) -> Result<String> {
        Output::parse(spec, DEFAULT.strip_prefix("table ").unwrap())?.render(&rows(), &[])
    }

    #[test]
    fn plain_template_one_line_per_row() {
        assert_eq!(
            render("{{.Repository}}:{{.Tag}} {{ .Size }}").unwrap(),
            "docker.io/library/alpine:latest 7800000\nx:v1 1\n"
        );
    }

    #[test]
    fn table_has_header_and_aligned_columns() {
        let text = render(r"table {{.Tag}}\t{{.Repository}}\t{{.Size}}").unwrap();
        assert_eq!(
            text,
            "TAG     REPOSITORY                SIZE\n\
             latest  docker.io/library/alpine  7800000\n\
             v1      x                         1\n"
        );
        // `table` alone is the command's default columns; so is the old `text`.
        assert_eq!(render("table").unwrap(), render(DEFAULT).unwrap());
        assert_eq!(render("text").unwrap(), render(DEFAULT).unwrap());
    }

    #[test]
    fn header_renames_and_derived_names() {
        let out = Output::parse("table {{.Tag}}\t{{.Config.User}}", "").unwrap();
        let text = out.render(&rows(), &[("Tag", "IMAGE TAG")]).unwrap();
        assert!(text.starts_with("IMAGE TAG  USER\n"), "{text}");
        assert_eq!(header_name("RepoDigests"), "REPO DIGESTS");
        assert_eq!(header_name("ID"), "ID");
        assert_eq!(header_name("CreatedAt"), "CREATED AT");
        assert_eq!(header_name("IPAddress"), "IP ADDRESS");
    }

    #[test]
    fn json_functions_nested_and_case() {
        assert_eq!(
            render(
                "{{json .Names}} {{.Names}} {{.Config.User}} {{upper .Tag}} {{lower .Repository}}"
            )
            .unwrap()
            .lines()
            .next()
            .unwrap(),
            r#"["a","b"] [a b] root LATEST docker.io/library/alpine"#
        );
        let whole = render("{{json .}}").unwrap();
        let first: Value = serde_json::from_str(whole.lines().next().unwrap()).unwrap();
        assert_eq!(first["Config"]["User"], "root");
    }

    #[test]
    fn json_output_is_an_array() {
        let text = render("json").unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(v[1]["Tag"], "v1");
    }

    #[test]
    fn unknown_field_lists_valid_ones() {
        let err = render("{{.Nope}}").unwrap_err().to_string();
        assert!(err.contains("\"Nope\""), "{err}");
        assert!(
            err.contains(".Config, .Names, .Repository, .Size, .Tag"),
            "{err}"
        );
        let err = render("{{.Config.Nope}}").unwrap_err().to_string();
        assert!(err.contains("of .Config") && err.contains(".User"), "{err}");
        // Caught without rows too.
        let out = Output::parse("{{.Nope}}", "").unwrap();
        assert!(out.check(&Row::default()).is_err());
        assert!(Output::parse("{{.Tag}}", "")
            .unwrap()
            .check(&Row::default())
            .is_ok());
    }

    #[test]
    fn bad_templates_are_errors() {
        for bad in ["{{.Tag", "{{range .Names}}", "{{Tag}}", "{{.A..B}}", "yaml"] {
            assert!(render(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn empty_list_prints_header_only_for_tables() {
        let none: Vec<Row> = Vec::new();
        let table = Output::parse("table", "{{.Tag}}").unwrap();
        assert_eq!(table.render(&none, &[]).unwrap(), "TAG\n");
        let plain = Output::parse("{{.Tag}}", "").unwrap();
        assert_eq!(plain.render(&none, &[]).unwrap(), "");
    }
}
