//! Settings' defaults come from their flags: a `Default` impl that restated
//! each `default_value_t` would drift from `--help` the first time one changed.

use clap::{Args, Command, FromArgMatches};

/// `T` as its flags' defaults make it, ignoring the `CRIER_*` environment (a
/// default must not depend on where the process runs). Every field of `T` has a
/// default or is optional; the tests of each settings type hold it.
pub fn from_flags<T: Args + FromArgMatches>() -> T {
    let command = T::augment_args(Command::new("defaults")).mut_args(|arg| arg.env(None));
    let parsed = command
        .try_get_matches_from(["defaults"])
        .and_then(|matches| T::from_arg_matches(&matches));
    parsed.unwrap_or_else(|e| {
        panic!(
            "the flags of {} have no default: {e}",
            std::any::type_name::<T>()
        )
    })
}

#[cfg(test)]
mod tests {
    use clap::Args;

    #[derive(Debug, Args)]
    struct Settings {
        /// A number.
        #[arg(long, env = "CRIER_DEFAULTS_TEST_NUMBER", default_value_t = 7)]
        number: u32,
        /// Nothing by default.
        #[arg(long)]
        name: Option<String>,
    }

    #[test]
    fn defaults_are_the_flags_own_whatever_the_environment_says() {
        // SAFETY: this variable is read by this test alone.
        unsafe { std::env::set_var("CRIER_DEFAULTS_TEST_NUMBER", "99") };
        let settings: Settings = super::from_flags();
        assert_eq!((settings.number, settings.name), (7, None));
    }
}
