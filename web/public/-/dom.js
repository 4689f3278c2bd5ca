// Building the DOM. Every piece of data reaches the page as a text node (or an attribute value
// set with setAttribute): nothing here parses HTML, so package metadata cannot become markup.

/**
 * h('a', {href: '/x', class: 'link', onclick: fn}, 'text', child, [more children])
 * Attributes named on<event> take a function (an event listener); others are set as strings.
 * Children: strings and numbers become text nodes; null, undefined and false are skipped.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on')) {
      if (typeof value !== 'function') throw new TypeError(`${name} takes a function`);
      el.addEventListener(name.slice(2), value);
    } else if (name === 'value' || name === 'checked' || name === 'selected' || name === 'disabled') {
      el[name] = value;
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replaces the children of `el`. */
export function put(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/**
 * A text of any length, shown up to `limit` characters with a "show more" button that reveals
 * the rest step by step, still as text nodes. Wrapped in <bdi> so that right-to-left overrides
 * inside stay inside.
 */
export function longText(text, limit = 600, cls = 'long') {
  const value = String(text ?? '');
  const shown = h('bdi', {}, value.slice(0, limit));
  if (value.length <= limit) return h('span', { class: cls }, shown);
  let end = limit;
  const ellipsis = h('span', { class: 'muted' }, '… ');
  const more = h('button', { type: 'button', class: 'link more' });
  const label = () => `show more (${(value.length - end).toLocaleString('en')} characters left)`;
  more.textContent = label();
  more.addEventListener('click', () => {
    const next = Math.min(value.length, end + 100000);
    shown.appendChild(document.createTextNode(value.slice(end, next)));
    end = next;
    if (end >= value.length) {
      ellipsis.remove();
      more.remove();
    } else more.textContent = label();
  });
  return h('span', { class: cls }, shown, ellipsis, more);
}

/** A piece of data on one line: isolated from the text around it, cut off by CSS when long. */
export function data(text, cls = 'data') {
  return h('bdi', { class: cls, title: String(text ?? '') }, String(text ?? ''));
}

/** An outside link, only for http(s) URLs; anything else (javascript:, data:) stays text. */
export function outsideLink(url) {
  let parsed;
  try {
    parsed = new URL(String(url));
  } catch {
    parsed = null;
  }
  if (!parsed || (parsed.protocol !== 'https:' && parsed.protocol !== 'http:')) return data(url);
  return h('a', { href: parsed.href, rel: 'noopener noreferrer nofollow', target: '_blank', class: 'data' }, String(url));
}

/** A path of the site built from names, each encoded as one segment. */
export function path(...segments) {
  return '/' + segments.map((s) => encodeURIComponent(s)).join('/');
}

export function bytes(n) {
  if (typeof n !== 'number') return '';
  const units = ['B', 'KB', 'MB', 'GB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

export function when(ms) {
  if (typeof ms !== 'number') return '—';
  const date = new Date(ms);
  const ago = (Date.now() - ms) / 1000;
  let rel;
  if (ago < 60) rel = 'just now';
  else if (ago < 3600) rel = `${Math.floor(ago / 60)} min ago`;
  else if (ago < 86400) rel = `${Math.floor(ago / 3600)} h ago`;
  else rel = `${Math.floor(ago / 86400)} days ago`;
  return h('time', { datetime: date.toISOString(), title: date.toISOString() }, rel);
}

/** Designed states: loading, empty and error, instead of a blank page. */
export function loading(what) {
  return h('p', { class: 'state loading', role: 'status' }, `Loading ${what}…`);
}

export function empty(title, ...hint) {
  return h('div', { class: 'state empty' }, h('p', { class: 'state-title' }, title), hint.length ? h('p', {}, ...hint) : null);
}

export function failure(error, retry) {
  return h(
    'div',
    { class: 'state error', role: 'alert' },
    h('p', { class: 'state-title' }, 'Something went wrong'),
    h('p', { class: 'message' }, error.message || String(error)),
    error.status === 401 ? h('p', {}, h('a', { href: '/-/signin?next=' + encodeURIComponent(location.pathname + location.search), class: 'button primary' }, 'Sign in again')) : null,
    retry ? h('button', { type: 'button', onclick: retry }, 'Try again') : null,
  );
}

/** A button that copies `text` and says so. */
export function copyButton(text, label = 'Copy') {
  const button = h('button', { type: 'button', class: 'copy' }, label);
  button.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = 'Copied';
    } catch {
      button.textContent = 'Select and copy';
    }
    setTimeout(() => (button.textContent = label), 2000);
  });
  return button;
}

/** A code block with a copy button. */
export function snippet(text) {
  return h('div', { class: 'snippet' }, h('pre', {}, h('code', {}, text)), copyButton(text));
}

/**
 * A two-step button: the first click asks, the second (on "confirm") does `action`. In the
 * page, not window.confirm, so it can say what it will delete.
 */
export function confirmButton(label, question, action) {
  const box = h('span', { class: 'confirm' });
  const ask = () =>
    put(
      box,
      h('span', { class: 'question' }, question, ' '),
      h('button', { type: 'button', class: 'danger', onclick: run }, 'Yes, ' + label.toLowerCase()),
      ' ',
      h('button', { type: 'button', onclick: reset }, 'Cancel'),
    );
  const reset = () => put(box, h('button', { type: 'button', class: 'danger-outline', onclick: ask }, label));
  async function run(event) {
    event.target.disabled = true;
    try {
      await action();
    } catch (error) {
      put(box, h('span', { class: 'message error-text', role: 'alert' }, error.message), ' ', h('button', { type: 'button', onclick: reset }, 'OK'));
    }
  }
  reset();
  return box;
}

/** Calls `fn` once `ms` have passed without another call. */
export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}
