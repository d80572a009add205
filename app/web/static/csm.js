// The CSM page: customers and their renewal window, a workflow execution's current step with its
// notifications and branches, free text at the step, and the conversation of an llm/rag branch.

import { api, request, session } from './api.js';
import { fill, fmt, h, notice } from './dom.js';
import { ThreadView } from './chat.js';
import { renderMarkdown } from './markdown.js';
import { replyStore } from './stream.js';

const EXECUTION_KEY = 'chatbranch.execution';
const THREAD_KEY = 'chatbranch.thread';
const BRANCH_ORDER = ['fixed', 'saved_action', 'llm', 'rag'];
const BRANCH_LABELS = { fixed: 'fixed', saved_action: 'saved action', llm: 'LLM', rag: 'RAG' };

// Executions started from this browser, per user, so that "Open" finds them again.
const known = {
  key: () => `chatbranch.executions.${session.user()?.email || ''}`,
  all() { return JSON.parse(localStorage.getItem(this.key()) || '{}'); },
  get(customerId) { return this.all()[customerId] || null; },
  set(customerId, executionId) {
    localStorage.setItem(this.key(), JSON.stringify({ ...this.all(), [customerId]: executionId }));
  },
};

export async function mountCsm(root) {
  const page = new CsmPage(root);
  await page.start();
  return page;
}

class CsmPage {
  constructor(root) {
    this.customers = new Map();
    this.customerList = h('div', { class: 'customers' }, h('p', { class: 'muted' }, 'Loading…'));
    this.execution = h('section', { class: 'execution panel', 'data-testid': 'execution' },
      h('p', { class: 'muted' }, 'Start or open a workflow for a customer.'));
    this.threadSlot = h('div', { class: 'thread-slot' });
    root.replaceChildren(h('div', { class: 'csm-layout' },
      h('aside', { class: 'panel' }, h('h2', {}, 'Customers'), this.customerList),
      h('div', { class: 'work' }, this.execution, this.threadSlot)));
  }

  async start() {
    await this.loadCustomers();
    const executionId = sessionStorage.getItem(EXECUTION_KEY);
    if (!executionId) return;
    await this.openExecution(executionId);
    if (!this.view) return;
    const reply = replyStore.load();
    const threadId = sessionStorage.getItem(THREAD_KEY) || reply?.threadId;
    if (threadId) await this.openThread(threadId);
  }

  async loadCustomers() {
    const { customers } = await api('/api/customers');
    this.customers = new Map(customers.map((c) => [c.id, c]));
    this.customerList.replaceChildren(h('table', { class: 'data customers-table' },
      h('thead', {}, h('tr', {}, ['Customer', 'ARR', 'Renewal', 'Window', ''].map((t) => h('th', { text: t })))),
      h('tbody', {}, customers.map((c) => this.customerRow(c)))));
  }

  customerRow(c) {
    const existing = known.get(c.id);
    const days = c.daysUntilRenewal;
    const urgency = days < 0 ? 'overdue' : days <= 14 ? 'urgent' : days <= 30 ? 'soon' : 'later';
    return h('tr', { dataset: { customerId: c.id, customerKey: c.key || '', workflow: c.matchingWorkflowId || '' } },
      h('td', {}, h('strong', { text: c.name }), h('div', { class: 'muted', text: c.csmEmail || '' })),
      h('td', { class: 'num', text: fmt.money(c.arr) }),
      h('td', {}, c.renewalDate, h('div', { class: `days days-${urgency}` },
        days < 0 ? `${-days} days overdue` : `in ${days} days`)),
      h('td', {}, c.matchingWorkflowId
        ? h('span', { class: 'badge' }, c.matchingWorkflowId) : h('span', { class: 'muted' }, 'none')),
      h('td', {}, h('div', { class: 'row-actions' },
        h('button', { type: 'button', class: 'primary start-workflow', disabled: !c.matchingWorkflowId,
          onclick: () => this.startExecution(c) }, 'Start'),
        existing ? h('button', { type: 'button', class: 'secondary open-workflow',
          onclick: () => this.openExecution(existing) }, 'Open') : null)));
  }

