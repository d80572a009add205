// One assistant message: drawn from stream parts as they arrive, or from a stored message.

import { h, fmt } from './dom.js';
import { renderMarkdown } from './markdown.js';
import { renderOutput, sourcesBlock, toolBlock } from './tools.js';

export class ReplyView {
  constructor({ onUsage, onBudget } = {}) {
    this.onUsage = onUsage || (() => {});
    this.onBudget = onBudget || (() => {});
    this.texts = new Map();
    this.tools = new Map();
    this.sources = sourcesBlock();
    this.body = h('div', { class: 'reply-body' });
    this.footer = h('div', { class: 'reply-footer muted' });
    this.el = h('div', { class: 'message assistant', dataset: { state: 'streaming' } },
      h('div', { class: 'role' }, 'assistant'), this.body, this.sources.el, this.footer);
    this.pending = new Set();
    this.frame = null;
  }

  apply(part) {
    switch (part.type) {
      case 'start':
        this.el.dataset.messageId = part.messageId;
        break;
      case 'text-start':
        this.textBlock(part.id);
        break;
      case 'text-delta':
        this.textBlock(part.id).text += part.delta;
        this.schedule(part.id);
        break;
      case 'text-end':
        this.draw(part.id);
        break;
      case 'tool-input-available': {
        const block = toolBlock(part.toolCallId, part.toolName, part.input);
        this.tools.set(part.toolCallId, block);
        this.body.append(block.el);
        break;
      }
      case 'tool-output-available':
        this.tools.get(part.toolCallId)?.output(part.output);
        break;
      case 'tool-output-error':
        this.tools.get(part.toolCallId)?.error(part.errorText);
        break;
      case 'source-document':
        this.sources.add(part);
        break;
      case 'data-usage':
        this.usage(part.data);
        this.onUsage(part.data);
        break;
      case 'data-budget':
        this.onBudget(part.data);
        break;
      case 'error':
        this.body.append(h('div', { class: 'notice notice-error', role: 'alert', text: part.errorText }));
        break;
      case 'finish':
        this.finish(part.messageMetadata?.status || part.finishReason || 'complete');
        break;
      default:
        break;
    }
  }

  textBlock(id) {
    if (!this.texts.has(id)) {
      const el = h('div', { class: 'markdown', dataset: { textId: id } });
      this.texts.set(id, { el, text: '' });
      this.body.append(el);
    }
    return this.texts.get(id);
  }

  // Deltas arrive faster than frames; redraw each text block at most once a frame.
  schedule(id) {
    this.pending.add(id);
    if (this.frame == null) {
      this.frame = requestAnimationFrame(() => {
        this.frame = null;
        for (const pendingId of this.pending) this.draw(pendingId);
        this.pending.clear();
      });
    }
  }

  draw(id) {
    const block = this.texts.get(id);
    if (block) block.el.replaceChildren(renderMarkdown(block.text));
  }

  get text() {
    return [...this.texts.values()].map((b) => b.text).join('');
  }

  usage(data) {
    this.footer.replaceChildren(
      `${fmt.int(data.totalTokens)} tokens (${fmt.int(data.promptTokens)} in, `
      + `${fmt.int(data.completionTokens)} out`
      + `${data.cachedTokens ? `, ${fmt.int(data.cachedTokens)} cached` : ''}) · `
      + `${fmt.usd(data.costUsd)} · ${data.source}`);
  }

  finish(status) {
    for (const id of this.texts.keys()) this.draw(id);
    this.el.dataset.state = 'done';
    this.el.dataset.status = status;
    if (status !== 'complete') {
      this.footer.prepend(h('span', { class: `status status-${status}` }, status), ' ');
    }
  }

  // A stored assistant message (after a reload, or an earlier turn).
  static fromMessage(message, toolCalls) {
    const view = new ReplyView();
    view.el.dataset.messageId = message.id;
    for (const call of toolCalls) {
      const block = toolBlock(call.id, call.toolName, call.toolInput);
      if (call.success === false) block.error(call.errorMessage);
      else block.output(call.toolOutput);
      view.body.append(block.el);
    }
    view.textBlock('stored').text = message.content || '';
    for (const c of message.metadata?.citations || []) {
      view.sources.add({ sourceId: c.documentId || c.chunkId, title: c.title, filename: c.source });
    }
    view.draw('stored');
    if (message.tokensUsed) view.footer.textContent = `${fmt.int(message.tokensUsed)} tokens`;
    view.finish(message.status === 'streaming' ? 'in progress' : (message.status || 'complete'));
    return view;
  }
}

export function userMessage(text) {
  return h('div', { class: 'message user' }, h('div', { class: 'role' }, 'you'),
    h('div', { class: 'markdown' }, renderMarkdown(text)));
}

export { renderOutput };
