// `/<channel>`: subdirs, packages grouped by name, search, paging, and how to install; for a
// mirror, what it mirrors (its card).
import { h, put, data, when, loading, empty, failure, path, snippet, debounce } from '../dom.js';
import { api, query } from '../api.js';
import { loadChannel, channelHeader, canWrite } from '../channel-common.js';
import { mirrorCard } from '../mirror.js';
import { notFound } from './notfound.js';

const PAGE = 50;

export async function render(view, ctx) {
  const [name] = ctx.params;
  put(view, loading('the channel'));
  const filters = { q: ctx.search.get('q') || '', subdir: ctx.search.get('subdir') || '', cursor: ctx.search.get('cursor') || '' };
  const packagesOf = (channelName) =>
    api('GET', `channels/${encodeURIComponent(channelName)}/packages` + query({ q: filters.q, subdir: filters.subdir, cursor: filters.cursor, limit: PAGE }));
  // The first page of packages is asked for with the channel's details, not after them.
  let firstPage = packagesOf(name);
  firstPage.catch(() => {});
  const channel = await loadChannel(name);
  if (!channel) {
    document.title = 'Not found · condaflare';
    put(view, notFound(ctx));
    return;
  }
  document.title = `${channel.name} · condaflare`;

  const search = h('input', { type: 'search', name: 'q', value: filters.q, placeholder: 'Search packages by name', autocomplete: 'off', 'aria-label': 'search packages', maxlength: 200 });
  const subdirs = h('div', { class: 'chips', role: 'group', 'aria-label': 'subdirs' });
  const results = h('section', { class: 'card results' });
  const knownSubdirs = new Set();

  // The address says what is shown, so the page can be bookmarked and reloaded.
  const syncUrl = (push) => {
    const url = path(channel.name) + query(filters);
    if (push) history.pushState(null, '', url);
    else history.replaceState(null, '', url);
  };

  const renderSubdirs = () => {
    const chip = (value, label) =>
      h(
        'button',
        {
          type: 'button',
          class: filters.subdir === value ? 'chip active' : 'chip',
          'aria-pressed': String(filters.subdir === value),
          onclick: () => {
            filters.subdir = value;
            filters.cursor = '';
            syncUrl(true);
            load();
          },
        },
        label,
      );
    put(subdirs, chip('', 'all subdirs'), [...knownSubdirs].sort().map((s) => chip(s, s)));
  };

  let latest = 0;
  const load = async () => {
    const mine = ++latest;
    put(results, loading('packages'));
    try {
      const answer = await (firstPage || packagesOf(channel.name));
      firstPage = null;
      if (mine !== latest) return;
      for (const p of answer.packages) for (const s of p.subdirs || []) knownSubdirs.add(s);
      if (filters.subdir) knownSubdirs.add(filters.subdir);
      renderSubdirs();
      put(results, listing(channel, answer, filters));
      put(install, installHelp(channel, answer.packages[0]?.name));
    } catch (error) {
      if (mine === latest) put(results, failure(error, load));
    }
  };

  const onSearch = debounce(() => {
    filters.q = search.value.trim();
    filters.cursor = '';
    syncUrl(false);
    load();
  }, 250);
  search.addEventListener('input', onSearch);

  results.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-cursor]');
    if (!button) return;
    filters.cursor = button.dataset.cursor;
    syncUrl(true);
    load();
    results.scrollIntoView({ block: 'start' });
  });

  const install = h('aside', { class: 'card install' }, installHelp(channel, null));
  put(
    view,
    channelHeader(channel, ctx.session, 'packages'),
    channel.mirror ? mirrorCard(channel) : null,
    h('div', { class: 'channel-body' }, h('div', { class: 'packages' }, h('div', { class: 'toolbar' }, search, subdirs), results), install),
  );
  renderSubdirs();
  await load();
}

