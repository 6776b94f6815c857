//! `GET /users/delta`: change tracking of users as Microsoft documents it ("Use delta query to
//! track changes in Microsoft Graph data", "user: delta"). A round pages through the users created
//! or changed since the state token it starts from (every user, in a first round) and the users
//! removed since, as `{"id", "@removed": {"reason": "changed"}}` (a deleted user goes to the
//! recycle bin first); its last page carries an `@odata.deltaLink` whose token holds the state the
//! round started from, so what changes meanwhile comes in the next round. A changed user comes with
//! every selected property, as by default. Delta takes no `$top`, `$orderby`, `$expand` or (here)
//! `$filter`; `$select` is given in a round's first request and carried by its tokens, and
//! `$select` with `$skiptoken` is refused. `$deltatoken=latest` answers no users and a token for
//! now ("sync from now"). A token the simulator no longer holds (it keeps the last few of a tenant,
//! none older than Microsoft's seven days for directory objects) is answered 410 Gone
//! `syncStateNotFound`: the caller synchronizes again from the start.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::model::Tenant;
use crate::routes::{graph_error, select};

/// State tokens (and rounds being paged) a tenant keeps; older ones are forgotten.
const KEPT: usize = 8;
/// How long Microsoft keeps a directory object's delta token.
const TOKEN_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// A tenant's change tracking of users.
#[derive(Default)]
pub struct Tracking {
    next: u64,
    /// State tokens by number.
    states: BTreeMap<u64, State>,
    /// Rounds paged part way, by skip token.
    rounds: BTreeMap<u64, Round>,
}

/// What a token saw: each user's selected properties, fingerprinted.
#[derive(Clone)]
struct State {
    select: Option<String>,
    seen: HashMap<String, u64>,
    issued: Instant,
}

struct Round {
    remaining: VecDeque<Value>,
    end: State,
}

impl Tracking {
    /// Forgets every token, as when they expire: the next round from one is refused.
    pub fn expire(&mut self) {
        self.states.clear();
        self.rounds.clear();
    }

