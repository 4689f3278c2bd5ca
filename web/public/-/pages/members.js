// `/<channel>/members` (owners): who may read the channel (member), also publish to it
// (contributor), or also manage it (owner).
import { h, put, data, loading, empty, failure, confirmButton } from '../dom.js';
import { api } from '../api.js';
import { channelHeader, openOwnerPage } from '../channel-common.js';

const ROLES = ['member', 'contributor', 'owner'];

export async function render(view, ctx) {
  const channel = await openOwnerPage(view, ctx, {
    title: 'Members',
    tab: 'members',
    refusal: 'Only the channel’s owners see and change its members.',
  });
  if (!channel) return;
  const base = `channels/${encodeURIComponent(channel.name)}/members`;
  const list = h('section', { class: 'card' });
  const message = h('p', { class: 'message', role: 'alert' });

  const load = async () => {
    put(list, loading('members'));
    try {
      const { members } = await api('GET', base);
      put(list, h('h2', {}, 'Members'), members.length ? table(members) : empty('No members.'));
    } catch (error) {
      put(list, failure(error, load));
    }
  };

  const roleSelect = (current, attrs = {}) => h('select', attrs, ROLES.map((r) => h('option', { value: r, selected: r === current }, r)));

  const table = (members) =>
    h(
      'table',
      { class: 'list', id: 'members' },
      h('thead', {}, h('tr', {}, h('th', {}, 'User'), h('th', {}, 'Role'), h('th', {}, ''))),
      h(
        'tbody',
        {},
        members.map((m) => {
          const select = roleSelect(m.role, { 'aria-label': `role of ${m.user}` });
          select.addEventListener('change', async () => {
            put(message);
            try {
              await api('PUT', `${base}/${encodeURIComponent(m.user)}`, { role: select.value });
              put(message, h('span', { class: 'ok-text' }, `${m.user} is now ${select.value}.`));
            } catch (error) {
              put(message, error.message);
            }
            await load();
          });
          return h(
            'tr',
            { 'data-user': m.user },
            h('td', {}, data(m.user)),
            h('td', {}, select),
            h(
              'td',
              { class: 'actions' },
              confirmButton('Remove', ['Remove ', h('bdi', {}, m.user), '?'], async () => {
                await api('DELETE', `${base}/${encodeURIComponent(m.user)}`);
                put(message, h('span', { class: 'ok-text' }, `${m.user} removed.`));
                await load();
              }),
            ),
          );
        }),
      ),
    );

  const user = h('input', { name: 'user', required: true, maxlength: 64, placeholder: 'user name', autocomplete: 'off', 'aria-label': 'user name' });
  const role = roleSelect('member', { name: 'role', 'aria-label': 'role' });
  const form = h(
    'form',
    { class: 'card inline-form', id: 'add-member' },
    h('h2', {}, 'Add a member'),
    h('div', { class: 'row' }, user, role, h('button', { type: 'submit', class: 'primary' }, 'Add')),
    h('p', { class: 'hint' }, 'Members read a private channel; contributors also upload and delete its packages; owners also manage it. A channel keeps at least one owner.'),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    put(message);
    try {
      await api('PUT', `${base}/${encodeURIComponent(user.value.trim())}`, { role: role.value });
      put(message, h('span', { class: 'ok-text' }, `${user.value.trim()} added as ${role.value}.`));
      user.value = '';
      await load();
    } catch (error) {
      put(message, error.message);
    }
  });

  put(view, channelHeader(channel, ctx.session, 'members'), form, message, list);
  await load();
}
