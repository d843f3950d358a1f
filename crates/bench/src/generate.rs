//! The benchmark tenant and its sign-ins, generated as Graph JSON documents.
//!
//! Everything goes through the real loader afterwards (`gatehouse_policy::load`), so the
//! benchmark measures the objects an export would produce, not hand-built structs.
//!
//! Shape (see `docs/benchmarks.md`):
//! - groups nested [`GROUP_LEVELS`] deep: a few roots, each level ~4–5× the one above, leaves
//!   holding users; one group in ten has a second parent higher up (a DAG, as in real tenants);
//!   plus three purpose groups (break-glass, service accounts, PAW admins);
//! - users: a "bench user" who is a direct member of `bench_user_groups` groups spread over all
//!   levels, break-glass accounts, users in a single group, admins, service accounts, regular
//!   users in 1–3 leaf groups, and 5% guests of three kinds;
//! - built-in role assignments (direct, through role-assignable groups, and
//!   administrative-unit-scoped ones that Conditional Access must ignore);
//! - named locations: trusted and untrusted IP ranges (IPv4 and IPv6), country lists, a
//!   compliant-network location;
//! - [`POLICY_COUNT`] policies in the shapes of the shared corpus (`shared/corpus/ca-policies`);
//! - a mixed set of What-If request bodies (Graph `POST /identity/conditionalAccess/evaluate`)
//!   that supply every condition, so no policy is `notEnoughInformation`.

use gatehouse_policy::SourceFile;
use gatehouse_policy::suites;
use serde_json::{Map, Value, json};

use crate::rng::Rng;

/// How big a tenant to generate. The policy set is always [`POLICY_COUNT`] policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub seed: u64,
    /// Groups in total, the three purpose groups included.
    pub groups: usize,
    pub users: usize,
    /// Direct group memberships of the bench user.
    pub bench_user_groups: usize,
    pub requests: usize,
}

impl Config {
    /// The benchmark tenant: 10,000 groups, 5,000 users, a user directly in 200 groups.
    pub const fn full() -> Self {
        Config {
            seed: 0x6a7e_4005_e000_0002,
            groups: 10_000,
            users: 5_000,
            bench_user_groups: 200,
            requests: 64,
        }
    }

    /// The same shape at a tenth of the directory, for the debug-mode differential test.
    pub const fn small() -> Self {
        Config { groups: 1_000, users: 600, ..Self::full() }
    }
}

/// Entra's documented limit on policies per tenant.
pub const POLICY_COUNT: usize = 195;
/// Nesting depth of the group hierarchy (roots are level 0, leaves level 4).
pub const GROUP_LEVELS: usize = 5;

/// The generated export and sign-ins.
#[derive(Debug, Clone)]
pub struct Generated {
    pub files: Vec<SourceFile>,
    /// Graph evaluate bodies.
    pub requests: Vec<Value>,
    pub summary: Summary,
}

/// Counts for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub groups: usize,
    pub group_levels: [usize; GROUP_LEVELS],
    pub nesting_edges: usize,
    pub users: usize,
    pub guests: usize,
    pub role_assignments: usize,
    pub named_locations: usize,
    pub applications: usize,
    pub policies_enabled: usize,
    pub policies_report_only: usize,
    pub policies_disabled: usize,
    pub bench_user: String,
    pub bench_user_direct_groups: usize,
}

// Well-known app ids (Office 365 suite members, admin portals, Intune).
pub const SHAREPOINT: &str = "00000003-0000-0ff1-ce00-000000000000";
pub const EXCHANGE: &str = "00000002-0000-0ff1-ce00-000000000000";
pub const TEAMS: &str = "cc15fd57-2c6c-4117-a88c-83b1d56b4bbe";
pub const AZURE_PORTAL: &str = "c44b4083-3bb0-49c1-b47d-974e53cbdf3c";
pub const AZURE_MANAGEMENT: &str = "797f4846-ba00-4fd7-ba43-dac1f8f63013";
pub const INTUNE: &str = "0000000a-0000-0000-c000-000000000000";
pub const INTUNE_ENROLLMENT: &str = "d4ebce55-015a-49b5-a083-c84d1797ae8c";

pub const GLOBAL_ADMINISTRATOR: &str = "62e90394-69f5-4237-9190-012177145e10";
const GLOBAL_READER: &str = "f2ef992c-3afb-46b9-b7cf-a126ee74c451";
const USER_ADMINISTRATOR: &str = "fe930be7-5e62-47db-91af-98c3a49a38b1";
const HELPDESK_ADMINISTRATOR: &str = "729827e3-9c14-49f7-bb1b-9608f156bbb8";
const SECURITY_ADMINISTRATOR: &str = "194ae4cb-b126-40b2-bd5b-6091b380977d";
const PRIVILEGED_ROLE_ADMINISTRATOR: &str = "e8611ab8-c189-46e8-94e1-60213ab1f814";
const DIRECTORY_SYNC_ACCOUNTS: &str = "d29b2b05-8046-44ba-8758-1e26182fcf32";

/// The admin roles corpus policy CA101 (j0eyv baseline) lists.
const ADMIN_ROLES: [&str; 24] = [
    "29232cdf-9323-42fd-ade2-1d097af3e4de",
    "194ae4cb-b126-40b2-bd5b-6091b380977d",
    "b1be1c3e-b65d-4f19-8427-f6fa0d97feb9",
    "f28a1f50-f6e7-4571-818b-6a12f2af6b6c",
    "729827e3-9c14-49f7-bb1b-9608f156bbb8",
    "b0f54661-2d74-4c50-afa3-1ec803f12efe",
    "fe930be7-5e62-47db-91af-98c3a49a38b1",
    "c4e39bd9-1100-46d3-8c65-fb160da0071f",
    "62e90394-69f5-4237-9190-012177145e10",
    "f2ef992c-3afb-46b9-b7cf-a126ee74c451",
    "3a2c62db-5318-420d-8d74-23affee5d9d5",
    "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3",
    "158c047a-c907-4556-b7ef-446551a6b5f7",
    "966707d0-3269-4727-9be2-8c3a10f19b9d",
    "7be44c8a-adaf-4e2a-84d6-ab2649e08a13",
    "e8611ab8-c189-46e8-94e1-60213ab1f814",
    "b6a27b2b-f905-4b2e-81b5-0d90e0ef1fdb",
    "11451d60-acb2-45eb-a7d6-43d0f0125c13",
    "69091246-20e8-4a56-aa4d-066075b2a7a8",
    "d2562ede-74db-457e-a7b6-544e236ebb61",
    "6b942400-691f-4bf0-9d12-d8a254a2baf5",
    "db506228-d27e-4b7d-95e5-295956d6615f",
    "e93e3737-fa85-474a-aee4-7d3fb86510f3",
    "1707125e-0aa2-4d4d-8655-a7c786c76a25",
];

/// Built-in authentication strengths.
const STRENGTH_MFA: &str = "00000000-0000-0000-0000-000000000002";
const STRENGTH_PHISHING_RESISTANT: &str = "00000000-0000-0000-0000-000000000004";

