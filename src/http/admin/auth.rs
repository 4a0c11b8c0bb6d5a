//! Who may use `/admin`: the password (HTTP Basic, constant time), the login throttle per
//! client address, the signed device cookie that keeps the operator's browser from being
//! locked out, and the CSRF token every action form carries.

use super::*;

/// Failed logins per client: 10 at once, then one a minute.
pub struct LoginGuard(RateLimiter);

impl Default for LoginGuard {
    fn default() -> Self {
        LoginGuard(RateLimiter::with_burst(10, 1))
    }
}

/// Proof that the request carries the admin password, and which device sent it.
#[derive(Clone)]
pub struct Admin {
    pub(super) csrf: String,
    /// The device cookie's id (the audit log's "who"); `password` without a cookie.
    pub(super) device: String,
}

/// How long a device's id is in the audit log: enough to tell devices apart; the cookie's
/// signature, never recorded, is what proves one.
const DEVICE_ID_LEN: usize = 12;

/// The id a device cookie's body carries (`expires.nonce`).
fn device_id(body: &str) -> String {
    let nonce = body.split_once('.').map_or("", |(_, n)| n);
    format!("device {}", &nonce[..nonce.len().min(DEVICE_ID_LEN)])
}

pub enum Refusal {
    Off,
    Unauthorized,
    Locked(u64),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Off => StatusCode::NOT_FOUND.into_response(),
            Refusal::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(
                    header::WWW_AUTHENTICATE,
                    "Basic realm=\"callgate admin\", charset=\"UTF-8\"",
                )],
                "the admin password is required",
            )
                .into_response(),
            Refusal::Locked(wait) => super::super::ratelimit::too_many(
                wait,
                "too many wrong passwords from this address; try again later \
                 (a browser that has logged in before is not locked out)",
            ),
        }
    }
}

pub(super) fn csrf_token(password: &str) -> String {
    hex::encode(hmac_sha256(password.as_bytes(), &[b"callgate-admin-csrf"]))
}

pub(super) const DEVICE_COOKIE: &str = "cg_admin_device";
/// A device cookie is good for this long after the login that made it.
pub(super) const DEVICE_SECS: i64 = 30 * 24 * 3600;

/// The signature of a device cookie's `expires.nonce`, keyed by the password (changing the
/// password forgets every device).
pub(super) fn device_mac(password: &str, body: &str) -> String {
    let key = hmac_sha256(password.as_bytes(), &[b"callgate-admin-device"]);
    hex::encode(hmac_sha256(&key, &[body.as_bytes()]))
}

/// A new device cookie, and the id of the device it names.
pub(super) fn new_device_cookie(
    password: &str,
    now: i64,
    secure: bool,
) -> Option<(HeaderValue, String)> {
    let body = format!("{}.{:032x}", now + DEVICE_SECS, rand::random::<u128>());
    let mac = device_mac(password, &body);
    let secure = if secure { "; Secure" } else { "" };
    let cookie = HeaderValue::from_str(&format!(
        "{DEVICE_COOKIE}={body}.{mac}; Path=/admin; Max-Age={DEVICE_SECS}; HttpOnly; SameSite=Strict{secure}"
    ))
    .ok()?;
    Some((cookie, device_id(&body)))
}

/// The id of the device cookie the request carries, if this server signed it and it has not
/// expired.
pub(super) fn device_cookie(
    headers: &axum::http::HeaderMap,
    password: &str,
    now: i64,
) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(DEVICE_COOKIE)?.strip_prefix('='))
        .find_map(|value| {
            let (body, mac) = value.rsplit_once('.')?;
            let fresh = body
                .split_once('.')
                .and_then(|(expires, _)| expires.parse::<i64>().ok())
                .is_some_and(|expires| expires > now);
            (fresh && constant_time_eq(mac.as_bytes(), device_mac(password, body).as_bytes()))
                .then(|| device_id(body))
        })
}

/// Middleware on every admin route: checks the password (and the lock-out), hands the
/// handler an [`Admin`], and gives a browser that logged in its device cookie.
pub(super) async fn gate(
    State((app, logins)): State<(AppState, Arc<LoginGuard>)>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(password) = app.config.admin_password.as_ref() else {
        return Refusal::Off.into_response();
    };
    let ip = ClientIp::of(req.extensions());
    let now = app.clock.now();
    let device = device_cookie(req.headers(), password.expose(), now);
    let known_device = device.is_some();
    let guard = &logins.0;
    if !known_device {
        if let Some(wait) = guard.wait(ip, Instant::now()) {
            return Refusal::Locked(wait).into_response();
        }
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| B64.decode(b.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| pair.split_once(':').map(|(_, p)| p.to_string()));
    let Some(given) = given else {
        // No credentials yet: the browser asks for them. Not a wrong guess.
        return Refusal::Unauthorized.into_response();
    };
    if !secrets_equal(&given, password.expose()) {
        tracing::warn!(%ip, "wrong admin password");
        let _ = guard.check(ip, Instant::now());
        return Refusal::Unauthorized.into_response();
    }
    // A browser without a cookie gets one now, and this request already counts as its.
    let secure = app
        .config
        .base_url
        .as_ref()
        .is_some_and(|u| u.scheme() == "https");
    let minted = match device {
        Some(_) => None,
        None => new_device_cookie(password.expose(), now, secure),
    };
    let device = device
        .or_else(|| minted.as_ref().map(|(_, id)| id.clone()))
        .unwrap_or_else(|| "password".into());
    req.extensions_mut().insert(Admin {
        csrf: csrf_token(password.expose()),
        device,
    });
    let mut resp = next.run(req).await;
    if let Some((cookie, _)) = minted {
        resp.headers_mut().append(header::SET_COOKIE, cookie);
    }
    resp
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, _app: &AppState) -> Result<Admin, Refusal> {
        // Set by `gate`, which every admin route passes through.
        parts
            .extensions
            .get::<Admin>()
            .cloned()
            .ok_or(Refusal::Unauthorized)
    }
}

#[derive(Deserialize)]
pub(super) struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    pub(super) minutes: Option<String>,
    #[serde(default)]
    pub(super) caller: Option<String>,
}

/// An admin action's form, its CSRF token checked against the admin's; and the admin.
pub(super) struct Action(pub(super) ActionForm, pub(super) Admin);

impl FromRequest<AppState> for Action {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, app: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let admin = Admin::from_request_parts(&mut parts, app)
            .await
            .map_err(IntoResponse::into_response)?;
        let Form(form) =
            Form::<ActionForm>::from_request(axum::extract::Request::from_parts(parts, body), app)
                .await
                .map_err(IntoResponse::into_response)?;
        if constant_time_eq(admin.csrf.as_bytes(), form.csrf.as_bytes()) {
            Ok(Action(form, admin))
        } else {
            Err(AdminError::Forged.into_response())
        }
    }
}
