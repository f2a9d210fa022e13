//! `--config FILE` (env `CRIER_CONFIG`): a TOML file of settings under the
//! command line and the environment. Keys are the flags' names without `--`
//! (`durable-ack = false`, `cors-origin = ["https://a", "https://b"]`).
//!
//! Precedence is flag > environment > file > default. clap already layers the
//! first, second and last and tells where each value came from
//! ([`ArgMatches::value_source`]); a key of the file is used only where clap
//! fell back to the default, by parsing again with the file's values added as
//! flags. So every value, from wherever it comes, goes through the same parser
//! and checks. An unknown key is an error that names the key and the file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command, Parser};

/// The id of the `--config` argument every binary has.
pub const CONFIG_ARG: &str = "config";

/// Parses the process's arguments, environment and configuration file, or
/// prints why not and exits (as clap does for a bad flag).
pub fn parse<C: Parser>() -> C {
    match parse_from(std::env::args_os()) {
        Ok(config) => config,
        Err(e) => e.exit(),
    }
}

/// Like [`parse`], from these arguments.
pub fn parse_from<C, I, T>(args: I) -> Result<C, clap::Error>
where
    C: Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut command = C::command();
    let matches = command.try_get_matches_from_mut(args.clone())?;
    let Some(file) = matches.get_one::<PathBuf>(CONFIG_ARG).cloned() else {
        return C::from_arg_matches(&matches);
    };
    let from_file = flags_from_file(&command, &matches, &file)
        .map_err(|message| command.error(clap::error::ErrorKind::InvalidValue, message))?;
    let all = args.into_iter().chain(from_file);
    let matches = command.try_get_matches_from_mut(all).map_err(|e| {
        let rendered = e.render().to_string();
        let why = rendered.lines().next().unwrap_or_default();
        let why = why.trim_start_matches("error: ");
        command.error(e.kind(), format!("in {}: {why}", file.display()))
    })?;
    C::from_arg_matches(&matches)
}

/// The file's settings as flags, for the arguments clap left at their default.
fn flags_from_file(
    command: &Command,
    matches: &ArgMatches,
    file: &Path,
) -> Result<Vec<OsString>, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the configuration file {}: {e}", file.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("{} is not valid TOML: {e}", file.display()))?;
    let mut flags = Vec::new();
    for (key, value) in &table {
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(key.as_str()) && arg.get_id() != CONFIG_ARG)
            .ok_or_else(|| format!("unknown key `{key}` in {}", file.display()))?;
        let explicit = matches!(
            matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if !explicit {
            let values =
                values_of(value).map_err(|why| format!("`{key}` in {}: {why}", file.display()))?;
            flags.extend(as_flags(key, arg.get_action(), values));
        }
    }
    Ok(flags)
}

/// A key's value as the strings a flag would take.
fn values_of(value: &toml::Value) -> Result<Vec<String>, String> {
    match value {
        toml::Value::String(text) => Ok(vec![text.clone()]),
        toml::Value::Integer(number) => Ok(vec![number.to_string()]),
        toml::Value::Float(number) => Ok(vec![number.to_string()]),
        toml::Value::Boolean(flag) => Ok(vec![flag.to_string()]),
        toml::Value::Array(items) => items.iter().try_fold(Vec::new(), |mut all, item| {
            match item {
                toml::Value::Array(_) | toml::Value::Table(_) => {
                    return Err("a list holds strings, numbers or booleans".to_string());
                }
                item => all.extend(values_of(item)?),
            }
            Ok(all)
        }),
        toml::Value::Datetime(datetime) => Ok(vec![datetime.to_string()]),
        toml::Value::Table(_) => Err("a value, not a table".to_string()),
    }
}

/// `--key=value` for each value; a switch (`--subscribe-all`) only when true.
fn as_flags(key: &str, action: &ArgAction, values: Vec<String>) -> Vec<OsString> {
    match action {
        ArgAction::SetTrue => values
            .iter()
            .any(|value| value == "true")
            .then(|| OsString::from(format!("--{key}")))
            .into_iter()
            .collect(),
        _ => values
            .into_iter()
            .map(|value| OsString::from(format!("--{key}={value}")))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    struct Example {
        #[arg(long, env = "CRIER_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, env = "CRIER_TEST_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        #[arg(long, default_value_t = true, action = ArgAction::Set)]
        durable_ack: bool,
        #[arg(long)]
        subscribe_all: bool,
        #[arg(long = "cors-origin")]
        cors_origins: Vec<String>,
        #[arg(long, default_value_t = 20)]
        post_rate_per_sec: u32,
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write");
        file
    }

    fn parse(args: &[&str]) -> Result<Example, clap::Error> {
        parse_from(std::iter::once("example").chain(args.iter().copied()))
    }

    #[test]
    fn the_file_fills_what_flags_leave_at_their_default() {
        let file = file(
            "listen = \"0.0.0.0:9000\"\ndurable-ack = false\nsubscribe-all = true\n\
             cors-origin = [\"https://a\", \"https://b\"]\npost-rate-per-sec = 5\n",
        );
        let path = file.path().to_str().expect("utf-8 path");
        let example = parse(&["--config", path]).expect("valid");
        assert_eq!(example.listen, "0.0.0.0:9000");
        assert!(!example.durable_ack);
        assert!(example.subscribe_all);
        assert_eq!(example.cors_origins, ["https://a", "https://b"]);
        assert_eq!(example.post_rate_per_sec, 5);
    }

    #[test]
    fn a_flag_wins_over_the_file() {
        let file = file("listen = \"0.0.0.0:9000\"\npost-rate-per-sec = 5\n");
        let path = file.path().to_str().expect("utf-8 path");
        let example = parse(&["--config", path, "--listen", "127.0.0.1:1"]).expect("valid");
        assert_eq!(example.listen, "127.0.0.1:1");
        assert_eq!(example.post_rate_per_sec, 5);
    }

    #[test]
    fn an_unknown_key_names_the_key_and_the_file() {
        let file = file("listn = \"0.0.0.0:9000\"\n");
        let path = file.path().to_str().expect("utf-8 path");
        let error = parse(&["--config", path]).expect_err("refused").to_string();
        assert!(error.contains("unknown key `listn`"), "{error}");
        assert!(error.contains(path), "{error}");
    }

    #[test]
    fn a_bad_value_names_the_file() {
        let file = file("post-rate-per-sec = \"fast\"\n");
        let path = file.path().to_str().expect("utf-8 path");
        let error = parse(&["--config", path]).expect_err("refused").to_string();
        assert!(error.contains(path), "{error}");
        assert!(error.contains("fast"), "{error}");
    }

    #[test]
    fn without_a_file_it_is_plain_clap() {
        let example = parse(&["--post-rate-per-sec", "3"]).expect("valid");
        assert_eq!(
            (example.post_rate_per_sec, example.listen.as_str()),
            (3, "127.0.0.1:8080")
        );
        let missing = parse(&["--config", "/nonexistent/crier.toml"]).expect_err("refused");
        assert!(missing.to_string().contains("cannot read"), "{missing}");
    }
}