    fn number(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn keep<T>(map: &mut BTreeMap<u64, T>, number: u64, value: T) {
        map.insert(number, value);
        while map.len() > KEPT {
            map.pop_first();
        }
    }
}

fn projection(user: &Value, selected: Option<&str>) -> Value {
    let mut projected = select(user, selected);
    projected["id"] = user["id"].clone();
    projected
}

fn fingerprint(projected: &Value) -> u64 {
    let mut hasher = DefaultHasher::new();
    projected.to_string().hash(&mut hasher);
    hasher.finish()
}

/// Why a request of a round is refused.
#[derive(Debug, PartialEq)]
enum Refusal {
    /// A query option delta does not take.
    Unsupported(&'static str),
    /// A token the simulator does not hold (any more).
    Gone,
}

impl Refusal {
    fn response(self) -> Response {
        match self {
            Refusal::Unsupported(option) => graph_error(
                StatusCode::BAD_REQUEST,
                "Request_UnsupportedQuery",
                &format!(
                    "The query option '{option}' is not supported with change tracking over the 'Users' resource."
                ),
            ),
            Refusal::Gone => graph_error(
                StatusCode::GONE,
                "syncStateNotFound",
                "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
            ),
        }
    }
}

/// One request of a round; `link_base` is where the links point (`{base}/v1.0/users/delta`).
pub fn users(
    tracking: &mut Tracking,
    tenant: &Tenant,
    link_base: &str,
    query: &HashMap<String, String>,
    page_size: usize,
) -> Response {
    match answer(tracking, tenant, link_base, query, page_size) {
        Ok(page) => Json(page).into_response(),
        Err(refusal) => refusal.response(),
    }
}

fn answer(
    tracking: &mut Tracking,
    tenant: &Tenant,
    link_base: &str,
    query: &HashMap<String, String>,
    page_size: usize,
) -> Result<Value, Refusal> {
    if let Some(option) = ["$top", "$orderby", "$expand", "$filter"]
        .into_iter()
        .find(|option| query.contains_key(*option))
    {
        return Err(Refusal::Unsupported(option));
    }
    let selected = query.get("$select").cloned();
    if let Some(token) = query.get("$skiptoken") {
        if selected.is_some() {
            return Err(Refusal::Unsupported("$select"));
        }
        let Some(round) = token
            .parse()
            .ok()
            .and_then(|number| tracking.rounds.remove(&number))
        else {
            return Err(Refusal::Gone);
        };
        return Ok(page(tracking, round, link_base, page_size));
    }
    let users = tenant
        .resources
        .get("/users")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let now = |select: Option<String>| {
        let seen = users
            .iter()
            .map(|user| {
                let projected = projection(user, select.as_deref());
                (
                    user["id"].as_str().unwrap_or_default().to_owned(),
                    fingerprint(&projected),
                )
            })
            .collect();
        State {
            select,
            seen,
            issued: Instant::now(),
        }
    };
    let since = match query.get("$deltatoken").map(String::as_str) {
        None => None,
        Some("latest") => {
            let round = Round {
                remaining: VecDeque::new(),
                end: now(selected),
            };
            return Ok(page(tracking, round, link_base, page_size));
        }
        Some(token) => match token
            .parse()
            .ok()
            .and_then(|number: u64| tracking.states.get(&number))
            .filter(|state| state.issued.elapsed() < TOKEN_LIFETIME)
        {
            Some(state) => Some(state.clone()),
            None => return Err(Refusal::Gone),
        },
    };
    // A later request may change what is selected; otherwise the token's selection holds.
    let select = selected.or_else(|| since.as_ref().and_then(|state| state.select.clone()));
    let end = now(select.clone());
    let mut remaining: VecDeque<Value> = users
        .iter()
        .map(|user| projection(user, select.as_deref()))
        .filter(|projected| {
            let id = projected["id"].as_str().unwrap_or_default();
            since
                .as_ref()
                .is_none_or(|since| since.seen.get(id) != Some(&end.seen[id]))
        })
        .collect();
    if let Some(since) = &since {
        let mut removed: Vec<&String> = since
            .seen
            .keys()
            .filter(|id| !end.seen.contains_key(*id))
            .collect();
        removed.sort();
        remaining.extend(
            removed
                .into_iter()
                .map(|id| json!({"id": id, "@removed": {"reason": "changed"}})),
        );
    }
    Ok(page(
        tracking,
        Round { remaining, end },
        link_base,
        page_size,
    ))
}

/// The next page of `round`, linking to the rest or, at its end, to the next round.
fn page(tracking: &mut Tracking, mut round: Round, link_base: &str, page_size: usize) -> Value {
    let value: Vec<Value> = round
        .remaining
        .drain(..page_size.min(round.remaining.len()))
        .collect();
    let number = tracking.number();
    let mut body = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users",
        "value": value,
    });
    if round.remaining.is_empty() {
        body["@odata.deltaLink"] = json!(format!("{link_base}?$deltatoken={number}"));
        Tracking::keep(&mut tracking.states, number, round.end);
    } else {
        body["@odata.nextLink"] = json!(format!("{link_base}?$skiptoken={number}"));
        Tracking::keep(&mut tracking.rounds, number, round);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::generate_tenant;

    const BASE: &str = "http://sim/v1.0/users/delta";
    const SELECT: &str = "id,displayName,accountEnabled";

    fn ask(
        tracking: &mut Tracking,
        tenant: &Tenant,
        query: &[(&str, &str)],
    ) -> Result<Value, Refusal> {
        let query = query
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        answer(tracking, tenant, BASE, &query, 7)
    }

    /// The token of a link: what follows `=`.
    fn token(link: &Value) -> String {
        link.as_str()
            .and_then(|link| link.split_once('='))
            .map(|(_, token)| token.to_owned())
            .expect("a link")
    }

    /// Every page of a round from `query`: its answers and the delta token it ends with.
    fn round(
        tracking: &mut Tracking,
        tenant: &Tenant,
        query: &[(&str, &str)],
    ) -> (Vec<Value>, String) {
        let mut answers = Vec::new();
        let mut page = ask(tracking, tenant, query).expect("a page");
        loop {
            answers.extend(page["value"].as_array().cloned().unwrap_or_default());
            if let Some(delta) = page.get("@odata.deltaLink") {
                assert!(page.get("@odata.nextLink").is_none());
                return (answers, token(delta));
            }
            let skip = token(&page["@odata.nextLink"]);
            page = ask(tracking, tenant, &[("$skiptoken", &skip)]).expect("the next page");
        }
    }

    fn users(tenant: &mut Tenant) -> &mut Vec<Value> {
        tenant
            .resources
            .get_mut("/users")
            .and_then(Value::as_array_mut)
            .expect("users")
    }

    #[test]
    fn a_first_round_pages_through_every_user_with_what_was_selected() {
        let tenant = generate_tenant(1, 0, 20, None, "app");
        let mut tracking = Tracking::default();
        let (answers, _) = round(&mut tracking, &tenant, &[("$select", SELECT)]);
        let count = tenant.resources["/users"].as_array().map_or(0, Vec::len);
        assert_eq!(answers.len(), count);
        assert!(answers.len() > 7, "more than one page");
        for answer in &answers {
            let keys: Vec<&String> = answer.as_object().expect("an object").keys().collect();
            assert!(
                keys.iter()
                    .all(|key| SELECT.split(',').any(|wanted| wanted == *key)),
                "{keys:?}"
            );
        }
    }

    #[test]
    fn a_round_from_a_link_answers_what_changed_and_can_be_answered_again() {
        let mut tenant = generate_tenant(1, 0, 20, None, "app");
        let mut tracking = Tracking::default();
        let (_, link) = round(&mut tracking, &tenant, &[("$select", SELECT)]);
        let removed = users(&mut tenant).remove(3)["id"].clone();
        users(&mut tenant)[5]["accountEnabled"] = json!(false);
        // A property not selected does not bring the user back.
        users(&mut tenant)[6]["jobTitle"] = json!("Changed, not tracked");
        let changed = users(&mut tenant)[5]["id"].clone();
        let expected = vec![
            projection(&users(&mut tenant)[5], Some(SELECT)),
            json!({"id": removed, "@removed": {"reason": "changed"}}),
        ];
        let (answers, next) = round(&mut tracking, &tenant, &[("$deltatoken", &link)]);
        assert_eq!(answers, expected);
        assert_eq!(answers[0]["id"], changed);
        // A caller that died before keeping the round asks again from the same link.
        let (again, _) = round(&mut tracking, &tenant, &[("$deltatoken", &link)]);
        assert_eq!(again, expected);
        let (nothing, _) = round(&mut tracking, &tenant, &[("$deltatoken", &next)]);
        assert!(nothing.is_empty(), "{nothing:?}");
        let (latest, _) = round(&mut tracking, &tenant, &[("$deltatoken", "latest")]);
        assert!(latest.is_empty());
    }

    #[test]
    fn an_expired_or_unknown_token_is_gone_and_unsupported_options_are_refused() {
        let tenant = generate_tenant(1, 0, 20, None, "app");
        let mut tracking = Tracking::default();
        let (_, link) = round(&mut tracking, &tenant, &[("$select", SELECT)]);
        tracking.expire();
        assert_eq!(
            ask(&mut tracking, &tenant, &[("$deltatoken", &link)]),
            Err(Refusal::Gone)
        );
        assert_eq!(
            ask(&mut tracking, &tenant, &[("$skiptoken", "999")]),
            Err(Refusal::Gone)
        );
        assert_eq!(
            ask(&mut tracking, &tenant, &[("$top", "999")]),
            Err(Refusal::Unsupported("$top"))
        );
        assert_eq!(
            ask(
                &mut tracking,
                &tenant,
                &[("$skiptoken", "1"), ("$select", SELECT)]
            ),
            Err(Refusal::Unsupported("$select"))
        );
    }

    #[test]
    fn only_the_last_tokens_are_kept() {
        let tenant = generate_tenant(1, 0, 3, None, "app");
        let mut tracking = Tracking::default();
        let (_, first) = round(&mut tracking, &tenant, &[("$select", SELECT)]);
        let mut link = first.clone();
        for _ in 0..KEPT {
            link = round(&mut tracking, &tenant, &[("$deltatoken", &link)]).1;
        }
        assert_eq!(
            ask(&mut tracking, &tenant, &[("$deltatoken", &first)]),
            Err(Refusal::Gone)
        );
        assert!(ask(&mut tracking, &tenant, &[("$deltatoken", &link)]).is_ok());
    }
}
