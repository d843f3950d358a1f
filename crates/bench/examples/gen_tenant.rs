//! Writes a large tenant export for the server benchmarks (`docs/benchmarks.md`, "The server"):
//! the travel story of `examples/contoso` (its users, groups, policies, named locations, apps,
//! strengths and role assignments, unchanged) grown to exactly 100,000 users, 20,000 groups and
//! 1,000,000 group memberships, deterministically from a seed.
//!
//! ```sh
//! cargo run --release -p gatehouse-bench --example gen_tenant -- /tmp/tenant100k
//! target/release/gatehouse import --tenant /tmp/tenant100k --data-dir /tmp/gh100k
//! ```
//! It writes the story's files unchanged, and `users/page-NNN.json` (10,000 users each) and
//! `groups/page-NNN.json` (2,000 groups each, with `members`) as Graph pages saved as files.
//! Arguments: `OUT_DIR [USERS GROUPS MEMBERSHIPS]` (defaults 100000 20000 1000000; the
//! totals include the story's own users, groups and memberships).
//!
//! Shape: the generated groups form a hierarchy under the story's `CA-Internals` (so every
//! generated member is a transitive member of `CA-Internals` and `All-Staff`, which policies
//! target): 20 divisions, 180 departments, 1,800 teams, and the rest project groups; each group
//! is a member of one group a level up, and one in ten of a second one. Users hold the remaining
//! memberships in teams and project groups (about ten each); 1% are also direct members of
//! `CA-Internals-Travel`, 0.5% of `CA-Onboarding`, and 2% are guests. Generated member user n
//! reports to user n / 10 (unless that one is a guest).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use gatehouse_bench::rng::Rng;
use serde_json::{Value, json};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const STORY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/contoso/tenant");
const CA_INTERNALS: &str = "b0000000-0000-4000-8000-000000000002";
const TRAVEL: &str = "b0000000-0000-4000-8000-000000000003";
const ONBOARDING: &str = "b0000000-0000-4000-8000-000000000005";
/// Groups per level of the generated hierarchy, top first; the last level takes the rest.
const LEVELS: [usize; 3] = [20, 180, 1_800];

fn user_id(n: usize) -> String {
    format!("a1000000-0000-4000-8000-{n:012}")
}

fn group_id(n: usize) -> String {
    format!("b1000000-0000-4000-8000-{n:012}")
}

fn values(path: &Path) -> Result<Vec<Value>> {
    let doc: Value = serde_json::from_slice(&fs::read(path)?)?;
    match doc.get("value").and_then(Value::as_array) {
        Some(v) => Ok(v.clone()),
        None => Err(format!("{}: no `value` array", path.display()).into()),
    }
}

fn member_ref(kind: &str, id: &str) -> Value {
    json!({"@odata.type": format!("#microsoft.graph.{kind}"), "id": id})
}

/// A Graph collection written as `{"value": [...]}` pages of `per_page` objects each.
struct Pages {
    dir: PathBuf,
    what: &'static str,
    per_page: usize,
    in_page: usize,
    pages: usize,
    file: Option<BufWriter<File>>,
}

impl Pages {
    fn new(out: &Path, what: &'static str, per_page: usize) -> Result<Pages> {
        let dir = out.join(what);
        fs::create_dir_all(&dir)?;
        Ok(Pages { dir, what, per_page, in_page: 0, pages: 0, file: None })
    }

    fn push(&mut self, item: &Value) -> Result<()> {
        if self.in_page == self.per_page {
            self.finish()?;
        }
        let w = match &mut self.file {
            Some(w) => {
                w.write_all(b",\n")?;
                w
            }
            None => {
                self.pages += 1;
                let path = self.dir.join(format!("page-{:03}.json", self.pages));
                let mut w = BufWriter::new(File::create(path)?);
                let head = format!(
                    "{{\"@odata.context\": \"https://graph.microsoft.com/v1.0/$metadata#{}\", \"value\": [\n",
                    self.what
                );
                w.write_all(head.as_bytes())?;
                self.file.insert(w)
            }
        };
        serde_json::to_writer(&mut *w, item)?;
        self.in_page += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        if let Some(mut w) = self.file.take() {
            w.write_all(b"\n]}\n")?;
            w.flush()?;
        }
        self.in_page = 0;
        Ok(())
    }
}

