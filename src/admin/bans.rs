//! `/api/v1/bans` and `/api/v1/top`: the ban list (changing calls need the token,
//! like every changing call) and the heaviest sources.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::{ApiState, error};
use crate::config::Cidr;
use crate::dataplane::{BanInfo, Control};

/// Longest ban the API takes: 30 days (a permanent one belongs in `access.deny`).
const MAX_BAN: u64 = 30 * 24 * 3600;
const DEFAULT_BAN: u64 = 3600;

#[derive(Deserialize)]
pub(super) struct BanRequest {
    cidr: String,
    seconds: Option<u64>,
}

#[derive(Serialize)]
struct BansBody {
    bans: Vec<BanInfo>,
}

#[derive(Deserialize)]
pub(super) struct TopQuery {
    limit: Option<usize>,
}

/// Sends `msg` to the dataplane and waits for its answer.
async fn ask<T>(s: &ApiState, msg: Control, rx: oneshot::Receiver<T>) -> Result<T, Box<Response>> {
    let down = || {
        Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "dataplane not running",
        ))
    };
    s.control.send(msg).await.map_err(|_| down())?;
    rx.await.map_err(|_| down())
}

fn parse_cidr(s: &str) -> Result<Cidr, Box<Response>> {
    s.parse::<Cidr>()
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, &e)))
}

pub(super) async fn add(
    State(s): State<ApiState>,
    body: Result<Json<BanRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"cidr\": \"...\", \"seconds\": N}}: {e}"),
            );
        }
    };
    let cidr = match parse_cidr(&req.cidr) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let seconds = req.seconds.unwrap_or(DEFAULT_BAN);
    if seconds == 0 || seconds > MAX_BAN {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("seconds must be 1-{MAX_BAN}"),
        );
    }
    let (reply, rx) = oneshot::channel();
    let msg = Control::Ban {
        cidr,
        duration: Duration::from_secs(seconds),
        reply,
    };
    match ask(&s, msg, rx).await {
        Ok(Ok(())) => Json(serde_json::json!({ "cidr": cidr, "seconds": seconds })).into_response(),
        Ok(Err(why)) => error(StatusCode::INSUFFICIENT_STORAGE, &why),
        Err(r) => *r,
    }
}

pub(super) async fn remove(State(s): State<ApiState>, Path(cidr): Path<String>) -> Response {
    let cidr = match parse_cidr(&cidr) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let (reply, rx) = oneshot::channel();
    match ask(&s, Control::Unban { cidr, reply }, rx).await {
        Ok(true) => Json(serde_json::json!({ "cidr": cidr })).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, &format!("no ban for {cidr}")),
        Err(r) => *r,
    }
}

pub(super) async fn list(State(s): State<ApiState>) -> Response {
    let (reply, rx) = oneshot::channel();
    match ask(&s, Control::Bans { reply }, rx).await {
        Ok(bans) => Json(BansBody { bans }).into_response(),
        Err(r) => *r,
    }
}

pub(super) async fn top(State(s): State<ApiState>, Query(q): Query<TopQuery>) -> Response {
    let limit = q.limit.unwrap_or(10).clamp(1, crate::relay::top::TOP_SLOTS);
    // One listing at a time on the dataplane (see `ApiState::listing`).
    let Ok(_one) = s.listing.acquire().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "dataplane not running");
    };
    let (reply, rx) = oneshot::channel();
    match ask(&s, Control::Top { limit, reply }, rx).await {
        Ok(t) => Json(t).into_response(),
        Err(r) => *r,
    }
}
