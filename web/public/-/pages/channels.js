// `/`: the channels the caller may read (public ones and their own), and "create channel".
import { h, put, data, when, loading, empty, failure, path } from '../dom.js';
import { api } from '../api.js';
import { rulesFields } from '../mirror.js';

export async function render(view, ctx) {
  document.title = 'Channels · condaflare';
  const list = h('section', { class: 'card' });
  put(
    view,
    h('div', { class: 'page-head' }, h('h1', {}, 'Channels')),
    ctx.session ? createForm(ctx) : h('p', { class: 'hint' }, h('a', { href: '/-/signin' }, 'Sign in'), ' to see your private channels and to create one.'),
    list,
  );
  const load = async () => {
    put(list, loading('channels'));
    try {
      const { channels } = await api('GET', 'channels');
      put(list, channels.length ? table(channels) : empty('No channels yet.', ctx.session ? 'Create the first one above.' : 'Sign in to create one.'));
    } catch (error) {
      put(list, failure(error, load));
    }
  };
  await load();
}

function table(channels) {
  return h(
    'table',
    { class: 'list', id: 'channel-list' },
    h('thead', {}, h('tr', {}, h('th', {}, 'Channel'), h('th', {}, 'Visibility'), h('th', {}, 'Your role'), h('th', { class: 'num' }, 'Packages'), h('th', {}, 'Last upload'))),
    h(
      'tbody',
      {},
      channels.map((c) =>
        h(
          'tr',
          {},
          h('td', {}, h('a', { href: path(c.name), class: 'strong' }, data(c.name)), c.mirror ? mirrorBadge(c.mirror) : null),
          h('td', {}, c.private ? h('span', { class: 'badge private' }, 'private') : h('span', { class: 'badge' }, 'public')),
          h('td', {}, c.role ? data(c.role) : h('span', { class: 'muted' }, '—')),
          h('td', { class: 'num' }, typeof c.package_count === 'number' ? c.package_count.toLocaleString('en') : '—'),
          h('td', {}, c.last_upload ? when(c.last_upload) : h('span', { class: 'muted' }, 'never')),
        ),
      ),
    ),
  );
}

/** What a mirror mirrors, as the channel page's badge says it is one. */
function mirrorBadge(rules) {
  return h('span', { class: 'badge mirror' }, 'mirror of ', data(rules.url));
}

function createForm(ctx) {
  const name = h('input', { name: 'name', required: true, maxlength: 64, pattern: '[a-z0-9][a-z0-9._\\-]*', placeholder: 'my-channel', autocomplete: 'off', 'aria-label': 'channel name' });
  const priv = h('input', { type: 'checkbox', name: 'private' });
  const mirror = rulesFields();
  const message = h('p', { class: 'message', role: 'alert' });
  const form = h(
    'form',
    { class: 'card inline-form', id: 'create-channel' },
    h('h2', {}, 'New channel'),
    h('div', { class: 'row' }, name, h('label', { class: 'check' }, priv, ' private (members only)'), h('button', { type: 'submit', class: 'primary' }, 'Create channel')),
    h('p', { class: 'hint' }, '1 to 64 lowercase letters, digits, "-", "_" or ".", starting with a letter or digit. You become its owner.'),
    h(
      'details',
      { class: 'mirror-option', id: 'create-mirror' },
      h('summary', {}, 'Mirror an upstream channel'),
      h('p', { class: 'hint' }, 'With an upstream URL the channel is a mirror: it takes no uploads and serves the upstream’s packages these rules admit, each fetched on its first request and kept.'),
      mirror.element,
    ),
    message,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    put(message);
    const body = { name: name.value.trim(), private: priv.checked };
    if (mirror.url.value.trim()) body.mirror = mirror.rules();
    try {
      const created = await api('POST', 'channels', body);
      ctx.navigate(path(created.name || body.name));
    } catch (error) {
      put(message, error.message);
    }
  });
  return form;
}
