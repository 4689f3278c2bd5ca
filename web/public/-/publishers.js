// The trusted publishers card of a channel's settings page (owners): the CI workflows whose
// OIDC tokens may be exchanged for a short-lived key that uploads here. Every value is shown as
// text (dom.js); the server checks what is registered.
import { h, put, data, when, empty, failure, loading, confirmButton } from './dom.js';
import { api } from './api.js';

const FIELDS = [
  ['repository', 'repository', 'owner/name (GitLab: group/project)', true],
  ['workflow', 'workflow', 'release.yml (GitLab: .gitlab-ci.yml); empty: any', false],
  ['environment', 'environment', 'empty: any', false],
  ['ref', 'git ref', 'refs/tags/v* ; empty: any', false],
];

export function publishersCard(channel) {
  const base = `channels/${encodeURIComponent(channel.name)}/publishers`;
  const list = h('div', { id: 'publishers' });
  const message = h('p', { class: 'message', role: 'alert' });

  const load = async () => {
    put(list, loading('trusted publishers'));
    try {
      const { publishers } = await api('GET', base);
      put(list, publishers.length ? table(publishers) : empty('No trusted publishers.', 'CI jobs publish here with a key, or not at all.'));
    } catch (error) {
      put(list, failure(error, load));
    }
  };

  const table = (publishers) =>
    h(
      'table',
      { class: 'list' },
      h('thead', {}, h('tr', {}, ['Issuer', 'Repository', 'Workflow', 'Environment', 'Ref', 'Added', ''].map((t) => h('th', {}, t)))),
      h(
        'tbody',
        {},
        publishers.map((p) =>
          h(
            'tr',
            { 'data-publisher': String(p.id) },
            h('td', {}, data(p.provider || p.issuer)),
            h('td', {}, data(p.repository)),
            h('td', {}, p.workflow === null ? h('span', { class: 'muted' }, 'any') : data(p.workflow)),
            h('td', {}, p.environment === null ? h('span', { class: 'muted' }, 'any') : data(p.environment)),
            h('td', {}, p.ref === null ? h('span', { class: 'muted' }, 'any') : data(p.ref)),
            h('td', {}, data(p.created_by), ' ', when(p.created_at)),
            h(
              'td',
              { class: 'actions' },
              confirmButton('Remove', ['Remove the publisher ', h('bdi', {}, p.repository), '? Its live keys stop working.'], async () => {
                await api('DELETE', `${base}/${encodeURIComponent(p.id)}`);
                put(message, h('span', { class: 'ok-text' }, 'Publisher removed.'));
                await load();
              }),
            ),
          ),
        ),
      ),
    );

  const issuer = h('select', { name: 'issuer', 'aria-label': 'issuer' }, h('option', { value: 'github' }, 'GitHub Actions'), h('option', { value: 'gitlab' }, 'GitLab CI'));
  const inputs = Object.fromEntries(
    FIELDS.map(([name, label, placeholder, required]) => [name, h('input', { name, required, maxlength: 255, placeholder, autocomplete: 'off', 'aria-label': label })]),
  );
  const form = h(
    'form',
    { class: 'inline-form', id: 'add-publisher' },
    h('div', { class: 'row' }, issuer, ...Object.values(inputs), h('button', { type: 'submit', class: 'primary' }, 'Add publisher')),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    put(message);
    const body = { issuer: issuer.value };
    for (const [name, input] of Object.entries(inputs)) body[name] = input.value.trim() || null;
    try {
      await api('POST', base, body);
      put(message, h('span', { class: 'ok-text' }, 'Publisher added.'));
      for (const input of Object.values(inputs)) input.value = '';
      await load();
    } catch (error) {
      put(message, error.message);
    }
  });

  const card = h(
    'section',
    { class: 'card', id: 'trusted-publishers' },
    h('h2', {}, 'Trusted publishers'),
    h('p', { class: 'hint' }, 'A CI job of a repository registered here publishes with no stored secret: its OIDC token is exchanged for a key that uploads to this channel for 15 minutes, and nothing else.'),
    form,
    message,
    list,
  );
  load();
  return card;
}
