// A small Markdown renderer for untrusted model text. It builds DOM nodes from text (never
// innerHTML), so any HTML in the text shows as text. Links go only to this origin or an allow-list;
// images load only from this origin's charts (fetched with the token); everything else is shown
// inert, as text.

import { imageUrl } from './api.js';
import { h } from './dom.js';

// Hosts a link may point to besides this origin (none by default).
export const LINK_HOSTS = new Set();
const CHART_PATH = /^\/api\/charts\/[A-Za-z0-9-]+\.(png|svg)$/;

const INLINE = new RegExp([
  '`([^`\\n]+)`', // 1 code
  '!\\[([^\\]\\n]*)\\]\\(([^()\\s]+)(?:\\s+"[^"\\n]*")?\\)', // 2,3 image
  '\\[([^\\]\\n]+)\\]\\(([^()\\s]+)(?:\\s+"[^"\\n]*")?\\)', // 4,5 link
  '\\*\\*([^*\\n]+)\\*\\*', // 6 bold
  '(?<![\\w*])\\*([^*\\s][^*\\n]*?)\\*(?![\\w*])', // 7 emphasis
].join('|'), 'g');

export function safeUrl(raw, { images = false } = {}) {
  let url;
  try {
    url = new URL(raw, window.location.origin);
  } catch {
    return null;
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return null;
  const sameOrigin = url.origin === window.location.origin;
  if (images) return sameOrigin && CHART_PATH.test(url.pathname) && !url.search ? url.pathname : null;
  // A fragment carrying a token would sign the reader in as someone else (see app.js).
  if (sameOrigin) return /token=/i.test(url.hash) ? null : url.pathname + url.search + url.hash;
  return LINK_HOSTS.has(url.host) && url.protocol === 'https:' ? url.href : null;
}

export function chartImage(path, alt) {
  const img = h('img', { class: 'chart', alt: alt || 'chart' });
  imageUrl(path).then((src) => { img.src = src; }).catch(() => {
    img.replaceWith(h('span', { class: 'blocked', text: `[chart unavailable: ${alt || path}]` }));
  });
  return img;
}

function blocked(kind, label, raw) {
  let host = raw;
  try {
    const url = new URL(raw, window.location.origin);
    host = url.host || url.protocol;
  } catch { /* keep raw */ }
  return h('span', { class: 'blocked', title: `${kind} not loaded` }, `[${kind}: ${label} — ${host}]`);
}

export function renderInline(text) {
  const nodes = [];
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) nodes.push(text.slice(last, m.index));
    if (m[1] !== undefined) nodes.push(h('code', { text: m[1] }));
    else if (m[3] !== undefined) {
      const src = safeUrl(m[3], { images: true });
      nodes.push(src ? chartImage(src, m[2]) : blocked('image', m[2] || 'image', m[3]));
    } else if (m[5] !== undefined) {
      const href = safeUrl(m[5]);
      nodes.push(href
        ? h('a', { href, rel: 'noopener noreferrer nofollow', target: '_blank' }, renderInline(m[4]))
        : blocked('link', m[4], m[5]));
    } else if (m[6] !== undefined) nodes.push(h('strong', {}, renderInline(m[6])));
    else if (m[7] !== undefined) nodes.push(h('em', {}, renderInline(m[7])));
    last = m.index + m[0].length;
  }
  if (last < text.length) nodes.push(text.slice(last));
  return nodes;
}

const LIST_ITEM = /^\s*(?:[-*+]|(\d+)[.)])\s+(.*)$/;
const HEADING = /^(#{1,4})\s+(.*)$/;
const TABLE_RULE = /^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$/;

function cells(line) {
  return line.trim().replace(/^\|/, '').replace(/\|$/, '').split('|').map((c) => c.trim());
}

function paragraph(lines) {
  const p = h('p');
  lines.forEach((line, i) => {
    if (i) p.append(h('br'));
    p.append(...renderInline(line).map((n) => (n instanceof Node ? n : document.createTextNode(n))));
  });
  return p;
}

export function renderMarkdown(source) {
  const root = document.createDocumentFragment();
  const lines = String(source ?? '').replace(/\r\n?/g, '\n').split('\n');
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) { i += 1; continue; }
    if (line.startsWith('```')) {
      const code = [];
      for (i += 1; i < lines.length && !lines[i].startsWith('```'); i += 1) code.push(lines[i]);
      root.append(h('pre', {}, h('code', { text: code.join('\n') })));
      i += 1;
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      root.append(h(`h${Math.min(heading[1].length + 2, 6)}`, {}, renderInline(heading[2])));
      i += 1;
      continue;
    }
    if (line.includes('|') && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1])) {
      const head = h('tr', {}, cells(line).map((c) => h('th', {}, renderInline(c))));
      const body = h('tbody');
      for (i += 2; i < lines.length && lines[i].includes('|'); i += 1) {
        body.append(h('tr', {}, cells(lines[i]).map((c) => h('td', {}, renderInline(c)))));
      }
      root.append(h('table', { class: 'data' }, h('thead', {}, head), body));
      continue;
    }
    const item = LIST_ITEM.exec(line);
    if (item) {
      const list = h(item[1] ? 'ol' : 'ul');
      if (item[1] && item[1] !== '1') list.setAttribute('start', item[1]);
      for (let m; i < lines.length && (m = LIST_ITEM.exec(lines[i])); i += 1) {
        list.append(h('li', {}, renderInline(m[2])));
      }
      root.append(list);
      continue;
    }
    const block = [];
    for (; i < lines.length && lines[i].trim() && !LIST_ITEM.test(lines[i])
      && !lines[i].startsWith('```') && !HEADING.test(lines[i]); i += 1) block.push(lines[i]);
    root.append(paragraph(block));
  }
  return root;
}
