// The JSON API (/api/v1/...), the only thing the pages talk to. The session cookie goes along
// by itself (same origin); the browser adds the Origin header the server checks on changes.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The server's error sentence, or a plain one when the answer is not its JSON. */
export async function errorOf(response) {
  let body;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (body && typeof body.error === 'string') return new ApiError(response.status, body.code || '', body.error);
  return new ApiError(response.status, '', `the server answered ${response.status} ${response.statusText}`.trim());
}

export async function api(method, path, body) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch('/api/v1/' + path, init);
  } catch {
    throw new ApiError(0, 'network', 'the server could not be reached; check the connection and try again');
  }
  if (!response.ok) throw await errorOf(response);
  if (response.status === 204) return null;
  return response.json();
}

/**
 * Sends `body` (a File) to an API path, reporting progress (0 to 100) as it goes out: fetch
 * cannot tell how much of a body was sent, XMLHttpRequest can. Answers `{ status, body }`;
 * throws ApiError as api() does.
 */
export async function send(path, body, headers, onProgress) {
  const xhr = new XMLHttpRequest();
  xhr.open('POST', '/api/v1/' + path);
  for (const [name, value] of Object.entries({ Accept: 'application/json', ...headers })) {
    try {
      xhr.setRequestHeader(name, value);
    } catch {
      throw new ApiError(0, 'bad_request', `Not sent: the ${name} header cannot carry ${JSON.stringify(value)}.`);
    }
  }
  xhr.upload.addEventListener('progress', (event) => {
    if (event.lengthComputable) onProgress(Math.round((100 * event.loaded) / event.total));
  });
  const done = new Promise((resolve) => xhr.addEventListener('loadend', resolve));
  xhr.send(body);
  await done;
  if (xhr.status === 0) throw new ApiError(0, 'network', 'The connection broke off; nothing was stored. Try again.');
  const response = new Response(xhr.responseText, { status: xhr.status, statusText: xhr.statusText });
  if (!response.ok) throw await errorOf(response);
  return { status: xhr.status, body: await response.json().catch(() => ({})) };
}

/** The question string of `params`, without empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== '') q.set(k, v);
  const text = q.toString();
  return text ? '?' + text : '';
}

/** Who is signed in: the session's body, or null. */
export async function currentSession() {
  try {
    return await api('GET', 'session');
  } catch (error) {
    if (error.status === 401 || error.status === 404) return null;
    throw error;
  }
}