  async startExecution(customer) {
    this.execution.replaceChildren(h('p', { class: 'muted' },
      `Starting ${customer.matchingWorkflowId} for ${customer.name}: running the entry analysis…`));
    await this.guard(async () => {
      const view = await api('/api/executions', {
        method: 'POST', body: { workflowId: customer.matchingWorkflowId, customerId: customer.id },
      });
      known.set(customer.id, view.execution.id);
      this.closeThread();
      sessionStorage.setItem(EXECUTION_KEY, view.execution.id);
      this.render(view);
      await this.loadCustomers();
    });
  }

  async openExecution(executionId) {
    await this.guard(async () => {
      const view = await api(`/api/executions/${executionId}`).catch((error) => {
        // Remembered from an earlier database (or another tenant): forget it.
        if (error.status === 404) sessionStorage.removeItem(EXECUTION_KEY);
        throw error;
      });
      if (executionId !== sessionStorage.getItem(EXECUTION_KEY)) this.closeThread();
      sessionStorage.setItem(EXECUTION_KEY, executionId);
      this.render(view);
    });
  }

  async refresh() {
    const view = await api(`/api/executions/${this.view.execution.id}`);
    this.render(view);
  }

  render(view) {
    this.view = view;
    const e = view.execution;
    const step = view.currentStep || {};
    const customer = this.customers.get(e.customerId);
    this.log = this.log && this.log.dataset.executionId === e.id
      ? this.log : h('div', { class: 'log', dataset: { executionId: e.id } });
    this.execution.dataset.executionId = e.id;
    fill(this.execution,
      h('div', { class: 'execution-head' },
        h('h2', {}, customer ? customer.name : 'Customer', ' · ', h('span', { class: 'muted' }, e.workflowId)),
        h('span', { class: `badge status-${e.status}` }, e.status),
        e.snoozedUntil ? h('span', { class: 'badge' }, `snoozed until ${e.snoozedUntil.slice(0, 10)}`) : null),
      h('div', { class: 'step', 'data-testid': 'current-step', dataset: { stepId: step.id || '' } },
        h('div', { class: 'muted' }, 'Current step'),
        h('h3', { text: step.name || step.id || '—' }),
        step.description ? h('p', { text: step.description }) : null,
        analysisNote(e)),
      notificationList(view.notifications || []),
      h('div', { class: 'branches', 'data-testid': 'branches' }, this.branchButtons(view.branches || [])),
      this.stepChat(),
      this.log);
  }

  branchButtons(branches) {
    const sorted = [...branches].sort((a, b) => BRANCH_ORDER.indexOf(a.branchType)
      - BRANCH_ORDER.indexOf(b.branchType));
    return sorted.map((b) => h('button', {
      type: 'button', class: `branch branch-${b.branchType}`, title: (b.userPrompts || []).join(' · '),
      dataset: { branchId: b.branchId, branchType: b.branchType },
      onclick: () => this.takeBranch(b),
    }, h('span', { class: 'badge' }, BRANCH_LABELS[b.branchType] || b.branchType), ' ', b.branchLabel));
  }

  stepChat() {
    const input = h('input', { type: 'text', placeholder: 'Type a prompt or a question for this step…',
      'aria-label': 'step chat' });
    return h('form', { class: 'step-chat', onsubmit: (event) => {
      event.preventDefault();
      const text = input.value.trim();
      if (!text) return;
      input.value = '';
      this.guard(() => this.chatAtStep(text));
    } }, input, h('button', { type: 'submit', class: 'secondary' }, 'Send'));
  }

  async takeBranch(branch) {
    await this.guard(async () => {
      const id = this.view.execution.id;
      const result = await api(`/api/executions/${id}/branches/${encodeURIComponent(branch.branchId)}`,
        { method: 'POST' });
      await this.handleOutcome(result, branch.branchLabel);
    });
  }

  async handleOutcome(result, label) {
    if (result.thread) {
      await this.openThread(result.thread.id);
      return;
    }
    if (result.type === 'fixed') {
      this.note(label, renderMarkdown(result.responseText || ''));
    } else if (result.type === 'saved_action') {
      const action = result.action || {};
      this.note(label, [renderMarkdown(result.responseText || ''),
        h('div', { class: 'muted' }, `${action.actionType || 'action'}: ${summarize(action.result)}`)]);
    }
    await this.refresh();
  }

