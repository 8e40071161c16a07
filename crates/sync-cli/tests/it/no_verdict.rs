//! The invariant behind every read-only verdict: a command whose reads failed gives none. Over
//! the fake's fault kinds (a refused connection, a timeout, 401, 500, an answer that is not
//! JSON), on either site, from the k-th request on (so that discovery, the comparison and the
//! status reads each get their turn), every read-only command either never met the fault or
//! exits 3 without a passing verdict.

use fake_ispn::RequestFault;
use proptest::prelude::*;

use crate::support::*;

#[derive(Debug, Clone, Copy)]
enum Fault {
    Refused,
    Timeout,
    Unauthorized,
    ServerError,
    Garbage,
}

const COMMANDS: &[&[&str]] = &[
    &["verify"],
    &["verify", "--level", "keys"],
    &["verify", "--level", "sizes"],
    &["diff"],
    &["diff", "--values"],
    &["status"],
    &["config", "check"],
    &["plan"],
    &["-o", "json", "verify"],
];

/// What each command prints when it passes; none of it may appear after a failed read.
const PASSING: &[&str] = &[
    "Verification passed",
    "hold the same",
    "Diagnosis: healthy",
    "configuration OK",
    "Preflight passed",
    "\"passed\":true",
    "\"equal\":true",
];

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        Just(Fault::Refused),
        Just(Fault::Timeout),
        Just(Fault::Unauthorized),
        Just(Fault::ServerError),
        Just(Fault::Garbage)
    ]
}

async fn case(command: &[&str], site: usize, after: usize, fault: Fault) -> Result<(), TestCaseError> {
    let mut env = Env::start().await;
    // Equal sites: without the fault, every command here passes.
    assert_eq!(env.run(&["run", "--yes"]).await.code, 0);
    env.write_config(&env.config().replace("request_timeout: 5s", "request_timeout: 1s"));
    let name = ["site-a", "site-b"][site];
    env.ispn.world().set_request_recording(true);
    let before = env.ispn.world().requests().len();
    match fault {
        Fault::Refused => env.ispn.kill(name).await,
        Fault::Timeout => env.ispn.world().fail_requests_from(site, after, RequestFault::Timeout),
        Fault::Unauthorized => env.ispn.world().fail_requests_from(site, after, RequestFault::Unauthorized),
        Fault::ServerError => env.ispn.world().fail_requests_from(site, after, RequestFault::ServerError),
        Fault::Garbage => env.ispn.world().fail_requests_from(site, after, RequestFault::Garbage),
    }
    let out = env.run(command).await;
    let asked = env.ispn.world().requests()[before..].iter().filter(|r| r.site.as_str() == name).count();
    let met = matches!(fault, Fault::Refused) || asked > after;
    let passed = PASSING.iter().find(|p| out.stdout.contains(*p) || out.stderr.contains(*p));
    if met {
        prop_assert_eq!(
            out.code,
            3,
            "{:?} met {:?} on {} and did not exit 3:\n{}\n{}",
            command,
            fault,
            name,
            out.stdout,
            out.stderr
        );
        prop_assert!(passed.is_none(), "{:?} met {:?} on {} and said {:?}:\n{}", command, fault, name, passed, out.stdout);
    } else {
        prop_assert_eq!(out.code, 0, "{:?}: {} requests to {}, the fault never met:\n{}", command, asked, name, out.stderr);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 40,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5173_0bad),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_read_only_command_passes_after_a_failed_read(
        command in prop::sample::select(COMMANDS),
        site in 0..2usize,
        after in 0..20usize,
        fault in fault(),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(case(command, site, after, fault))?;
    }
}
