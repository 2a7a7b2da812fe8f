//! The HTTP front: discovery, routing of resource URLs, the verbs, chunked watch streams,
//! authentication, authorization and fault injection.

use crate::deletion::{self, DeleteOptions, Deleted};
use crate::error::ApiError;
use crate::faults::Faults;
use crate::kinds::ResourceKind;
use crate::patch::PatchType;
use crate::rbac::{self, Attributes, Rbac};
use crate::registry::WriteOptions;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::Store;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub(crate) struct App {
    pub(crate) store: Arc<Store>,
    pub(crate) faults: Arc<Faults>,
    pub(crate) rbac: Arc<Rbac>,
    pub(crate) bookmark_every: Duration,
}

/// The axum router of one simulated API server.
pub(crate) fn router(app: App) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(app)
}

fn json_response(code: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(body).unwrap_or_default(),
    )
        .into_response()
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.to_status())
}

/// Where a resource URL points.
pub(crate) struct Target<'a> {
    pub(crate) kind: ResourceKind,
    pub(crate) namespace: Option<&'a str>,
    pub(crate) name: Option<&'a str>,
    pub(crate) status: bool,
    /// `namespaces/NAME/finalize`.
    pub(crate) finalize: bool,
}

async fn handle(
    State(app): State<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let latency = app.faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let path = uri.path().trim_end_matches('/');
    let query: HashMap<String, String> =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri)
            .map(|q| q.0.into_iter().collect())
            .unwrap_or_default();
    match path {
        "/healthz" | "/livez" | "/readyz" => return (StatusCode::OK, "ok").into_response(),
        "/version" => return json_response(200, &crate::discovery::version()),
        _ => {}
    }
    // Like a real API server with anonymous auth enabled (the default), a request without
    // credentials is `system:anonymous` (client-go sends no token over plain HTTP); a token
    // that is not ours is refused.
    let user = match headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
    {
        None => rbac::ANONYMOUS.to_string(),
        Some(token) => match rbac::user_of(token) {
            Some(u) => u,
            None => return error_response(&ApiError::unauthorized()),
        },
    };
    if path == "/openapi/v3" {
        return json_response(200, &crate::openapi::index(&app.store));
    }
    if let Some(gv) = path.strip_prefix("/openapi/v3/") {
        return match crate::openapi::document(&app.store, gv) {
            Some(doc) => json_response(200, &doc),
            None => error_response(&ApiError::no_resource()),
        };
    }
    if path == "/openapi/v2" {
        // An empty protobuf document: old kubectl then validates nothing client-side, as for
        // a resource without a schema.
        return (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            )],
            Vec::<u8>::new(),
        )
            .into_response();
    }
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let (group, version, rest) = match segs.as_slice() {
        ["api"] | ["apis"] if crate::discovery::wants_aggregated(accept) => {
            let body =
                crate::discovery::aggregated(&app.store, segs.len() == 1 && segs[0] == "api");
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, crate::discovery::AGGREGATED_MEDIA)],
                serde_json::to_vec(&body).unwrap_or_default(),
            )
                .into_response();
        }
        ["api"] => {
            return json_response(
                200,
                &json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
            );
        }
        ["apis"] => return json_response(200, &crate::discovery::group_list(&app.store)),
        ["apis", g] => {
            return match crate::discovery::group_list(&app.store)["groups"]
                .as_array()
                .and_then(|gs| gs.iter().find(|x| x["name"] == *g))
            {
                Some(gr) => {
                    let mut gr = gr.clone();
                    gr["kind"] = json!("APIGroup");
                    gr["apiVersion"] = json!("v1");
                    json_response(200, &gr)
                }
                None => error_response(&ApiError::not_found("groups", g)),
            };
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] if app.store.kinds().groups().iter().any(|(x, _)| x == g) => {
            (*g, *v, rest)
        }
        // An unknown path: the Go mux's plain-text answer.
        _ => {
            return (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "404 page not found\n",
            )
                .into_response();
        }
    };
    if rest.is_empty() {
        let list = crate::discovery::resource_list(&app.store, group, version);
        return match list {
            Some(l) => json_response(200, &l),
            None => error_response(&ApiError::not_found("groupversions", version)),
        };
    }
    let target = match route(&app.store, group, version, rest) {
        Ok(t) => t,
        Err(e) => return error_response(&e),
    };
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let verb = match (&method, target.name.is_some()) {
        (&Method::GET, true) => "get",
        (&Method::GET, false) if watch => "watch",
        (&Method::GET, false) => "list",
        (&Method::POST, false) => "create",
        (&Method::PUT, true) => "update",
        (&Method::PATCH, true) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => return error_response(&ApiError::method_not_allowed()),
    };
    let attrs = Attributes {
        verb,
        group,
        resource: target.kind.plural,
        subresource: if target.status { "status" } else { "" },
        namespace: target.namespace.unwrap_or(""),
        name: target.name.unwrap_or(""),
    };
    if !app.rbac.allowed(&app.store, &user, &attrs) {
        return error_response(&ApiError::forbidden(rbac::forbidden_message(&user, &attrs)));
    }
    if matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    ) && let Some(code) = app.faults.write_failure(
        target.kind.plural,
        if target.status { "status" } else { "" },
        target.name.unwrap_or(""),
    ) {
        let e = if code == 409 {
            ApiError::conflict(&target.kind.group_resource(), target.name.unwrap_or(""))
        } else {
            let mut e = ApiError::internal("injected fault");
            e.code = code;
            e
        };
        return error_response(&e);
    }
    let wopts = write_options(&query, &headers, &user);
    let result = serve(&app, &target, verb, &query, &headers, &body, &wopts).await;
    let mut response = match result {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    let mut warnings =
        std::mem::take(&mut *wopts.warnings.lock().unwrap_or_else(|p| p.into_inner()));
    if target.kind.storage == "endpoints" {
        warnings.push(
            "v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice".into(),
        );
    }
    for w in warnings {
        let text = format!("299 - {}", serde_json::to_string(&w).unwrap_or_default());
        if let Ok(v) = header::HeaderValue::from_str(&text) {
            response.headers_mut().append("warning", v);
        }
    }
    response
}

