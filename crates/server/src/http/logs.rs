//! `/v1.0/auditLogs`: the directory audit log and the sign-in log, newest first, paged by
//! `$skiptoken` over (time, id), filtered in the database (see `store::logs`).

use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::Response;
use gatehouse_core::odata::{self, Filter, Literal};
use gatehouse_core::roles::{Access, area};
use serde_json::Value;

use super::Api;
use super::error::{ApiError, ApiResult};
use super::graph::ok;
use super::odata::{OData, Spec, query_error};
use crate::state::AppState;
use crate::store::{LogCursor, LogKind};

const READ: Access = Access::Roles(area::REPORTS_READ);

const AUDITS: Spec = Spec::plain(
    "DirectoryAudit",
    &[
        "id",
        "activityDateTime",
        "category",
        "activityDisplayName",
        "result",
        "initiatedBy/user/id",
        "targetResources",
        "targetResources/id",
    ],
);

const SIGNINS: Spec = Spec::plain(
    "SignIn",
    &[
        "id",
        "createdDateTime",
        "userId",
        "userPrincipalName",
        "appId",
        "status/errorCode",
        "conditionalAccessStatus",
    ],
);

pub fn routes(api: Api) -> Api {
    api.route(
        Method::GET,
        "/v1.0/auditLogs/directoryAudits",
        READ,
        "List directory audit entries, newest first",
        list_audits,
    )
    .route(
        Method::GET,
        "/v1.0/auditLogs/directoryAudits/{id}",
        READ,
        "Get a directory audit entry",
        get_audit,
    )
    .route(
        Method::GET,
        "/v1.0/auditLogs/signIns",
        READ,
        "List sign-ins, newest first",
        list_signins,
    )
    .route(Method::GET, "/v1.0/auditLogs/signIns/{id}", READ, "Get a sign-in", get_signin)
}

async fn list_audits(State(state): State<AppState>, odata: OData) -> ApiResult<Response> {
    list(&state, &odata, LogKind::Audit, &AUDITS, "auditLogs/directoryAudits").await
}

async fn list_signins(State(state): State<AppState>, odata: OData) -> ApiResult<Response> {
    list(&state, &odata, LogKind::SignIn, &SIGNINS, "auditLogs/signIns").await
}

async fn get_audit(
    State(state): State<AppState>,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    get(&state, &odata, LogKind::Audit, &AUDITS, "auditLogs/directoryAudits", &id).await
}

async fn get_signin(
    State(state): State<AppState>,
    Path(id): Path<String>,
    odata: OData,
) -> ApiResult<Response> {
    get(&state, &odata, LogKind::SignIn, &SIGNINS, "auditLogs/signIns", &id).await
}

async fn get(
    state: &AppState,
    odata: &OData,
    kind: LogKind,
    spec: &Spec,
    path: &str,
    id: &str,
) -> ApiResult<Response> {
    odata.for_entity(spec)?;
    let entry = state.store.log_entry(kind, id).await?;
    let entry = entry.ok_or_else(|| {
        ApiError::item_not_found(format!("No {} entry with id '{id}'.", spec.resource))
    })?;
    Ok(ok(odata.entity(state, spec, path, entry, |_, _| Ok(()))?))
}

async fn list(
    state: &AppState,
    odata: &OData,
    kind: LogKind,
    spec: &Spec,
    path: &str,
) -> ApiResult<Response> {
    odata.check_filter(spec)?;
    let q = &odata.query;
    if q.count {
        return Err(ApiError::invalid_request(
            "$count is not supported on the audit and sign-in logs",
        ));
    }
    if q.search.is_some() {
        return Err(ApiError::invalid_request(
            "$search is not supported on the audit and sign-in logs",
        ));
    }
    if !q.expand.is_empty() {
        return Err(ApiError::invalid_request(
            "$expand is not supported on the audit and sign-in logs",
        ));
    }
    if let Some((p, desc)) = &q.orderby
        && !(p.eq_ignore_ascii_case(kind.time_property()) && *desc)
    {
        return Err(ApiError::invalid_request(format!(
            "the log is ordered newest first; only `$orderby={} desc` is accepted",
            kind.time_property()
        )));
    }
    let filter = match &q.filter {
        Some(f) => Some(times_as_instants(f, kind.time_property())?),
        None => None,
    };
    let after = match &q.skip_token {
        Some(t) => Some(decode_cursor(t)?),
        None => None,
    };
    let page = state.store.log_page(kind, filter.as_ref(), after.as_ref(), odata.top()).await?;
    let token = page.next.as_ref().map(encode_cursor);
    Ok(ok(odata.page(state, path, page.items, token)))
}

