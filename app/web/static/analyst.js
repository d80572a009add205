// The analyst page: tokens and cost over time, breakdowns by model, user, workflow, step, branch
// type and tool, prompt segments, a drill-down to threads and their provider calls, CSV export.

import { api, ApiError, download } from './api.js';
import { ledgerRows } from './chat.js';
import { fmt, h, notice } from './dom.js';
import { segmentBar, usageChart } from './svgchart.js';
import {
  DIMENSIONS, fetchUsage, groups, labelOf, series, threadCalls, threadsOf, totalsOf,
} from './usage.js';

const RANGES = { '24h': [86400, '1h'], '7d': [7 * 86400, '1d'], '30d': [30 * 86400, '1d'] };
const SEGMENT_ORDER = ['system', 'context', 'history', 'question', 'retrieved', 'toolResults', 'tools',
  'overhead'];
const CALL_COLUMNS = [
  ['createdAt', 'time'], ['model', 'model'], ['callKind', 'kind'], ['inputTokens', 'input'],
  ['outputTokens', 'output'], ['cachedTokens', 'cached'], ['costUsd', 'cost'],
  ['latencyMs', 'latency ms'], ['usageSource', 'source'], ['status', 'status'],
  ['toolNames', 'tools'],
];

export async function mountAnalyst(root) {
  const page = new AnalystPage(root);
  await page.load();
  return page;
}

function tokenCells(t) {
  return [h('td', { class: 'num', text: fmt.int(t.requests) }), h('td', { class: 'num', text: fmt.int(t.input) }),
    h('td', { class: 'num', text: fmt.int(t.output) }), h('td', { class: 'num', text: fmt.int(t.cached) }),
    h('td', { class: 'num', text: fmt.usd(t.cost) })];
}

const TOKEN_HEADERS = ['calls', 'input', 'output', 'cached', 'cost'];

class AnalystPage {
  constructor(root) {
    this.rangeKey = '24h';
    this.dimension = 'model';
    this.rangeSelect = h('select', { 'aria-label': 'range', onchange: () => {
      this.rangeKey = this.rangeSelect.value;
      this.load();
    } }, Object.keys(RANGES).map((k) => h('option', { value: k }, `last ${k}`)));
    this.summary = h('div', { class: 'cards' });
    this.chart = h('div', { class: 'chart-box' });
    this.tabs = h('div', { class: 'tabs', role: 'tablist' });
    this.breakdown = h('div', { class: 'breakdown', 'data-testid': 'breakdown' });
    this.segments = h('div', { class: 'segments', 'data-testid': 'segments' });
    this.drill = h('div', { class: 'drill', 'data-testid': 'drill' });
    root.replaceChildren(h('div', { class: 'analyst' },
      h('div', { class: 'toolbar' }, h('h2', {}, 'Usage'), this.rangeSelect,
        h('button', { type: 'button', class: 'secondary', 'data-testid': 'csv',
          onclick: () => this.exportCsv() }, 'Download CSV')),
      this.summary,
      h('section', { class: 'panel' }, h('h3', {}, 'Tokens and cost over time'), this.chart),
      h('section', { class: 'panel' }, h('h3', {}, 'Breakdown'), this.tabs, this.breakdown),
      h('section', { class: 'panel' }, h('h3', {}, 'Where prompt tokens go'), this.segments),
      h('section', { class: 'panel' }, this.drill)));
    this.drawTabs();
  }

  range() {
    const [span, bucketWidth] = RANGES[this.rangeKey];
    const end = Math.ceil(Date.now() / 1000 / 3600) * 3600;
    return { start: end - span, end, bucketWidth };
  }

  // Customer ids read better as names; the analyst may list the tenant's customers.
  async loadNames() {
    if (this.names) return;
    this.names = new Map();
    try {
      const { customers } = await api('/api/customers');
      for (const c of customers) this.names.set(c.id, c.name);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
    }
  }

  label(group) {
    const named = Object.fromEntries(Object.entries(group)
      .map(([k, v]) => [k, k === 'customerId' && this.names.has(v) ? this.names.get(v) : v]));
    return labelOf(named);
  }

  async load() {
    try {
      await this.loadNames();
      const range = this.range();
      const points = series(await fetchUsage(range));
      const totals = totalsOf(points);
      this.summary.replaceChildren(
        card('Tokens', fmt.int(totals.input + totals.output), 'total-tokens'),
        card('Cost', fmt.usd(totals.cost), 'total-cost'),
        card('Provider calls', fmt.int(totals.requests), 'total-calls'),
        card('Cached input', fmt.int(totals.cached), 'total-cached'));
      this.chart.replaceChildren(usageChart(points, { hourly: range.bucketWidth === '1h' }));
      this.drawSegments(totals.segments);
      await this.loadBreakdown();
    } catch (error) {
      const text = error instanceof ApiError && error.status === 404
        ? 'The usage API is not available on this server.' : error.message;
      this.chart.replaceChildren(notice(text, 'error'));
    }
  }

  drawTabs() {
    this.tabs.replaceChildren(...DIMENSIONS.map(([key, label]) => h('button', {
      type: 'button', role: 'tab', class: key === this.dimension ? 'tab active' : 'tab',
      'aria-selected': key === this.dimension ? 'true' : 'false', dataset: { dimension: key },
      onclick: () => { this.dimension = key; this.drawTabs(); this.loadBreakdown(); },
    }, label)));
  }

