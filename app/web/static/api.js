// The API client: bearer token from sessionStorage, problem details turned into errors.

const TOKEN_KEY = 'chatbranch.token';
const USER_KEY = 'chatbranch.user';

export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  user: () => JSON.parse(sessionStorage.getItem(USER_KEY) || 'null'),
  signIn(token, user) {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(USER_KEY, JSON.stringify(user || claimsOf(token)));
  },
  signOut() {
    for (const key of Object.keys(sessionStorage)) {
      if (key.startsWith('chatbranch.')) sessionStorage.removeItem(key);
    }
  },
};

// Display only: the server verifies the token; the page just shows who it belongs to.
export function claimsOf(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(payload));
    return { email: claims.email, role: claims.role, name: claims.email, tenant: '' };
  } catch {
    return { email: 'unknown', role: 'unknown', name: 'unknown', tenant: '' };
  }
}

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export async function request(path, { method = 'GET', body, headers = {}, signal } = {}) {
  // The bearer token goes to this origin only, whatever a reply's data says.
  if (!path.startsWith('/') || path.startsWith('//')) throw new Error(`refused address ${path}`);
  const token = session.token();
  const all = { ...headers };
  if (token) all.Authorization = `Bearer ${token}`;
  if (body !== undefined) all['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    method, headers: all, signal, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401 && token) {
    session.signOut();
    window.dispatchEvent(new CustomEvent('chatbranch:signed-out'));
  }
  if (!response.ok) {
    let problem = null;
    try { problem = await response.json(); } catch { /* not JSON */ }
    throw new ApiError(response.status, problem);
  }
  return response;
}

export async function api(path, options) {
  const response = await request(path, options);
  if (response.status === 204) return null;
  return response.json();
}

const objectUrls = new Map();

// <img src> cannot send the bearer token: fetch the image and show it as a blob: URL.
export async function imageUrl(path) {
  if (!objectUrls.has(path)) {
    objectUrls.set(path, request(path).then(async (r) => URL.createObjectURL(await r.blob())));
  }
  try {
    return await objectUrls.get(path);
  } catch (error) {
    objectUrls.delete(path);
    throw error;
  }
}

export async function download(path, filename) {
  const blob = await (await request(path)).blob();
  const url = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
