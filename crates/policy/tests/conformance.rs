//! Runs Kyverno's own conformance suites (shared/conformance/kyverno, read in
//! place) through the policy engine and requires every expected result.

use std::path::PathBuf;

use aiops_policy::conformance;

fn conformance_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/kyverno")
}

#[test]
fn kyverno_conformance_suites_pass() {
    let dir = conformance_dir();
    assert!(
        dir.is_dir(),
        "conformance suites missing at {}: they are required, not optional",
        dir.display()
    );
    let report = conformance::run_dir(&dir).expect("conformance suites should run");
    let mismatches = conformance::render_text(&report);
    assert_eq!(
        report.results.len(),
        1018,
        "expected result count changed:\n{mismatches}"
    );
    assert_eq!(report.passed(), 1018, "mismatches:\n{mismatches}");
    assert_eq!(report.summary(), "1018 passed, 0 failed, 0 unsupported");
}

#[test]
fn every_suite_contributes_results() {
    let report = conformance::run_dir(&conformance_dir()).expect("conformance suites should run");
    let mut suites: Vec<&str> = report.results.iter().map(|r| r.test.as_str()).collect();
    suites.dedup();
    assert_eq!(suites.len(), 37);
    // Autogen is exercised: controllers are checked through generated rules.
    assert!(
        report
            .results
            .iter()
            .any(|r| r.kind == "CronJob" && r.expected == "fail" && r.ok)
    );
    assert!(
        report
            .results
            .iter()
            .any(|r| r.kind == "Deployment" && r.expected == "pass" && r.ok)
    );
    assert!(report.results.iter().any(|r| r.expected == "skip" && r.ok));
}

/// The CEL families: `validate.cel` ClusterPolicies and ValidatingPolicies
/// (shared/conformance/kyverno-cel, read in place).
#[test]
fn kyverno_cel_conformance_suites_pass() {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/kyverno-cel");
    assert!(
        dir.is_dir(),
        "CEL conformance suites missing at {}: they are required, not optional",
        dir.display()
    );
    let report = conformance::run_dir(&dir).expect("CEL conformance suites should run");
    let mismatches = conformance::render_text(&report);
    assert_eq!(
        report.results.len(),
        1917,
        "expected result count changed:\n{mismatches}"
    );
    assert_eq!(
        report.summary(),
        "1917 passed, 0 failed, 0 unsupported",
        "mismatches:\n{mismatches}"
    );
    let mut suites: Vec<&str> = report.results.iter().map(|r| r.test.as_str()).collect();
    suites.dedup();
    assert_eq!(suites.len(), 63);
}
