// A mirror channel's card on its channel page: what it mirrors and by which rules, how fresh
// each subdir's index is, and the package files it has kept. The upstream URL and the specs
// are data like any package metadata: text nodes, never markup.
import { h, put, data, bytes, when, loading, empty, failure } from './dom.js';
import { api, query } from './api.js';

const PAGE = 50;

/** "42 s ago", from an age in seconds the server measured (no clock of the browser involved). */
function ago(seconds) {
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} days ago`;
}

/** The card, filled once the mirror's state has come. */
export function mirrorCard(channel) {
  const card = h('section', { class: 'card mirror', id: 'mirror', 'aria-label': 'mirror' }, loading('the mirror'));
  const show = async () => {
    put(card, loading('the mirror'));
    try {
      const state = await kept(channel.name, '');
      put(card, content(channel, state));
    } catch (error) {
      put(card, failure(error, show));
    }
  };
  show();
  return card;
}

function kept(name, cursor) {
  return api('GET', `channels/${encodeURIComponent(name)}/mirror` + query({ cursor, limit: PAGE }));
}

function specs(list, none) {
  if (!list.length) return h('span', { class: 'muted' }, none);
  return h('ul', { class: 'specs' }, list.map((spec) => h('li', {}, data(spec))));
}

function content(channel, state) {
  const minAge = state.min_age_days > 0 ? `${state.min_age_days} ${state.min_age_days === 1 ? 'day' : 'days'} after its build` : 'none: at any age';
  return [
    h('h2', {}, 'Mirror of ', h('code', { class: 'data upstream', title: state.url }, state.url)),
    h(
      'dl',
      { class: 'facts rules' },
      h('dt', {}, 'Allowed'),
      h('dd', { class: 'allow' }, specs(state.allow, 'every package')),
      h('dt', {}, 'Denied'),
      h('dd', { class: 'deny' }, specs(state.deny, 'none')),
      h('dt', {}, 'Minimum age'),
      h('dd', { class: 'min-age' }, minAge),
      state.credentials ? [h('dt', {}, 'Credentials'), h('dd', {}, 'the Worker secret ', data(state.credentials))] : null,
    ),
    h('h3', {}, 'Upstream index'),
    freshness(state),
    h('h3', {}, 'Kept packages'),
    keptList(channel, state),
  ];
}

function freshness(state) {
  const interval = h('p', { class: 'hint' }, `A read checks a subdir's index with the upstream once it is older than ${state.revalidate_seconds} s; while the upstream fails, the last one stands in and grows older.`);
  if (!state.subdirs.length) return [h('p', { class: 'muted', id: 'mirror-fresh' }, 'No index fetched yet: each subdir’s is fetched on its first read.'), interval];
  return [
    h(
      'table',
      { class: 'list', id: 'mirror-fresh' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Subdir'), h('th', {}, 'Index'))),
      h(
        'tbody',
        {},
        state.subdirs.map((s) =>
          h('tr', {}, h('td', {}, data(s.subdir)), h('td', {}, h('time', { datetime: new Date(s.fetched_at).toISOString(), title: new Date(s.fetched_at).toISOString() }, `fetched ${ago(s.age_seconds)}`), s.stale ? ' — the upstream failed since; serving this copy' : null)),
        ),
      ),
    ),
    interval,
  ];
}

function keptList(channel, first) {
  if (!first.kept.length) return empty('Nothing kept yet: packages are fetched on first install.');
  const body = h('tbody', {});
  const count = h('p', { class: 'count' });
  const pager = h('div', { class: 'pager' });
  let shown = 0;
  const add = (page) => {
    for (const f of page.kept) {
      body.appendChild(h('tr', {}, h('td', { class: 'name-cell' }, data(f.filename)), h('td', { class: 'subdirs' }, data(f.subdir)), h('td', { class: 'num' }, bytes(f.size)), h('td', {}, when(f.kept_at))));
    }
    shown += page.kept.length;
    const files = `${shown.toLocaleString('en')} ${shown === 1 ? 'file' : 'files'}`;
    put(count, page.next_cursor ? `The first ${files}; more are kept` : files);
    put(pager, page.next_cursor ? h('button', { type: 'button', onclick: () => more(page.next_cursor) }, 'Show more') : null);
  };
  const more = async (cursor) => {
    put(pager, loading('more'));
    try {
      add(await kept(channel.name, cursor));
    } catch (error) {
      put(pager, failure(error, () => more(cursor)));
    }
  };
  add(first);
  return [
    count,
    h('table', { class: 'list', id: 'mirror-kept' }, h('thead', {}, h('tr', {}, h('th', {}, 'File'), h('th', {}, 'Subdir'), h('th', { class: 'num' }, 'Size'), h('th', {}, 'Kept'))), body),
    pager,
  ];
}

/**
 * The fields of a mirror's rules, for creating a mirror and for changing its rules: the
 * upstream URL, the allowed and denied match specs (one a line), the minimum age and the name
 * of the Worker secret a private upstream takes. `rules()` reads them as the API takes them;
 * the server checks them (a bad spec or URL comes back as its 400 sentence).
 */
export function rulesFields(current = { url: '', allow: [], deny: [], min_age_days: 0 }) {
  const url = h('input', { name: 'upstream', type: 'url', value: current.url, placeholder: 'https://conda.anaconda.org/conda-forge', autocomplete: 'off' });
  const specList = (name, list) => h('textarea', { name, rows: 3, spellcheck: 'false', placeholder: 'match specs, one a line: numpy >=2', value: list.join('\n') });
  const allow = specList('allow', current.allow);
  const deny = specList('deny', current.deny);
  const minAge = h('input', { name: 'min_age_days', type: 'number', min: 0, step: 1, value: String(current.min_age_days) });
  const credentials = h('input', { name: 'credentials', value: current.credentials ?? '', placeholder: 'none: a public upstream', autocomplete: 'off', pattern: '[A-Z_][A-Z0-9_]*' });
  const lines = (area) => area.value.split('\n').map((line) => line.trim()).filter(Boolean);
  const element = h(
    'div',
    { class: 'grid-form mirror-rules' },
    h('label', { class: 'field' }, 'Upstream channel URL', url),
    h('label', { class: 'field' }, 'Allow only (empty: every package)', allow),
    h('label', { class: 'field' }, 'Deny', deny),
    h('label', { class: 'field' }, 'Minimum age (days since its build)', minAge),
    h('label', { class: 'field' }, 'Credentials (a Worker secret’s name)', credentials),
  );
  const rules = () => {
    const value = { url: url.value.trim(), allow: lines(allow), deny: lines(deny), min_age_days: Number(minAge.value || 0) };
    if (credentials.value.trim()) value.credentials = credentials.value.trim();
    return value;
  };
  return { element, url, rules };
}
