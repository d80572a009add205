// Reads the usage API (OpenAI organisation-usage bucket shape) and folds it into what the analyst
// page shows: a series over time, totals per group, prompt segments, threads of a group.

import { api } from './api.js';

export const DIMENSIONS = [
  ['model', 'Model'], ['user', 'User'], ['customer', 'Customer'], ['workflow', 'Workflow'],
  ['step', 'Step'], ['branchType', 'Branch type'], ['tool', 'Tool'],
];
const METRICS = new Set(['inputTokens', 'outputTokens', 'cachedTokens', 'numModelRequests',
  'costUsd', 'promptBreakdown', 'reasoningTokens', 'object', 'startTime', 'endTime']);

function query(params) {
  return new URLSearchParams(Object.entries(params).filter(([, v]) => v != null && v !== ''))
    .toString();
}

function emptyTotals() {
  return { input: 0, output: 0, cached: 0, requests: 0, cost: 0, segments: {} };
}

function addResult(totals, r) {
  totals.input += Number(r.inputTokens || 0);
  totals.output += Number(r.outputTokens || 0);
  totals.cached += Number(r.cachedTokens || 0);
  totals.requests += Number(r.numModelRequests || 0);
  totals.cost += Number(r.costUsd || 0);
  for (const [name, tokens] of Object.entries(r.promptBreakdown || {})) {
    totals.segments[name] = (totals.segments[name] || 0) + Number(tokens || 0);
  }
  return totals;
}

export function groupOf(result) {
  return Object.fromEntries(Object.entries(result).filter(([k]) => !METRICS.has(k)));
}

export function labelOf(group) {
  const values = Object.values(group).map((v) => (v == null || v === '' ? '(none)' : String(v)));
  return values.join(' · ') || '(all)';
}

const WIDTH_SECONDS = { '1h': 3600, '1d': 86400 };
const MAX_BUCKETS = { '1h': 168, '1d': 31 };

// One range may span several pages of buckets; read them all.
export async function fetchUsage({ start, end, bucketWidth, groupBy }) {
  const buckets = Math.ceil((end - start) / WIDTH_SECONDS[bucketWidth]);
  const limit = Math.max(1, Math.min(buckets, MAX_BUCKETS[bucketWidth]));
  const data = [];
  let page = null;
  for (let i = 0; i < 50; i += 1) {
    const usage = await api(`/api/usage?${query({
      startTime: start, endTime: end, bucketWidth, groupBy, limit, page,
    })}`);
    data.push(...(usage.data || []));
    if (!usage.hasMore || !usage.nextPage) break;
    page = usage.nextPage;
  }
  return { data };
}

export function series(usage) {
  return (usage.data || []).map((bucket) => {
    const totals = (bucket.results || []).reduce(addResult, emptyTotals());
    return { start: bucket.startTime, end: bucket.endTime, ...totals };
  });
}

export function totalsOf(points) {
  return points.reduce((t, p) => addResult(t, {
    inputTokens: p.input, outputTokens: p.output, cachedTokens: p.cached,
    numModelRequests: p.requests, costUsd: p.cost, promptBreakdown: p.segments,
  }), emptyTotals());
}

// Totals per group over the whole range, largest cost first.
export function groups(usage) {
  const byKey = new Map();
  for (const bucket of usage.data || []) {
    for (const r of bucket.results || []) {
      const group = groupOf(r);
      const key = JSON.stringify(group);
      if (!byKey.has(key)) byKey.set(key, { group, label: labelOf(group), ...emptyTotals() });
      addResult(byKey.get(key), r);
    }
  }
  return [...byKey.values()].sort((a, b) => b.cost - a.cost || b.input + b.output - a.input - a.output);
}

// Threads of one group: the same range grouped by the dimension and by thread.
export async function threadsOf(dimension, group, range) {
  const usage = await fetchUsage({ ...range, bucketWidth: '1d', groupBy: `${dimension},thread` });
  return groups(usage)
    .filter((g) => g.group.threadId && Object.entries(group).every(([k, v]) => g.group[k] === v))
    .map((g) => {
      const { threadId, ...rest } = g.group;
      return { ...g, threadId, label: labelOf(rest) };
    });
}

export async function threadCalls(threadId) {
  return api(`/api/usage/threads/${threadId}`);
}