  async loadBreakdown() {
    const range = this.range();
    const usage = await fetchUsage({ ...range, bucketWidth: '1d', groupBy: this.dimension });
    const rows = groups(usage);
    this.breakdown.replaceChildren(rows.length ? h('table', { class: 'data clickable' },
      h('thead', {}, h('tr', {}, h('th', { text: DIMENSIONS.find(([k]) => k === this.dimension)[1] }),
        TOKEN_HEADERS.map((t) => h('th', { text: t })))),
      h('tbody', {}, rows.map((row) => h('tr', {
        tabindex: 0, dataset: { group: row.label }, onclick: () => this.openGroup(row),
        onkeydown: (e) => { if (e.key === 'Enter') this.openGroup(row); },
      }, h('td', { text: this.label(row.group) }), tokenCells(row)))))
      : h('p', { class: 'muted' }, 'No usage in this range.'));
  }

  drawSegments(segments, scope = 'this range') {
    const names = Object.keys(segments).filter((n) => Number(segments[n]) > 0);
    if (!names.length) {
      this.segments.replaceChildren(h('p', { class: 'muted' },
        'Open a thread below to see how its prompts split into system, context, history, '
        + 'question, retrieved passages, tool results and tool definitions.'));
      return;
    }
    const ordered = [...SEGMENT_ORDER.filter((n) => names.includes(n)),
      ...names.filter((n) => !SEGMENT_ORDER.includes(n))].map((name) => ({ name, tokens: segments[name] }));
    const total = ordered.reduce((s, x) => s + x.tokens, 0) || 1;
    this.segments.replaceChildren(h('p', { class: 'muted', text: `Input tokens of ${scope}` }),
      segmentBar(ordered), h('table', { class: 'data' },
      h('tbody', {}, ordered.map((s, i) => h('tr', {},
        h('td', {}, h('span', { class: `swatch segment-${i % 8}` }), ` ${s.name}`),
        h('td', { class: 'num', text: fmt.int(s.tokens) }),
        h('td', { class: 'num', text: `${((100 * s.tokens) / total).toFixed(1)}%` }))))));
  }

  async openGroup(row) {
    const title = `Threads — ${this.label(row.group)}`;
    this.drill.replaceChildren(h('h3', {}, title), h('p', { class: 'muted' }, 'Loading…'));
    try {
      const threads = await threadsOf(this.dimension, row.group, this.range());
      this.drill.replaceChildren(h('h3', {}, title), threads.length
        ? h('table', { class: 'data clickable', 'data-testid': 'threads' },
          h('thead', {}, h('tr', {}, h('th', { text: 'thread' }), TOKEN_HEADERS.map((t) => h('th', { text: t })))),
          h('tbody', {}, threads.map((t) => h('tr', {
            tabindex: 0, dataset: { threadId: t.threadId }, onclick: () => this.openThread(t.threadId),
          }, h('td', {}, h('code', { text: t.threadId })), tokenCells(t)))))
        : h('p', { class: 'muted' }, 'No threads: these calls were not part of a conversation.'));
    } catch (error) {
      this.drill.append(notice(error.message, 'error'));
    }
  }

  async openThread(threadId) {
    const box = h('div', { class: 'thread-calls', 'data-testid': 'thread-calls', dataset: { threadId } },
      h('h3', {}, 'Provider calls of thread ', h('code', { text: threadId })));
    this.drill.querySelector('.thread-calls')?.remove();
    this.drill.append(box);
    try {
      const usage = await threadCalls(threadId);
      const rows = ledgerRows(usage);
      const sum = (key) => rows.reduce((s, r) => s + Number(r[key] || 0), 0);
      const input = usage.totals?.inputTokens ?? sum('inputTokens');
      const output = usage.totals?.outputTokens ?? sum('outputTokens');
      const cost = usage.totals?.costUsd ?? sum('costUsd');
      const segments = {};
      for (const r of rows) {
        for (const [name, tokens] of Object.entries(r.promptBreakdown || {})) {
          if (typeof tokens === 'number') segments[name] = (segments[name] || 0) + tokens;
        }
      }
      this.drawSegments(segments, `thread ${threadId.slice(0, 8)}`);
      box.append(h('p', { class: 'thread-total', 'data-testid': 'thread-total',
        dataset: { tokens: input + output } },
      `This conversation used ${fmt.int(input + output)} tokens (${fmt.int(input)} in, `
        + `${fmt.int(output)} out) in ${rows.length} provider calls, ${fmt.usd(cost)}.`),
      h('div', { class: 'table-scroll' }, h('table', { class: 'data' },
        h('thead', {}, h('tr', {}, CALL_COLUMNS.map(([, label]) => h('th', { text: label })),
          h('th', { text: 'prompt segments' }))),
        h('tbody', {}, rows.map((r) => h('tr', {},
          CALL_COLUMNS.map(([key]) => h('td', { class: typeof r[key] === 'number' ? 'num' : null,
            text: cellText(key, r[key]) })),
          h('td', { class: 'segments-cell', text: Object.entries(r.promptBreakdown || {})
            .filter(([, v]) => v).map(([k, v]) => `${k} ${v}`).join(', ') })))))));
    } catch (error) {
      box.append(notice(error.message, 'error'));
    }
  }

  async exportCsv() {
    const { start, end } = this.range();
    await download(`/api/usage/export?format=csv&startTime=${start}&endTime=${end}`,
      `usage-${this.rangeKey}.csv`);
  }
}

function cellText(key, value) {
  if (key === 'costUsd') return fmt.usd(value);
  if (key === 'createdAt' && value) return String(value).replace('T', ' ').slice(0, 19);
  if (Array.isArray(value)) return value.join(', ');
  return value ?? '';
}

function card(label, value, testId) {
  return h('div', { class: 'card', 'data-testid': testId }, h('div', { class: 'muted', text: label }),
    h('div', { class: 'value', text: value }));
}
