// A conversation thread: history, the streamed reply, tools, the token and cost meter, stop,
// return to step. A reply in flight survives a reload (see stream.js).

import { api, ApiError, session } from './api.js';
import { fmt, h, notice } from './dom.js';
import { ReplyView, userMessage } from './reply.js';
import { followToEnd, newReply, postMessage, replyStore } from './stream.js';

export class ThreadView {
  constructor({ executionId, onReturned, onClosed }) {
    this.executionId = executionId;
    this.onReturned = onReturned;
    this.onClosed = onClosed;
    this.threadId = null;
    // tokens: the thread's total; cost: the ledger's (analysts) or what this page saw stream by.
    this.totals = { tokens: 0, cost: 0, costKnown: true, seenTokens: 0 };
    this.title = h('h3', {}, 'Conversation');
    this.meter = h('div', { class: 'meter', 'data-testid': 'meter' });
    this.budget = h('div', { class: 'budget' });
    this.messages = h('div', { class: 'messages', 'aria-live': 'polite' });
    this.input = h('textarea', { rows: 2, placeholder: 'Ask a question…', 'aria-label': 'message' });
    this.sendButton = h('button', { type: 'submit', class: 'primary' }, 'Send');
    this.stopButton = h('button', { type: 'button', class: 'stop', hidden: true,
      onclick: () => this.stop() }, 'Stop');
    this.returnButton = h('button', { type: 'button', class: 'return',
      onclick: () => this.complete() }, 'Return to step');
    this.abandonButton = h('button', { type: 'button', class: 'secondary',
      onclick: () => this.abandon() }, 'Abandon');
    this.form = h('form', { class: 'composer', onsubmit: (e) => { e.preventDefault(); this.send(); } },
      this.input, this.stopButton, this.sendButton);
    this.input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); this.send(); }
    });
    this.el = h('section', { class: 'thread panel', 'data-testid': 'thread' },
      h('div', { class: 'thread-head' }, this.title, this.meter,
        h('div', { class: 'actions' }, this.returnButton, this.abandonButton)),
      this.budget, this.messages, this.form);
    this.drawMeter();
    this.el.addEventListener('click', (event) => {
      const link = event.target.closest('[data-document-id]');
      if (!link) return;
      event.preventDefault();
      this.showDocument(link.dataset.documentId, link.dataset.title || link.textContent);
    });
  }

  // A cited document's passages, found through the knowledge search (the page never leaves).
  // Links carry a document id, or a passage (chunk) id for `source-document` parts.
  async showDocument(id, title) {
    const box = h('div', { class: 'document', 'data-testid': 'document' },
      h('div', { class: 'document-head' }, h('strong', { text: title }),
        h('button', { type: 'button', class: 'secondary', onclick: () => box.remove() }, 'Close')));
    this.el.querySelector('.document')?.remove();
    this.budget.after(box);
    try {
      const { results = [] } = await api(`/api/knowledge/search?q=${encodeURIComponent(title)}&k=10`);
      const hit = results.find((r) => r.documentId === id || r.chunkId === id)
        || results.find((r) => r.title === title);
      const passages = hit ? results.filter((r) => r.documentId === hit.documentId) : [];
      box.dataset.documentId = hit?.documentId || '';
      box.append(...(passages.length
        ? passages.map((r) => h('blockquote', { text: r.snippet || '' }))
        : [h('p', { class: 'muted' }, 'This document is no longer in the knowledge base.')]));
    } catch (error) {
      box.append(notice(error.message, 'error'));
    }
  }

  // Shows a thread: its header, history and meter, and picks up a reply left running.
  // The history replaces the message list, so nothing may be sent before it is drawn: the
  // composer stays disabled and data-thread-id unset until then.
  async open(threadId) {
    this.threadId = threadId;
    this.setClosed(true);
    const saved = replyStore.load();
    const active = saved && saved.threadId === threadId ? saved : null;
    const detail = await this.refresh({ activeReply: active });
    this.el.dataset.threadId = threadId;
    if (active) {
      await this.continueReply(active, null);
    }
    return detail;
  }

  async refresh({ activeReply = null, history = true } = {}) {
    // The reply in flight is drawn from its stream parts, not from its half-written row.
    const skipMessageId = activeReply && startedMessage(activeReply);
    const inFlight = (m) => m.id === skipMessageId
      || (activeReply && m.role === 'assistant' && m.status === 'streaming');
    const detail = await api(`/api/threads/${this.threadId}`);
    const { thread } = detail;
    this.thread = thread;
    this.el.dataset.status = thread.status;
    this.title.textContent = `${thread.threadType === 'rag' ? 'Knowledge' : 'LLM'} conversation`;
    if (history) {
      const calls = detail.toolCalls || [];
      this.messages.replaceChildren(...detail.messages
        .filter((m) => !inFlight(m) && (m.role === 'user' || m.role === 'assistant'))
        .map((m) => (m.role === 'user' ? userMessage(m.content)
          : ReplyView.fromMessage(m, calls.filter((c) => c.messageId === m.id)).el)));
    }
    this.totals.tokens = thread.totalTokens || 0;
    await this.loadCost();
    this.drawMeter();
    this.setClosed(thread.status !== 'active');
    return detail;
  }

  // The cost so far comes from the usage ledger; without it the meter counts this page's replies.
  async loadCost() {
    if (!['analyst', 'admin'].includes(session.user()?.role)) {
      this.totals.costKnown = this.totals.tokens <= this.totals.seenTokens;
      return;
    }
    try {
      const usage = await api(`/api/usage/threads/${this.threadId}`);
      this.totals.cost = usage.totals?.costUsd
        ?? ledgerRows(usage).reduce((sum, r) => sum + Number(r.costUsd || 0), 0);
      this.totals.costKnown = true;
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      this.totals.costKnown = this.totals.tokens <= this.totals.seenTokens;
    }
  }

  drawMeter() {
    const cost = this.totals.costKnown ? fmt.usd(this.totals.cost) : `≥ ${fmt.usd(this.totals.cost)}`;
    this.meter.replaceChildren(
      h('span', { 'data-testid': 'meter-tokens', dataset: { tokens: this.totals.tokens } },
        `${fmt.int(this.totals.tokens)} tokens`),
      ' · ',
      h('span', { 'data-testid': 'meter-cost', dataset: { cost: this.totals.cost } }, cost));
  }

  addUsage(usage) {
    this.totals.tokens += Number(usage.totalTokens || 0);
    this.totals.seenTokens += Number(usage.totalTokens || 0);
    this.totals.cost += Number(usage.costUsd || 0);
    this.drawMeter();
  }

  // `data-budget`: soft limits crossed (warn), or how the turn was degraded (trim, cheaper).
  showBudget(data) {
    const amount = (kind, value) => (String(kind).includes('cost') ? fmt.usd(value) : fmt.int(value));
    const lines = (data.warnings || []).map((w) => `${w.scope} ${w.limitKind} budget: `
      + `${amount(w.limitKind, w.used)} of ${amount(w.limitKind, w.limit)} used`
      + (w.projected != null ? `, ${amount(w.limitKind, w.projected)} after this turn` : ''));
    if (data.action === 'trim') lines.unshift('Over budget: older history was left out of this turn.');
    if (data.action === 'cheaper') lines.unshift(`Over budget: answered with ${data.model || 'a cheaper model'}.`);
    if (!lines.length) lines.push(data.message || `Budget: ${data.action || 'warning'}`);
    this.budget.replaceChildren(...lines.map((line) => notice(line, 'warning')));
    this.budget.dataset.action = data.action || 'warn';
  }

  newReplyView() {
    return new ReplyView({ onUsage: (u) => this.addUsage(u), onBudget: (d) => this.showBudget(d) });
  }

  async send() {
    const text = this.input.value.trim();
    if (!text || this.busy || this.input.disabled) return;
    this.input.value = '';
    this.messages.append(userMessage(text));
    const reply = newReply(this.threadId, this.executionId);
    replyStore.save(reply);
    try {
      await this.continueReply(reply, postMessage(this.threadId, text));
    } catch (error) {
      replyStore.clear();
      this.messages.append(notice(error.message, 'error'));
    }
  }

  // Streams a reply into the page: parts already seen (after a reload) first, then the rest.
  async continueReply(reply, responsePromise) {
    this.setBusy(true);
    const view = this.newReplyView();
    this.current = view;
    this.messages.append(view.el);
    for (const part of reply.parts) view.apply(part);
    try {
      const response = responsePromise ? await responsePromise : null;
      await followToEnd(reply, response, (part) => {
        if (!this.threadId && reply.threadId) this.adoptThreadId(reply.threadId);
        view.apply(part);
        this.keepScrolled();
      });
      if (view.el.dataset.state !== 'done') view.finish('interrupted');
    } finally {
      this.setBusy(false);
      this.current = null;
    }
    // The ledger is the truth: reconcile the meter with it once the reply is recorded.
    if (this.threadId) await this.refresh({ history: false });
    return view;
  }

  // Free text typed at the step that the server turned into a thread reply (execution chat).
  async adoptStream(response, text) {
    this.messages.append(userMessage(text));
    const reply = newReply(null, this.executionId);
    replyStore.save(reply);
    await this.continueReply(reply, Promise.resolve(response));
  }

  adoptThreadId(threadId) {
    this.threadId = threadId;
    this.el.dataset.threadId = threadId;
  }

  // Follow the reply as it grows, unless the reader scrolled up to read something earlier.
  keepScrolled() {
    const page = document.scrollingElement;
    if (page.scrollHeight - page.scrollTop - page.clientHeight < 160) {
      page.scrollTop = page.scrollHeight;
    }
  }

  setBusy(busy) {
    this.busy = busy;
    this.el.dataset.busy = busy ? 'true' : 'false';
    this.stopButton.hidden = !busy;
    this.sendButton.disabled = busy;
  }

  setClosed(closed) {
    for (const el of [this.input, this.sendButton, this.returnButton, this.abandonButton]) {
      el.disabled = closed;
    }
  }

  stop() {
    return this.guard(() => api(`/api/threads/${this.threadId}/stop`, { method: 'POST' }));
  }

  complete() {
    return this.guard(async () => {
      const result = await api(`/api/threads/${this.threadId}/complete`, { method: 'POST' });
      replyStore.clear();
      this.setClosed(true);
      this.onReturned?.(result);
    });
  }

  abandon() {
    return this.guard(async () => {
      await api(`/api/threads/${this.threadId}/abandon`, { method: 'POST' });
      replyStore.clear();
      this.setClosed(true);
      this.onClosed?.();
    });
  }

  async guard(work) {
    if (!this.threadId) return;
    try {
      await work();
    } catch (error) {
      this.budget.append(notice(error.message || String(error), 'error'));
    }
  }
}

function startedMessage(reply) {
  return reply.parts.find((p) => p.type === 'start')?.messageId || null;
}

// GET /api/usage/threads/{id}: {threadId, totals, calls: [...]}.
export function ledgerRows(usage) {
  return Array.isArray(usage?.calls) ? usage.calls : [];
}
