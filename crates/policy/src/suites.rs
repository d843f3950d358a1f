//! Published tables shipped as data: the `Office365` and `MicrosoftAdminPortals` suites, the
//! built-in directory roles, and well-known first-party apps. See `data/README.md` for sources;
//! Microsoft changes these lists over time, so they are pinned versions.

use std::collections::HashMap;
use std::sync::LazyLock;

const OFFICE365: &str = include_str!("../data/office365.tsv");
const ADMIN_PORTALS: &str = include_str!("../data/admin-portals.tsv");
const DIRECTORY_ROLES: &str = include_str!("../data/directory-roles.tsv");
const WELL_KNOWN_APPS: &str = include_str!("../data/well-known-apps.tsv");

/// `id<TAB>name` lines; `#` starts a comment line. Ids are lowercased.
fn rows(text: &'static str) -> impl Iterator<Item = (String, &'static str)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('\t'))
        .map(|(id, name)| (id.trim().to_ascii_lowercase(), name.trim()))
}

static OFFICE365_IDS: LazyLock<Vec<String>> =
    LazyLock::new(|| rows(OFFICE365).map(|r| r.0).collect());
static ADMIN_PORTAL_IDS: LazyLock<Vec<String>> =
    LazyLock::new(|| rows(ADMIN_PORTALS).map(|r| r.0).collect());
static ROLES: LazyLock<HashMap<String, &'static str>> =
    LazyLock::new(|| rows(DIRECTORY_ROLES).collect());
static APP_NAMES: LazyLock<HashMap<String, &'static str>> = LazyLock::new(|| {
    rows(WELL_KNOWN_APPS).chain(rows(OFFICE365)).chain(rows(ADMIN_PORTALS)).collect()
});

/// App ids in the `Office365` suite.
pub fn office365() -> impl Iterator<Item = &'static str> {
    OFFICE365_IDS.iter().map(String::as_str)
}

/// App ids covered by `MicrosoftAdminPortals`.
pub fn admin_portals() -> impl Iterator<Item = &'static str> {
    ADMIN_PORTAL_IDS.iter().map(String::as_str)
}

/// The name of a built-in directory role, by role template id.
pub fn built_in_role(template_id: &str) -> Option<&'static str> {
    ROLES.get(&template_id.to_ascii_lowercase()).copied()
}

/// The name of a well-known first-party app, by app id.
pub fn app_name(app_id: &str) -> Option<&'static str> {
    APP_NAMES.get(&app_id.to_ascii_lowercase()).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_hold_the_documented_anchors() {
        assert!(office365().any(|a| a == "00000003-0000-0ff1-ce00-000000000000"));
        assert!(office365().any(|a| a == "00000002-0000-0ff1-ce00-000000000000"));
        assert!(admin_portals().any(|a| a == "c44b4083-3bb0-49c1-b47d-974e53cbdf3c"));
        assert_eq!(
            built_in_role("62E90394-69F5-4237-9190-012177145E10"),
            Some("Global Administrator")
        );
        assert!(app_name("797f4846-ba00-4fd7-ba43-dac1f8f63013").is_some());
        assert!(ROLES.len() > 100);
    }
}
