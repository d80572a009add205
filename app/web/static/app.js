// The console's entry point: sign-in (dev-mode demo users, or a token from the host app) and the
// two pages, CSM and analyst, chosen by the URL fragment.

import { api, ApiError, session } from './api.js';
import { h, notice } from './dom.js';

const root = document.getElementById('app');
const who = document.getElementById('who');
const nav = document.getElementById('nav');
// Each page draws into its own container: a page still loading when the user moves on draws
// into a detached one and cannot overwrite the page that replaced it.
const PAGES = {
  csm: (view) => import('./csm.js').then((m) => m.mountCsm(view)),
  analyst: (view) => import('./analyst.js').then((m) => m.mountAnalyst(view)),
};

// A host app hands the page its token in the fragment (never sent to a server) or by postMessage.
function takeHostToken() {
  const match = /[#&]token=([^&]+)/.exec(window.location.hash);
  if (!match) return;
  session.signIn(decodeURIComponent(match[1]));
  window.history.replaceState(null, '', `${window.location.pathname}#/`);
}

window.addEventListener('message', (event) => {
  const fromHost = event.source && event.source === window.opener;
  if (fromHost && event.data?.type === 'chatbranch:token' && typeof event.data.token === 'string') {
    session.signIn(event.data.token);
    route();
  }
});

async function signInPage() {
  who.replaceChildren();
  nav.hidden = true;
  let users;
  try {
    ({ users } = await api('/api/dev/users'));
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      root.replaceChildren(h('section', { class: 'panel signin' }, h('h2', {}, 'Waiting for sign-in'),
        h('p', {}, 'This console takes its token from the app that hosts it.')));
      return;
    }
    throw error;
  }
  const byTenant = Map.groupBy ? Map.groupBy(users, (u) => u.tenant) : groupBy(users);
  root.replaceChildren(h('section', { class: 'panel signin', 'data-testid': 'signin' },
    h('h2', {}, 'Sign in to the demo'),
    h('p', { class: 'muted' }, 'Development mode: pick a seeded user.'),
    [...byTenant].map(([tenant, members]) => h('div', { class: 'tenant' },
      h('h3', { text: tenant }),
      h('div', { class: 'user-buttons' }, members.map((u) => h('button', {
        type: 'button', class: 'user-button', dataset: { email: u.email },
        onclick: () => signInAs(u.email),
      }, h('strong', { text: u.name }), h('span', { class: 'badge' }, u.role),
      h('span', { class: 'muted', text: u.email }))))))));
}

function groupBy(users) {
  const groups = new Map();
  for (const u of users) groups.set(u.tenant, [...(groups.get(u.tenant) || []), u]);
  return groups;
}

async function signInAs(email) {
  const { token, user } = await api('/api/dev/token', { method: 'POST', body: { email } });
  session.signIn(token, user);
  const target = `#/${user.role === 'analyst' ? 'analyst' : 'csm'}`;
  if (window.location.hash === target) route();
  else window.location.hash = target; // hashchange routes

}

function header(user, page) {
  nav.hidden = false;
  for (const link of nav.querySelectorAll('a')) {
    link.classList.toggle('active', link.dataset.page === page);
  }
  who.replaceChildren(
    h('span', { class: 'who' }, h('strong', { text: user.name || user.email }), ' ',
      h('span', { class: 'badge' }, user.role), user.tenant ? ` ${user.tenant}` : ''),
    h('button', { type: 'button', class: 'secondary', onclick: signOut }, 'Sign out'));
}

function signOut() {
  session.signOut();
  window.location.hash = '#/';
  route();
}

async function route() {
  takeHostToken();
  const user = session.user();
  if (!session.token() || !user) {
    await signInPage();
    return;
  }
  const wanted = window.location.hash.replace(/^#\/?/, '').split(/[/?]/)[0];
  const page = PAGES[wanted] ? wanted : (user.role === 'analyst' ? 'analyst' : 'csm');
  if (root.dataset.page === page && root.firstElementChild?.dataset.page === page) return;
  header(user, page);
  root.dataset.page = page;
  const view = h('div', { class: 'page', dataset: { page } }, h('p', { class: 'muted' }, 'Loading…'));
  root.replaceChildren(view);
  try {
    await PAGES[page](view);
  } catch (error) {
    view.replaceChildren(notice(error.message || String(error), 'error'));
  }
}

window.addEventListener('hashchange', () => { if (window.location.hash.startsWith('#/')) route(); });
window.addEventListener('chatbranch:signed-out', () => route());
route();
