// How tool calls look: database_query as a table, create_chart as its image, rag_search as
// citations linked to their documents, anything else as JSON.

import { h } from './dom.js';
import { chartImage, safeUrl } from './markdown.js';

const CHART_ID = /^[A-Za-z0-9-]+$/;
const MAX_ROWS = 200;

export function toolBlock(toolCallId, toolName, input) {
  const body = h('div', { class: 'tool-body' }, h('span', { class: 'spinner' }, 'running…'));
  const el = h('div', { class: `tool tool-${toolName}`, dataset: { toolCallId, state: 'running' } },
    h('div', { class: 'tool-head' }, h('span', { class: 'badge' }, 'tool'), ` ${toolName}`),
    input && Object.keys(input).length
      ? h('details', { class: 'tool-input' }, h('summary', {}, 'input'),
        h('pre', { text: JSON.stringify(input, null, 2) }))
      : null,
    body);
  return {
    el,
    output(output) {
      el.dataset.state = 'done';
      body.replaceChildren(renderOutput(toolName, output));
    },
    error(text) {
      el.dataset.state = 'error';
      body.replaceChildren(h('div', { class: 'tool-error', text: text || 'the tool failed' }));
    },
  };
}

export function renderOutput(toolName, output) {
  if (output && typeof output === 'object' && output.error) {
    return h('div', { class: 'tool-error', text: String(output.error) });
  }
  if (toolName === 'database_query' && output && Array.isArray(output.rows)) {
    return queryTable(output);
  }
  if (toolName === 'create_chart' && output && (output.chartId || output.imageUrl)) {
    return chartFigure(output);
  }
  if (toolName === 'rag_search' && output && Array.isArray(output.results)) {
    return citationList(output.results);
  }
  return h('pre', { class: 'tool-json', text: JSON.stringify(output, null, 2) });
}

export function queryTable({ columns, rows, sql, truncated }) {
  const names = Array.isArray(columns) && columns.length
    ? columns.map((c) => (typeof c === 'object' && c ? c.name : c))
    : Object.keys((rows[0] && typeof rows[0] === 'object' && !Array.isArray(rows[0])) ? rows[0] : {});
  const value = (row, name, index) => (Array.isArray(row) ? row[index] : row?.[name]);
  const table = h('table', { class: 'data query-result' },
    h('thead', {}, h('tr', {}, names.map((n) => h('th', { text: n })))),
    h('tbody', {}, rows.slice(0, MAX_ROWS).map((row) => h('tr', {},
      names.map((n, i) => {
        const v = value(row, n, i);
        return h('td', { class: typeof v === 'number' ? 'num' : null, text: v ?? '' });
      })))));
  return h('div', { class: 'query' },
    h('div', { class: 'table-scroll' }, table),
    h('div', { class: 'muted' }, `${rows.length} row${rows.length === 1 ? '' : 's'}`,
      truncated || rows.length > MAX_ROWS ? ' (truncated)' : ''),
    sql ? h('details', {}, h('summary', {}, 'SQL'), h('pre', { text: sql })) : null);
}

// Only this origin's chart images are fetched (with the token); any other address stays text.
export function chartFigure({ chartId, imageUrl, title }) {
  const path = chartId && CHART_ID.test(chartId) ? `/api/charts/${chartId}.png`
    : safeUrl(String(imageUrl || ''), { images: true });
  const image = path ? chartImage(path, title || 'chart')
    : h('span', { class: 'blocked', text: '[chart image not loaded: not a chart of this service]' });
  return h('figure', { class: 'chart-figure' }, image,
    title ? h('figcaption', { text: title }) : null);
}

export function citationList(results) {
  if (!results.length) return h('div', { class: 'muted' }, 'no passages found');
  return h('ol', { class: 'citations' }, results.map((r) => h('li', {
    id: `doc-${r.documentId}-${r.chunkId}`, class: 'citation', dataset: { documentId: r.documentId },
  },
  h('a', { href: `#doc-${r.documentId}`, class: 'citation-title',
    dataset: { documentId: r.documentId, title: r.title || '' } },
    r.title || 'Untitled'),
  typeof r.score === 'number' ? h('span', { class: 'muted' }, ` ${r.score.toFixed(2)}`) : null,
  h('blockquote', { text: r.snippet || '' }))));
}

// `source-document` parts: the documents a reply cites, linked to the passages shown above.
export function sourcesBlock() {
  const list = h('ul', { class: 'sources' });
  const el = h('div', { class: 'sources-block', hidden: true }, h('div', { class: 'muted' }, 'Sources'), list);
  const seen = new Set();
  return {
    el,
    // One entry per document, though a reply may cite several of its passages.
    add(part) {
      const label = part.filename ? `${part.title} (${part.filename})` : (part.title || part.sourceId);
      if (seen.has(label)) return;
      seen.add(label);
      el.hidden = false;
      list.append(h('li', {}, h('a', {
        href: `#doc-${part.sourceId}`, class: 'source-link',
        dataset: { documentId: part.sourceId, title: part.title || '' },
      }, label)));
    },
  };
}
