// What the channel pages share: the channel's details, its header with tabs, and who may do what.
import { h, data, path, put, loading, empty } from './dom.js';
import { api } from './api.js';
import { notFound } from './pages/notfound.js';

/** The channel's details, or null when it does not exist or the caller may not read it. */
export async function loadChannel(name) {
  try {
    return await api('GET', 'channels/' + encodeURIComponent(name));
  } catch (error) {
    if ([400, 401, 403, 404].includes(error.status)) return null;
    throw error;
  }
}

/** Whether the caller may upload and delete the channel's packages, as the server decided it
 * for the channel's details. */
export function canWrite(channel) {
  return channel.you_may?.write === true;
}

/** Whether the caller may manage the channel (members, settings), as the server decided it. */
export function canManage(channel) {
  return channel.you_may?.manage === true;
}

export function channelHeader(channel, session, active) {
  const write = canWrite(channel);
  const manage = canManage(channel);
  const tab = (id, href, label) => h('a', { href, class: id === active ? 'tab active' : 'tab', 'aria-current': id === active ? 'page' : null }, label);
  return h(
    'div',
    { class: 'channel-head' },
    h(
      'div',
      { class: 'page-head' },
      h('h1', {}, data(channel.name, 'data title')),
      channel.private ? h('span', { class: 'badge private' }, 'private') : h('span', { class: 'badge' }, 'public'),
      channel.mirror ? h('span', { class: 'badge mirror' }, 'mirror') : null,
      channel.your_role ? h('span', { class: 'badge role' }, channel.your_role) : null,
    ),
    h(
      'nav',
      { class: 'tabs', 'aria-label': 'channel' },
      tab('packages', path(channel.name), 'Packages'),
      write ? tab('upload', path(channel.name, 'upload'), '+ Add') : null,
      manage ? tab('members', path(channel.name, 'members'), 'Members') : null,
      manage ? tab('settings', path(channel.name, 'settings'), 'Settings') : null,
    ),
  );
}

// Opens a page only owners use: the channel, or null once the page says it is not found (or,
// to others than its owners, that it is theirs alone).
export async function openOwnerPage(view, ctx, { title, tab, refusal }) {
  put(view, loading('the channel'));
  const channel = await loadChannel(ctx.params[0]);
  if (!channel) {
    document.title = 'Not found · condaflare';
    put(view, notFound(ctx));
    return null;
  }
  document.title = `${title} · ${channel.name} · condaflare`;
  if (!canManage(channel)) {
    put(view, channelHeader(channel, ctx.session, tab), empty(refusal));
    return null;
  }
  return channel;
}