struct Counts {
    users: usize,
    groups: usize,
    memberships: usize,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("gen_tenant: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(out) = args.first().map(PathBuf::from) else {
        return Err("usage: gen_tenant OUT_DIR [USERS GROUPS MEMBERSHIPS]".into());
    };
    let number = |i: usize, default: usize| -> Result<usize> {
        match args.get(i) {
            Some(a) => Ok(a.replace('_', "").parse()?),
            None => Ok(default),
        }
    };
    let want = Counts {
        users: number(1, 100_000)?,
        groups: number(2, 20_000)?,
        memberships: number(3, 1_000_000)?,
    };
    let story = Path::new(STORY);
    fs::create_dir_all(out.join("policies"))?;
    for name in [
        "applications.json",
        "authenticationStrengths.json",
        "namedLocations.json",
        "roleAssignments.json",
    ] {
        fs::copy(story.join(name), out.join(name))?;
    }
    for entry in fs::read_dir(story.join("policies"))? {
        let entry = entry?;
        fs::copy(entry.path(), out.join("policies").join(entry.file_name()))?;
    }
    let story_users = values(&story.join("users.json"))?;
    let mut story_groups = values(&story.join("groups.json"))?;
    let story_memberships: usize = story_groups
        .iter()
        .map(|g| g.get("members").and_then(Value::as_array).map_or(0, Vec::len))
        .sum();

    let n_users = want.users.checked_sub(story_users.len()).ok_or("too few users")?;
    let n_groups = want.groups.checked_sub(story_groups.len()).ok_or("too few groups")?;
    let top: usize = LEVELS.iter().sum();
    if n_groups <= top || n_users == 0 {
        return Err(format!("need more than {top} generated groups and some users").into());
    }
    let mut rng = Rng::new(0x6a7e_4005_e000_0003);

    // Group hierarchy: level bounds [start, end) over generated group numbers.
    let mut bounds = Vec::new();
    let mut start = 0;
    for size in LEVELS.iter().copied().chain([n_groups - top]) {
        bounds.push((start, start + size));
        start += size;
    }
    let mut members: Vec<Vec<Value>> = vec![Vec::new(); n_groups];
    let mut story_extra: Vec<(usize, Value)> = Vec::new(); // (index in story_groups, member)
    let internals = story_groups
        .iter()
        .position(|g| g.get("id").and_then(Value::as_str) == Some(CA_INTERNALS))
        .ok_or("the story has no CA-Internals group")?;
    let mut edges = 0;
    for (level, &(lo, hi)) in bounds.iter().enumerate() {
        for g in lo..hi {
            let me = member_ref("group", &group_id(g));
            if level == 0 {
                story_extra.push((internals, me));
                continue;
            }
            let (plo, phi) = bounds.get(level - 1).copied().ok_or("level")?;
            let first = rng.between(plo, phi - 1);
            if let Some(m) = members.get_mut(first) {
                m.push(me.clone());
                edges += 1;
            }
            if rng.chance(0.1) {
                let second = rng.between(plo, phi - 1);
                if second != first
                    && let Some(m) = members.get_mut(second)
                {
                    m.push(me);
                    edges += 1;
                }
            }
        }
    }

    // Users: special memberships first, then the rest of the budget spread evenly.
    let travel = story_groups
        .iter()
        .position(|g| g.get("id").and_then(Value::as_str) == Some(TRAVEL))
        .ok_or("no travel group")?;
    let onboarding = story_groups
        .iter()
        .position(|g| g.get("id").and_then(Value::as_str) == Some(ONBOARDING))
        .ok_or("no onboarding group")?;
    let guests: Vec<bool> = (0..n_users).map(|_| rng.chance(0.02)).collect();
    for (u, guest) in guests.iter().enumerate() {
        if *guest {
            continue;
        }
        if rng.chance(0.01) {
            story_extra.push((travel, member_ref("user", &user_id(u))));
        }
        if rng.chance(0.005) {
            story_extra.push((onboarding, member_ref("user", &user_id(u))));
        }
    }
    let used = story_memberships + story_extra.len() + edges;
    let budget = want.memberships.checked_sub(used).ok_or("too few memberships for the groups")?;
    let (teams_lo, _) = bounds.get(2).copied().ok_or("levels")?;
    let (_, last_hi) = bounds.last().copied().ok_or("levels")?;
    let pool = last_hi - teams_lo;
    let (each, extra) = (budget / n_users, budget % n_users);
    if each + 1 > pool {
        return Err("more memberships per user than groups to hold them".into());
    }
    let mut chosen = Vec::new();
    for u in 0..n_users {
        let k = each + usize::from(u < extra);
        chosen.clear();
        while chosen.len() < k {
            let g = teams_lo + rng.below(pool);
            if !chosen.contains(&g) {
                chosen.push(g);
            }
        }
        let me = member_ref("user", &user_id(u));
        for &g in &chosen {
            if let Some(m) = members.get_mut(g) {
                m.push(me.clone());
            }
        }
    }
    for (i, m) in story_extra {
        if let Some(arr) =
            story_groups.get_mut(i).and_then(|g| g.get_mut("members")).and_then(Value::as_array_mut)
        {
            arr.push(m);
        }
    }