/// Device filter rules in the shapes real tenants use (`conditions.devices.deviceFilter.rule`).
pub const DEVICE_RULES: [&str; 10] = [
    r#"device.isCompliant -eq True -or device.trustType -eq "ServerAD""#,
    r#"device.deviceOwnership -eq "Company" -or device.isCompliant -eq True"#,
    r#"device.operatingSystem -startsWith "Windows" -and device.isCompliant -ne True"#,
    r#"device.model -in ["Surface Pro 9", "ThinkPad X1 Carbon"]"#,
    r#"device.extensionAttribute1 -eq "PAW" -and device.isCompliant -eq True"#,
    r#"device.systemLabels -contains "AzureResource""#,
    r#"device.trustType -ne "AzureAD" -and -not (device.manufacturer -eq "Apple")"#,
    r#"device.displayName -contains "kiosk" -or device.profileType -eq "Shared""#,
    r#"device.enrollmentProfileName -endsWith "-Autopilot""#,
    r#"device.mdmAppId -eq null -or (device.isCompliant -eq False -and device.operatingSystem -notStartsWith "iOS")"#,
];

/// Generates the tenant export and the requests for `cfg`.
pub fn generate(cfg: &Config) -> Generated {
    let mut rng = Rng::new(cfg.seed);
    let dir = Directory::generate(cfg, &mut rng);
    let locations = Locations::generate(&mut rng);
    let apps = Apps::generate(&mut rng);
    let tenants: Vec<String> = (0..5).map(|_| rng.guid()).collect();

    let mut policies = Vec::with_capacity(POLICY_COUNT);
    let mut summary = dir.summary();
    {
        let mut ctx = Ctx {
            rng: &mut rng,
            dir: &dir,
            loc: &locations,
            apps: &apps,
            tenants: &tenants,
            device_policies: 0,
        };
        for (n, kind) in policy_plan().into_iter().enumerate() {
            let state = ctx.state();
            match state {
                "enabled" => summary.policies_enabled += 1,
                "disabled" => summary.policies_disabled += 1,
                _ => summary.policies_report_only += 1,
            }
            let spec = ctx.policy(kind);
            let id = ctx.rng.guid();
            policies.push(json!({
                "@odata.type": "#microsoft.graph.conditionalAccessPolicy",
                "id": id,
                "displayName": format!("CA{n:03}-{}", spec.name),
                "state": state,
                "conditions": Value::Object(spec.conditions),
                "grantControls": spec.grant,
                "sessionControls": spec.session,
            }));
        }
    }
    let requests = requests(cfg, &mut rng, &dir, &apps, &tenants);

    summary.named_locations = locations.documents.len();
    summary.applications = apps.custom.len();
    let collection = |name: &str, items: Vec<Value>| SourceFile {
        name: name.to_owned(),
        bytes: json!({ "value": items }).to_string().into_bytes(),
    };
    let files = vec![
        collection("groups.json", dir.group_documents()),
        collection("users.json", dir.user_documents()),
        collection("roleAssignments.json", dir.role_assignments.clone()),
        collection("namedLocations.json", locations.documents.clone()),
        collection("applications.json", apps.documents()),
        collection("policies.json", policies),
    ];
    Generated { files, requests, summary }
}

// ---------------------------------------------------------------------------
// Directory
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UserKind {
    Member,
    /// `userType: Guest`, credentials in this tenant.
    InternalGuest,
    /// Invited, `userType: Guest`.
    B2bGuest,
    /// Invited, `userType: Member`.
    B2bMember,
}

#[derive(Debug, Clone)]
struct DirUser {
    id: String,
    name: String,
    kind: UserKind,
}

#[derive(Debug, Clone)]
struct DirGroup {
    id: String,
    name: String,
    /// `(is_group, id)`.
    members: Vec<(bool, String)>,
}

#[derive(Debug, Clone)]
struct Directory {
    groups: Vec<DirGroup>,
    /// Indices into `groups`, per nesting level (the purpose groups are in none).
    levels: Vec<Vec<usize>>,
    users: Vec<DirUser>,
    role_assignments: Vec<Value>,
    nesting_edges: usize,
    break_glass_group: String,
    service_group: String,
    paw_group: String,
    bench_user: String,
    bench_user_direct_groups: usize,
    break_glass_users: Vec<String>,
    few_group_users: Vec<String>,
    admins: Vec<String>,
    service_users: Vec<String>,
    regular_users: Vec<String>,
    guests: Vec<String>,
}