function listing(channel, answer, filters) {
  const { packages, total, next_cursor: next } = answer;
  if (!packages.length) {
    if (filters.q || filters.subdir) return empty('No package matches.', 'Try another name or subdir.');
    if (channel.mirror) return empty('No packages listed here.', 'A mirror serves its upstream’s packages by its rules; the files it has kept are listed above.');
    return empty(
      'This channel has no packages yet.',
      ...(canWrite(channel) ? [h('a', { href: path(channel.name, 'upload') }, 'Add packages'), ' in the browser, or upload with curl, pixi or rattler-build.'] : ['Packages uploaded to it will show here.']),
    );
  }
  return [
    h('p', { class: 'count' }, `${total.toLocaleString('en')} ${total === 1 ? 'package' : 'packages'}`, filters.q ? [' matching ', h('q', {}, h('bdi', {}, filters.q))] : null),
    h(
      'table',
      { class: 'list', id: 'packages' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Package'), h('th', {}, 'Latest'), h('th', { class: 'num' }, 'Builds'), h('th', {}, 'Subdirs'), h('th', {}, 'Last upload'))),
      h(
        'tbody',
        {},
        packages.map((p) =>
          h(
            'tr',
            {},
            h('td', { class: 'name-cell' }, h('a', { href: path(channel.name, 'packages', p.name), class: 'strong' }, data(p.name)), p.summary ? h('div', { class: 'summary' }, data(p.summary, 'data clip')) : null),
            h('td', {}, data(p.latest_version)),
            h('td', { class: 'num' }, String(p.builds)),
            h('td', { class: 'subdirs' }, (p.subdirs || []).join(', ')),
            h('td', {}, when(p.last_upload)),
          ),
        ),
      ),
    ),
    h(
      'div',
      { class: 'pager' },
      filters.cursor ? h('button', { type: 'button', 'data-cursor': '' }, '« First page') : null,
      next ? h('button', { type: 'button', 'data-cursor': next }, 'Next page »') : null,
    ),
  ];
}

/** Install commands with this site's URL; for a private channel, the auth file of each client. */
function installHelp(channel, example) {
  const url = `${location.origin}/${channel.name}`;
  const pkg = example || '<package>';
  const clients = {
    micromamba: {
      install: `micromamba install -c ${url} ${pkg}`,
      auth: [
        'In ~/.mamba/auth/authentication.json (the key is host:port):',
        JSON.stringify({ [location.host]: { type: 'BearerToken', token: '<api key>' } }, null, 2),
      ],
    },
    pixi: {
      install: `pixi add --channel ${url} ${pkg}`,
      auth: [`Once per machine (or a file named by RATTLER_AUTH_FILE, keyed by host):`, `pixi auth login ${location.hostname} --token <api key>`],
    },
    conda: {
      install: `conda install -c ${url} ${pkg}`,
      auth: ['conda takes the key in the channel URL:', `conda install -c ${location.origin}/t/<api key>/${channel.name} ${pkg}`],
    },
  };
  const panels = h('div', { class: 'client-panels' });
  const tabs = h('div', { class: 'chips', role: 'tablist' });
  const show = (client) => {
    for (const button of tabs.children) button.classList.toggle('active', button.dataset.client === client);
    const c = clients[client];
    put(
      panels,
      channel.private ? null : snippet(c.install),
      channel.private ? [h('p', { class: 'hint' }, c.auth[0]), snippet(c.auth[1]), h('p', { class: 'hint' }, 'then:'), snippet(c.install)] : null,
    );
  };
  for (const client of Object.keys(clients)) {
    tabs.appendChild(h('button', { type: 'button', class: 'chip', role: 'tab', 'data-client': client, onclick: () => show(client) }, client));
  }
  const box = [
    h('h2', {}, 'Install from this channel'),
    channel.private ? h('p', { class: 'hint' }, 'Private: clients need an API key (make a read-only one under ', h('a', { href: '/-/keys' }, 'API keys'), ').') : null,
    tabs,
    panels,
    h('p', { class: 'hint' }, 'Channel URL: ', h('code', { class: 'data' }, url)),
  ];
  show('micromamba');
  return box;
}
