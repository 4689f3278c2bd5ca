// `/-/signin`: a button per identity sign-in the server has on (GET /api/v1/server), and an API
// key pasted once; either way the server answers with a session cookie.
import { h, put } from '../dom.js';
import { api } from '../api.js';

// What each refusal of an identity provider's callback (`?error=<code>`, src/signin.rs Refusal)
// means to the person signing in. Nothing was stored in any case.
const REFUSALS = {
  disabled: 'That sign-in method is not configured on this server.',
  state: 'This sign-in was not started in this browser, or it was used already. Nothing was changed; start again.',
  expired: 'The sign-in took longer than 10 minutes. Nothing was changed; start again.',
  denied: 'The provider did not sign you in (cancelled or refused). Nothing was changed.',
  exchange: 'The provider did not accept the sign-in code (it was used already, or is not its own). Nothing was changed; start again.',
  token: "The provider's identity token did not verify (signature, issuer, audience, expiry or nonce). Nothing was changed.",
  unavailable: 'The provider could not be reached, or answered unexpectedly. Try again later.',
};

export async function render(view, ctx) {
  document.title = 'Sign in · condaflare';
  const server = await api('GET', 'server').catch(() => null);
  const next = nextPath(ctx.search.get('next'));
  const key = h('input', { type: 'password', name: 'key', required: true, autocomplete: 'off', placeholder: 'cfk-…', 'aria-label': 'API key' });
  const message = h('p', { class: 'message', role: 'alert' });
  const refusal = ctx.search.get('error');
  if (refusal) put(message, REFUSALS[refusal] || 'The sign-in was refused. Nothing was changed; start again.');
  const methods = (server && server.sign_in) || [];
  const identities = methods.length
    ? h(
        'div',
        { class: 'identities' },
        ...methods.map((method) => identityButton(method, next, message, ctx)),
        h('p', { class: 'hint' }, 'Or with an API key:'),
      )
    : null;
  const form = h(
    'form',
    { class: 'card narrow', id: 'signin' },
    h('h1', {}, 'Sign in'),
    ctx.session ? h('p', { class: 'hint' }, 'You are signed in as ', h('bdi', {}, ctx.session.user), '. Signing in again replaces that session.') : null,
    identities,
    h('label', { class: 'field' }, 'API key', key),
    h('p', { class: 'hint' }, 'The key is sent once; the browser keeps only a session cookie (HttpOnly), ended by "Sign out". ', 'A new site gets its first key from ', h('code', {}, 'npm start'), '; more with ', h('code', {}, 'npm run admin -- key create <user>'), '.'),
    h('button', { type: 'submit', class: 'primary' }, 'Sign in'),
    message,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    put(message);
    try {
      const session = await api('POST', 'session', { key: key.value.trim() });
      key.value = '';
      ctx.setSession(session);
      ctx.navigate(next);
    } catch (error) {
      put(message, error.status === 401 ? 'That key is not valid (unknown, revoked or expired).' : error.message);
    }
  });
  put(view, form);
  if (!refusal) key.focus();
}

/**
 * The button of one identity sign-in: OpenID Connect and GitHub are a visit to the provider
 * (a link the server answers with a redirect); Cloudflare Access has vouched already, so one
 * call turns its assertion into a session.
 */
function identityButton(method, next, message, ctx) {
  const label = `Sign in with ${method.label}`;
  if (method.method !== 'access') {
    return h('a', { class: 'button identity', href: `/api/v1/signin/${method.method}?next=${encodeURIComponent(next)}` }, label);
  }
  const button = h('button', { type: 'button', class: 'identity' }, label);
  button.addEventListener('click', async () => {
    put(message);
    try {
      const session = await api('POST', 'signin/access');
      ctx.setSession(session);
      ctx.navigate(next);
    } catch (error) {
      put(message, error.message);
    }
  });
  return button;
}

/** Where to go after signing in: a path of this site only, never an address elsewhere. */
function nextPath(next) {
  if (!next) return '/';
  let url;
  try {
    url = new URL(next, location.origin);
  } catch {
    return '/';
  }
  return url.origin === location.origin ? url.pathname + url.search : '/';
}
