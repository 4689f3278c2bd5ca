// `/<channel>/upload` ("+ Add"): drop or pick package files; each is checked in the browser
// (extension, size, SHA-256), sent with its progress shown, and gets the server's verdict.
import { h, put, data, bytes, loading, path } from '../dom.js';
import { api, send } from '../api.js';
import { loadChannel, channelHeader, canWrite } from '../channel-common.js';
import { notFound } from './notfound.js';

const EXTENSIONS = ['.conda', '.tar.bz2'];

export async function render(view, ctx) {
  const [name] = ctx.params;
  put(view, loading('the channel'));
  const [channel, server] = await Promise.all([loadChannel(name), api('GET', 'server').catch(() => null)]);
  if (!channel) {
    document.title = 'Not found · condaflare';
    put(view, notFound(ctx));
    return;
  }
  document.title = `Add packages · ${channel.name} · condaflare`;
  const maxBytes = server && typeof server.max_upload_bytes === 'number' ? server.max_upload_bytes : null;
  if (!canWrite(channel)) {
    put(
      view,
      channelHeader(channel, ctx.session, 'upload'),
      channel.mirror
        ? h('div', { class: 'state empty' }, h('p', { class: 'state-title' }, 'A mirror takes no uploads: its packages come from its upstream.'))
        : h('div', { class: 'state empty' }, h('p', { class: 'state-title' }, 'Only the channel’s owners and contributors add packages.'), ctx.session ? null : h('p', {}, h('a', { href: '/-/signin?next=' + encodeURIComponent(location.pathname) }, 'Sign in'), ' with an owner’s or a contributor’s key.')),
    );
    return;
  }

  const picker = h('input', { type: 'file', multiple: true, accept: EXTENSIONS.join(','), id: 'file-picker', class: 'visually-hidden' });
  const zone = h(
    'div',
    { class: 'dropzone', id: 'dropzone', tabindex: '0', role: 'button', 'aria-label': 'drop package files here or choose them' },
    h('p', { class: 'dropzone-title' }, 'Drop .conda or .tar.bz2 files here'),
    h('p', {}, 'or ', h('label', { for: 'file-picker', class: 'button' }, 'choose files'), picker),
    h('p', { class: 'hint' }, maxBytes ? `Up to ${bytes(maxBytes)} each. ` : '', 'Each file is checked here first (name, size, SHA-256), then validated by the server.'),
  );
  const queue = h('ol', { class: 'uploads', id: 'uploads', 'aria-live': 'polite' });

  const take = (files) => {
    for (const file of files) enqueue(channel, file, maxBytes, queue);
  };
  picker.addEventListener('change', () => {
    take([...picker.files]);
    picker.value = '';
  });
  zone.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' || event.key === ' ') picker.click();
  });
  for (const type of ['dragenter', 'dragover']) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add('over');
    });
  }
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (event) => {
    event.preventDefault();
    zone.classList.remove('over');
    take([...(event.dataTransfer?.files || [])]);
  });

  put(
    view,
    channelHeader(channel, ctx.session, 'upload'),
    h('section', { class: 'card' }, h('h2', {}, 'Add packages to ', h('bdi', {}, channel.name)), zone, queue, h('p', { class: 'hint' }, 'Stored packages show on the ', h('a', { href: path(channel.name) }, 'channel page'), ' at once.')),
  );
}

// Files go one after the other, so that progress bars move one at a time and the server's
// per-channel index is not asked for several commits at once.
let chain = Promise.resolve();

function enqueue(channel, file, maxBytes, queue) {
  const status = h('span', { class: 'status' }, 'waiting');
  const bar = h('progress', { max: '100', value: '0', 'aria-label': 'upload progress' });
  const verdict = h('div', { class: 'verdict' });
  const row = h('li', { class: 'upload pending' }, h('div', { class: 'upload-head' }, data(file.name, 'data filename'), h('span', { class: 'muted' }, bytes(file.size)), status), bar, verdict);
  queue.appendChild(row);
  const finish = (kind, label, ...detail) => {
    bar.remove();
    row.className = `upload ${kind}`;
    status.textContent = label;
    put(verdict, ...detail);
  };
  const problem = precheck(file, maxBytes);
  if (problem) {
    finish('failed', 'not sent', h('p', { class: 'error-text' }, problem));
    return;
  }
  chain = chain.then(() => uploadFile(channel, file, status, bar, finish)).catch(() => {});
}

function precheck(file, maxBytes) {
  if (!EXTENSIONS.some((ext) => file.name.endsWith(ext))) return 'Not a conda package: the file name must end in .conda or .tar.bz2.';
  if (file.size === 0) return 'The file is empty.';
  if (maxBytes !== null && file.size > maxBytes) return `Too large: ${bytes(file.size)}, and this server takes at most ${bytes(maxBytes)} per file.`;
  return null;
}

async function sha256Hex(file) {
  const digest = await crypto.subtle.digest('SHA-256', await file.arrayBuffer());
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

async function uploadFile(channel, file, status, bar, finish) {
  status.textContent = 'computing SHA-256';
  let sha256;
  try {
    sha256 = await sha256Hex(file);
  } catch (error) {
    finish('failed', 'not sent', h('p', { class: 'error-text' }, `The file could not be read: ${error.message}`));
    return;
  }
  status.textContent = 'uploading';
  const headers = { 'X-File-Name': file.name, 'X-File-SHA256': sha256, 'Content-Type': 'application/octet-stream' };
  let answer;
  try {
    answer = await send(`upload/${encodeURIComponent(channel.name)}`, file, headers, (percent) => {
      bar.value = percent;
    });
  } catch (error) {
    // Status 0: the request never got an answer (not sent at all, or the connection broke off).
    const verdict = error.status !== 0 ? `refused (${error.status})` : error.code === 'network' ? 'failed' : 'not sent';
    finish('failed', verdict, h('p', { class: 'error-text' }, error.message));
    return;
  }
  const stored = answer.status === 201;
  finish(stored ? 'stored' : 'unchanged', stored ? 'stored' : 'already there', recordView(channel, answer.body, sha256));
}

function recordView(channel, record, sha256) {
  const facts = [
    ['name', record.name],
    ['version', record.version],
    ['build', record.build],
    ['subdir', record.subdir],
    ['size', typeof record.size === 'number' ? bytes(record.size) : null],
  ].filter(([, v]) => v !== undefined && v !== null && v !== '');
  return h(
    'div',
    { class: 'record' },
    h('dl', { class: 'facts inline' }, facts.map(([k, v]) => [h('dt', {}, k), h('dd', {}, data(v))])),
    h('p', { class: 'hash-line' }, 'sha256 ', h('code', { class: 'hash' }, sha256)),
    record.name ? h('a', { href: path(channel.name, 'packages', record.name) }, 'Open the package') : null,
  );
}
