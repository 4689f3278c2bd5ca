// `/<channel>/packages/<name>`: every version and build per subdir, with its metadata.
import { h, put, data, longText, outsideLink, bytes, when, loading, empty, failure, path, confirmButton } from '../dom.js';
import { api } from '../api.js';
import { loadChannel, channelHeader, canWrite } from '../channel-common.js';
import { notFound } from './notfound.js';

export async function render(view, ctx) {
  const [channelName, name] = ctx.params;
  put(view, loading('the package'));
  const channel = await loadChannel(channelName);
  if (!channel) {
    document.title = 'Not found · condaflare';
    put(view, notFound(ctx));
    return;
  }
  document.title = `${name} · ${channel.name} · condaflare`;
  const body = h('div', { class: 'package' });
  put(view, channelHeader(channel, ctx.session, 'packages'), body);
  const load = async () => {
    put(body, loading('the package'));
    let records;
    try {
      ({ records } = await api('GET', `channels/${encodeURIComponent(channel.name)}/packages/${encodeURIComponent(name)}`));
    } catch (error) {
      if (error.status === 404) {
        put(body, empty('No package of that name in this channel.', h('a', { href: path(channel.name) }, 'Back to the channel')));
        return;
      }
      put(body, failure(error, load));
      return;
    }
    if (!records.length) {
      put(body, empty('No files of this package are left.', h('a', { href: path(channel.name) }, 'Back to the channel')));
      return;
    }
    put(body, packageView(channel, name, records, canWrite(channel), load));
  };
  await load();
}

function packageView(channel, name, records, write, reload) {
  const latest = records[0];
  const bySubdir = new Map();
  for (const r of records) {
    if (!bySubdir.has(r.subdir)) bySubdir.set(r.subdir, []);
    bySubdir.get(r.subdir).push(r);
  }
  return [
    h('p', { class: 'crumbs' }, h('a', { href: path(channel.name) }, h('bdi', {}, channel.name)), ' / ', data(name)),
    h(
      'section',
      { class: 'card overview' },
      h('h2', { class: 'package-name' }, data(name, 'data title')),
      latest.summary ? h('p', { class: 'summary' }, longText(latest.summary, 300)) : h('p', { class: 'muted' }, 'No summary.'),
      h(
        'dl',
        { class: 'facts' },
        h('dt', {}, 'Latest version'),
        h('dd', {}, data(latest.version)),
        h('dt', {}, 'License'),
        h('dd', {}, latest.license ? longText(latest.license, 200) : h('span', { class: 'muted' }, 'not stated')),
        h('dt', {}, 'Homepage'),
        h('dd', {}, latest.home ? outsideLink(latest.home) : h('span', { class: 'muted' }, 'not stated')),
        h('dt', {}, 'Files'),
        h('dd', {}, `${records.length} in ${bySubdir.size} ${bySubdir.size === 1 ? 'subdir' : 'subdirs'}`),
      ),
      latest.description ? h('div', { class: 'description' }, h('h3', {}, 'Description'), longText(latest.description, 1200)) : null,
    ),
    [...bySubdir.entries()].map(([subdir, files]) =>
      h('section', { class: 'card subdir' }, h('h2', {}, data(subdir)), files.map((r) => fileView(channel, r, write, reload))),
    ),
  ];
}

function fileView(channel, r, write, reload) {
  const href = path(channel.name, r.subdir, r.filename);
  return h(
    'article',
    { class: 'file' },
    h(
      'div',
      { class: 'file-head' },
      h('h3', {}, data(r.version, 'data version'), ' ', h('span', { class: 'build' }, 'build ', data(r.build))),
      h('a', { href, class: 'button', download: '' }, 'Download'),
      write
        ? confirmButton('Delete', ['Delete ', h('bdi', {}, r.filename), ' for everyone?'], async () => {
            await api('DELETE', `delete/${encodeURIComponent(channel.name)}/${encodeURIComponent(r.subdir)}/${encodeURIComponent(r.filename)}`);
            await reload();
          })
        : null,
    ),
    h(
      'dl',
      { class: 'facts' },
      h('dt', {}, 'File'),
      h('dd', {}, data(r.filename)),
      h('dt', {}, 'Build number'),
      h('dd', {}, String(r.build_number ?? '')),
      h('dt', {}, 'Size'),
      h('dd', {}, bytes(r.size)),
      h('dt', {}, 'SHA-256'),
      h('dd', {}, h('code', { class: 'hash' }, String(r.sha256 ?? ''))),
      h('dt', {}, 'Indexed'),
      h('dd', {}, when(r.indexed_at)),
      h('dt', {}, 'Published by'),
      h('dd', {}, publisher(r.provenance)),
      r.provenance?.workflow ? [h('dt', {}, 'CI run'), h('dd', {}, ciRun(r.provenance.workflow))] : null,
      h('dt', {}, 'License'),
      h('dd', {}, r.license ? longText(r.license, 200) : h('span', { class: 'muted' }, 'not stated')),
    ),
    h('div', { class: 'deps' }, depList('Depends', r.depends), depList('Constrains', r.constrains)),
  );
}

// Who published a file: the user and key name; a file stored before this was kept is "unknown".
function publisher(provenance) {
  if (!provenance || typeof provenance !== 'object') return h('span', { class: 'muted' }, 'unknown');
  return h('span', { class: 'publisher' }, data(provenance.user, 'data user'), ' with key ', data(provenance.key, 'data key'));
}

// The CI run a key minted for a trusted publisher was minted for, as its token named it.
function ciRun(run) {
  const facts = [
    ['repository', run.repository],
    ['workflow', run.workflow],
    ['run', run.run_id],
    ['ref', run.git_ref],
    ['commit', run.commit],
    ['environment', run.environment],
    ['issuer', run.issuer],
  ].filter(([, value]) => value !== undefined && value !== null && value !== '');
  return h('ul', { class: 'ci-run' }, facts.map(([label, value]) => h('li', { class: label }, h('span', { class: 'muted' }, label), ' ', data(value))));
}

function depList(title, specs) {
  const list = Array.isArray(specs) ? specs : [];
  return h(
    'div',
    {},
    h('h4', {}, title),
    list.length ? h('ul', { class: 'specs' }, list.slice(0, 500).map((s) => h('li', {}, data(s)))) : h('p', { class: 'muted' }, 'none'),
    list.length > 500 ? h('p', { class: 'muted' }, `and ${list.length - 500} more`) : null,
  );
}