fn route<'a>(
    store: &Store,
    group: &str,
    version: &str,
    rest: &[&'a str],
) -> Result<Target<'a>, ApiError> {
    let (ns, plural, name, sub) = match rest {
        ["namespaces", ns, plural, tail @ ..] if *plural != "status" && *plural != "finalize" => (
            Some(*ns),
            *plural,
            tail.first().copied(),
            tail.get(1).copied(),
        ),
        [plural, tail @ ..] => (None, *plural, tail.first().copied(), tail.get(1).copied()),
        [] => return Err(ApiError::no_resource()),
    };
    let kind = store
        .kinds()
        .find(group, version, plural)
        .ok_or_else(ApiError::no_resource)?;
    if !kind.namespaced && ns.is_some() {
        return Err(ApiError::not_found(plural, name.unwrap_or("")));
    }
    let finalize = sub == Some("finalize") && kind.storage == "namespaces";
    let status = match sub {
        None => false,
        Some("status") if kind.status => true,
        Some("finalize") if finalize => false,
        Some(_) => return Err(ApiError::no_resource()),
    };
    if kind.namespaced && ns.is_none() && name.is_some() {
        return Err(ApiError::not_found(plural, name.unwrap_or("")));
    }
    Ok(Target {
        kind,
        namespace: ns,
        name,
        status,
        finalize,
    })
}

/// Decodes a create or update body by its media type: JSON, YAML or Kubernetes protobuf;
/// anything else is `415`, as the real server's negotiation answers.
fn parse_body(kind: &ResourceKind, headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("application/json");
    let media = ct.split(';').next().unwrap_or("").trim();
    let unrecognized = |e: String| {
        ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): couldn't get version/kind; json parse error: {e} ({})",
            kind.kind,
            String::from_utf8_lossy(body)
        ))
    };
    match media {
        "application/json" | "" | "*/*" => {
            serde_json::from_slice::<Value>(body).map_err(|e| unrecognized(e.to_string()))
        }
        "application/yaml" => {
            serde_yaml::from_slice::<Value>(body).map_err(|e| unrecognized(e.to_string()))
        }
        "application/vnd.kubernetes.protobuf" => crate::protobuf::decode(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the object provided is unrecognized (must be of type {}): {e}",
                kind.kind
            ))
        }),
        _ => Err(ApiError::unsupported_body_media()),
    }
}

fn accept(headers: &HeaderMap) -> &str {
    headers
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
}

pub(crate) fn include_object(q: &HashMap<String, String>) -> &str {
    q.get("includeObject")
        .map(String::as_str)
        .unwrap_or("Metadata")
}

fn table_response(kind: &ResourceKind, table: &Value) -> Response {
    // The CRD handler answers a Table as plain JSON.
    let media = if kind.custom.is_some() {
        "application/json"
    } else {
        crate::tables::TABLE_MEDIA
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, media)],
        serde_json::to_vec(table).unwrap_or_default(),
    )
        .into_response()
}

