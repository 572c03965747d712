//! Tests of the fake JumpCloud directory API (the console host's `/api/...`, served by the
//! same fake as the OIDC provider), through plain HTTP, so the directory-sync tests can trust
//! that it answers like the JumpCloud reference says.

use crate::support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

use support::jumpcloud::*;

struct Http {
    status: u16,
    headers: http::HeaderMap,
    body: String,
    /// From sending the request to the whole body.
    elapsed: Duration,
}

impl Http {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

async fn call(jc: &FakeJumpCloud, method: &str, path: &str, headers: &[(&str, &str)]) -> Http {
    let stream = TcpStream::connect(jc.addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "console.jumpcloud.test");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let started = Instant::now();
    let resp = sender
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Http {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// GET with the fake's default (read-only) API key.
async fn get(jc: &FakeJumpCloud, path: &str) -> Http {
    call(jc, "GET", path, &[("x-api-key", &jc.api_key())]).await
}

/// GET with the default key, expecting 200 and JSON.
async fn get_ok(jc: &FakeJumpCloud, path: &str) -> Value {
    let resp = get(jc, path).await;
    assert_eq!(resp.status, 200, "{path}: {}", resp.body);
    resp.json()
}

/// The `_id`s of a v1 list's results.
fn v1_ids(page: &Value) -> Vec<String> {
    page["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {page}"))
        .iter()
        .map(|u| u["_id"].as_str().unwrap().to_owned())
        .collect()
}

/// A field of every element of a v2 bare array.
fn v2_field(list: &Value, field: &str) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a bare array: {list}"))
        .iter()
        .map(|g| g[field].as_str().unwrap().to_owned())
        .collect()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn sorted(ids: &[String]) -> Vec<String> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids
}

fn error_body(code: u16, status: &str) -> Value {
    json!({"code": code, "message": status, "status": status})
}

struct Dir {
    jc: FakeJumpCloud,
    alice: String,
    bob: String,
    carol: String,
    admins: String,
    staff: String,
    app: String,
}

/// alice (Admins, Staff), bob (Staff, suspended), carol (Staff); app "web-app" bound to
/// Admins and directly to carol.
async fn directory() -> Dir {
    let jc = FakeJumpCloud::start().await;
    let alice = jc.add_user(User {
        middlename: "Q".into(),
        attributes: vec![("department".into(), "IT".into())],
        ..User::new("alice.smith")
    });
    let mut bob = User::new("bob.jones");
    bob.suspend();
    let bob = jc.add_user(bob);
    let carol = jc.add_user(User {
        totp_enabled: false,
        ..User::new("carol.white")
    });
    let admins = jc.add_group("Admins");
    jc.update_group(&admins, |g| {
        g.attributes =
            json!({"ldapGroups": [{"name": "defguard-admins"}], "sudo": {"enabled": false}});
    });
    let staff = jc.add_group("Staff");
    jc.add_member(&admins, &alice);
    for u in [&alice, &bob, &carol] {
        jc.add_member(&staff, u);
    }
    let app = App {
        bound_groups: vec![admins.clone()],
        bound_users: vec![carol.clone()],
        display_label: "Defguard".into(),
        ..App::new("web-app", "secret", "https://app.test/cb")
    };
    let app_id = app.id.clone();
    jc.add_app(app);
    Dir {
        jc,
        alice,
        bob,
        carol,
        admins,
        staff,
        app: app_id,
    }
}

#[tokio::test]
async fn api_key_and_org_header_are_enforced() {
    let d = directory().await;
    let jc = &d.jc;
    let path = "/api/systemusers";

    let none = call(jc, "GET", path, &[]).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.json(), error_body(401, "Unauthorized"));
    let wrong = call(jc, "GET", path, &[("x-api-key", "0123456789abcdef")]).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json(), error_body(401, "Unauthorized"));
    assert_eq!(get(jc, path).await.status, 200);
    assert_eq!(get(jc, "/api/nothing-here").await.status, 404);

    // The default key is read-only: writes are forbidden.
    let key = jc.api_key();
    assert_eq!(key.len(), 40);
    let post = call(jc, "POST", path, &[("x-api-key", &key)]).await;
    assert_eq!(post.status, 403, "{}", post.body);
    assert_eq!(post.json(), error_body(403, "Forbidden"));
    let delete = call(
        jc,
        "DELETE",
        &format!("{path}/{}", d.alice),
        &[("x-api-key", &key)],
    )
    .await;
    assert_eq!(delete.status, 403);
    // An admin key may write, but the fake serves reads only.
    let admin = ApiKey::admin();
    jc.add_api_key(admin.clone());
    let post = call(jc, "POST", path, &[("x-api-key", &admin.key)]).await;
    assert_eq!(post.status, 405);
    assert_eq!(
        call(jc, "GET", path, &[("x-api-key", &admin.key)])
            .await
            .status,
        200
    );

    // A multi-tenant key must pick one of its organisations.
    let org = jc.org_id();
    let mtp = ApiKey::mtp(&[&org]);
    jc.add_api_key(mtp.clone());
    let h = |o: &str| {
        vec![
            ("x-api-key".to_owned(), mtp.key.clone()),
            ("x-org-id".to_owned(), o.to_owned()),
        ]
    };
    let send = |hs: Vec<(String, String)>| async move {
        let refs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        call(jc, "GET", path, &refs).await
    };
    let missing = call(jc, "GET", path, &[("x-api-key", &mtp.key)]).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.json(), error_body(401, "Unauthorized"));
    let malformed = send(h("not-an-org")).await;
    assert_eq!(malformed.status, 400, "{}", malformed.body);
    assert_eq!(malformed.json()["code"], 400);
    let unknown = send(h(&object_id())).await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert_eq!(unknown.json()["code"], 404);
    let ok = send(h(&org)).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["totalCount"], 3);

    // A single-org key may send its own org id, not another one.
    let own = call(jc, "GET", path, &[("x-api-key", &key), ("x-org-id", &org)]).await;
    assert_eq!(own.status, 200);
    let other = object_id();
    let mismatched = call(
        jc,
        "GET",
        path,
        &[("x-api-key", &key), ("x-org-id", &other)],
    )
    .await;
    assert_eq!(mismatched.status, 400);

    // The log says who called.
    let log = jc.directory_requests();
    let last_mtp = log
        .iter()
        .rev()
        .find(|r| r.header("x-api-key") == Some(mtp.key.as_str()))
        .unwrap();
    assert_eq!(last_mtp.header("x-org-id"), Some(org.as_str()));
    assert_eq!(last_mtp.status, Some(200));
    assert!(log
        .iter()
        .all(|r| r.is_directory() && r.path.starts_with("/api/")));
    assert_eq!(log[0].status, Some(401));
    assert_eq!(log[0].header("x-api-key"), None);
}

