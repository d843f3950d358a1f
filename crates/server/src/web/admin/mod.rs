//! `/admin`: the admin center. Each page is gated twice by the API's own role table: the page
//! shows only what its viewer's roles reach (`area`), and every read and write it makes is an
//! API call as the viewer, which refuses what the roles do not allow.

use askama::Template;
use axum::response::Response;
use axum::routing::get;
use gatehouse_core::roles::{Role, area};

use super::{Nav, Portal, Viewer, render};
use crate::state::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    router.route("/admin", get(home))
}

/// One task of the admin center, as the landing page lists it.
pub struct Task {
    pub href: &'static str,
    pub title: &'static str,
    pub text: &'static str,
}

/// The admin center's tasks, each with the roles that may open it (the API's areas).
pub const TASKS: &[(&[Role], Task)] = &[
    (
        area::DIRECTORY_READ,
        Task {
            href: "/admin/users",
            title: "Users",
            text: "Find users, their groups, roles and sign-in methods; issue a Temporary Access Pass.",
        },
    ),
    (
        area::DIRECTORY_READ,
        Task { href: "/admin/groups", title: "Groups", text: "Members and nesting." },
    ),
    (
        area::CA_READ,
        Task {
            href: "/admin/conditional-access",
            title: "Conditional Access",
            text: "Policies, with a form for every condition and control, or their JSON.",
        },
    ),
    (
        area::CA_READ,
        Task {
            href: "/admin/named-locations",
            title: "Named locations",
            text: "Countries and IP ranges policies refer to.",
        },
    ),
    (
        area::CA_READ,
        Task {
            href: "/admin/what-if",
            title: "What If",
            text: "Ask which policies apply to a sign-in, and why the others do not.",
        },
    ),
    (
        area::AUTH_POLICY_READ,
        Task {
            href: "/admin/authentication-methods",
            title: "Authentication methods",
            text: "The Temporary Access Pass and passkey settings.",
        },
    ),
    (
        area::GOVERNANCE_READ,
        Task {
            href: "/admin/entitlement",
            title: "Identity governance",
            text: "Catalogs, access packages and their policies, assignments.",
        },
    ),
    (
        area::REPORTS_READ,
        Task {
            href: "/admin/sign-ins",
            title: "Sign-in logs",
            text: "Every sign-in, and which policy decided what.",
        },
    ),
    (
        area::REPORTS_READ,
        Task {
            href: "/admin/audit",
            title: "Audit log",
            text: "Every change, who made it and when.",
        },
    ),
];

/// Whether the viewer holds any role the admin center serves.
pub fn may_see_admin(v: &Viewer) -> bool {
    TASKS.iter().any(|(roles, _)| v.has_any(roles))
}

#[derive(Template)]
#[template(path = "web/admin/home.html")]
struct Home<'a> {
    nav: Nav,
    roles: Vec<&'static str>,
    tasks: Vec<&'a Task>,
}

async fn home(p: Portal) -> Response {
    let v = match p.require("/admin") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let tasks: Vec<&Task> =
        TASKS.iter().filter(|(roles, _)| v.has_any(roles)).map(|(_, t)| t).collect();
    if tasks.is_empty() {
        return super::error_page(
            &p,
            axum::http::StatusCode::FORBIDDEN,
            "You cannot open the admin center",
            "Your account holds no administrator role. My Access and Security info are yours to use.",
        );
    }
    let roles = v.roles.iter().map(|r| r.display_name()).collect();
    render(&p, &Home { nav: Nav::of(&p, "admin"), roles, tasks })
}
