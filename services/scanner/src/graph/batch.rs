//! Many GETs of one tenant in JSON batches of 20 (`POST /v1.0/$batch`). Graph evaluates each
//! request of a batch on its own: each draws from its bucket before the batch is sent, a request
//! Graph throttled comes back 429 inside the batch and goes into a later batch once the longest
//! `Retry-After` has passed (nothing is sent to the tenant meanwhile), and a collection's further
//! pages go into later batches too.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::{Value, json};

use crate::graph::limits::Bucket;
use crate::graph::{Api, GraphClient, GraphError, Meter, api_error};

/// Graph's most requests in one batch.
const BATCH: usize = 20;

/// A request still to send: which of the caller's it serves, its URL below `/v1.0`, its tries.
struct Pending {
    index: usize,
    url: String,
    attempts: u32,
}

/// A batch answer's `Retry-After`, in seconds (headers are named in any case).
fn retry_after(headers: &Value) -> Option<Duration> {
    let seconds = headers.as_object()?.iter().find_map(|(name, value)| {
        name.eq_ignore_ascii_case("retry-after")
            .then(|| {
                value
                    .as_str()
                    .and_then(|text| text.trim().parse::<f64>().ok())
                    .or(value.as_f64())
            })
            .flatten()
    })?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

impl GraphClient {
    /// GETs every page of each collection of `paths` (like `/v1.0/users/{id}/mailFolders/...`),
    /// batched; each path's items or error, in the order of `paths`.
    pub async fn get_all_many(
        &self,
        tenant_id: &str,
        paths: &[String],
        meter: &Meter,
    ) -> Vec<Result<Vec<Value>, GraphError>> {
        self.batched(tenant_id, paths, true, meter)
            .await
            .into_iter()
            .map(|pages| {
                pages.and_then(|pages| {
                    let mut items = Vec::new();
                    for mut page in pages {
                        let Value::Array(values) = page["value"].take() else {
                            return Err(GraphError::Malformed("no value array".into()));
                        };
                        items.extend(values);
                    }
                    Ok(items)
                })
            })
            .collect()
    }

    /// GETs each object of `paths`, batched; each path's object or error, in order.
    pub async fn get_many(
        &self,
        tenant_id: &str,
        paths: &[String],
        meter: &Meter,
    ) -> Vec<Result<Value, GraphError>> {
        self.batched(tenant_id, paths, false, meter)
            .await
            .into_iter()
            .map(|pages| pages.map(|pages| pages.into_iter().next().unwrap_or(Value::Null)))
            .collect()
    }

    /// The answer bodies of each path (every page when `paging`).
    async fn batched(
        &self,
        tenant_id: &str,
        paths: &[String],
        paging: bool,
        meter: &Meter,
    ) -> Vec<Result<Vec<Value>, GraphError>> {
        let mut bodies: Vec<Result<Vec<Value>, GraphError>> =
            paths.iter().map(|_| Ok(Vec::new())).collect();
        let mut pending: VecDeque<Pending> = paths
            .iter()
            .enumerate()
            .map(|(index, path)| Pending {
                index,
                url: path.strip_prefix("/v1.0").unwrap_or(path).to_owned(),
                attempts: 0,
            })
            .collect();
        let version_root = format!("{}/v1.0", self.base(Api::Graph));
        let gate = self.gate(tenant_id);
        // A batch Graph refused as a whole: the tenant's access failed (one request's own error,
        // a mailbox without access say, is that subject's).
        let mut refused = None;
        while !pending.is_empty() {
            let chunk: Vec<Pending> = pending.drain(..pending.len().min(BATCH)).collect();
            let requests: Vec<Value> = chunk
                .iter()
                .enumerate()
                .map(|(id, request)| json!({"id": id.to_string(), "method": "GET", "url": request.url}))
                .collect();
            let charges: Vec<(Bucket, f64)> = chunk
                .iter()
                .map(|request| {
                    let bucket = Bucket::for_path(&request.url);
                    (bucket, bucket.cost(&request.url))
                })
                .collect();
            let answer = self
                .exchange(
                    tenant_id,
                    Api::Graph,
                    reqwest::Method::POST,
                    &format!("{version_root}/$batch"),
                    Some(&json!({"requests": requests})),
                    meter,
                    &charges,
                )
                .await;
            let responses = match answer {
                Ok(answer) => answer["responses"].as_array().cloned().unwrap_or_default(),
                Err(error) => {
                    for request in chunk {
                        bodies[request.index] = Err(error.clone());
                    }
                    refused = Some(error);
                    continue;
                }
            };
            // The longest wait Graph asked for, and the backoff of failed requests.
            let mut throttled_for = None::<Duration>;
            let mut backoff = None::<Duration>;
            for (id, mut request) in chunk.into_iter().enumerate() {
                let Some(response) = responses
                    .iter()
                    .find(|response| response["id"] == id.to_string().as_str())
                else {
                    bodies[request.index] = Err(GraphError::Malformed(format!(
                        "{}: no answer in the batch",
                        request.url
                    )));
                    continue;
                };
                let status = response["status"].as_u64().unwrap_or_default() as u16;
                match status {
                    200..=299 => {
                        let body = response["body"].clone();
                        let next = body["@odata.nextLink"]
                            .as_str()
                            .filter(|_| paging)
                            .and_then(|link| link.strip_prefix(version_root.as_str()))
                            .map(str::to_owned);
                        if let Ok(pages) = &mut bodies[request.index] {
                            pages.push(body);
                        }
                        if let Some(url) = next {
                            pending.push_back(Pending {
                                index: request.index,
                                url,
                                attempts: 0,
                            });
                        }
                    }
                    429 | 500..=599 if request.attempts < self.max_retries => {
                        let wait = if status == 429 {
                            meter
                                .throttled
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let wait = retry_after(&response["headers"])
                                .unwrap_or_else(|| self.backoff(request.attempts));
                            throttled_for = throttled_for.max(Some(wait));
                            wait
                        } else {
                            self.backoff(request.attempts)
                        };
                        backoff = backoff.max(Some(wait));
                        request.attempts += 1;
                        pending.push_back(request);
                    }
                    429 => {
                        bodies[request.index] = Err(GraphError::Throttled {
                            attempts: request.attempts + 1,
                        });
                    }
                    500..=599 => {
                        bodies[request.index] = Err(GraphError::Unavailable {
                            attempts: request.attempts + 1,
                            last: format!("{status}"),
                        });
                    }
                    _ => {
                        let body = serde_json::to_vec(&response["body"]).unwrap_or_default();
                        bodies[request.index] = Err(api_error(status, &body));
                    }
                }
            }
            if let Some(wait) = throttled_for {
                // Nothing goes to the tenant before Graph said it may.
                gate.block_for(wait).await;
                self.note_throttled(tenant_id, wait);
                tracing::warn!(tenant_id, wait = ?wait, "graph requests throttled inside a batch");
            } else if let Some(wait) = backoff {
                tokio::time::sleep(wait).await;
            }
        }
        self.record(tenant_id, refused.as_ref().map_or(Ok(()), Err));
        bodies
    }
}
