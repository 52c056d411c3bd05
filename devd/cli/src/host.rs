//! The host's target triple, which a plan builds for when its environment names no
//! `build_target`.

use std::ffi::OsStr;
use std::process::ExitStatus;

use stand_model::plan;

/// Why [`host_triple`] guessed.
#[derive(Debug)]
pub enum Unknown {
    /// rustc ran, but printed no `host:` line.
    NoHostLine,
    /// `rustc -vV` failed.
    Failed(ExitStatus),
    /// rustc could not be run.
    NotRun(std::io::Error),
}

/// A triple guessed from the compile-time platform, and why rustc did not say.
#[derive(Debug)]
pub struct Guess {
    pub triple: String,
    pub why: Unknown,
}

/// The host's target triple from `rustc -vV` (honouring $RUSTC); when rustc cannot be
/// run or does not say, a guess from the compile-time platform.
pub fn host_triple() -> Result<String, Guess> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    ask(&rustc)
}

fn ask(rustc: &OsStr) -> Result<String, Guess> {
    let out = std::process::Command::new(rustc).arg("-vV").output();
    let why = match out {
        Ok(o) if o.status.success() => {
            if let Some(t) = plan::host_triple_from_rustc(&String::from_utf8_lossy(&o.stdout)) {
                return Ok(t);
            }
            Unknown::NoHostLine
        }
        Ok(o) => Unknown::Failed(o.status),
        Err(e) => Unknown::NotRun(e),
    };
    Err(Guess {
        triple: format!(
            "{}-unknown-{}-gnu",
            std::env::consts::ARCH,
            std::env::consts::OS
        ),
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guess(rustc: &str) -> Guess {
        match ask(OsStr::new(rustc)) {
            Ok(t) => panic!("{rustc}: no guess but {t}"),
            Err(g) => {
                let guessed = format!("{}-unknown-{}-gnu", std::env::consts::ARCH, std::env::consts::OS);
                assert_eq!(g.triple, guessed, "{rustc}");
                g
            }
        }
    }

    #[test]
    fn the_triple_is_rustcs_else_a_guess_that_says_why() {
        let real = ask(OsStr::new("rustc")).expect("rustc -vV names the host");
        assert!(real.contains(std::env::consts::ARCH), "{real}");
        // `true` succeeds and prints nothing.
        let why = guess("true").why;
        assert!(matches!(why, Unknown::NoHostLine), "{why:?}");
        let why = guess("false").why;
        assert!(matches!(why, Unknown::Failed(s) if !s.success()), "{why:?}");
        let why = guess("/nonexistent/rustc").why;
        assert!(matches!(&why, Unknown::NotRun(e) if e.kind() == std::io::ErrorKind::NotFound), "{why:?}");
    }
}