#[tokio::test]
async fn systemusers_v1_shape_has_both_ids() {
    let d = directory().await;
    let jc = &d.jc;
    let page = get_ok(jc, "/api/systemusers?limit=100&skip=0&sort=_id").await;
    assert_eq!(page["totalCount"], 3);
    assert_eq!(
        keys(&page),
        ["results", "totalCount"].map(String::from).into()
    );
    let results = page["results"].as_array().unwrap();
    for u in results {
        assert_eq!(u["_id"], u["id"]);
    }
    let alice = results
        .iter()
        .find(|u| u["id"] == d.alice.as_str())
        .unwrap();
    let expected_keys: BTreeSet<String> = [
        "_id",
        "id",
        "username",
        "email",
        "firstname",
        "middlename",
        "lastname",
        "displayname",
        "activated",
        "state",
        "suspended",
        "account_locked",
        "account_locked_date",
        "password_expired",
        "password_never_expires",
        "mfa",
        "mfaEnrollment",
        "totp_enabled",
        "externally_managed",
        "attributes",
        "created",
    ]
    .map(String::from)
    .into();
    assert_eq!(keys(alice), expected_keys);
    assert_eq!(alice["username"], "alice.smith");
    assert_eq!(alice["email"], "alice.smith@example.com");
    assert_eq!(alice["firstname"], "Alice");
    assert_eq!(alice["middlename"], "Q");
    assert_eq!(alice["lastname"], "Smith");
    assert_eq!(alice["displayname"], "Alice Smith");
    assert_eq!(alice["activated"], true);
    assert_eq!(alice["state"], "ACTIVATED");
    assert_eq!(alice["suspended"], false);
    assert_eq!(alice["account_locked"], false);
    assert_eq!(alice["account_locked_date"], Value::Null);
    assert_eq!(alice["password_expired"], false);
    assert_eq!(alice["password_never_expires"], false);
    assert_eq!(
        alice["mfa"],
        json!({"configured": true, "exclusion": false})
    );
    assert_eq!(alice["mfaEnrollment"]["overallStatus"], "ENROLLED");
    assert_eq!(alice["mfaEnrollment"]["totpStatus"], "ENROLLED");
    assert_eq!(alice["totp_enabled"], true);
    assert_eq!(alice["externally_managed"], false);
    assert_eq!(
        alice["attributes"],
        json!([{"name": "department", "value": "IT"}])
    );
    let created = alice["created"].as_str().unwrap();
    assert!(created.ends_with('Z'), "{created}");
    humantime::parse_rfc3339(created).unwrap();

    let bob = results.iter().find(|u| u["id"] == d.bob.as_str()).unwrap();
    assert_eq!(bob["state"], "SUSPENDED");
    assert_eq!(bob["suspended"], true);
    let carol = results
        .iter()
        .find(|u| u["id"] == d.carol.as_str())
        .unwrap();
    assert_eq!(carol["mfaEnrollment"]["overallStatus"], "NOT_ENROLLED");

    // One user; unknown ids are 404.
    let one = get_ok(jc, &format!("/api/systemusers/{}", d.alice)).await;
    assert_eq!(&one, alice);
    let missing = get(jc, &format!("/api/systemusers/{}", object_id())).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["code"], 404);

    // `fields` projects, keeping `_id` (and dropping `id` unless asked for).
    let projected = get_ok(jc, "/api/systemusers?fields=email%20username&sort=_id").await;
    for u in projected["results"].as_array().unwrap() {
        assert_eq!(
            keys(u),
            ["_id", "email", "username"].map(String::from).into()
        );
    }
    let one = get_ok(jc, &format!("/api/systemusers/{}?fields=state+id", d.bob)).await;
    assert_eq!(
        one,
        json!({"_id": d.bob, "id": d.bob, "state": "SUSPENDED"})
    );
}

