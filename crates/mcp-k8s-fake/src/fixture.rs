//! Container programs: what a simulated container does, taken from its command line when it
//! holds a fixture script (`mcp_orchestrator_api::fixture`), otherwise "run forever, print
//! nothing".

use mcp_orchestrator_api::fixture::{FIXTURE_SUBCOMMAND, FixtureScript, FixtureStep};

/// The program of a container with this `command` and `args`: the fixture script that starts at
/// the first `fixture` word of `command ++ args` (so both `args: [fixture, ...]` and a test
/// server binary in `command` work). An empty program runs forever silently.
pub(crate) fn program_for(command: &[String], args: &[String]) -> Vec<FixtureStep> {
    let words: Vec<&String> = command.iter().chain(args).collect();
    let Some(start) = words.iter().position(|w| *w == FIXTURE_SUBCOMMAND) else {
        return Vec::new();
    };
    FixtureScript::parse_args(&words[start..])
        .map(|script| script.steps)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn scripts_are_found_in_args_or_after_a_binary() {
        let script = FixtureScript::new()
            .stdout("hi")
            .sleep(Duration::from_millis(5))
            .exit(2);
        assert_eq!(program_for(&[], &script.to_args()), script.steps);
        let command = strings(&["/usr/local/bin/mcp-test-server"]);
        assert_eq!(program_for(&command, &script.to_args()), script.steps);
        assert!(program_for(&[], &strings(&["--port", "80"])).is_empty());
        assert!(program_for(&[], &strings(&["fixture", "--bogus", "x"])).is_empty());
    }
}
