// `/<channel>/settings` (owners): visibility, a mirror's rules or the trusted publishers of a
// channel that takes uploads, and deleting the channel (type its name).
import { h, put } from '../dom.js';
import { api } from '../api.js';
import { channelHeader, openOwnerPage } from '../channel-common.js';
import { publishersCard } from '../publishers.js';
import { rulesFields } from '../mirror.js';

export async function render(view, ctx) {
  const channel = await openOwnerPage(view, ctx, {
    title: 'Settings',
    tab: 'settings',
    refusal: 'Only the channel’s owners change its settings.',
  });
  if (!channel) return;
  const url = `channels/${encodeURIComponent(channel.name)}`;
  let header = channelHeader(channel, ctx.session, 'settings');

  const visibilityMessage = h('p', { class: 'message', role: 'alert' });
  const choice = (value, label, hint) =>
    h('label', { class: 'radio' }, h('input', { type: 'radio', name: 'visibility', value, checked: channel.private === (value === 'private') }), h('span', {}, h('strong', {}, label), ' — ', hint));
  const visibility = h(
    'form',
    { class: 'card', id: 'visibility' },
    h('h2', {}, 'Visibility'),
    choice('public', 'Public', 'anyone can read and install; only owners change it.'),
    choice('private', 'Private', 'only its members, contributors and owners see it; to everyone else it does not exist.'),
    h('button', { type: 'submit', class: 'primary' }, 'Save visibility'),
    visibilityMessage,
  );
  visibility.addEventListener('submit', async (event) => {
    event.preventDefault();
    const priv = visibility.elements.visibility.value === 'private';
    put(visibilityMessage);
    try {
      await api('PATCH', url, { private: priv });
      channel.private = priv;
      const fresh = channelHeader(channel, ctx.session, 'settings');
      header.replaceWith(fresh);
      header = fresh;
      put(visibilityMessage, h('span', { class: 'ok-text' }, `The channel is now ${priv ? 'private' : 'public'}.`));
    } catch (error) {
      put(visibilityMessage, error.message);
    }
  });

  const typed = h('input', { name: 'confirm', autocomplete: 'off', 'aria-label': 'type the channel name to confirm', placeholder: channel.name });
  const remove = h('button', { type: 'submit', class: 'danger', disabled: true }, 'Delete this channel');
  const deleteMessage = h('p', { class: 'message', role: 'alert' });
  typed.addEventListener('input', () => {
    remove.disabled = typed.value !== channel.name;
  });
  const danger = h(
    'form',
    { class: 'card danger-zone', id: 'delete-channel' },
    h('h2', {}, 'Delete the channel'),
    h('p', {}, 'This removes every package, its index and its members. It cannot be undone. Type the channel’s name to confirm:'),
    h('div', { class: 'row' }, typed, remove),
    deleteMessage,
  );
  danger.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (typed.value !== channel.name) return;
    remove.disabled = true;
    try {
      await api('DELETE', url);
      ctx.navigate('/');
    } catch (error) {
      put(deleteMessage, error.message);
      remove.disabled = false;
    }
  });

  put(view, header, visibility, channel.mirror ? rulesCard(channel, url) : publishersCard(channel), danger);
}

/** A mirror's rules, changed as a whole (`PATCH {"mirror": rules}`). */
function rulesCard(channel, url) {
  const fields = rulesFields(channel.mirror);
  const message = h('p', { class: 'message', role: 'alert' });
  const form = h(
    'form',
    { class: 'card', id: 'mirror-rules' },
    h('h2', {}, 'Mirror rules'),
    h('p', { class: 'hint' }, 'The next read of each subdir filters its index by the new rules; the files they leave out are no longer served, and those kept are deleted.'),
    fields.element,
    h('button', { type: 'submit', class: 'primary' }, 'Save rules'),
    message,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    put(message);
    try {
      const saved = await api('PATCH', url, { mirror: fields.rules() });
      channel.mirror = saved.mirror ?? fields.rules();
      put(message, h('span', { class: 'ok-text' }, 'The rules are saved.'));
    } catch (error) {
      put(message, error.message);
    }
  });
  return form;
}
