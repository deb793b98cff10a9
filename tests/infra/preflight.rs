//! The preflight (`scripts/infra preflight`: what AWS checks when it creates the stack, as
//! cfn-lint rules on the transformed template) passes on `infra/template.yaml` and finds, in
//! each fixture of `tests/fixtures/preflight`, exactly the rules its `# expect:` line names.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use chimera_tests::repo_root;

/// The preflight's exit status and the ids of the rules it reported.
fn preflight(template: &Path) -> (bool, BTreeSet<String>, String) {
    let output = Command::new(repo_root().join("scripts/infra"))
        .arg("preflight")
        .arg(template)
        .current_dir(repo_root())
        .output()
        .expect("scripts/infra runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let found = text
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|id| {
            id.len() == 5 && id.starts_with('E') && id[1..].bytes().all(|b| b.is_ascii_digit())
        })
        .map(str::to_owned)
        .collect();
    (output.status.success(), found, text)
}

// One test, the template then the fixtures in turn: the first run may install the tools.
#[test]
fn the_template_passes_the_preflight_and_each_fixture_fails_with_its_rules() {
    let (passed, found, text) = preflight(&repo_root().join("infra/template.yaml"));
    assert!(passed && found.is_empty(), "infra/template.yaml:\n{text}");

    let dir = repo_root().join("tests/fixtures/preflight");
    let mut fixtures: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 3, "fixtures in {}", dir.display());
    let mut seen = BTreeSet::new();
    for fixture in fixtures {
        let source = std::fs::read_to_string(&fixture).unwrap();
        let expected: BTreeSet<String> = source
            .lines()
            .find_map(|line| line.strip_prefix("# expect:"))
            .unwrap_or_else(|| panic!("{} has no `# expect:` line", fixture.display()))
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let (passed, found, text) = preflight(&fixture);
        assert!(
            !passed,
            "{} passed the preflight:\n{text}",
            fixture.display()
        );
        assert_eq!(found, expected, "{}:\n{text}", fixture.display());
        seen.extend(found);
    }
    // Every rule is shown to bite by some fixture.
    let rules: BTreeSet<String> = (9101..=9110).map(|n| format!("E{n}")).collect();
    let missing: Vec<_> = rules.difference(&seen).collect();
    assert!(missing.is_empty(), "no fixture breaks {missing:?}");
}
