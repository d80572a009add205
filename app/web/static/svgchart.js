// A small SVG chart of tokens (stacked bars: input, output) and cost (a line) per time bucket,
// drawn with DOM calls so that nothing needs inline styles or a charting library.

import { fmt, svg } from './dom.js';

const WIDTH = 760;
const HEIGHT = 260;
const PAD = { left: 64, right: 64, top: 16, bottom: 36 };

function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  const step = [1, 2, 2.5, 5, 10].find((s) => s * power >= value);
  return step * power;
}

export function usageChart(points, { hourly = false } = {}) {
  const innerW = WIDTH - PAD.left - PAD.right;
  const innerH = HEIGHT - PAD.top - PAD.bottom;
  const maxTokens = niceMax(Math.max(0, ...points.map((p) => p.input + p.output)));
  const maxCost = niceMax(Math.max(0, ...points.map((p) => p.cost)));
  const slot = innerW / Math.max(points.length, 1);
  const barW = Math.max(2, Math.min(28, slot * 0.7));
  const x = (i) => PAD.left + slot * i + slot / 2;
  const yTokens = (v) => PAD.top + innerH - (v / maxTokens) * innerH;
  const yCost = (v) => PAD.top + innerH - (v / maxCost) * innerH;

  const grid = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const y = PAD.top + innerH - f * innerH;
    return svg('g', {},
      svg('line', { x1: PAD.left, x2: WIDTH - PAD.right, y1: y, y2: y, class: 'grid' }),
      svg('text', { x: PAD.left - 6, y: y + 4, 'text-anchor': 'end', class: 'axis' },
        fmt.int(maxTokens * f)),
      svg('text', { x: WIDTH - PAD.right + 6, y: y + 4, class: 'axis cost' },
        `$${(maxCost * f).toPrecision(2)}`));
  });
  const labelEvery = Math.ceil(points.length / 8);
  const bars = points.map((p, i) => svg('g', { class: 'bucket' },
    svg('title', {}, `${fmt.time(p.start, true)}: ${fmt.int(p.input)} in, ${fmt.int(p.output)} out, `
      + `${fmt.usd(p.cost)}, ${p.requests} calls`),
    svg('rect', { x: x(i) - barW / 2, y: yTokens(p.input), width: barW,
      height: Math.max(0, PAD.top + innerH - yTokens(p.input)), class: 'bar-input' }),
    svg('rect', { x: x(i) - barW / 2, y: yTokens(p.input + p.output), width: barW,
      height: Math.max(0, yTokens(p.input) - yTokens(p.input + p.output)), class: 'bar-output' }),
    i % labelEvery === 0 ? svg('text', { x: x(i), y: HEIGHT - PAD.bottom + 16,
      'text-anchor': 'middle', class: 'axis' }, fmt.time(p.start, hourly)) : null));
  const line = points.map((p, i) => `${i ? 'L' : 'M'}${x(i).toFixed(1)},${yCost(p.cost).toFixed(1)}`)
    .join(' ');
  const legend = svg('g', { class: 'legend' },
    svg('rect', { x: PAD.left, y: HEIGHT - 12, width: 10, height: 10, class: 'bar-input' }),
    svg('text', { x: PAD.left + 14, y: HEIGHT - 3, class: 'axis' }, 'input tokens'),
    svg('rect', { x: PAD.left + 110, y: HEIGHT - 12, width: 10, height: 10, class: 'bar-output' }),
    svg('text', { x: PAD.left + 124, y: HEIGHT - 3, class: 'axis' }, 'output tokens'),
    svg('line', { x1: PAD.left + 230, x2: PAD.left + 246, y1: HEIGHT - 7, y2: HEIGHT - 7,
      class: 'cost-line' }),
    svg('text', { x: PAD.left + 250, y: HEIGHT - 3, class: 'axis' }, 'cost (USD, right axis)'));
  return svg('svg', {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: 'usage-chart', role: 'img',
    'aria-label': 'Tokens and cost over time', 'data-testid': 'usage-chart',
    'data-points': points.length,
  }, grid, bars, points.length ? svg('path', { d: line, class: 'cost-line' }) : null,
  points.map((p, i) => svg('circle', { cx: x(i), cy: yCost(p.cost), r: 2.5, class: 'cost-dot' })),
  legend);
}

// Prompt segments as one stacked horizontal bar.
export function segmentBar(segments) {
  const total = segments.reduce((sum, s) => sum + s.tokens, 0) || 1;
  let offset = 0;
  return svg('svg', { viewBox: '0 0 760 28', preserveAspectRatio: 'none', class: 'segment-bar', role: 'img',
    'aria-label': 'Prompt tokens by segment' },
  segments.map((s, i) => {
    const width = (s.tokens / total) * 760;
    const rect = svg('rect', { x: offset, y: 0, width, height: 28, class: `segment segment-${i % 8}` },
      svg('title', {}, `${s.name}: ${fmt.int(s.tokens)} tokens`));
    offset += width;
    return rect;
  }));
}
