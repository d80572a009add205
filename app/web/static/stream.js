// The UI message stream (SSE over fetch): parse events, remember progress, resume after a reload.
// EventSource cannot POST or send a bearer token, so the stream is read from fetch's body.

import { request } from './api.js';

const REPLY_KEY = 'chatbranch.reply';

// A reload aborts the stream's fetch; the saved reply must then survive for the next page.
let unloading = false;
window.addEventListener('pagehide', () => { unloading = true; });
window.addEventListener('beforeunload', () => { unloading = true; });

export async function readSse(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let id = null;
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let newline;
    while ((newline = buffer.indexOf('\n')) >= 0) {
      let line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line === '') {
        if (data.length) onEvent({ id, data: data.join('\n') });
        id = null;
        data = [];
      } else if (!line.startsWith(':')) {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'id') id = text;
        else if (field === 'data') data.push(text);
      }
    }
  }
}

// The reply being streamed, kept in sessionStorage so that a reload can redraw it and resume
// exactly after the last event it saw (Last-Event-ID).
export const replyStore = {
  load: () => JSON.parse(sessionStorage.getItem(REPLY_KEY) || 'null'),
  save: (reply) => sessionStorage.setItem(REPLY_KEY, JSON.stringify(reply)),
  clear: () => sessionStorage.removeItem(REPLY_KEY),
};

export function newReply(threadId, executionId) {
  return { threadId, executionId, lastEventId: null, parts: [], finished: false };
}

// Reads one response of the reply; returns true when the reply ended ([DONE] or finish).
export async function follow(reply, response, onPart) {
  await readSse(response, (event) => {
    if (event.id) reply.lastEventId = event.id;
    if (event.data === '[DONE]') {
      reply.finished = true;
    } else {
      const part = JSON.parse(event.data);
      if (part.type === 'data-message' && part.data?.threadId) reply.threadId = part.data.threadId;
      if (part.type === 'finish') reply.finished = true;
      reply.parts.push(part);
      onPart(part);
    }
    if (!unloading) replyStore.save(reply);
  });
  return reply.finished;
}

// Picks the reply up again: null when the server has nothing left to send (204), else whether
// the reply ended.
export async function resume(reply, onPart) {
  const headers = { Accept: 'text/event-stream' };
  if (reply.lastEventId) headers['Last-Event-ID'] = reply.lastEventId;
  const response = await request(`/api/threads/${reply.threadId}/stream`, { headers });
  if (response.status === 204) return null;
  return follow(reply, response, onPart);
}

async function settle(promise) {
  try {
    return await promise;
  } catch (error) {
    if (error?.status) throw error; // an HTTP answer, not a dropped connection
    return false;
  }
}

// Follows a reply to its end, reconnecting when the connection drops before the finish.
export async function followToEnd(reply, response, onPart, { attempts = 3 } = {}) {
  let finished = response ? await settle(follow(reply, response, onPart)) : reply.finished;
  for (let attempt = 0; !finished && reply.threadId && attempt < attempts; attempt += 1) {
    if (unloading) return new Promise(() => {});
    const outcome = await settle(resume(reply, onPart));
    if (outcome === null) break;
    finished = outcome;
  }
  if (unloading) return new Promise(() => {}); // the next page takes over
  replyStore.clear();
  return finished;
}

export function idempotencyKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)),
    (b) => b.toString(16).padStart(2, '0')).join('');
}

export function postMessage(threadId, content) {
  return request(`/api/threads/${threadId}/messages`, {
    method: 'POST',
    body: { content },
    headers: { Accept: 'text/event-stream', 'Idempotency-Key': idempotencyKey() },
  });
}