impl Directory {
    fn generate(cfg: &Config, rng: &mut Rng) -> Directory {
        // --- Groups, level by level.
        let purpose = 3;
        let hierarchy = cfg.groups.saturating_sub(purpose).max(GROUP_LEVELS);
        let fractions = [0.001, 0.009, 0.04, 0.15];
        let mut sizes = [0usize; GROUP_LEVELS];
        for (size, f) in sizes.iter_mut().zip(fractions) {
            *size = ((hierarchy as f64 * f).round() as usize).max(1);
        }
        let upper: usize = sizes.iter().take(GROUP_LEVELS - 1).sum();
        if let Some(leaves) = sizes.last_mut() {
            *leaves = hierarchy.saturating_sub(upper).max(1);
        }
        let mut groups = Vec::with_capacity(hierarchy + purpose);
        let mut levels = Vec::with_capacity(GROUP_LEVELS);
        for (level, size) in sizes.iter().enumerate() {
            let mut ids = Vec::with_capacity(*size);
            for i in 0..*size {
                ids.push(groups.len());
                groups.push(DirGroup {
                    id: rng.guid(),
                    name: format!("GRP-L{level}-{i:05}"),
                    members: Vec::new(),
                });
            }
            levels.push(ids);
        }
        // Nesting: every non-root group has a parent one level up; one in ten a second parent
        // anywhere higher. Parents are always shallower, so there are no cycles.
        let mut edges: Vec<(usize, usize)> = Vec::new();
        for level in 1..GROUP_LEVELS {
            let (Some(above), Some(here)) = (levels.get(level - 1), levels.get(level)) else {
                continue;
            };
            for &child in here {
                let parent = *rng.pick(above);
                edges.push((parent, child));
                if rng.chance(0.1) {
                    let higher = rng.below(level);
                    if let Some(candidates) = levels.get(higher) {
                        let second = *rng.pick(candidates);
                        if second != parent {
                            edges.push((second, child));
                        }
                    }
                }
            }
        }
        let nesting_edges = edges.len();
        for (parent, child) in edges {
            let child_id = groups.get(child).map(|g| g.id.clone()).unwrap_or_default();
            if let Some(p) = groups.get_mut(parent) {
                p.members.push((true, child_id));
            }
        }
        let mut purpose_group = |name: &str| {
            let id = rng.guid();
            groups.push(DirGroup { id: id.clone(), name: name.to_owned(), members: Vec::new() });
            (groups.len() - 1, id)
        };
        let (break_glass_idx, break_glass_group) = purpose_group("CA-Exclude-BreakGlass");
        let (service_idx, service_group) = purpose_group("CA-ServiceAccounts");
        let (paw_idx, paw_group) = purpose_group("CA-PAW-Admins");

        // --- Users.
        let n = cfg.users.max(40);
        let guest_count = n / 20;
        let mut users = Vec::with_capacity(n);
        for i in 0..n {
            let kind = if i >= n - guest_count {
                match i % 4 {
                    0 | 1 => UserKind::B2bGuest,
                    2 => UserKind::InternalGuest,
                    _ => UserKind::B2bMember,
                }
            } else {
                UserKind::Member
            };
            users.push(DirUser {
                id: rng.guid(),
                name: if i == 0 { "Bench User".to_owned() } else { format!("User {i:05}") },
                kind,
            });
        }
        let ids = |range: std::ops::Range<usize>| -> Vec<String> {
            users.get(range).map(|s| s.iter().map(|u| u.id.clone()).collect()).unwrap_or_default()
        };
        let bench_user = ids(0..1).pop().unwrap_or_default();
        let break_glass_users = ids(1..3);
        let few_group_users = ids(3..9);
        let admins = ids(9..21);
        let service_users = ids(21..25);
        let regular_users = ids(25..n - guest_count);
        let guests = ids(n - guest_count..n);

        let leaves: Vec<usize> = levels.last().cloned().unwrap_or_default();
        let all_hierarchy: Vec<usize> = (0..hierarchy.min(groups.len())).collect();
        let mut add = |group: usize, user: &str| {
            if let Some(g) = groups.get_mut(group) {
                g.members.push((false, user.to_owned()));
            }
        };
        let direct = rng.sample(&all_hierarchy, cfg.bench_user_groups);
        let bench_user_direct_groups = direct.len();
        for g in direct {
            add(g, &bench_user);
        }
        for u in &break_glass_users {
            add(break_glass_idx, u);
        }
        for u in &few_group_users {
            add(*rng.pick(&leaves), u);
        }
        for u in &service_users {
            add(service_idx, u);
            add(*rng.pick(&leaves), u);
        }
        for (i, u) in admins.iter().enumerate() {
            if i % 4 == 0 {
                add(paw_idx, u);
            }
            for _ in 0..rng.between(1, 3) {
                add(*rng.pick(&leaves), u);
            }
        }
        for u in &regular_users {
            for _ in 0..rng.between(1, 3) {
                add(*rng.pick(&leaves), u);
            }
        }
        for u in &guests {
            if rng.chance(0.5) {
                add(*rng.pick(&leaves), u);
            }
        }

        // --- Role assignments.
        let mut role_assignments = Vec::new();
        let mut assign = |rng: &mut Rng, principal: &str, role: &str, scope: &str| {
            role_assignments.push(json!({
                "@odata.type": "#microsoft.graph.unifiedRoleAssignment",
                "id": rng.guid(),
                "principalId": principal,
                "roleDefinitionId": role,
                "directoryScopeId": scope,
            }));
        };
        for (i, a) in admins.iter().enumerate() {
            if i < 3 {
                assign(rng, a, GLOBAL_ADMINISTRATOR, "/");
            } else {
                for _ in 0..rng.between(1, 3) {
                    let role = *rng.pick(&ADMIN_ROLES);
                    assign(rng, a, role, "/");
                }
            }
        }
        assign(rng, &bench_user, GLOBAL_READER, "/");
        // Administrative-unit scoped: Conditional Access ignores these.
        let au = format!("/administrativeUnits/{}", rng.guid());
        assign(rng, &bench_user, USER_ADMINISTRATOR, &au);
        for u in few_group_users.iter().take(2) {
            assign(rng, u, GLOBAL_ADMINISTRATOR, &au);
        }
        // Role-assignable groups: the role reaches every nested member.
        for (level, role) in [(3, HELPDESK_ADMINISTRATOR), (2, SECURITY_ADMINISTRATOR)] {
            let candidates = levels.get(level).cloned().unwrap_or_default();
            let g = *rng.pick(&candidates);
            let gid = groups.get(g).map(|g| g.id.clone()).unwrap_or_default();
            assign(rng, &gid, role, "/");
        }
        assign(rng, &paw_group, PRIVILEGED_ROLE_ADMINISTRATOR, "/");
        if let Some(s) = service_users.first() {
            assign(rng, s, DIRECTORY_SYNC_ACCOUNTS, "/");
        }

        Directory {
            groups,
            levels,
            users,
            role_assignments,
            nesting_edges,
            break_glass_group,
            service_group,
            paw_group,
            bench_user,
            bench_user_direct_groups,
            break_glass_users,
            few_group_users,
            admins,
            service_users,
            regular_users,
            guests,
        }
    }

    fn summary(&self) -> Summary {
        let mut group_levels = [0; GROUP_LEVELS];
        for (slot, level) in group_levels.iter_mut().zip(&self.levels) {
            *slot = level.len();
        }
        Summary {
            groups: self.groups.len(),
            group_levels,
            nesting_edges: self.nesting_edges,
            users: self.users.len(),
            guests: self.guests.len(),
            role_assignments: self.role_assignments.len(),
            bench_user: self.bench_user.clone(),
            bench_user_direct_groups: self.bench_user_direct_groups,
            ..Summary::default()
        }
    }

    fn group_documents(&self) -> Vec<Value> {
        self.groups
            .iter()
            .map(|g| {
                let members: Vec<Value> = g
                    .members
                    .iter()
                    .map(|(is_group, id)| {
                        let t = if *is_group {
                            "#microsoft.graph.group"
                        } else {
                            "#microsoft.graph.user"
                        };
                        json!({"@odata.type": t, "id": id})
                    })
                    .collect();
                json!({
                    "@odata.type": "#microsoft.graph.group",
                    "id": g.id,
                    "displayName": g.name,
                    "securityEnabled": true,
                    "members": members,
                })
            })
            .collect()
    }

    fn user_documents(&self) -> Vec<Value> {
        self.users
            .iter()
            .map(|u| {
                let mut doc = json!({
                    "@odata.type": "#microsoft.graph.user",
                    "id": u.id,
                    "displayName": u.name,
                    "userPrincipalName": format!("{}@bench.example", u.name.to_lowercase().replace(' ', ".")),
                    "accountEnabled": true,
                });
                let extra = match u.kind {
                    UserKind::Member => json!({"userType": "Member"}),
                    UserKind::InternalGuest => json!({"userType": "Guest"}),
                    UserKind::B2bGuest => json!({
                        "userType": "Guest", "creationType": "Invitation", "externalUserState": "Accepted"
                    }),
                    UserKind::B2bMember => json!({
                        "userType": "Member", "externalUserState": "Accepted"
                    }),
                };
                if let (Value::Object(d), Value::Object(e)) = (&mut doc, extra) {
                    d.extend(e);
                }
                doc
            })
            .collect()
    }

    /// A random hierarchy group, biased towards the deeper (more numerous) levels but with
    /// some roots and upper-level groups that capture many users.
    fn random_group(&self, rng: &mut Rng) -> String {
        let weights = [3, 7, 15, 30, 45];
        let mut roll = rng.below(weights.iter().sum());
        let mut level = GROUP_LEVELS - 1;
        for (i, w) in weights.iter().enumerate() {
            if roll < *w {
                level = i;
                break;
            }
            roll -= w;
        }
        let candidates = self.levels.get(level).map(Vec::as_slice).unwrap_or(&[]);
        if candidates.is_empty() {
            return self.break_glass_group.clone();
        }
        let g = *rng.pick(candidates);
        self.groups.get(g).map(|g| g.id.clone()).unwrap_or_default()
    }

