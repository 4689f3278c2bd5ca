// `/-/signin`: paste an API key once; the server answers with a session cookie.
import { h, put } from '../dom.js';
import { api } from '../api.js';

export async function render(view, ctx) {
  document.title = 'Sign in · condaflare';
  const key = h('input', { type: 'password', name: 'key', required: true, autocomplete: 'off', placeholder: 'cfk-…', 'aria-label': 'API key' });
  const message = h('p', { class: 'message', role: 'alert' });
  const form = h(
    'form',
    { class: 'card narrow', id: 'signin' },
    h('h1', {}, 'Sign in'),
    ctx.session ? h('p', { class: 'hint' }, 'You are signed in as ', h('bdi', {}, ctx.session.user), '. Signing in again replaces that session.') : null,
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
      ctx.navigate(nextPath(ctx.search.get('next')));
    } catch (error) {
      put(message, error.status === 401 ? 'That key is not valid (unknown, revoked or expired).' : error.message);
    }
  });
  put(view, form);
  key.focus();
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
