//! Exit codes, documented in `--help`, the README and docs/user-guide.md. Stable: automation
//! depends on them.

use std::process::ExitCode;

/// How the process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done (or the plan/status/diff was printed).
    Success,
    /// The run failed after changing something; the journal holds its progress and `resume`
    /// continues it. Also: a post-sync command failed after a successful sync.
    Failed,
    /// Bad usage or configuration; nothing was done.
    Usage,
    /// A precondition or an interlock refused, or a site could not be read (a read-only command
    /// gives no verdict then); nothing unsafe was done.
    Refused,
    /// A confirmation was needed but there is no terminal and no `--yes`; nothing was done.
    ConfirmationNeeded,
    /// `verify` or `diff` found the sites different.
    Differ,
    /// Stopped by Ctrl-C or SIGTERM at a safe point; the journal is saved and `resume` continues.
    Interrupted,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Failed => 1,
            Self::Usage => 2,
            Self::Refused => 3,
            Self::ConfirmationNeeded => 4,
            Self::Differ => 5,
            Self::Interrupted => 130,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

/// The table shown by `--help` and in the docs.
pub const EXIT_CODES: &str = "Exit codes:
  0    done
  1    failed after changing something; `site-sync resume` continues (also: the post-sync command failed)
  2    bad usage or configuration; nothing was done
  3    refused by a precondition or an interlock, or a site could not be read; nothing unsafe was done
  4    confirmation needed but no terminal and no --yes; nothing was done
  5    verify/diff: the sites differ
  130  interrupted (Ctrl-C, SIGTERM) at a safe point; `site-sync resume` continues";

/// An error with its exit code and a one-line message (and one more line for each further
/// problem found before the command gave up: both sites can be broken at once).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    /// The exit code.
    pub exit: Exit,
    /// One line: the problem and the fix.
    pub message: String,
    /// Further problems, one line each.
    pub also: Vec<String>,
}

impl CliError {
    /// An error.
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self { exit, message: message.into(), also: Vec::new() }
    }

    /// Both errors: the first one's exit code unless the second one's is a configuration error
    /// (which is fixed first).
    pub fn and(mut self, other: Self) -> Self {
        if other.exit == Exit::Usage {
            self.exit = Exit::Usage;
        }
        self.also.push(other.message);
        self.also.extend(other.also);
        self
    }

    /// Every line of the error.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.message.as_str()).chain(self.also.iter().map(String::as_str))
    }
}

/// Both results, or every error among them.
pub fn both<A, B>(a: Result<A, CliError>, b: Result<B, CliError>) -> Result<(A, B), CliError> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
        (Err(first), Err(second)) => Err(first.and(second)),
    }
}