/// Rewrites quoted times on the time property (`'2026-12-01T00:00:00+00:00'`) as instants, so
/// both the database and the row check compare instants; anything else there is a 400.
fn times_as_instants(f: &Filter, time: &str) -> ApiResult<Filter> {
    let instant = |l: &Literal| -> ApiResult<Literal> {
        match l {
            Literal::DateTime(_) => Ok(l.clone()),
            Literal::String(s) => gatehouse_core::time::parse(s)
                .map(Literal::DateTime)
                .ok_or_else(|| bad_time(time, s)),
            other => Err(bad_time(time, &other.to_string())),
        }
    };
    Ok(match f {
        Filter::Compare { path, op, value } if path.eq_ignore_ascii_case(time) => {
            Filter::Compare { path: path.clone(), op: *op, value: instant(value)? }
        }
        Filter::In { path, values } if path.eq_ignore_ascii_case(time) => Filter::In {
            path: path.clone(),
            values: values.iter().map(instant).collect::<ApiResult<_>>()?,
        },
        Filter::Function { path, .. } if path.eq_ignore_ascii_case(time) => {
            return Err(ApiError::invalid_request(format!(
                "`{time}` is compared with eq, ne, gt, ge, lt or le"
            )));
        }
        Filter::Not(inner) => Filter::Not(Box::new(times_as_instants(inner, time)?)),
        Filter::And(items) => {
            Filter::And(items.iter().map(|i| times_as_instants(i, time)).collect::<ApiResult<_>>()?)
        }
        Filter::Or(items) => {
            Filter::Or(items.iter().map(|i| times_as_instants(i, time)).collect::<ApiResult<_>>()?)
        }
        other => other.clone(),
    })
}

fn bad_time(property: &str, given: &str) -> ApiError {
    ApiError::invalid_request(format!(
        "`{property}` takes a DateTimeOffset such as 2026-12-01T09:00:00Z, not `{given}`"
    ))
    .with_target(property.to_owned())
}

fn encode_cursor(c: &LogCursor) -> String {
    odata::encode_skip_token(&Value::Array(vec![c.0.into(), c.1.clone().into()]).to_string())
}

fn decode_cursor(token: &str) -> ApiResult<LogCursor> {
    let text = odata::decode_skip_token(token).map_err(query_error)?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(a)) => match a.as_slice() {
            [Value::Number(at), Value::String(id)] => at
                .as_i64()
                .map(|at| (at, id.clone()))
                .ok_or_else(|| query_error(odata::QueryError::SkipToken)),
            _ => Err(query_error(odata::QueryError::SkipToken)),
        },
        _ => Err(query_error(odata::QueryError::SkipToken)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_other_tokens_are_refused() {
        let c = (1_764_579_600_000, "9f1c".to_owned());
        assert_eq!(decode_cursor(&encode_cursor(&c)).unwrap(), c);
        assert!(decode_cursor(&odata::encode_skip_token("[\"a\",\"b\"]")).is_err());
        assert!(decode_cursor("%%%").is_err());
    }

    #[test]
    fn quoted_times_become_instants_and_other_values_are_refused() {
        let f = Filter::parse("createdDateTime ge '2026-12-01T00:00:00+00:00' and userId eq 'x'")
            .unwrap();
        let g = times_as_instants(&f, "createdDateTime").unwrap();
        assert_eq!(
            g,
            Filter::parse("createdDateTime ge 2026-12-01T00:00:00Z and userId eq 'x'").unwrap()
        );
        for bad in [
            "createdDateTime ge 'yesterday'",
            "createdDateTime eq 5",
            "startswith(createdDateTime, '2026')",
        ] {
            let f = Filter::parse(bad).unwrap();
            assert_eq!(times_as_instants(&f, "createdDateTime").unwrap_err().status, 400, "{bad}");
        }
    }
}
