// `/-/keys`: the signed-in user's API keys: create (shown once), list, revoke.
import { h, put, data, when, loading, empty, failure, confirmButton, copyButton } from '../dom.js';
import { api } from '../api.js';

const DAY = 24 * 3600 * 1000;

export async function render(view, ctx) {
  document.title = 'API keys · condaflare';
  if (!ctx.session) {
    put(view, h('h1', {}, 'API keys'), empty('Sign in to see and make your API keys.', h('a', { href: '/-/signin?next=/-/keys', class: 'button primary' }, 'Sign in')));
    return;
  }
  const list = h('section', { class: 'card' });
  const created = h('div', { id: 'new-key' });

  const load = async () => {
    put(list, loading('keys'));
    try {
      const { keys } = await api('GET', 'keys');
      put(list, h('h2', {}, 'Your keys'), keys.length ? table(keys) : empty('No keys.'));
    } catch (error) {
      put(list, failure(error, load));
    }
  };

  const table = (keys) =>
    h(
      'table',
      { class: 'list', id: 'keys' },
      h('thead', {}, h('tr', {}, ['Name', 'Key', 'Rights', 'Channels', 'Created', 'Expires', ''].map((t) => h('th', {}, t)))),
      h(
        'tbody',
        {},
        keys.map((k) =>
          h(
            'tr',
            { class: k.revoked ? 'revoked' : null, 'data-key-id': String(k.id) },
            h('td', {}, data(k.name)),
            h('td', {}, h('code', {}, `${k.prefix}…`)),
            h('td', {}, k.read_only ? 'read-only' : 'read and write'),
            h('td', {}, k.channels ? data(k.channels.join(', ')) : h('span', { class: 'muted' }, 'all')),
            h('td', {}, when(k.created_at)),
            h('td', {}, k.expires_at ? new Date(k.expires_at).toISOString().slice(0, 10) : h('span', { class: 'muted' }, 'never')),
            h(
              'td',
              { class: 'actions' },
              k.revoked
                ? h('span', { class: 'badge' }, 'revoked')
                : k.id === ctx.session.key?.id
                  ? h('span', { class: 'muted' }, 'this session’s key')
                  : confirmButton('Revoke', ['Revoke ', h('bdi', {}, k.name), '?'], async () => {
                      await api('DELETE', `keys/${encodeURIComponent(k.id)}`);
                      await load();
                    }),
            ),
          ),
        ),
      ),
    );

  const name = h('input', { name: 'name', required: true, maxlength: 100, placeholder: 'e.g. ci', autocomplete: 'off', 'aria-label': 'key name' });
  const expiry = h(
    'select',
    { name: 'expiry', 'aria-label': 'expiry' },
    [
      ['', 'never expires'],
      ['7', 'expires in 7 days'],
      ['30', 'expires in 30 days'],
      ['90', 'expires in 90 days'],
      ['365', 'expires in a year'],
    ].map(([v, t]) => h('option', { value: v, selected: v === '90' }, t)),
  );
  const readOnly = h('input', { type: 'checkbox', name: 'read_only' });
  const channels = h('input', { name: 'channels', placeholder: 'all channels', autocomplete: 'off', 'aria-label': 'channels' });
  const message = h('p', { class: 'message', role: 'alert' });
  const form = h(
    'form',
    { class: 'card', id: 'create-key' },
    h('h2', {}, 'New key'),
    h('div', { class: 'grid-form' }, h('label', { class: 'field' }, 'Name', name), h('label', { class: 'field' }, 'Expiry', expiry), h('label', { class: 'field' }, 'Only these channels (comma-separated)', channels), h('label', { class: 'check' }, readOnly, ' read-only (for installing, CI caches)')),
    h('button', { type: 'submit', class: 'primary' }, 'Create key'),
    message,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    put(message);
    const body = { name: name.value.trim(), read_only: readOnly.checked };
    if (expiry.value) body.expires_at = Date.now() + Number(expiry.value) * DAY;
    const names = channels.value.split(',').map((c) => c.trim()).filter(Boolean);
    if (names.length) body.channels = names;
    try {
      const answer = await api('POST', 'keys', body);
      put(
        created,
        h(
          'section',
          { class: 'card new-key', role: 'status' },
          h('h2', {}, 'Your new key ', h('bdi', {}, answer.info?.name ?? body.name)),
          h('p', {}, 'Copy it now: it is shown this once, and only its hash is kept.'),
          h('div', { class: 'snippet' }, h('code', { class: 'secret' }, answer.key), copyButton(answer.key)),
        ),
      );
      form.reset();
      await load();
    } catch (error) {
      put(message, error.message);
    }
  });

  put(view, h('div', { class: 'page-head' }, h('h1', {}, 'API keys')), created, form, list);
  await load();
}
