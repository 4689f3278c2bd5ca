// The web app's entry: a router over location.pathname, one module per page (loaded when first
// needed), the header's navigation and the session.
import { h, put, failure } from './dom.js';
import { api, currentSession } from './api.js';
import routes from './routes.json' with { type: 'json' };

// The page URLs, as the Worker knows them too (src/pages.rs): `:channel` and `:name` stand for
// one path segment each; channel names never start with '-', the static files' prefix.
const patterns = routes.map(([pattern, page]) => [pattern.split('/'), page]);

const state = { session: undefined };

function match(pathname) {
  const segments = pathname.split('/');
  for (const [pattern, page] of patterns) {
    if (pattern.length !== segments.length) continue;
    const params = [];
    const fits = pattern.every((expected, at) => {
      const segment = segments[at];
      if (!expected.startsWith(':')) return expected === segment;
      params.push(segment);
      return segment !== '' && !(expected === ':channel' && segment.startsWith('-'));
    });
    if (!fits) continue;
    try {
      return { page, params: params.map(decodeURIComponent) };
    } catch {
      return { page: 'notfound', params: [] };
    }
  }
  return { page: 'notfound', params: [] };
}

export function navigate(url, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  render();
}

async function signOut() {
  try {
    await api('DELETE', 'session');
  } finally {
    state.session = null;
    navigate('/');
  }
}

function renderNav() {
  const nav = document.getElementById('nav');
  const s = state.session;
  if (s) {
    put(
      nav,
      h('a', { href: '/' }, 'Channels'),
      h('a', { href: '/-/keys' }, 'API keys'),
      h('span', { class: 'user', title: 'signed in' }, h('bdi', {}, s.user), s.is_admin ? ' (admin)' : null),
      h('button', { type: 'button', class: 'link', onclick: signOut }, 'Sign out'),
    );
  } else {
    const next = location.pathname === '/-/signin' ? '' : '?next=' + encodeURIComponent(location.pathname + location.search);
    put(nav, h('a', { href: '/' }, 'Channels'), h('a', { href: '/-/signin' + next, class: 'button' }, 'Sign in'));
  }
}

let generation = 0;

async function render() {
  const mine = ++generation;
  if (location.pathname.length > 1 && location.pathname.endsWith('/')) {
    history.replaceState(null, '', location.pathname.replace(/\/+$/, '') + location.search);
  }
  const main = document.getElementById('main');
  // Each page renders into its own container: work of a page left behind lands in a detached one.
  const view = h('div', { class: 'view' });
  put(main, view);
  try {
    if (state.session === undefined) state.session = await currentSession();
    if (mine !== generation) return;
    renderNav();
    const { page, params } = match(location.pathname);
    const module = await import(`./pages/${page}.js`);
    if (mine !== generation) return;
    await module.render(view, {
      params,
      search: new URLSearchParams(location.search),
      session: state.session,
      navigate,
      setSession(session) {
        state.session = session;
        renderNav();
      },
    });
  } catch (error) {
    if (mine === generation) put(view, failure(error, render));
  }
}

// Links inside the app change the page without reloading it.
document.addEventListener('click', (event) => {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target.closest('a[href]');
  if (!link || link.target || link.hasAttribute('download')) return;
  const url = new URL(link.href);
  if (url.origin !== location.origin || url.pathname.startsWith('/api/')) return;
  // Channel files (/<channel>/<subdir>/<file>) are downloads, not pages.
  if (match(url.pathname).page === 'notfound') return;
  event.preventDefault();
  navigate(url.pathname + url.search);
  window.scrollTo(0, 0);
});

window.addEventListener('popstate', render);
render();