    // users/page-NNN.json and groups/page-NNN.json: Graph pages saved as files (the importer
    // takes at most 64 MiB per file).
    let mut w = Pages::new(&out, "users", 10_000)?;
    for u in &story_users {
        w.push(u)?;
    }
    const DEPARTMENTS: [&str; 8] = [
        "Sales",
        "Engineering",
        "Finance",
        "Marketing",
        "Operations",
        "Legal",
        "Support",
        "Research",
    ];
    for (u, guest) in guests.iter().enumerate() {
        let id = user_id(u);
        let user = if *guest {
            json!({
                "@odata.type": "#microsoft.graph.user", "id": id,
                "displayName": format!("Guest {u}"),
                "userPrincipalName": format!("guest{u}_fabrikam.example#EXT#@contoso.onmicrosoft.com"),
                "mail": format!("guest{u}@fabrikam.example"),
                "userType": "Guest", "accountEnabled": true,
                "createdDateTime": "2024-01-01T00:00:00Z"
            })
        } else {
            let mut user = json!({
                "@odata.type": "#microsoft.graph.user", "id": id,
                "displayName": format!("User {u}"), "givenName": "User", "surname": format!("{u}"),
                "userPrincipalName": format!("user{u}@contoso.example"),
                "mail": format!("user{u}@contoso.example"),
                "jobTitle": "Staff", "department": rng.pick(&DEPARTMENTS),
                "usageLocation": "GB", "userType": "Member", "accountEnabled": true,
                "createdDateTime": "2024-01-01T00:00:00Z"
            });
            // A tree of managers: user u reports to user u / 10 (the first reports to nobody).
            let boss = u / 10;
            if u > 0
                && !guests.get(boss).copied().unwrap_or(true)
                && let Some(o) = user.as_object_mut()
            {
                o.insert("manager".into(), member_ref("user", &user_id(boss)));
            }
            user
        };
        w.push(&user)?;
    }
    w.finish()?;

    // Groups with `members`, as `/groups?$expand=members` returns them.
    let mut w = Pages::new(&out, "groups", 2_000)?;
    let mut total_members = 0;
    for g in &story_groups {
        total_members += g.get("members").and_then(Value::as_array).map_or(0, Vec::len);
        w.push(g)?;
    }
    let kinds = ["Division", "Department", "Team", "Project"];
    for (level, &(lo, hi)) in bounds.iter().enumerate() {
        let kind = kinds.get(level).copied().unwrap_or("Project");
        for g in lo..hi {
            let m = members.get(g).map(Vec::as_slice).unwrap_or_default();
            total_members += m.len();
            let group = json!({
                "@odata.type": "#microsoft.graph.group", "id": group_id(g),
                "displayName": format!("{kind}-{g}"),
                "securityEnabled": true, "mailEnabled": false, "groupTypes": [],
                "members": m
            });
            w.push(&group)?;
        }
    }
    w.finish()?;

    let got = Counts {
        users: story_users.len() + n_users,
        groups: story_groups.len() + n_groups,
        memberships: total_members,
    };
    println!(
        "wrote {}: {} users ({} guests), {} groups ({} nesting edges below the divisions), {} memberships",
        out.display(),
        got.users,
        guests.iter().filter(|g| **g).count()
            + story_users
                .iter()
                .filter(|u| u.get("userType").and_then(Value::as_str) == Some("Guest"))
                .count(),
        got.groups,
        edges,
        got.memberships
    );
    if (got.users, got.groups, got.memberships) != (want.users, want.groups, want.memberships) {
        return Err(format!(
            "counts differ from the request: {} / {} / {}",
            got.users, got.groups, got.memberships
        )
        .into());
    }
    Ok(())
}