#[tokio::test]
async fn paging_with_sort_id_is_stable_and_limits_are_enforced() {
    let jc = FakeJumpCloud::start().await;
    let (ids, _) = jc.seed_directory(25, 0, 0);
    let mut seen = Vec::new();
    for skip in [0, 10, 20] {
        let page = get_ok(
            &jc,
            &format!("/api/systemusers?limit=10&skip={skip}&sort=_id"),
        )
        .await;
        assert_eq!(page["totalCount"], 25);
        seen.extend(v1_ids(&page));
    }
    assert_eq!(seen, sorted(&ids));
    let desc = get_ok(&jc, "/api/systemusers?limit=100&sort=-_id").await;
    let mut reversed = sorted(&ids);
    reversed.reverse();
    assert_eq!(v1_ids(&desc), reversed);

    // Past the end: no results, the full count.
    let past = get_ok(&jc, "/api/systemusers?limit=10&skip=30&sort=_id").await;
    assert_eq!(past, json!({"totalCount": 25, "results": []}));
    // The default limit is 10.
    let default = get_ok(&jc, "/api/systemusers?sort=_id").await;
    assert_eq!(v1_ids(&default).len(), 10);
    // At most 100.
    assert_eq!(get(&jc, "/api/systemusers?limit=100").await.status, 200);
    let over = get(&jc, "/api/systemusers?limit=101").await;
    assert_eq!(over.status, 400);
    assert_eq!(over.json()["code"], 400);
    assert_eq!(get(&jc, "/api/v2/usergroups?limit=500").await.status, 400);
    assert_eq!(get(&jc, "/api/systemusers?limit=ten").await.status, 400);
    assert_eq!(get(&jc, "/api/systemusers?skip=-1").await.status, 400);

    // Or clamped, when asked.
    jc.seed_directory(100, 0, 0);
    jc.directory_faults(|f| f.clamp_limit = true);
    let clamped = get_ok(&jc, "/api/systemusers?limit=500&sort=_id").await;
    assert_eq!(clamped["totalCount"], 125);
    assert_eq!(v1_ids(&clamped).len(), 100);
}

#[tokio::test]
async fn order_without_sort_is_unstable() {
    let jc = FakeJumpCloud::start().await;
    let (ids, _) = jc.seed_directory(30, 0, 0);
    let unsorted = v1_ids(&get_ok(&jc, "/api/systemusers?limit=10").await);
    let by_id = v1_ids(&get_ok(&jc, "/api/systemusers?limit=10&sort=_id").await);
    assert_ne!(unsorted, by_id);
    assert_eq!(by_id, sorted(&ids)[..10]);

    // A user added between two pages: without sort, page 2 repeats the end of page 1.
    jc.add_user(User::new("late.comer"));
    let page2 = v1_ids(&get_ok(&jc, "/api/systemusers?limit=10&skip=10").await);
    assert_eq!(page2[0], unsorted[9], "the order shifted");
    // With sort=_id the new (newest) id lands at the end: page 2 just continues.
    let page2 = v1_ids(&get_ok(&jc, "/api/systemusers?limit=10&skip=10&sort=_id").await);
    assert_eq!(page2, sorted(&ids)[10..20]);

    // The same for user groups.
    let (_, groups) = jc.seed_directory(0, 5, 0);
    let unsorted = v2_field(&get_ok(&jc, "/api/v2/usergroups").await, "id");
    let by_id = v2_field(&get_ok(&jc, "/api/v2/usergroups?sort=id").await, "id");
    assert_ne!(unsorted, by_id);
    assert_eq!(by_id, sorted(&groups));
}