    fn random_groups(&self, rng: &mut Rng, k: usize) -> Vec<String> {
        let mut out: Vec<String> = (0..k).map(|_| self.random_group(rng)).collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

// ---------------------------------------------------------------------------
// Named locations and applications
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Locations {
    hq: String,
    vpn: String,
    branch: String,
    allowed_countries: String,
    sanctioned: String,
    eu: String,
    service_countries: String,
    compliant_network: String,
    documents: Vec<Value>,
}

impl Locations {
    fn generate(rng: &mut Rng) -> Locations {
        let mut documents = Vec::new();
        let mut ip = |rng: &mut Rng, name: &str, trusted: bool, ranges: &[&str]| {
            let id = rng.guid();
            let ranges: Vec<Value> = ranges
                .iter()
                .map(|r| {
                    let t = if r.contains(':') {
                        "#microsoft.graph.iPv6CidrRange"
                    } else {
                        "#microsoft.graph.iPv4CidrRange"
                    };
                    json!({"@odata.type": t, "cidrAddress": r})
                })
                .collect();
            documents.push(json!({
                "@odata.type": "#microsoft.graph.ipNamedLocation",
                "id": id, "displayName": name, "isTrusted": trusted, "ipRanges": ranges,
            }));
            id
        };
        let hq = ip(rng, "HQ", true, &["203.0.113.0/24", "198.51.100.0/25"]);
        let vpn = ip(rng, "VPN egress", true, &["100.64.0.0/16", "2001:db8:100::/48"]);
        let branch = ip(rng, "Branch offices", false, &["192.0.2.0/24", "2001:db8:200::/48"]);
        ip(rng, "Partner network", false, &["172.16.0.0/12"]);
        let mut country = |rng: &mut Rng, name: &str, codes: &[&str]| {
            let id = rng.guid();
            documents.push(json!({
                "@odata.type": "#microsoft.graph.countryNamedLocation",
                "id": id, "displayName": name, "countriesAndRegions": codes,
                "includeUnknownCountriesAndRegions": false, "countryLookupMethod": "clientIpAddress",
            }));
            id
        };
        let allowed_countries =
            country(rng, "ALLOWED COUNTRIES", &["NL", "BE", "DE", "FR", "GB", "US", "IE"]);
        let sanctioned = country(rng, "Sanctioned", &["KP", "IR", "SY", "CU", "RU", "BY"]);
        let eu = country(
            rng,
            "EU",
            &[
                "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
                "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
            ],
        );
        let service_countries = country(rng, "ALLOWED COUNTRIES - SERVICE ACCOUNTS", &["NL"]);
        let compliant_network = rng.guid();
        documents.push(json!({
            "@odata.type": "#microsoft.graph.compliantNetworkNamedLocation",
            "id": compliant_network, "displayName": "All Compliant Network locations",
            "compliantNetworkType": "allTenantCompliantNetworks",
        }));
        Locations {
            hq,
            vpn,
            branch,
            allowed_countries,
            sanctioned,
            eu,
            service_countries,
            compliant_network,
            documents,
        }
    }
}

#[derive(Debug, Clone)]
struct Apps {
    /// Line-of-business apps; the last four are never named by a policy (only `All` covers them).
    custom: Vec<String>,
}

const UNTARGETED_APPS: usize = 4;

impl Apps {
    fn generate(rng: &mut Rng) -> Apps {
        Apps { custom: (0..24).map(|_| rng.guid()).collect() }
    }

    /// Apps that specific-app policies choose from.
    fn targetable(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .custom
            .iter()
            .take(self.custom.len().saturating_sub(UNTARGETED_APPS))
            .cloned()
            .collect();
        out.extend(
            [AZURE_MANAGEMENT, INTUNE, INTUNE_ENROLLMENT, SHAREPOINT, EXCHANGE, TEAMS]
                .map(str::to_owned),
        );
        out
    }

    fn untargeted(&self) -> Vec<String> {
        self.custom
            .iter()
            .skip(self.custom.len().saturating_sub(UNTARGETED_APPS))
            .cloned()
            .collect()
    }

    fn documents(&self) -> Vec<Value> {
        self.custom
            .iter()
            .enumerate()
            .map(|(i, id)| {
                json!({
                    "@odata.type": "#microsoft.graph.servicePrincipal",
                    "appId": id, "displayName": format!("LOB app {i:02}"),
                })
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    AllUsersMfa,
    AdminRoles,
    LocationBlock,
    LegacyAuth,
    Platform,
    Guests,
    AppSpecific,
    DeviceFilter,
    Risk,
    GroupBaseline,
    UserAction,
    AuthContext,
    AuthFlow,
    SessionOnly,
}

/// How many policies of each shape; adds up to [`POLICY_COUNT`].
const MIX: [(Kind, usize); 14] = [
    (Kind::AllUsersMfa, 10),
    (Kind::AdminRoles, 16),
    (Kind::LocationBlock, 14),
    (Kind::LegacyAuth, 8),
    (Kind::Platform, 10),
    (Kind::Guests, 14),
    (Kind::AppSpecific, 40),
    (Kind::DeviceFilter, 15),
    (Kind::Risk, 14),
    (Kind::GroupBaseline, 40),
    (Kind::UserAction, 5),
    (Kind::AuthContext, 5),
    (Kind::AuthFlow, 2),
    (Kind::SessionOnly, 2),
];

fn policy_plan() -> Vec<Kind> {
    MIX.iter().flat_map(|(k, n)| std::iter::repeat_n(*k, *n)).collect()
}

struct Spec {
    name: String,
    conditions: Map<String, Value>,
    grant: Value,
    session: Value,
}

/// `conditions.users`.
#[derive(Default)]
struct Users {
    include_users: Vec<String>,
    exclude_users: Vec<String>,
    include_groups: Vec<String>,
    exclude_groups: Vec<String>,
    include_roles: Vec<String>,
    exclude_roles: Vec<String>,
    include_guests: Option<Value>,
    exclude_guests: Option<Value>,
}

impl Users {
    fn all() -> Users {
        Users { include_users: vec!["All".into()], ..Users::default() }
    }

    fn json(self) -> Value {
        json!({
            "includeUsers": self.include_users,
            "excludeUsers": self.exclude_users,
            "includeGroups": self.include_groups,
            "excludeGroups": self.exclude_groups,
            "includeRoles": self.include_roles,
            "excludeRoles": self.exclude_roles,
            "includeGuestsOrExternalUsers": self.include_guests,
            "excludeGuestsOrExternalUsers": self.exclude_guests,
        })
    }
}

fn apps(include: &[&str], exclude: &[&str]) -> Value {
    json!({
        "includeApplications": include, "excludeApplications": exclude,
        "includeUserActions": [], "includeAuthenticationContextClassReferences": [],
    })
}

fn apps_owned(include: &[String], exclude: &[String]) -> Value {
    json!({
        "includeApplications": include, "excludeApplications": exclude,
        "includeUserActions": [], "includeAuthenticationContextClassReferences": [],
    })
}

fn grant(operator: &str, controls: &[&str]) -> Value {
    json!({"operator": operator, "builtInControls": controls})
}

fn strength(id: &str) -> Value {
    json!({"operator": "OR", "builtInControls": [], "authenticationStrength": {"id": id}})
}

fn guests(types: &str, tenants: Option<&[String]>) -> Value {
    let external = match tenants {
        None => {
            json!({"@odata.type": "#microsoft.graph.conditionalAccessAllExternalTenants", "membershipKind": "all"})
        }
        Some(list) => json!({
            "@odata.type": "#microsoft.graph.conditionalAccessEnumeratedExternalTenants",
            "membershipKind": "enumerated", "members": list,
        }),
    };
    json!({"guestOrExternalUserTypes": types, "externalTenants": external})
}

const ALL_GUEST_TYPES: &str = "internalGuest,b2bCollaborationGuest,b2bCollaborationMember,b2bDirectConnectUser,otherExternalUser,serviceProvider";

struct Ctx<'a> {
    rng: &'a mut Rng,
    dir: &'a Directory,
    loc: &'a Locations,
    apps: &'a Apps,
    tenants: &'a [String],
    device_policies: usize,
}

impl Ctx<'_> {
    fn state(&mut self) -> &'static str {
        let roll = self.rng.below(100);
        if roll < 78 {
            "enabled"
        } else if roll < 90 {
            "enabledForReportingButNotEnforced"
        } else {
            "disabled"
        }
    }

    fn groups(&mut self, k: usize) -> Vec<String> {
        self.dir.random_groups(self.rng, k)
    }

    /// Break-glass plus a few random groups.
    fn exclusions(&mut self, extra: usize) -> Vec<String> {
        let n = self.rng.below(extra + 1);
        let mut out = vec![self.dir.break_glass_group.clone()];
        out.extend(self.groups(n));
        out
    }

    fn client_types(&mut self) -> Vec<&'static str> {
        match self.rng.below(4) {
            0 | 1 => vec!["all"],
            2 => vec!["browser", "mobileAppsAndDesktopClients"],
            _ => vec!["browser"],
        }
    }

    fn pick_users(&mut self, from: &[String], k: usize) -> Vec<String> {
        self.rng.sample(from, k)
    }

    fn policy(&mut self, kind: Kind) -> Spec {
        let mut c = Map::new();
        let mut session = Value::Null;
        let client: Vec<&str>;
        let users: Users;
        let applications: Value;
        let grant_controls: Value;
        let name: &str;
        match kind {
            Kind::AllUsersMfa => {
                name = "Global-IdentityProtection-AnyApp-MFA";
                let mut u = Users::all();
                u.exclude_groups = self.exclusions(4);
                if self.rng.chance(0.5) {
                    u.exclude_roles = vec![DIRECTORY_SYNC_ACCOUNTS.into()];
                }
                if self.rng.chance(0.3) {
                    u.exclude_users = self.pick_users(&self.dir.service_users, 2);
                }
                users = u;
                applications = match self.rng.below(10) {
                    0..=6 => apps(&["All"], &[]),
                    7 | 8 => apps(&["Office365"], &[]),
                    _ => apps(&["All"], &[INTUNE_ENROLLMENT]),
                };
                client = self.client_types();
                if self.rng.chance(0.3) {
                    c.insert(
                        "locations".into(),
                        json!({"includeLocations": ["All"], "excludeLocations": ["AllTrusted"]}),
                    );
                }
                grant_controls = if self.rng.chance(0.7) {
                    grant("OR", &["mfa"])
                } else {
                    strength(STRENGTH_MFA)
                };
            }
            Kind::AdminRoles => {
                name = "Admins-IdentityProtection-AdminRoles";
                let k = self.rng.between(5, ADMIN_ROLES.len());
                let mut roles: Vec<String> =
                    self.rng.sample(&ADMIN_ROLES, k).into_iter().map(str::to_owned).collect();
                if self.rng.chance(0.5) && !roles.iter().any(|r| r == GLOBAL_ADMINISTRATOR) {
                    roles.push(GLOBAL_ADMINISTRATOR.into());
                }
                let mut u = Users {
                    include_roles: roles,
                    exclude_groups: vec![self.dir.break_glass_group.clone()],
                    ..Users::default()
                };
                applications = match self.rng.below(3) {
                    0 => apps(&["All"], &[]),
                    1 => apps(&["MicrosoftAdminPortals"], &[]),
                    _ => apps(&[AZURE_MANAGEMENT], &[]),
                };
                client = self.client_types();
                grant_controls = match self.rng.below(3) {
                    0 => grant("OR", &["mfa"]),
                    1 => strength(STRENGTH_PHISHING_RESISTANT),
                    _ => grant("AND", &["mfa", "compliantDevice"]),
                };
                if self.rng.chance(0.25) {
                    // PAW admins may use their privileged access workstations only.
                    u.include_groups = vec![self.dir.paw_group.clone()];
                    c.insert(
                        "devices".into(),
                        json!({"deviceFilter": {"mode": "exclude", "rule": DEVICE_RULES[4]}}),
                    );
                }
                users = u;
                if self.rng.chance(0.3) {
                    session = json!({
                        "signInFrequency": {"isEnabled": true, "type": "hours", "value": 4, "frequencyInterval": "timeBased"},
                        "persistentBrowser": {"isEnabled": true, "mode": "never"},
                    });
                }
            }
            Kind::LocationBlock => {
                client = vec!["all"];
                grant_controls = grant("OR", &["block"]);
                applications = apps(&["All"], &[]);
                let (n, u, include, exclude) = match self.rng.below(5) {
                    0 => {
                        let mut u = Users::all();
                        u.exclude_groups = self.exclusions(2);
                        (
                            "Global-AttackSurfaceReduction-BLOCK-CountryWhitelist",
                            u,
                            vec!["All".to_owned()],
                            vec![self.loc.allowed_countries.clone()],
                        )
                    }
                    1 => {
                        let mut u = Users::all();
                        u.exclude_groups = self.exclusions(1);
                        (
                            "Global-BLOCK-SanctionedCountries",
                            u,
                            vec![self.loc.sanctioned.clone()],
                            Vec::new(),
                        )
                    }
                    2 => {
                        let u = Users {
                            include_groups: {
                                let k = self.rng.between(1, 6);
                                self.groups(k)
                            },
                            exclude_groups: self.exclusions(2),
                            ..Users::default()
                        };
                        (
                            "Internals-BLOCK-OutsideEU",
                            u,
                            vec!["All".to_owned()],
                            vec![self.loc.eu.clone(), "AllTrusted".to_owned()],
                        )
                    }
                    3 => {
                        let u = Users {
                            include_groups: vec![self.dir.service_group.clone()],
                            ..Users::default()
                        };
                        (
                            "ServiceAccounts-BLOCK-UntrustedLocations",
                            u,
                            vec!["All".to_owned()],
                            vec![
                                self.loc.hq.clone(),
                                self.loc.vpn.clone(),
                                self.loc.service_countries.clone(),
                            ],
                        )
                    }
                    _ => {
                        let mut u = Users::all();
                        u.exclude_groups = self.exclusions(2);
                        (
                            "Global-BLOCK-NotTrustedOrCompliantNetwork",
                            u,
                            vec!["All".to_owned()],
                            vec!["AllTrusted".to_owned(), self.loc.compliant_network.clone()],
                        )
                    }
                };
                name = n;
                users = u;
                c.insert(
                    "locations".into(),
                    json!({"includeLocations": include, "excludeLocations": exclude}),
                );
            }
            Kind::LegacyAuth => {
                name = "Global-IdentityProtection-Block-LegacyAuthentication";
                let mut u = Users::all();
                u.exclude_groups = self.exclusions(2);
                users = u;
                applications = match self.rng.below(3) {
                    0 => apps(&["All"], &[]),
                    1 => apps(&["Office365"], &[]),
                    _ => apps(&[EXCHANGE], &[]),
                };
                client = match self.rng.below(3) {
                    0 => vec!["exchangeActiveSync", "other"],
                    1 => vec!["other"],
                    _ => vec!["easSupported"],
                };
                grant_controls = grant("OR", &["block"]);
            }
            Kind::Platform => {
                client = vec!["all"];
                let (n, u, platforms, g) = match self.rng.below(4) {
                    0 => {
                        let mut u = Users::all();
                        u.exclude_groups = self.exclusions(1);
                        (
                            "Internals-AttackSurfaceReduction-BlockUnknownPlatforms",
                            u,
                            json!({"includePlatforms": ["all"], "excludePlatforms": ["android", "iOS", "windows", "macOS"]}),
                            grant("OR", &["block"]),
                        )
                    }
                    1 => {
                        let u = Users {
                            include_users: vec!["All".into()],
                            exclude_groups: self.exclusions(2),
                            ..Users::default()
                        };
                        (
                            "Global-DataProtection-iOSandAndroid-AppProtection",
                            u,
                            json!({"includePlatforms": ["android", "iOS"]}),
                            grant("OR", &["approvedApplication", "compliantApplication"]),
                        )
                    }
                    2 => {
                        let u = Users {
                            include_groups: {
                                let k = self.rng.between(2, 8);
                                self.groups(k)
                            },
                            exclude_groups: self.exclusions(1),
                            ..Users::default()
                        };
                        (
                            "Internals-BLOCK-Linux",
                            u,
                            json!({"includePlatforms": ["linux"]}),
                            grant("OR", &["block"]),
                        )
                    }
                    _ => {
                        let u = Users {
                            include_groups: {
                                let k = self.rng.between(1, 5);
                                self.groups(k)
                            },
                            exclude_groups: self.exclusions(2),
                            ..Users::default()
                        };
                        (
                            "Internals-BaseProtection-WindowsMacOS-CompliantOrHybridJoined",
                            u,
                            json!({"includePlatforms": ["windows", "macOS"]}),
                            grant("OR", &["compliantDevice", "domainJoinedDevice"]),
                        )
                    }
                };
                name = n;
                users = u;
                applications = apps(&["All"], &[INTUNE_ENROLLMENT]);
                c.insert("platforms".into(), platforms);
                grant_controls = g;
            }
            Kind::Guests => {
                client = vec!["all"];
                let enumerated = self.rng.sample(self.tenants, 2);
                let (n, u, a, g) = match self.rng.below(5) {
                    0 => (
                        "GuestUsers-IdentityProtection-AnyApp-MFA",
                        Users {
                            include_guests: Some(guests(ALL_GUEST_TYPES, None)),
                            exclude_groups: vec![self.dir.break_glass_group.clone()],
                            ..Users::default()
                        },
                        apps(&["All"], &[]),
                        grant("OR", &["mfa"]),
                    ),
                    1 => (
                        "GuestUsers-AttackSurfaceReduction-BlockNonGuestAppAccess",
                        Users {
                            include_guests: Some(guests(
                                "b2bCollaborationGuest,b2bCollaborationMember,otherExternalUser",
                                None,
                            )),
                            ..Users::default()
                        },
                        apps_owned(
                            &["All".to_owned()],
                            &[self.rng.pick(&self.apps.custom).clone(), "Office365".to_owned()],
                        ),
                        grant("OR", &["block"]),
                    ),
                    2 if self.rng.chance(0.5) => (
                        "GuestUsers-Partners-AdminPortals-BLOCK",
                        Users {
                            include_guests: Some(guests(ALL_GUEST_TYPES, None)),
                            ..Users::default()
                        },
                        apps(&["MicrosoftAdminPortals"], &[]),
                        grant("OR", &["block"]),
                    ),
                    2 => (
                        "GuestUsers-PartnerTenants-AnyApp-MFA",
                        Users {
                            include_guests: Some(guests(
                                "internalGuest,b2bCollaborationGuest,b2bDirectConnectUser,serviceProvider",
                                Some(&enumerated),
                            )),
                            ..Users::default()
                        },
                        apps(&["All"], &[]),
                        grant("OR", &["mfa"]),
                    ),
                    3 => (
                        "GuestUsers-Legacy-AllGuests-TermsOfUse",
                        Users {
                            include_users: vec!["GuestsOrExternalUsers".into()],
                            exclude_guests: Some(guests("internalGuest", None)),
                            ..Users::default()
                        },
                        apps(&["Office365"], &[]),
                        json!({"operator": "OR", "builtInControls": [], "termsOfUse": [self.rng.guid()]}),
                    ),
                    _ => (
                        "Internals-AllApps-ExcludeGuests-CompliantDevice",
                        Users {
                            include_users: vec!["All".into()],
                            exclude_users: vec!["GuestsOrExternalUsers".into()],
                            exclude_groups: self.exclusions(2),
                            ..Users::default()
                        },
                        apps(&["All"], &[INTUNE_ENROLLMENT, INTUNE]),
                        grant("OR", &["compliantDevice", "domainJoinedDevice"]),
                    ),
                };
                name = n;
                users = u;
                applications = a;
                grant_controls = g;
            }
            Kind::AppSpecific => {
                name = "Internals-SelectedApps";
                let pool = self.apps.targetable();
                applications = if self.rng.chance(0.2) {
                    apps(&["Office365"], &[])
                } else {
                    let k = self.rng.between(1, 4);
                    apps_owned(&self.rng.sample(&pool, k), &[])
                };
                users = if self.rng.chance(0.25) {
                    let mut u = Users::all();
                    u.exclude_groups = self.exclusions(3);
                    u
                } else {
                    let k = self.rng.between(1, 10);
                    Users {
                        include_groups: self.groups(k),
                        exclude_groups: self.exclusions(3),
                        ..Users::default()
                    }
                };
                client = self.client_types();
                if self.rng.chance(0.3) {
                    c.insert(
                        "platforms".into(),
                        json!({"includePlatforms": ["android", "iOS", "windows"]}),
                    );
                }
                grant_controls = match self.rng.below(6) {
                    0 | 1 => grant("OR", &["mfa"]),
                    2 => grant("OR", &["compliantDevice"]),
                    3 => grant("OR", &["approvedApplication", "compliantApplication"]),
                    4 => grant("OR", &["block"]),
                    _ => {
                        json!({"operator": "AND", "builtInControls": ["mfa"], "termsOfUse": [self.rng.guid()]})
                    }
                };
            }
            Kind::DeviceFilter => {
                name = "Internals-DeviceFilter";
                // Every rule in turn, so each appears in the tenant.
                let i = self.device_policies % DEVICE_RULES.len();
                self.device_policies += 1;
                let mode = if matches!(i, 0 | 1 | 4 | 8) { "exclude" } else { "include" };
                let rule = DEVICE_RULES.get(i).copied().unwrap_or(DEVICE_RULES[0]);
                c.insert("devices".into(), json!({"deviceFilter": {"mode": mode, "rule": rule}}));
                users = if self.rng.chance(0.8) {
                    let mut u = Users::all();
                    u.exclude_groups = self.exclusions(2);
                    u
                } else {
                    Users {
                        include_groups: {
                            let k = self.rng.between(1, 6);
                            self.groups(k)
                        },
                        exclude_groups: self.exclusions(1),
                        ..Users::default()
                    }
                };
                applications = if self.rng.chance(0.7) {
                    apps(&["All"], &[])
                } else {
                    apps(&["Office365"], &[])
                };
                client = self.client_types();
                grant_controls = match self.rng.below(3) {
                    0 => grant("OR", &["block"]),
                    1 => grant("OR", &["mfa"]),
                    _ => grant("OR", &["compliantDevice"]),
                };
            }
            Kind::Risk => {
                let mut u = Users::all();
                u.exclude_groups = self.exclusions(2);
                if self.rng.chance(0.3) {
                    u = Users {
                        include_groups: {
                            let k = self.rng.between(1, 4);
                            self.groups(k)
                        },
                        exclude_groups: self.exclusions(1),
                        ..Users::default()
                    };
                }
                users = u;
                applications = apps(&["All"], &[]);
                client = vec!["all"];
                match self.rng.below(5) {
                    0 => {
                        name = "Internals-BLOCK-HighRiskSignIn";
                        c.insert("signInRiskLevels".into(), json!(["high"]));
                        grant_controls = grant("OR", &["block"]);
                    }
                    1 => {
                        name = "Global-MFA-MediumOrHighSignInRisk";
                        c.insert("signInRiskLevels".into(), json!(["medium", "high"]));
                        grant_controls = strength(STRENGTH_MFA);
                        session = json!({"signInFrequency": {"isEnabled": true, "frequencyInterval": "everyTime"}});
                    }
                    2 => {
                        name = "Global-PasswordChange-HighUserRisk";
                        c.insert("userRiskLevels".into(), json!(["high"]));
                        grant_controls = grant("AND", &["mfa", "passwordChange"]);
                    }
                    3 => {
                        name = "Global-BLOCK-ElevatedInsiderRisk";
                        c.insert("insiderRiskLevels".into(), json!("elevated"));
                        grant_controls = grant("OR", &["block"]);
                    }
                    _ => {
                        name = "Global-MFA-RiskyUserOrSignIn";
                        c.insert("userRiskLevels".into(), json!(["medium", "high"]));
                        c.insert("signInRiskLevels".into(), json!(["low", "medium", "high"]));
                        grant_controls = grant("OR", &["mfa"]);
                    }
                }
            }
            Kind::GroupBaseline => {
                name = "Internals-Groups-Baseline";
                let k = self.rng.between(1, 20);
                let mut u = Users {
                    include_groups: self.groups(k),
                    exclude_groups: self.exclusions(5),
                    ..Users::default()
                };
                if self.rng.chance(0.05) {
                    u.include_users.push(self.dir.bench_user.clone());
                }
                if self.rng.chance(0.2) {
                    let k = self.rng.between(1, 2);
                    u.exclude_users = self.pick_users(&self.dir.regular_users, k);
                }
                if self.rng.chance(0.1) {
                    u.exclude_users.push(self.dir.bench_user.clone());
                }
                users = u;
                applications = match self.rng.below(10) {
                    0..=5 => apps(&["All"], &[]),
                    6 | 7 => apps(&["Office365"], &[]),
                    _ => apps_owned(&[self.rng.pick(&self.apps.targetable()).clone()], &[]),
                };
                client = self.client_types();
                if self.rng.chance(0.25) {
                    let p = match self.rng.below(3) {
                        0 => json!({"includePlatforms": ["windows", "macOS"]}),
                        1 => {
                            json!({"includePlatforms": ["all"], "excludePlatforms": ["iOS", "android"]})
                        }
                        _ => json!({"includePlatforms": ["iOS", "android", "linux"]}),
                    };
                    c.insert("platforms".into(), p);
                }
                if self.rng.chance(0.25) {
                    let l = if self.rng.chance(0.5) {
                        json!({"includeLocations": ["All"], "excludeLocations": ["AllTrusted"]})
                    } else {
                        json!({"includeLocations": [self.loc.branch.clone(), self.loc.sanctioned.clone()], "excludeLocations": []})
                    };
                    c.insert("locations".into(), l);
                }
                grant_controls = match self.rng.below(4) {
                    0 | 1 => grant("OR", &["mfa"]),
                    2 => grant("OR", &["compliantDevice", "domainJoinedDevice"]),
                    _ => grant("AND", &["mfa", "compliantDevice"]),
                };
                if self.rng.chance(0.2) {
                    session =
                        json!({"signInFrequency": {"isEnabled": true, "type": "days", "value": 7}});
                }
            }
            Kind::UserAction => {
                client = vec!["all"];
                let mut u = Users::all();
                u.exclude_groups = self.exclusions(1);
                if self.rng.chance(0.5) {
                    u.exclude_users = vec!["GuestsOrExternalUsers".into()];
                    name = "Global-RegisterSecurityInfo-TrustedLocationsOnly";
                    c.insert(
                        "locations".into(),
                        json!({"includeLocations": ["All"], "excludeLocations": ["AllTrusted"]}),
                    );
                    applications = json!({"includeApplications": [], "includeUserActions": ["urn:user:registersecurityinfo"]});
                    grant_controls = if self.rng.chance(0.5) {
                        grant("OR", &["mfa"])
                    } else {
                        grant("OR", &["block"])
                    };
                } else {
                    name = "Global-BaseProtection-RegisterOrJoin-MFA";
                    applications = json!({"includeApplications": [], "includeUserActions": ["urn:user:registerdevice"]});
                    grant_controls = grant("OR", &["mfa"]);
                }
                users = u;
            }
            Kind::AuthContext => {
                name = "Global-AuthContext-StepUp";
                let mut u = Users::all();
                u.exclude_groups = self.exclusions(1);
                users = u;
                let ctx = match self.rng.below(3) {
                    0 => json!(["c1"]),
                    1 => json!(["c2", "c3"]),
                    _ => json!(["c3"]),
                };
                applications = json!({"includeApplications": [], "includeAuthenticationContextClassReferences": ctx});
                client = vec!["all"];
                grant_controls = if self.rng.chance(0.5) {
                    strength(STRENGTH_PHISHING_RESISTANT)
                } else {
                    grant("OR", &["compliantDevice"])
                };
            }
            Kind::AuthFlow => {
                name = "Global-IdentityProtection-AuthenticationFlows";
                let mut u = Users::all();
                u.exclude_groups = self.exclusions(1);
                users = u;
                applications = apps(&["All"], &[]);
                client = vec!["all"];
                let methods = if self.rng.chance(0.5) {
                    "deviceCodeFlow"
                } else {
                    "deviceCodeFlow,authenticationTransfer"
                };
                c.insert("authenticationFlows".into(), json!({"transferMethods": methods}));
                grant_controls = grant("OR", &["block"]);
            }
            Kind::SessionOnly => {
                name = "Global-DataProtection-Office365-Browser-Unmanaged-AppEnforcedRestrictions";
                let mut u = Users::all();
                u.exclude_groups = self.exclusions(1);
                users = u;
                applications = apps(&[SHAREPOINT, EXCHANGE], &[]);
                client = vec!["browser"];
                c.insert(
                    "devices".into(),
                    json!({"deviceFilter": {"mode": "exclude", "rule": DEVICE_RULES[0]}}),
                );
                grant_controls = Value::Null;
                session = json!({"applicationEnforcedRestrictions": {"isEnabled": true}});
            }
        }
        c.insert("users".into(), users.json());
        c.insert("applications".into(), applications);
        c.insert("clientAppTypes".into(), json!(client));
        for key in ["signInRiskLevels", "userRiskLevels"] {
            c.entry(key).or_insert_with(|| json!([]));
        }
        Spec { name: name.to_owned(), conditions: c, grant: grant_controls, session }
    }
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Who {
    Bench,
    FewGroups,
    Regular,
    Guest,
    Unknown,
    Admin,
    BreakGlass,
}

#[derive(Debug, Clone, Copy)]
enum Target {
    /// An app only `All` policies cover.
    Untargeted,
    Office365,
    AdminPortal,
    PoolApp,
    UserAction,
    AuthContext,
}

/// Where the sign-in comes from: (IP, country).
const WHERE: [(&str, &str); 12] = [
    ("203.0.113.10", "NL"),
    ("2001:db8:100::5", "NL"),
    ("100.64.3.7", "NL"),
    ("192.0.2.55", "DE"),
    ("2001:db8:200::1", "DE"),
    ("84.241.0.10", "NL"),
    ("40.77.182.32", "US"),
    ("92.205.185.202", "FR"),
    ("133.0.0.1", "JP"),
    ("95.165.0.1", "RU"),
    ("175.45.176.1", "KP"),
    ("200.147.0.1", "BR"),
];

fn devices() -> Vec<Value> {
    vec![
        json!({}),
        json!({}),
        json!({"deviceId": "5c2f0b4e-1d2a-4f4e-9a51-0d2a7c1e0001", "displayName": "DESKTOP-7H2K9", "operatingSystem": "Windows",
               "operatingSystemVersion": "10.0.22631", "isCompliant": true, "trustType": "AzureAD", "ownership": "Company",
               "manufacturer": "Microsoft", "model": "Surface Pro 9", "mdmAppId": INTUNE, "enrollmentProfileName": "Corp-Autopilot"}),
        json!({"displayName": "WKS-0042", "operatingSystem": "Windows", "operatingSystemVersion": "10.0.19045", "isCompliant": false,
               "trustType": "ServerAD", "ownership": "Company", "manufacturer": "Lenovo", "model": "ThinkPad X1 Carbon"}),
        json!({"displayName": "PAW-ADM-07", "operatingSystem": "Windows", "isCompliant": true, "trustType": "AzureAD",
               "ownership": "Company", "extensionAttribute1": "PAW", "mdmAppId": INTUNE}),
        json!({"displayName": "Jan's iPhone", "operatingSystem": "iOS", "operatingSystemVersion": "17.4", "manufacturer": "Apple",
               "model": "iPhone 15", "ownership": "Personal", "trustType": "Workplace", "isCompliant": false}),
        json!({"displayName": "Lobby-Kiosk-01", "operatingSystem": "Android", "profileType": "Shared", "isCompliant": true,
               "trustType": "AzureAD", "manufacturer": "Samsung", "mdmAppId": INTUNE}),
        json!({"displayName": "vm-build-03", "operatingSystem": "Linux", "trustType": "AzureAD",
               "systemLabels": ["AzureResource"], "physicalIds": ["[AzureResourceId]:/subscriptions/x/vm-build-03"]}),
        json!({"displayName": "MacBook-Pro", "operatingSystem": "macOS", "manufacturer": "Apple", "ownership": "Personal",
               "trustType": "Workplace", "isCompliant": false}),
        json!({"displayName": "LAB-PC-3", "operatingSystem": "Windows", "trustType": "Workplace"}),
        json!({"displayName": "BYOD-unknown", "isCompliant": false}),
    ]
}

fn requests(
    cfg: &Config,
    rng: &mut Rng,
    dir: &Directory,
    apps: &Apps,
    tenants: &[String],
) -> Vec<Value> {
    let who_mix = [
        (Who::Bench, 20),
        (Who::FewGroups, 10),
        (Who::Regular, 10),
        (Who::Guest, 10),
        (Who::Unknown, 6),
        (Who::Admin, 6),
        (Who::BreakGlass, 2),
    ];
    let target_mix = [
        (Target::Untargeted, 16),
        (Target::Office365, 16),
        (Target::AdminPortal, 6),
        (Target::PoolApp, 14),
        (Target::UserAction, 6),
        (Target::AuthContext, 6),
    ];
    let expand = |mix: &[(Who, usize)]| -> Vec<Who> {
        mix.iter().flat_map(|(w, n)| std::iter::repeat_n(*w, *n)).collect()
    };
    let mut whos = expand(&who_mix);
    let mut targets: Vec<Target> =
        target_mix.iter().flat_map(|(t, n)| std::iter::repeat_n(*t, *n)).collect();
    rng.shuffle(&mut whos);
    rng.shuffle(&mut targets);
    let office: Vec<String> = [SHAREPOINT, EXCHANGE, TEAMS]
        .iter()
        .map(|s| (*s).to_owned())
        .chain(suites::office365().take(12).map(str::to_owned))
        .collect();
    let portals: Vec<String> = suites::admin_portals().map(str::to_owned).collect();
    let pool = apps.targetable();
    let untargeted = apps.untargeted();
    let devices = devices();
    let mut partner_tenants = tenants.to_vec();
    partner_tenants.push("72f988bf-86f1-41af-91ab-2d7cd011db47".to_owned());

    let mut next_guest = 0;
    let mut out = Vec::with_capacity(cfg.requests);
    for i in 0..cfg.requests {
        let who = whos.get(i % whos.len().max(1)).copied().unwrap_or(Who::Bench);
        let target = targets.get(i % targets.len().max(1)).copied().unwrap_or(Target::Untargeted);
        let mut identity = json!({"@odata.type": "#microsoft.graph.userSignIn"});
        let mut set = |k: &str, v: Value| {
            if let Value::Object(m) = &mut identity {
                m.insert(k.to_owned(), v);
            }
        };
        match who {
            Who::Bench => set("userId", json!(dir.bench_user)),
            Who::FewGroups => set("userId", json!(rng.pick(&dir.few_group_users))),
            Who::Regular => set("userId", json!(rng.pick(&dir.regular_users))),
            Who::Admin => set("userId", json!(rng.pick(&dir.admins))),
            Who::BreakGlass => set("userId", json!(rng.pick(&dir.break_glass_users))),
            Who::Guest => {
                // In turn, so every guest kind is asked about.
                let g = dir.guests.get(next_guest % dir.guests.len().max(1));
                next_guest += 1;
                set("userId", json!(g));
                set("externalTenantId", json!(rng.pick(&partner_tenants)));
                if rng.chance(0.2) {
                    set("externalUserType", json!("serviceProvider"));
                }
            }
            Who::Unknown => {
                set("userId", json!(rng.guid()));
                if rng.chance(0.5) {
                    set("externalUserType", json!("b2bDirectConnectUser"));
                    set("externalTenantId", json!(rng.pick(&partner_tenants)));
                }
            }
        }
        let context = match target {
            Target::Untargeted => app_context(rng.pick(&untargeted).as_str()),
            Target::Office365 => app_context(rng.pick(&office).as_str()),
            Target::AdminPortal => app_context(rng.pick(&portals).as_str()),
            Target::PoolApp => app_context(rng.pick(&pool).as_str()),
            Target::UserAction => json!({
                "@odata.type": "#microsoft.graph.userActionContext",
                "userAction": if rng.chance(0.6) { "registerSecurityInformation" } else { "registerOrJoinDevices" },
            }),
            Target::AuthContext => json!({
                "@odata.type": "#microsoft.graph.authContext",
                "authenticationContextValue": *rng.pick(&["c1", "c2", "c3", "c4"]),
            }),
        };
        let (ip, country) = *rng.pick(&WHERE);
        let risk = ["none", "none", "none", "none", "low", "low", "medium", "high"];
        let conditions = json!({
            "devicePlatform": *rng.pick(&["windows", "windows", "windows", "macOS", "iOS", "android", "linux", "unknownFutureValue"]),
            "clientAppType": *rng.pick(&["browser", "browser", "browser", "mobileAppsAndDesktopClients", "mobileAppsAndDesktopClients",
                                         "exchangeActiveSync", "easSupported", "other"]),
            "ipAddress": ip,
            "country": country,
            "signInRiskLevel": *rng.pick(&risk),
            "userRiskLevel": *rng.pick(&risk),
            "insiderRiskLevel": *rng.pick(&["none", "none", "none", "minor", "moderate", "elevated"]),
            "authenticationFlow": {"transferMethod": if rng.chance(0.15) { "deviceCodeFlow" } else { "none" }},
            "deviceInfo": rng.pick(&devices).clone(),
        });
        out.push(json!({
            "signInIdentity": identity,
            "signInContext": context,
            "signInConditions": conditions,
        }));
    }
    out
}

fn app_context(app: &str) -> Value {
    json!({"@odata.type": "#microsoft.graph.applicationContext", "includeApplications": [app]})
}
