// The admin API as the page calls it: the token only ever in the Authorization header.
export const TOKEN_KEY = "postback-relay.admin-token";
export const REFRESH_MS = 5000;

export class Refused extends Error {}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export async function api(path, { method = "GET", params = null, body = undefined, bearer = token() } = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== "" && value !== null && value !== undefined) url.searchParams.set(name, value);
  }
  const headers = { Accept: "application/json", Authorization: "Bearer " + (bearer || "") };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "omit",
  });
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (response.status === 401 || response.status === 403) {
    const error = new Refused(refusal(response.status));
    error.status = response.status;
    throw error;
  }
  if (!response.ok) {
    const error = new Error((data && data.error) || "HTTP " + response.status);
    error.status = response.status;
    throw error;
  }
  return data;
}

function refusal(status) {
  if (status === 403) {
    return "The admin API is off on this server: set POSTBACK_ADMIN_TOKEN for the edge and restart it.";
  }
  return "The admin token was refused. Check it (it is the edge's POSTBACK_ADMIN_TOKEN) and try again.";
}

// Any refused call (token changed on the server, say) ends the session with the reason.
let whenRefused = () => {};

export function onRefused(handler) {
  whenRefused = handler;
}

// True when ``error`` was a refusal, which has then ended the session.
export function refused(error) {
  if (!(error instanceof Refused)) return false;
  whenRefused(error.message);
  return true;
}

// Shows ``error`` in ``where``, or ends the session when the token was refused.
export function failed(error, where) {
  if (!refused(error)) where.textContent = error.message || String(error);
}