#[tokio::test]
async fn v1_filters_search_and_sort() {
    let d = directory().await;
    let jc = &d.jc;
    let count = |q: &str| {
        let q = q.to_owned();
        async move {
            let page = get_ok(jc, &format!("/api/systemusers?limit=100&{q}")).await;
            let mut names: Vec<String> = page["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["username"].as_str().unwrap().to_owned())
                .collect();
            names.sort();
            assert_eq!(page["totalCount"].as_u64().unwrap() as usize, names.len());
            names
        }
    };
    assert_eq!(
        count("filter=email:$eq:alice.smith@example.com").await,
        ["alice.smith"]
    );
    // Case-sensitive values.
    assert!(count("filter=email:$eq:Alice.Smith@example.com")
        .await
        .is_empty());
    assert_eq!(
        count("filter=state:$ne:SUSPENDED").await,
        ["alice.smith", "carol.white"]
    );
    assert_eq!(
        count("filter=username:$in:alice.smith%7Ccarol.white%7Cnobody").await,
        ["alice.smith", "carol.white"]
    );
    assert_eq!(
        count("filter=username:$gt:b").await,
        ["bob.jones", "carol.white"]
    );
    assert_eq!(
        count("filter=username:$lte:bob.jones").await,
        ["alice.smith", "bob.jones"]
    );
    assert_eq!(
        count("filter=username:$gte:bob.jones&filter=username:$lt:carol").await,
        ["bob.jones"]
    );
    assert_eq!(
        count("filter=activated:$eq:true&filter=suspended:$eq:false").await,
        ["alice.smith", "carol.white"]
    );
    // Repeated filters AND, indexed or not; filter[or] ORs.
    assert_eq!(
        count("filter=state:$eq:ACTIVATED&filter=username:$ne:alice.smith").await,
        ["carol.white"]
    );
    assert_eq!(
        count("filter[0]=state:$eq:ACTIVATED&filter[1]=username:$ne:alice.smith").await,
        ["carol.white"]
    );
    assert_eq!(
        count("filter[or][0]=username:$eq:alice.smith&filter[or][1]=username:$eq:bob.jones").await,
        ["alice.smith", "bob.jones"]
    );
    assert_eq!(
        count(&format!("filter=_id:$eq:{}", d.carol)).await,
        ["carol.white"]
    );
    // search: case-insensitive, over the name fields.
    assert_eq!(count("search=WHITE").await, ["carol.white"]);
    assert_eq!(
        count("search=%7B%22searchTerm%22%3A%22o%22%2C%22fields%22%3A%5B%22username%22%5D%7D")
            .await,
        ["bob.jones", "carol.white"]
    );

    // Operators without `$` are undefined: 400 by default, ignored when lenient.
    let bare = get(
        jc,
        "/api/systemusers?filter=email:eq:alice.smith@example.com",
    )
    .await;
    assert_eq!(bare.status, 400, "{}", bare.body);
    assert_eq!(
        get(jc, "/api/systemusers?filter=email:$regex:x")
            .await
            .status,
        400
    );
    assert_eq!(get(jc, "/api/systemusers?filter=email").await.status, 400);
    jc.directory_faults(|f| f.lenient_v1_filter = true);
    assert_eq!(count("filter=email:eq:nobody").await.len(), 3);

    // v1 sort: space-separated, `-` descending.
    let desc = get_ok(jc, "/api/systemusers?sort=-username").await;
    assert_eq!(
        v1_ids(&desc),
        [d.carol.clone(), d.bob.clone(), d.alice.clone()]
    );
    let two = get_ok(jc, "/api/systemusers?sort=state%20-username").await;
    assert_eq!(
        v1_ids(&two),
        [d.carol.clone(), d.alice.clone(), d.bob.clone()]
    );
}

#[tokio::test]
async fn v2_usergroups_are_bare_arrays() {
    let d = directory().await;
    let jc = &d.jc;
    let list = get_ok(jc, "/api/v2/usergroups?limit=100&skip=0&sort=name").await;
    assert_eq!(v2_field(&list, "name"), ["Admins", "Staff"]);
    let admins = &list[0];
    assert_eq!(
        keys(admins),
        [
            "attributes",
            "description",
            "email",
            "id",
            "membershipMethod",
            "name",
            "type"
        ]
        .map(String::from)
        .into()
    );
    assert_eq!(admins["id"], d.admins.as_str());
    assert_eq!(admins["type"], "user_group");
    assert_eq!(
        admins["attributes"]["ldapGroups"][0]["name"],
        "defguard-admins"
    );
    assert_eq!(admins["membershipMethod"], "STATIC");
    assert_eq!(list[1]["attributes"], Value::Null);

    let desc = get_ok(jc, "/api/v2/usergroups?sort=-name").await;
    assert_eq!(v2_field(&desc, "name"), ["Staff", "Admins"]);
    let second = get_ok(jc, "/api/v2/usergroups?sort=name,id&limit=1&skip=1").await;
    assert_eq!(v2_field(&second, "name"), ["Staff"]);
    assert_eq!(get_ok(jc, "/api/v2/usergroups?skip=2").await, json!([]));

    // v2 filters.
    let named = get_ok(jc, "/api/v2/usergroups?filter=name:eq:Admins").await;
    assert_eq!(v2_field(&named, "id"), [d.admins.as_str()]);
    assert_eq!(
        get_ok(jc, "/api/v2/usergroups?filter=name:eq:admins").await,
        json!([])
    );
    let both = get_ok(
        jc,
        "/api/v2/usergroups?filter=name:in:Admins%7CStaff&sort=name",
    )
    .await;
    assert_eq!(v2_field(&both, "name"), ["Admins", "Staff"]);
    let staff = get_ok(jc, "/api/v2/usergroups?filter=name:ne:Admins").await;
    assert_eq!(v2_field(&staff, "name"), ["Staff"]);
    let search = get_ok(jc, "/api/v2/usergroups?filter=name:search:adm").await;
    assert_eq!(v2_field(&search, "name"), ["Admins"]);
    let sudo = get_ok(
        jc,
        "/api/v2/usergroups?filter=attributes.sudo.enabled:eq:false",
    )
    .await;
    assert_eq!(v2_field(&sudo, "name"), ["Admins"]);
    // v1 syntax is not v2 syntax.
    assert_eq!(
        get(jc, "/api/v2/usergroups?filter=name:$eq:Admins")
            .await
            .status,
        400
    );

    let one = get_ok(jc, &format!("/api/v2/usergroups/{}", d.admins)).await;
    assert_eq!(&one, admins);
    let missing = get(jc, &format!("/api/v2/usergroups/{}", object_id())).await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn members_membership_and_memberof() {
    let d = directory().await;
    let jc = &d.jc;
    let members = get_ok(
        jc,
        &format!("/api/v2/usergroups/{}/members?limit=100", d.staff),
    )
    .await;
    assert_eq!(
        members,
        json!([
            {"attributes": null, "to": {"attributes": null, "id": d.alice, "type": "user"}},
            {"attributes": null, "to": {"attributes": null, "id": d.bob, "type": "user"}},
            {"attributes": null, "to": {"attributes": null, "id": d.carol, "type": "user"}},
        ])
    );
    let page = get_ok(
        jc,
        &format!("/api/v2/usergroups/{}/members?limit=2", d.staff),
    )
    .await;
    assert_eq!(page.as_array().unwrap().len(), 2);
    let rest = get_ok(
        jc,
        &format!("/api/v2/usergroups/{}/members?limit=2&skip=2", d.staff),
    )
    .await;
    assert_eq!(rest[0]["to"]["id"], d.carol.as_str());
    let none = get(jc, &format!("/api/v2/usergroups/{}/members", object_id())).await;
    assert_eq!(none.status, 404);
    assert_eq!(none.json()["code"], 404);

    let membership = get_ok(jc, &format!("/api/v2/usergroups/{}/membership", d.admins)).await;
    assert_eq!(
        membership,
        json!([{
            "id": d.alice,
            "type": "user",
            "paths": [[{"attributes": null, "to": {"attributes": null, "id": d.alice, "type": "user"}}]],
        }])
    );

    // memberof: user groups with compiledAttributes and paths, and no name.
    let memberof = get_ok(
        jc,
        &format!(
            "/api/v2/users/{}/memberof?filter=type:eq:user_group&limit=100",
            d.alice
        ),
    )
    .await;
    let groups = memberof.as_array().unwrap();
    assert_eq!(groups.len(), 2);
    for g in groups {
        assert_eq!(
            keys(g),
            ["compiledAttributes", "id", "paths", "type"]
                .map(String::from)
                .into()
        );
        assert_eq!(g["type"], "user_group");
        assert_eq!(
            g["paths"],
            json!([[{"attributes": null, "to": {"attributes": null, "id": g["id"], "type": "user_group"}}]])
        );
    }
    let admins = groups
        .iter()
        .find(|g| g["id"] == d.admins.as_str())
        .unwrap();
    assert_eq!(
        admins["compiledAttributes"]["ldapGroups"],
        json!([{"name": "defguard-admins"}])
    );
    let staff = groups.iter().find(|g| g["id"] == d.staff.as_str()).unwrap();
    assert_eq!(staff["compiledAttributes"], json!({}));
    let bob = get_ok(jc, &format!("/api/v2/users/{}/memberof", d.bob)).await;
    assert_eq!(v2_field(&bob, "id"), [d.staff.as_str()]);
    let only = get_ok(
        jc,
        &format!(
            "/api/v2/users/{}/memberof?filter=id:eq:{}",
            d.alice, d.staff
        ),
    )
    .await;
    assert_eq!(v2_field(&only, "id"), [d.staff.as_str()]);
    assert_eq!(
        get(jc, &format!("/api/v2/users/{}/memberof", object_id()))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn applications_and_their_bindings() {
    let d = directory().await;
    let jc = &d.jc;
    let apps = get_ok(jc, "/api/applications").await;
    assert_eq!(apps["totalCount"], 1);
    let app = &apps["results"][0];
    assert_eq!(app["_id"], d.app.as_str());
    assert_eq!(app["displayLabel"], "Defguard");
    assert_eq!(app["sso"]["type"], "oidc");
    assert!(app["name"].is_string());
    let filtered = get_ok(
        jc,
        "/api/applications?filter=displayLabel:$eq:Defguard&sort=name",
    )
    .await;
    assert_eq!(filtered["totalCount"], 1);
    let none = get_ok(jc, "/api/applications?filter=displayLabel:$eq:Other").await;
    assert_eq!(none, json!({"totalCount": 0, "results": []}));

    let base = format!("/api/v2/applications/{}", d.app);
    let groups = get_ok(jc, &format!("{base}/usergroups")).await;
    assert_eq!(v2_field(&groups, "id"), [d.admins.as_str()]);
    assert_eq!(groups[0]["type"], "user_group");
    assert!(groups[0]["paths"].is_array());
    assert!(groups[0].get("name").is_none());

    let users = get_ok(jc, &format!("{base}/users?limit=100")).await;
    assert_eq!(v2_field(&users, "id"), [d.carol.clone(), d.alice.clone()]);
    assert_eq!(
        users[1]["paths"],
        json!([[
            {"attributes": null, "to": {"attributes": null, "id": d.admins, "type": "user_group"}},
            {"attributes": null, "to": {"attributes": null, "id": d.alice, "type": "user"}},
        ]])
    );
    assert_eq!(users[0]["type"], "user");

    let assoc = get_ok(jc, &format!("{base}/associations?targets=user_group")).await;
    assert_eq!(
        assoc,
        json!([{"attributes": null, "to": {"attributes": null, "id": d.admins, "type": "user_group"}}])
    );
    let direct = get_ok(jc, &format!("{base}/associations?targets=user")).await;
    assert_eq!(direct[0]["to"]["id"], d.carol.as_str());
    assert_eq!(
        get_ok(jc, &format!("{base}/associations?targets=system")).await,
        json!([])
    );
    assert_eq!(get(jc, &format!("{base}/associations")).await.status, 400);
    assert_eq!(
        get(jc, &format!("{base}/associations?targets=bogus"))
            .await
            .status,
        400
    );
    let unknown = format!("/api/v2/applications/{}/usergroups", object_id());
    assert_eq!(get(jc, &unknown).await.status, 404);
}

#[tokio::test]
async fn rate_limits_on_the_nth_request_with_retry_after() {
    let d = directory().await;
    let jc = &d.jc;
    let n = jc.directory_request_count() + 2;
    jc.directory_faults(|f| {
        f.rate_limit_on.push(n);
        f.retry_after = Some(7);
    });
    assert_eq!(get(jc, "/api/systemusers").await.status, 200);
    let limited = get(jc, "/api/systemusers").await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("7"));
    assert_eq!(
        limited.json(),
        json!({"code": 429, "message": "Too Many Requests", "status": "Too Many Requests"})
    );
    assert_eq!(get(jc, "/api/systemusers").await.status, 200);

    let log = jc.directory_requests();
    let faulted: Vec<_> = log.iter().filter(|r| r.fault.is_some()).collect();
    assert_eq!(faulted.len(), 1);
    assert_eq!(faulted[0].directory_seq, Some(n));
    assert_eq!(faulted[0].fault.as_deref(), Some("429"));
    assert_eq!(faulted[0].status, Some(429));
}

#[tokio::test]
async fn rate_limits_for_the_next_requests_and_a_window() {
    let d = directory().await;
    let jc = &d.jc;
    jc.directory_faults(|f| f.rate_limit_next = 2);
    for _ in 0..2 {
        let r = get(jc, "/api/v2/usergroups").await;
        assert_eq!(r.status, 429);
        assert_eq!(r.header("retry-after"), None);
    }
    assert_eq!(get(jc, "/api/v2/usergroups").await.status, 200);
    // Before the key is checked, like an edge limiter.
    jc.directory_faults(|f| f.rate_limit_next = 1);
    assert_eq!(call(jc, "GET", "/api/v2/usergroups", &[]).await.status, 429);

    jc.directory_faults(|f| {
        f.rate_limit_for(Duration::from_millis(300));
        f.retry_after = Some(1);
    });
    let r = get(jc, "/api/systemusers").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(get(jc, "/api/systemusers").await.status, 429);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(get(jc, "/api/systemusers").await.status, 200);
}

#[tokio::test]
async fn injected_statuses_by_request_number_and_path_prefix() {
    let d = directory().await;
    let jc = &d.jc;
    let n = jc.directory_request_count() + 1;
    let staff_members = format!("/api/v2/usergroups/{}/members", d.staff);
    jc.directory_faults(|f| {
        f.status_on.push((n, 503));
        f.status_on.push((n + 1, 500));
        f.status_on.push((n + 2, 403));
        f.fail_prefix(&staff_members, 502);
    });
    let r = get(jc, "/api/systemusers").await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json(),
        json!({"code": 503, "message": "Service Unavailable", "status": "Service Unavailable"})
    );
    assert_eq!(get(jc, "/api/systemusers").await.status, 500);
    let blocked = get(jc, "/api/systemusers").await;
    assert_eq!(blocked.status, 403);
    assert!(blocked.json()["message"]
        .as_str()
        .unwrap()
        .contains("blocked"));
    assert_eq!(get(jc, "/api/systemusers").await.status, 200);
    // Every request to one group's members fails, other groups are fine.
    for path in [
        staff_members.clone(),
        format!("{staff_members}?limit=100&skip=0"),
    ] {
        let r = get(jc, &path).await;
        assert_eq!(r.status, 502, "{path}");
        assert!(r.body.contains("502 Bad Gateway"), "{}", r.body);
    }
    let admins = format!("/api/v2/usergroups/{}/members", d.admins);
    assert_eq!(get(jc, &admins).await.status, 200);
    // 504 from the edge as well.
    jc.directory_faults(|f| f.fail_prefix("/api/v2/users/", 504));
    assert_eq!(
        get(jc, &format!("/api/v2/users/{}/memberof", d.alice))
            .await
            .status,
        504
    );

    let faults: Vec<(u16, String)> = jc
        .directory_requests()
        .into_iter()
        .filter_map(|r| Some((r.status?, r.fault?)))
        .collect();
    assert_eq!(
        faults.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [503, 500, 403, 502, 502, 504]
    );
    assert_eq!(faults[0].1, "status 503");
}

#[tokio::test]
async fn delays_and_slow_bodies() {
    let d = directory().await;
    let jc = &d.jc;
    jc.directory_faults(|f| f.delay = Duration::from_millis(200));
    let r = get(jc, "/api/systemusers").await;
    assert_eq!(r.status, 200);
    assert!(r.elapsed >= Duration::from_millis(200), "{:?}", r.elapsed);
    // The OIDC side is not delayed.
    let started = Instant::now();
    let oidc = call(jc, "GET", "/.well-known/openid-configuration", &[]).await;
    assert_eq!(oidc.status, 200);
    assert!(started.elapsed() < Duration::from_millis(200));

    jc.directory_faults(|f| {
        f.delay = Duration::ZERO;
        f.slow_body = Some(SlowBody {
            chunk: 256,
            pause: Duration::from_millis(20),
        });
    });
    let r = get(jc, "/api/systemusers?limit=100").await;
    assert_eq!(r.status, 200);
    let len = r.body.len();
    assert_eq!(r.header("content-length"), Some(len.to_string().as_str()));
    let chunks = len.div_ceil(256) as u32;
    assert!(chunks >= 3, "{len}");
    assert!(
        r.elapsed >= Duration::from_millis(20) * chunks,
        "{:?} for {chunks} chunks",
        r.elapsed
    );
    assert_eq!(r.json()["totalCount"], 3);
}

#[tokio::test]
async fn mutations_between_pages() {
    let jc = FakeJumpCloud::start().await;
    let (ids, _) = jc.seed_directory(30, 1, 30);
    let ordered = sorted(&ids);
    let removed = ordered[25].clone();
    let served = jc.systemusers_pages_served();
    let late = User {
        id: "ffffffffffffffffffffffff".into(),
        ..User::new("late.comer")
    };
    jc.directory_faults(|f| {
        f.mutate_after_page(served + 1, DirectoryMutation::AddUser(late));
        f.mutate_after_page(served + 2, DirectoryMutation::RemoveUser(removed.clone()));
        f.mutate_after_page(
            served + 3,
            DirectoryMutation::Run(Box::new(|s: &mut State| {
                s.users[0].suspend();
            })),
        );
    });
    let page1 = get_ok(&jc, "/api/systemusers?limit=10&skip=0&sort=_id").await;
    assert_eq!(page1["totalCount"], 30);
    let page2 = get_ok(&jc, "/api/systemusers?limit=10&skip=10&sort=_id").await;
    assert_eq!(page2["totalCount"], 31);
    let page3 = get_ok(&jc, "/api/systemusers?limit=10&skip=20&sort=_id").await;
    assert_eq!(page3["totalCount"], 30);
    let last = v1_ids(&page3);
    assert!(!last.contains(&removed));
    assert_eq!(
        last.last().map(String::as_str),
        Some("ffffffffffffffffffffffff")
    );
    assert!(jc.user(&removed).is_none());
    // Removed with its memberships.
    let members = get_ok(&jc, "/api/v2/usergroups?limit=1").await;
    let group = members[0]["id"].as_str().unwrap();
    let members = get_ok(
        &jc,
        &format!("/api/v2/usergroups/{group}/members?limit=100"),
    )
    .await;
    assert_eq!(members.as_array().unwrap().len(), 29);
    assert!(jc.user(&ids[0]).unwrap().suspended);
    assert_eq!(jc.systemusers_pages_served(), served + 3);

    // Without sort, an insert between pages repeats a user.
    let p1 = v1_ids(&get_ok(&jc, "/api/systemusers?limit=10").await);
    jc.directory_faults(|f| {
        f.mutations.push(PageMutation {
            after_page: 0,
            mutation: DirectoryMutation::AddUser(User::new("another.one")),
        })
    });
    // A mutation set for a page already served applies after the next page.
    let p2 = v1_ids(&get_ok(&jc, "/api/systemusers?limit=10&skip=10").await);
    let p3 = v1_ids(&get_ok(&jc, "/api/systemusers?limit=10&skip=20").await);
    assert!(p1.iter().all(|id| !p2.contains(id)));
    assert_eq!(p3[0], p2[9], "the insert shifted the unsorted order");
}

#[tokio::test]
async fn odd_records_null_email_unknown_state_extra_fields() {
    let d = directory().await;
    let jc = &d.jc;
    jc.directory_faults(|f| {
        f.null_email.push(d.bob.clone());
        f.state_override.push((d.carol.clone(), "LOCKED".into()));
        f.extra_fields
            .push(("*".into(), "newField".into(), json!({"nested": [1, 2]})));
        f.extra_fields
            .push((d.alice.clone(), "onlyAlice".into(), json!(true)));
    });
    let page = get_ok(jc, "/api/systemusers?limit=100").await;
    let find = |id: &str| {
        page["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["id"] == id)
            .unwrap()
            .clone()
    };
    let bob = find(&d.bob);
    assert!(bob.get("email").is_some());
    assert_eq!(bob["email"], Value::Null);
    assert_eq!(find(&d.carol)["state"], "LOCKED");
    assert_eq!(find(&d.alice)["newField"], json!({"nested": [1, 2]}));
    assert_eq!(find(&d.alice)["onlyAlice"], true);
    assert!(find(&d.bob).get("onlyAlice").is_none());
    let one = get_ok(jc, &format!("/api/systemusers/{}", d.bob)).await;
    assert_eq!(one["email"], Value::Null);
    let groups = get_ok(jc, "/api/v2/usergroups").await;
    assert!(groups
        .as_array()
        .unwrap()
        .iter()
        .all(|g| g["newField"].is_object()));
    // Filters see what is served.
    let locked = get_ok(jc, "/api/systemusers?filter=state:$eq:LOCKED").await;
    assert_eq!(v1_ids(&locked), [d.carol.as_str()]);

    // An unknown state can also be the user's own (it then cannot sign in).
    jc.update_user(&d.alice, |u| {
        u.state = UserState::Other("PENDING_REVIEW".into())
    });
    let alice = get_ok(jc, &format!("/api/systemusers/{}", d.alice)).await;
    assert_eq!(alice["state"], "PENDING_REVIEW");
}

#[tokio::test]
async fn seeds_and_serves_a_big_directory_quickly() {
    let jc = FakeJumpCloud::start().await;
    let started = Instant::now();
    let (users, groups) = jc.seed_directory(20_000, 500, 40);
    let seeding = started.elapsed();
    assert_eq!((users.len(), groups.len()), (20_000, 500));
    assert!(seeding < Duration::from_secs(3), "seeding took {seeding:?}");

    let started = Instant::now();
    let ordered = sorted(&users);
    let first = get_ok(&jc, "/api/systemusers?limit=100&skip=0&sort=_id").await;
    assert_eq!(first["totalCount"], 20_000);
    assert_eq!(v1_ids(&first), ordered[..100]);
    let last = get_ok(&jc, "/api/systemusers?limit=100&skip=19900&sort=_id").await;
    assert_eq!(v1_ids(&last), ordered[19_900..]);
    let past = get_ok(&jc, "/api/systemusers?limit=100&skip=20000&sort=_id").await;
    assert_eq!(past["results"], json!([]));
    // Filters scan everything.
    let one = get_ok(&jc, "/api/systemusers?filter=username:$eq:seed.user12345").await;
    assert_eq!(one["totalCount"], 1);
    let group_page = get_ok(&jc, "/api/v2/usergroups?limit=100&skip=400&sort=name").await;
    assert_eq!(group_page.as_array().unwrap().len(), 100);
    let members = get_ok(
        &jc,
        &format!("/api/v2/usergroups/{}/members?limit=100", groups[499]),
    )
    .await;
    assert_eq!(members.as_array().unwrap().len(), 40);
    let memberof = get_ok(&jc, &format!("/api/v2/users/{}/memberof", users[0])).await;
    assert!(v2_field(&memberof, "id").contains(&groups[0]));

    // A very large group.
    let everyone = groups[0].clone();
    jc.update_group(&everyone, |g| g.members = users.clone());
    let tail = get_ok(
        &jc,
        &format!("/api/v2/usergroups/{everyone}/members?limit=100&skip=19950"),
    )
    .await;
    assert_eq!(tail.as_array().unwrap().len(), 50);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "serving took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_full_sorted_walk_of_5000_users_sees_each_once() {
    let jc = FakeJumpCloud::start().await;
    let (users, _) = jc.seed_directory(5_001, 0, 0);
    let mut seen = Vec::new();
    let mut skip = 0;
    loop {
        let page = get_ok(
            &jc,
            &format!("/api/systemusers?limit=100&skip={skip}&sort=_id"),
        )
        .await;
        let ids = v1_ids(&page);
        if ids.is_empty() {
            break;
        }
        skip += ids.len();
        seen.extend(ids);
    }
    assert_eq!(seen, sorted(&users));
    let log = jc.directory_requests();
    assert_eq!(log.len(), 52);
    assert!(log
        .iter()
        .all(|r| r.query_param("sort").as_deref() == Some("_id")));
    assert!(log
        .iter()
        .all(|r| r.query_param("limit").as_deref() == Some("100")));
}

#[tokio::test]
async fn request_log_records_pacing_and_callers() {
    let d = directory().await;
    let jc = &d.jc;
    let _ = call(jc, "GET", "/.well-known/jwks.json", &[]).await;
    for skip in [0, 100, 200] {
        get(
            jc,
            &format!("/api/systemusers?limit=100&skip={skip}&sort=_id"),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = jc.directory_requests();
    assert_eq!(log.len(), 3);
    assert!(jc.requests().len() > log.len());
    let seqs: Vec<u64> = log.iter().filter_map(|r| r.directory_seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(jc.directory_request_count(), 3);
    for pair in log.windows(2) {
        assert!(pair[1].at.duration_since(pair[0].at) >= Duration::from_millis(50));
    }
    for r in &log {
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/api/systemusers");
        assert_eq!(r.header("x-api-key"), Some(jc.api_key().as_str()));
        assert_eq!(r.query_param("sort").as_deref(), Some("_id"));
        assert_eq!(r.query_param("limit").as_deref(), Some("100"));
        assert_eq!(r.status, Some(200));
        assert_eq!(r.fault, None);
    }
    assert_eq!(log[2].query_params("skip"), ["200"]);
}