fn list_kind(kind: &ResourceKind) -> String {
    format!("{}List", kind.kind)
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    app: &App,
    t: &Target<'_>,
    verb: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
    wopts: &WriteOptions,
) -> Result<Response, ApiError> {
    let store = &app.store;
    let ns = t.namespace.unwrap_or("");
    let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let fields = FieldSelector::parse(
        t.kind.storage,
        q.get("fieldSelector").map(String::as_str).unwrap_or(""),
    )
    .map_err(ApiError::bad_request)?;
    match verb {
        "get" => {
            let name = t.name.unwrap_or("");
            let obj = store.get(&t.kind, ns, name)?;
            if crate::tables::wanted(accept(headers)) {
                let rv = obj
                    .pointer("/metadata/resourceVersion")
                    .cloned()
                    .unwrap_or(json!(""));
                let table = crate::tables::table(
                    &t.kind,
                    &[obj],
                    json!({"resourceVersion": rv}),
                    include_object(q),
                );
                return Ok(table_response(&t.kind, &table));
            }
            Ok(json_response(200, &obj))
        }
        "list" => {
            if q.get("resourceVersionMatch").is_some_and(|m| m == "Exact")
                && let Some(rv) = q.get("resourceVersion").and_then(|r| r.parse::<u64>().ok())
                && rv <= store.compacted()
            {
                return Err(ApiError::gone_list(rv, store.compacted()));
            }
            let limit = q.get("limit").and_then(|l| l.parse().ok());
            let page = store.list(
                &t.kind,
                t.namespace,
                &labels,
                &fields,
                limit,
                q.get("continue")
                    .map(String::as_str)
                    .filter(|c| !c.is_empty()),
            )?;
            // A real server leaves `apiVersion`/`kind` out of list items (the list carries
            // them; kubernetes#3030): code that reads them from items must not pass here.
            let mut items = page.items;
            // Custom resources are unstructured: their items keep both.
            if t.kind.custom.is_none() {
                for item in &mut items {
                    if let Some(o) = item.as_object_mut() {
                        o.remove("apiVersion");
                        o.remove("kind");
                    }
                }
            }
            let mut meta = json!({"resourceVersion": page.resource_version.to_string()});
            if let Some(c) = page.continue_token {
                meta["continue"] = json!(c);
                // Counted only when no selector filters the list (the count would be a
                // guess otherwise).
                if labels.is_empty() && fields.is_empty() {
                    meta["remainingItemCount"] = json!(page.remaining);
                }
            }
            if crate::tables::wanted(accept(headers)) {
                let mut full = items;
                for item in &mut full {
                    item["apiVersion"] = json!(t.kind.api_version());
                    item["kind"] = json!(t.kind.kind);
                }
                let table = crate::tables::table(&t.kind, &full, meta, include_object(q));
                return Ok(table_response(&t.kind, &table));
            }
            if t.kind.custom.is_some() && meta.get("continue").is_none() {
                meta["continue"] = json!("");
            }
            Ok(json_response(
                200,
                &json!({"kind": list_kind(&t.kind), "apiVersion": t.kind.api_version(),
                    "metadata": meta, "items": items}),
            ))
        }
        "watch" => crate::watch::watch(
            app,
            t,
            q,
            labels,
            fields,
            crate::tables::wanted(accept(headers)),
        ),
        "create" => {
            if t.kind.namespaced && t.namespace.is_none() {
                return Err(ApiError::method_not_allowed());
            }
            let obj = parse_body(&t.kind, headers, body)?;
            // A real server refuses this (500 from its storage layer, without a reason):
            // re-POSTing an object read back from the server must not pass here.
            if crate::store::rv_of(&obj).is_some() {
                let mut e = ApiError::internal(
                    "resourceVersion should not be set on objects to be created",
                );
                e.reason = "";
                return Err(e);
            }
            let out = store.create(&t.kind, ns, obj, wopts)?;
            Ok(json_response(201, &out))
        }
        "update" if t.finalize => {
            let obj = parse_body(&t.kind, headers, body)?;
            let out = store.finalize_namespace(&t.kind, t.name.unwrap_or(""), obj, wopts)?;
            Ok(json_response(200, &out))
        }
        "update" => {
            let obj = parse_body(&t.kind, headers, body)?;
            let existed = store.get(&t.kind, ns, t.name.unwrap_or("")).is_ok();
            let out = store.update(&t.kind, ns, t.name.unwrap_or(""), obj, t.status, wopts)?;
            Ok(json_response(if existed { 200 } else { 201 }, &out))
        }
        "patch" => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            let ty = PatchType::from_content_type(ct).ok_or_else(ApiError::unsupported_media)?;
            if ty == PatchType::Strategic && t.kind.custom.is_some() {
                // Custom resources have no patch strategies: the real server refuses.
                return Err(ApiError::unsupported_custom_patch());
            }
            let patch = crate::patch::decode(ty, body)?;
            if ty == PatchType::Apply
                && wopts.manager == "unknown"
                && !q.contains_key("fieldManager")
            {
                let mut e = ApiError::invalid(
                    "PatchOptions.meta.k8s.io",
                    "",
                    vec![crate::error::Cause {
                        reason: "FieldValueRequired",
                        field: "fieldManager".into(),
                        message: "Required value: is required for apply patch".into(),
                    }],
                );
                e.details = Some(Box::new((String::new(), "PatchOptions".into())));
                e.group = "meta.k8s.io".into();
                return Err(e);
            }
            let (out, created) = store.patch(
                &t.kind,
                ns,
                t.name.unwrap_or(""),
                ty,
                &patch,
                t.status,
                wopts,
            )?;
            Ok(json_response(if created { 201 } else { 200 }, &out))
        }
        "delete" => {
            let opts = delete_options(q, body);
            let out = store.delete(&t.kind, ns, t.name.unwrap_or(""), &opts, wopts)?;
            Ok(json_response(200, &deleted_body(&t.kind, out)))
        }
        "deletecollection" => {
            let page = store.list(&t.kind, t.namespace, &labels, &fields, None, None)?;
            let opts = delete_options(q, body);
            let mut deleted = Vec::new();
            for item in page.items {
                let name = item
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let ons = item
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if let Ok(Deleted::Gone(o) | Deleted::Pending(o)) =
                    store.delete(&t.kind, &ons, &name, &opts, wopts)
                {
                    let mut o = o;
                    if let Some(m) = o.as_object_mut() {
                        m.remove("apiVersion");
                        m.remove("kind");
                    }
                    deleted.push(o);
                }
            }
            Ok(json_response(
                200,
                &json!({"kind": list_kind(&t.kind), "apiVersion": t.kind.api_version(),
                    "metadata": {"resourceVersion": store.resource_version().to_string()},
                    "items": deleted}),
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// The write options of a request: who, under which field manager (`fieldManager`, else
/// the User-Agent up to its first `/`, else `unknown`), dry run, forced apply.
fn write_options(q: &HashMap<String, String>, headers: &HeaderMap, user: &str) -> WriteOptions {
    let manager = q
        .get("fieldManager")
        .filter(|m| !m.is_empty())
        .cloned()
        .or_else(|| {
            headers
                .get(header::USER_AGENT)
                .and_then(|h| h.to_str().ok())
                .map(|ua| ua.split('/').next().unwrap_or("").to_string())
                .filter(|m| !m.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_string());
    WriteOptions {
        user: user.to_string(),
        manager,
        dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
        force: q.get("force").is_some_and(|f| f == "true"),
        validation: crate::typed::FieldValidation::parse(
            q.get("fieldValidation").map(String::as_str),
        ),
        warnings: Default::default(),
    }
}

/// `DeleteOptions` from the body and the query (the query wins, as upstream).
fn delete_options(q: &HashMap<String, String>, body: &Bytes) -> DeleteOptions {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    DeleteOptions {
        uid: v
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(String::from),
        resource_version: v
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from),
        propagation: q
            .get("propagationPolicy")
            .cloned()
            .or_else(|| {
                v.get("propagationPolicy")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .or_else(|| {
                v.get("orphanDependents")
                    .and_then(Value::as_bool)
                    .map(|o| if o { "Orphan" } else { "Background" }.to_string())
            }),
        grace_period: q
            .get("gracePeriodSeconds")
            .and_then(|g| g.parse().ok())
            .or_else(|| v.get("gracePeriodSeconds").and_then(Value::as_i64)),
    }
}

/// What a DELETE answers: the object for registries that return it or while it waits for
/// finalizers, else a `Status` naming what was deleted.
fn deleted_body(kind: &ResourceKind, d: Deleted) -> Value {
    match d {
        Deleted::Gone(o) if !deletion::returns_object(kind.storage) => {
            let mut details = json!({
                "name": o.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
                "kind": kind.plural,
                "uid": o.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
            });
            if !kind.group.is_empty() {
                details["group"] = json!(kind.group);
            }
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": details})
        }
        Deleted::Gone(o) | Deleted::Pending(o) => o,
    }
}
