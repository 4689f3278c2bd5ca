// Any other path: nothing here.
import { h, put } from '../dom.js';

export async function render(view, ctx) {
  document.title = 'Not found · condaflare';
  put(view, notFound(ctx));
}

/** The page for a missing channel or one the caller may not read: the same for both. */
export function notFound(ctx) {
  return h(
    'div',
    { class: 'state empty notfound' },
    h('p', { class: 'state-title' }, 'Not found'),
    h('p', {}, 'There is nothing here, or you may not see it.'),
    ctx.session ? h('p', {}, h('a', { href: '/' }, 'Back to the channels')) : h('p', {}, h('a', { href: '/-/signin?next=' + encodeURIComponent(location.pathname), class: 'button primary' }, 'Sign in?')),
  );
}
