//! The front door stays true: README.md's Quick start is two commands that exist, and every
//! relative link in README.md and docs/ names a file of the repository.

use std::path::Path;

use chimera_tests::repo_root;

/// The relative link targets of a markdown text (`](target)`), without their `#anchor`.
fn relative_links(text: &str) -> Vec<String> {
    text.match_indices("](")
        .filter_map(|(at, _)| {
            let rest = &text[at + 2..];
            let target = &rest[..rest.find(')')?];
            let target = target.split('#').next().unwrap_or_default().trim();
            let external = target.contains("://") || target.starts_with("mailto:");
            (!external && !target.is_empty()).then(|| target.to_owned())
        })
        .collect()
}

#[test]
fn the_quick_start_is_two_commands_that_exist() {
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let quick = readme
        .split("## Quick start")
        .nth(1)
        .expect("README.md has a Quick start");
    let block = quick
        .split("```")
        .nth(1)
        .expect("the Quick start has a code block");
    let commands: Vec<&str> = block
        .lines()
        .skip(1) // the fence's language
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(commands, ["scripts/demo", "scripts/test"], "{block}");
    for command in commands {
        let script = root.join(command);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&script)
                .expect("the script exists")
                .permissions(),
        );
        assert!(mode & 0o111 != 0, "{command} is not executable");
    }
    // `.ci/run` is the README's test command, nothing less.
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    assert!(ci.contains("scripts/test"), "{ci}");
}

#[test]
fn every_relative_link_of_the_readme_and_the_docs_names_a_file() {
    let root = repo_root();
    let mut pages = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    let mut broken = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        let dir = page.parent().unwrap_or(Path::new("."));
        for target in relative_links(&text) {
            if !dir.join(&target).exists() {
                broken.push(format!("{}: {target}", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "links to nothing: {broken:#?}");
    assert!(
        relative_links("[a](docs/x.md#y) [b](https://e.test) [c](#top)") == ["docs/x.md"],
        "the link reader itself"
    );
}