  // Free text: the server answers with a branch outcome (JSON) or a thread reply (a stream).
  async chatAtStep(text) {
    const id = this.view.execution.id;
    const response = await request(`/api/executions/${id}/chat`, {
      method: 'POST', body: { text }, headers: { Accept: 'text/event-stream' },
    });
    if (isStream(response)) {
      const thread = this.newThreadView();
      this.threadSlot.replaceChildren(thread.el);
      await thread.adoptStream(response, text);
      if (thread.threadId) sessionStorage.setItem(THREAD_KEY, thread.threadId);
      return;
    }
    await this.handleOutcome(await response.json(), `“${text}”`);
  }

  newThreadView() {
    return new ThreadView({
      executionId: this.view?.execution.id,
      onReturned: (result) => this.returned(result),
      onClosed: () => { this.closeThread(); this.refresh(); },
    });
  }

  async openThread(threadId) {
    const thread = this.newThreadView();
    this.thread = thread;
    sessionStorage.setItem(THREAD_KEY, threadId);
    this.threadSlot.replaceChildren(thread.el);
    await this.guard(async () => {
      try {
        await thread.open(threadId);
      } catch (error) {
        if (error.status === 404) { this.closeThread(); replyStore.clear(); }
        throw error;
      }
    });
    thread.input.focus();
  }

  closeThread() {
    sessionStorage.removeItem(THREAD_KEY);
    this.thread = null;
    this.threadSlot.replaceChildren();
  }

  async returned(result) {
    this.closeThread();
    await this.refresh();
    const step = this.view.currentStep || {};
    this.log.prepend(h('div', { class: 'notice notice-info', 'data-testid': 'returned-to',
      dataset: { stepId: result.returnedToStep || step.id || '' } },
    `Conversation completed; the workflow returned to “${step.name || result.returnedToStep}”.`));
  }

  note(label, body) {
    this.log.prepend(h('div', { class: 'outcome' }, h('div', { class: 'muted', text: label }),
      h('div', { class: 'markdown' }, body)));
  }

  async guard(work) {
    try {
      await work();
    } catch (error) {
      const target = this.log?.isConnected ? this.log : this.execution;
      target.prepend(notice(error.message || String(error), 'error'));
    }
  }
}

// A reply stream says so in its protocol header (its content type has not always said so).
function isStream(response) {
  return Boolean(response.headers.get('x-vercel-ai-ui-message-stream'))
    || (response.headers.get('content-type') || '').includes('text/event-stream');
}

function analysisNote(execution) {
  const a = execution.analysis || {};
  const next = execution.routing?.nextStep;
  if (!a.riskLevel && !a.recommendation && !next) return null;
  return h('div', { class: 'analysis', 'data-testid': 'analysis' },
    a.riskLevel ? h('span', { class: `badge risk-${a.riskLevel}` },
      `risk ${a.riskLevel}${a.riskScore != null ? ` · ${a.riskScore}` : ''}`) : null,
    a.recommendation ? h('span', { text: ` ${a.recommendation}` }) : null,
    (a.riskFactors || []).length ? h('div', { class: 'muted', text: a.riskFactors.join(' · ') }) : null,
    next ? h('div', { class: 'muted' }, `Suggested next step: ${next}`) : null);
}

function notificationList(notifications) {
  if (!notifications.length) return null;
  return h('ul', { class: 'notifications', 'data-testid': 'notifications' }, notifications.map((n) =>
    h('li', { class: `notification priority-${n.priority || 'normal'}` },
      h('div', {}, h('span', { class: 'badge' }, n.type || 'notice'), ' ', h('strong', { text: n.title || '' })),
      h('div', { class: 'markdown' }, renderMarkdown(n.message || '')))));
}

function summarize(value) {
  if (value == null) return 'done';
  if (typeof value !== 'object') return String(value);
  return Object.entries(value).slice(0, 4).map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(', ');
}
