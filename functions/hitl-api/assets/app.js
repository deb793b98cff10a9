/*
 * Mission Control: the human side of the HITL API. Sign in with a JWT, page through the
 * pending reviews, open one, and approve, reject or edit-and-approve it; or approve many
 * at once. Every request goes to this origin's API with `Authorization: Bearer <jwt>`;
 * nothing else is fetched. Every decision carries the artifact_hash and policy_version the
 * reviewer saw, so the API can refuse a decision on something that has since changed.
 *
 * Stable hooks for WebDriver tests:
 *   body[data-state]        "login" | "ready" | "busy"; wait for "ready" (or "login") before asserting
 *   #signin                 sign in through the OpenID issuer of GET /auth/config: the
 *                           authorization code flow with PKCE (S256); the verifier and state
 *                           wait in sessionStorage["chimera.signin"] while the browser is away
 *   #token #login #logout   sign in with a pasted token (only where /auth/config offers the
 *                           form: local use) / out; the token lives in sessionStorage["chimera.jwt"]
 *   #whoami span[data-claim="sub"|"tenant"|"roles"]
 *   #status[data-kind="ok"|"error"][data-code]   role=status; data-code is the API error.code,
 *                           or the decision recorded on success
 *   body[data-can-decide="true"|"false"]: whether the token's roles may decide (the API checks it
 *     again); without them every .needs-decide control is hidden and disabled, .role-note says why
 *   #fleet-search #fleet-sort #fleet-refresh #fleet-empty   #fleet thead th[data-sort] (click sorts)
 *   #fleet tbody tr[data-agent-id][data-handle][data-attention="held failing ..."] (tr.attention when
 *     it needs a person; rows come those first)   td[data-field="<name>"]
 *   #filters #filter-risk #filter-agent (part of a name or handle) #sort #order #refresh #prev #next
 *     #page-info
 *   #queue tbody tr[data-review-id][data-artifact-hash][data-policy-version]   (tr.is-open: in the card)
 *     input.select[data-review-id]   button.open[data-review-id]   #select-all   #queue-empty
 *   #card[data-review-id][data-status]   #card-title   #close-card
 *     #card-meta [data-field="<name>"] dd    (status, decision, confidence, risk_tags, risk_types,
 *       disclosure_level, judge_reasoning, policy_version, artifact_hash, priority, escalated,
 *       created_at, due_at, final_deadline, attempt, task_kind, goal_id, task_id, agent_id)
 *     #card-artifacts li.artifact[data-sha256][data-media-type]  > pre | img | a
 *     #card-proposal #proposal-action #proposal-args tbody tr[data-arg="<name>"]
 *     #approve #reject-reason #reject #edit #edit-text #edit-approve
 *     #card-approves #approves-text: what approving does, in words (the exact post or transfer)
 *     #card-audit li[data-action]: the review's audit trail, decisions included
 *   #bulk-dry-run #bulk-approve #bulk-summary #bulk-result li[data-review-id][data-result]
 *   #goals-status #goals-refresh #goals tbody tr[data-goal-id][data-status]  button.open-goal[data-goal-id]
 *   #goal[data-goal-id][data-status][data-live="connecting"|"live"|"settled"|"reconnecting"|"closed"]
 *     [data-updates="<n>"] (views received over the goal's event stream)   #goal-title #close-goal
 *     #goal-meta [data-field]   #goal-tasks tbody tr[data-task-id][data-kind][data-status]
 *       td[data-field="status"|"attempt"|"after"|"routing"|"reasons"]   #goal-audit li[data-action]
 *   #published-search #published-refresh #published-empty
 *   #published tbody tr[data-task-id][data-review-id][data-agent-handle]   td[data-field="<name>"]
 * A goal view opens from its row, or from the address: /#goal=<id>.
 */
'use strict';

const PAGE_SIZE = 25;
const FLEET_PAGE = 200;
const TOKEN_KEY = 'chimera.jwt';
const $ = (selector) => document.querySelector(selector);

const page = {
  token: null, busy: 0, offset: 0, filterKey: null, loadSeq: 0, review: null, deciding: false,
  canDecide: false, fleetSort: 'attention', goal: null, goalStream: null,
};

/** A failure to show the reviewer: an API error body, or one the page raises itself. */
class Problem extends Error {
  constructor(code, message, { status = 0, winner = null } = {}) {
    super(message);
    this.code = code;
    this.status = status;
    this.winner = winner;
  }
}

// ---- plumbing -----------------------------------------------------------------------------

/** Builds an element; text children become text nodes, so data is never parsed as HTML. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

async function api(method, path, body) {
  const init = { method, headers: { Accept: 'application/json', Authorization: `Bearer ${page.token}` } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    throw new Problem('network', err.message);
  }
  const data = await res.json().catch(() => null);
  if (res.ok) return data;
  const error = data?.error ?? {};
  throw new Problem(error.code ?? `http_${res.status}`, error.message ?? (res.statusText || 'request failed'), {
    status: res.status,
    winner: error.winner ?? data?.winner ?? null,
  });
}

function settle() {
  document.body.dataset.state = page.busy > 0 ? 'busy' : page.token ? 'ready' : 'login';
}

/** Wraps an async handler: the page is "busy" while it runs, and any failure lands in #status. */
function action(fn) {
  return async (...args) => {
    page.busy += 1;
    settle();
    try {
      await fn(...args);
    } catch (err) {
      fail(err);
    } finally {
      page.busy -= 1;
      settle();
    }
  };
}

function say(kind, text, code = '') {
  const status = $('#status');
  status.textContent = text;
  status.dataset.kind = kind;
  status.dataset.code = code;
}

const DECIDED = {
  approve: 'approved',
  edit_approve: 'approved, with an edit,',
  reject: 'rejected',
  auto_approve: 'approved automatically',
  default_reject: 'rejected by default at its deadline',
  escalate: 'escalated',
};

/** What a refusal means for the person reading it, in words. */
function plainWords(err) {
  const w = err.winner;
  if (err.code === 'already_decided' && w) {
    const who = w.decided_by === 'judge' || w.decided_by === 'system' ? `The ${w.decided_by}` : `Another reviewer (${w.decided_by})`;
    return `${who} ${DECIDED[w.decision] ?? w.decision} this ${ago(w.decided_at)}, at ${stamp(w.decided_at)}. Nothing was changed by your click.`;
  }
  if (err.code === 'stale' && /policy/i.test(err.message)) {
    return `This agent's policy changed since you opened the item; it is judged under the new one now. Look at the card again before deciding. (${err.message})`;
  }
  if (err.code === 'stale') {
    return `This item changed since you opened it; the card now shows what it says now. Look again before deciding. (${err.message})`;
  }
  if (err.code === 'conflict' && /replanned|state it read has moved/.test(err.message)) {
    return 'This agent\'s state changed since the draft was written (another item of the same thread or slot went first). The draft is being regenerated and will come back to the queue.';
  }
  if (err.code === 'conflict') return `Not decided: ${err.message}.`;
  if (err.code === 'forbidden') return `Your roles do not allow this: ${err.message}.`;
  if (err.code === 'unauthorized') return 'Your sign-in is no longer valid: sign in again.';
  if (err.code === 'network') return `The API did not answer (${err.message}). Try again in a moment.`;
  return `${err.code}: ${err.message}`;
}

function fail(err) {
  if (!(err instanceof Problem)) {
    console.error(err);
    say('error', `client_error: ${err.message}`, 'client_error');
    return;
  }
  say('error', plainWords(err), err.code);
  if (err.status === 401) signOut();
}

// ---- formatting ---------------------------------------------------------------------------

const short = (id) => (id ? `${id.slice(0, 8)}…` : '—');
const confidence = (c) => (typeof c === 'number' ? c.toFixed(2) : '—');
const tags = (list, kind = 'tag') => el('span', { class: 'tags' }, ...(list ?? []).map((t) => el('span', { class: `tag ${kind}` }, t)));

/** A moment in the reader's time zone, named: "28 Nov 2026, 17:40 UTC". */
function stamp(iso) {
  return new Date(iso).toLocaleString(undefined, {
    year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', timeZoneName: 'short',
  });
}

/** A <time>: `text` (or the stamp) shown, the stamp and the exact UTC instant on hover. */
function when(iso, text) {
  if (!iso) return '—';
  return el('time', { datetime: iso, title: `${stamp(iso)} (${iso})` }, text ?? stamp(iso));
}

/** A span of time for a glance: "45m", "3h 5m", "2d 4h". */
function span(ms) {
  const minutes = Math.round(Math.abs(ms) / 60000);
  if (minutes < 60) return `${minutes}m`;
  if (minutes < 1440) return `${Math.floor(minutes / 60)}h ${minutes % 60}m`;
  return `${Math.floor(minutes / 1440)}d ${Math.floor((minutes % 1440) / 60)}h`;
}

const age = (iso) => span(Date.now() - new Date(iso).getTime());

/** "2 minutes ago", "just now". */
function ago(iso) {
  const ms = Date.now() - new Date(iso).getTime();
  if (ms < 45000) return 'just now';
  const minutes = Math.round(ms / 60000);
  if (minutes < 60) return `${minutes} minute${minutes === 1 ? '' : 's'} ago`;
  return `${span(ms)} ago`;
}

/** An agent by the name people see, the handle beside it, the id on hover. */
function agentName(id, handle, name) {
  return el('span', { class: 'agent-name', title: id ?? '' }, name ?? handle ?? short(id), name && handle ? el('span', { class: 'muted' }, ` @${handle}`) : null);
}

function due(iso) {
  const ms = new Date(iso).getTime() - Date.now();
  return ms >= 0 ? `in ${span(ms)}` : `${span(ms)} overdue`;
}

function size(n) {
  return n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1048576).toFixed(1)} MiB`;
}

/** A table cell named for tests and for its column (`td[data-field]`). */
function cell(name, attrs, ...children) {
  return el('td', { 'data-field': name, ...attrs }, ...children);
}

/**
 * Labels each body cell of `table` with its column's heading (data-label), so a narrow screen
 * can show the rows as stacked cards ("Held 2") instead of a table to scroll sideways.
 */
function labelCells(table) {
  const heads = [...table.tHead.rows[0].cells].map((th) => th.textContent.trim());
  for (const row of table.tBodies[0].rows) {
    [...row.cells].forEach((c, i) => { c.dataset.label = heads[i] ?? ''; });
  }
}

/** Only absolute http(s) URLs become links or images: never `javascript:` or `data:`. */
function safeUrl(url) {
  try {
    return typeof url === 'string' && ['https:', 'http:'].includes(new URL(url).protocol);
  } catch {
    return false;
  }
}

// ---- sign in ------------------------------------------------------------------------------

/** The JWT's payload (its middle, base64url-encoded part). Shown, never trusted: the API checks it. */
function claims(jwt) {
  try {
    const part = jwt.split('.')[1];
    const base64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=');
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new Problem('invalid_token', 'The token is not a JWT (header.payload.signature, base64url).');
  }
}

function signIn(token) {
  const c = claims(token);
  page.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  // As the API reads the claims: `roles` a list, or one string of names ("reviewer",
  // "[operator reviewer]"); a Cognito ID token's `cognito:groups` and `custom:tenant` stand
  // for `roles` and `tenant`.
  const rolesClaim = c.roles ?? c['cognito:groups'];
  c.tenant = c.tenant ?? c['custom:tenant'];
  const roleList = Array.isArray(rolesClaim)
    ? rolesClaim.filter((r) => typeof r === 'string')
    : String(rolesClaim ?? '').replace(/^\[|\]$/g, '').split(/[ ,]+/).map((r) => r.replace(/"/g, '')).filter(Boolean);
  const roles = roleList.join(', ');
  $('#whoami').replaceChildren(
    'Signed in as ', el('span', { 'data-claim': 'sub' }, c.sub ?? '?'),
    ', tenant ', el('span', { 'data-claim': 'tenant' }, c.tenant ?? '?'),
    ', roles ', el('span', { 'data-claim': 'roles' }, roles || 'none'),
  );
  page.canDecide = roleList.includes('reviewer') || roleList.includes('admin');
  document.body.dataset.canDecide = String(page.canDecide);
  for (const node of document.querySelectorAll('.needs-decide')) {
    node.hidden = !page.canDecide;
    for (const control of [node, ...node.querySelectorAll('button, input, textarea')]) {
      if (control.matches('button, input, textarea')) control.disabled = !page.canDecide;
    }
  }
  for (const note of document.querySelectorAll('.role-note')) note.hidden = page.canDecide;
  $('#login-view').hidden = true;
  $('#app-view').hidden = false;
  $('#logout').hidden = false;
}

// ---- sign in through the issuer: the authorization code flow with PKCE ---------------------

const FLOW_KEY = 'chimera.signin';

function base64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes)))
    .replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** How this API signs people in (GET /auth/config); the token form alone if it does not say. */
async function signInConfig() {
  try {
    const res = await fetch('/auth/config', { headers: { Accept: 'application/json' } });
    if (res.ok) return await res.json();
  } catch {
    // the form alone
  }
  return { token_form: true };
}

function issuerConfigured(config) {
  return Boolean(config.authorization_endpoint && config.token_endpoint && config.client_id);
}

/** Sends the browser to the issuer with a new verifier and state, kept for the way back. */
async function startSignIn(config) {
  const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
  const challenge = base64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier)));
  const state = base64url(crypto.getRandomValues(new Uint8Array(16)));
  const redirect = location.origin + location.pathname;
  sessionStorage.setItem(FLOW_KEY, JSON.stringify({ verifier, state, redirect }));
  const url = new URL(config.authorization_endpoint, location.href);
  url.search = new URLSearchParams({
    response_type: 'code', client_id: config.client_id, redirect_uri: redirect,
    scope: config.scope || 'openid', state, code_challenge: challenge, code_challenge_method: 'S256',
  }).toString();
  location.assign(url.toString());
}

/**
 * Back from the issuer (`?code&state`, or `?error`): the code for a token, once, with the
 * verifier this page kept; the address is cleaned either way. Null when not coming back.
 */
async function finishSignIn(config) {
  const params = new URLSearchParams(location.search);
  const code = params.get('code');
  const error = params.get('error');
  if (!code && !error) return null;
  const flow = JSON.parse(sessionStorage.getItem(FLOW_KEY) || 'null');
  sessionStorage.removeItem(FLOW_KEY);
  history.replaceState(null, '', location.pathname + location.hash);
  if (error) {
    throw new Problem('sign_in_refused', `The sign-in was refused: ${params.get('error_description') || error}.`);
  }
  if (!flow || flow.state !== params.get('state')) {
    throw new Problem('sign_in_state', 'This sign-in answer is not for a request of this page: sign in again.');
  }
  const res = await fetch(new URL(config.token_endpoint, location.href), {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Accept: 'application/json' },
    body: new URLSearchParams({
      grant_type: 'authorization_code', code, redirect_uri: flow.redirect,
      client_id: config.client_id, code_verifier: flow.verifier,
    }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok || !(body.id_token || body.access_token)) {
    throw new Problem(body.error || 'sign_in_failed', body.error_description || `The issuer answered ${res.status}.`);
  }
  return body.id_token || body.access_token;
}

function signOut() {
  page.token = null;
  page.filterKey = null;
  sessionStorage.removeItem(TOKEN_KEY);
  closeCard();
  closeGoal();
  $('#whoami').replaceChildren();
  $('#goals tbody').replaceChildren();
  $('#published tbody').replaceChildren();
  $('#queue tbody').replaceChildren();
  $('#fleet tbody').replaceChildren();
  $('#bulk-summary').textContent = '';
  $('#bulk-result').replaceChildren();
  $('#token').value = '';
  $('#app-view').hidden = true;
  $('#logout').hidden = true;
  $('#login-view').hidden = false;
}

// ---- fleet --------------------------------------------------------------------------------

const ATTENTION = {
  held: 'items wait for review',
  failing: 'tasks failed today',
  out_of_budget: 'budget spent',
  over_daily_limit: 'daily spend limit reached',
};

function money(cents, currency) {
  if (cents === null || cents === undefined) return '—';
  return `${(cents / 100).toFixed(2)}${currency ? ` ${currency}` : ''}`;
}

/** The fleet in the order the API gives (`sort` orders the whole fleet, not one page). */
async function loadFleet() {
  const query = new URLSearchParams({ limit: FLEET_PAGE, sort: page.fleetSort });
  const search = $('#fleet-search').value.trim();
  if (search) query.set('search', search);
  const { items } = await api('GET', `/fleet?${query}`);
  $('#fleet tbody').replaceChildren(...items.map(fleetRow));
  labelCells($('#fleet'));
  $('#fleet-empty').hidden = items.length > 0;
  // The API's page: the first FLEET_PAGE agents in the chosen order.
  $('#fleet-more').hidden = items.length < FLEET_PAGE;
  $('#fleet-sort').value = page.fleetSort;
  const ascending = ['name', 'balance'].includes(page.fleetSort);
  for (const th of document.querySelectorAll('#fleet thead th[data-sort]')) {
    th.setAttribute('aria-sort', th.dataset.sort !== page.fleetSort ? 'none' : ascending ? 'ascending' : 'descending');
  }
}

function fleetRow(a) {
  const attention = a.attention ?? [];
  const limit = a.per_day_limit_cents;
  const post = (a.last_posts ?? [])[0];
  return el('tr', {
    'data-agent-id': a.id,
    'data-handle': a.handle,
    'data-attention': attention.join(' '),
    class: attention.length ? 'attention' : null,
  },
  cell('agent', { title: a.id }, el('strong', {}, a.display_name ?? a.handle), el('span', { class: 'muted' }, ` @${a.handle}`)),
  cell('status', {}, a.status),
  cell('attention', {}, ...(attention.length
    ? attention.map((k) => el('span', { class: 'tag type', title: ATTENTION[k] ?? k }, ATTENTION[k] ?? k))
    : [el('span', { class: 'muted' }, 'no')])),
  cell('goals_in_flight', { class: 'num' }, a.goals_in_flight),
  cell('held', { class: 'num' }, a.held),
  cell('spent_today', { class: 'num' }, money(a.spent_today_cents, a.currency), limit ? el('span', { class: 'muted' }, ` of ${money(limit)}`) : null),
  cell('balance', { class: 'num' }, money(a.balance_cents, a.currency)),
  cell('quota_use', {}, ...((a.quota_use ?? []).length
    ? a.quota_use.map((q) => el('span', { class: 'tag', title: `${q.kind === 'post' ? 'posts today' : 'replies this hour'} on ${q.platform}` }, `${q.platform} ${q.kind} ${q.used}/${q.limit}`))
    : [el('span', { class: 'muted' }, '—')])),
  cell('last_post', { class: 'preview' }, post ? `${post.platform}: ${post.text ?? ''}` : '—'));
}

// ---- queue --------------------------------------------------------------------------------

function queueQuery() {
  const query = new URLSearchParams({ sort: $('#sort').value, order: $('#order').value });
  const risk = $('#filter-risk').value;
  if (risk !== 'all') query.set('risk', risk);
  const agent = $('#filter-agent').value.trim();
  if (agent) query.set('agent_name', agent);
  return query;
}

async function loadQueue() {
  const query = queueQuery();
  // New filters or sort start again at the first page.
  if (query.toString() !== page.filterKey) {
    page.filterKey = query.toString();
    page.offset = 0;
  }
  query.set('limit', PAGE_SIZE);
  query.set('offset', page.offset);
  const seq = ++page.loadSeq;
  const data = await api('GET', `/reviews?${query}`);
  if (seq !== page.loadSeq) return; // a later load has the last word
  const lastPage = Math.max(0, Math.floor((data.total - 1) / PAGE_SIZE) * PAGE_SIZE);
  if (data.items.length === 0 && data.offset > lastPage) {
    page.offset = lastPage; // decisions emptied this page: show the last one left
    return loadQueue();
  }
  page.offset = data.offset;
  $('#queue tbody').replaceChildren(...data.items.map(queueRow));
  labelCells($('#queue'));
  $('#queue-empty').hidden = data.items.length > 0;
  $('#select-all').checked = false;
  const first = data.items.length ? data.offset + 1 : 0;
  $('#page-info').textContent = `${first}–${data.offset + data.items.length} of ${data.total}`;
  $('#prev').disabled = data.offset === 0;
  $('#next').disabled = data.offset + data.items.length >= data.total;
  markOpenRow();
}

function queueRow(r) {
  const financial = r.financial && !(r.risk_types ?? []).includes('financial') ? el('span', { class: 'tag type' }, 'financial') : null;
  return el('tr', {
    'data-review-id': r.id,
    'data-artifact-hash': r.artifact_hash,
    'data-policy-version': r.policy_version,
    class: r.escalated ? 'escalated' : null,
  },
  el('td', { class: 'pick' }, el('input', { type: 'checkbox', class: 'select', 'data-review-id': r.id, 'aria-label': `Select review ${r.id}`, disabled: !page.canDecide })),
  el('td', { class: 'when' }, when(r.created_at, age(r.created_at))),
  el('td', {}, r.task_kind),
  el('td', { class: 'agent', title: `${r.agent_handle ? `@${r.agent_handle} · ` : ''}${r.agent_id}` }, r.agent_name ?? r.agent_handle ?? short(r.agent_id)),
  el('td', { class: 'num' }, confidence(r.confidence)),
  el('td', {}, tags(r.risk_types, 'type'), tags(r.risk_tags), financial),
  el('td', { class: 'num' }, r.priority, r.escalated ? el('span', { class: 'flag' }, ' escalated') : null),
  el('td', { class: 'when' }, r.due_at ? when(r.due_at, due(r.due_at)) : '—'),
  el('td', { class: 'preview' }, r.preview ?? ''),
  el('td', {}, el('button', { type: 'button', class: 'open', 'data-review-id': r.id, 'aria-label': `Open review of ${r.agent_name ?? r.agent_handle}: ${r.task_kind}` }, 'Open')));
}

function markOpenRow() {
  for (const tr of document.querySelectorAll('#queue tbody tr')) {
    tr.classList.toggle('is-open', tr.dataset.reviewId === page.review?.id);
  }
}

// ---- review card --------------------------------------------------------------------------

const openReview = action(async (id) => {
  page.opening = id;
  const card = await api('GET', `/reviews/${encodeURIComponent(id)}`);
  if (page.opening !== id) return; // another item was opened meanwhile
  showCard(card);
  $('#card-title').focus();
  await loadAudit({ review: id }, '#card-audit');
});

/** What approving releases, in words: the exact post, reply or transfer. */
function approves(r) {
  const p = r.proposal;
  if (!p) return null;
  const a = p.arguments ?? {};
  const who = r.agent_name ?? r.agent_handle;
  const text = typeof a.text === 'string' ? a.text : null;
  const media = a.media_sha256 ? ' with the image shown below' : '';
  switch (p.action) {
    case 'social.publish':
      return [`${who} posts this on ${a.platform ?? 'its platform'}${media}:`, text];
    case 'social.reply':
      return [`${who} replies on ${a.platform ?? 'its platform'} to post ${a.in_reply_to ?? '?'}${media}:`, text];
    case 'wallet.transfer':
      return [`${who} pays ${money(a.amount_cents, a.currency ?? '')} to ${a.to ?? '?'}${a.memo ? ` (memo: ${a.memo})` : ''}, from its budget.`, null];
    default:
      return [`${who} performs ${p.action} with the arguments listed below.`, null];
  }
}

function field(name, label, value) {
  return el('div', { 'data-field': name }, el('dt', {}, label), el('dd', {}, value ?? '—'));
}

function artifact(a) {
  let body;
  if (typeof a.text === 'string') body = el('pre', {}, a.text);
  else if (safeUrl(a.url) && a.media_type.startsWith('image/')) body = el('img', { src: a.url, alt: `Artifact (${a.media_type})` });
  else if (safeUrl(a.url)) body = el('a', { href: a.url, target: '_blank', rel: 'noopener noreferrer' }, `Open ${a.media_type}`);
  else body = el('p', { class: 'muted' }, 'No preview.');
  return el('li', { class: 'artifact', 'data-sha256': a.sha256, 'data-media-type': a.media_type },
    el('p', { class: 'muted mono' }, `${a.media_type} · ${size(a.size_bytes)} · sha256 ${a.sha256}`), body);
}

function showCard(r) {
  page.review = r;
  const card = $('#card');
  card.dataset.reviewId = r.id;
  card.dataset.status = r.status;
  $('#card-title').textContent = `${r.agent_name ?? r.agent_handle} · ${r.task_kind}`;
  $('#card-title').title = `review ${r.id}`;
  const d = r.decision;
  const meta = [
    field('status', 'Status', r.status),
    field('agent', 'Agent', agentName(r.agent_id, r.agent_handle, r.agent_name)),
    d ? field('decision', 'Decision', `${DECIDED[d.decision] ?? d.decision} by ${d.decided_by}, ${ago(d.decided_at)} (${stamp(d.decided_at)})`) : null,
    r.deferred_until ? field('deferred_until', 'Goes at', el('span', {}, when(r.deferred_until), ' (the platform quota is used up until then)')) : null,
    field('confidence', 'Confidence', confidence(r.confidence)),
    field('risk_types', 'Risk types', tags(r.risk_types, 'type')),
    field('risk_tags', 'Risk tags', tags(r.risk_tags)),
    field('disclosure_level', 'Disclosure', r.disclosure_level),
    field('judge_reasoning', 'Judge reasoning', r.judge_reasoning),
    field('priority', 'Priority', r.priority),
    field('escalated', 'Escalated', r.escalated ? 'yes' : 'no'),
    field('created_at', 'Created', when(r.created_at)),
    field('due_at', 'Due', when(r.due_at)),
    field('final_deadline', 'Final deadline', when(r.final_deadline)),
    field('policy_version', 'Policy version', r.policy_version),
    field('artifact_hash', 'Artifact hash', el('code', { title: 'SHA-256 of the artifacts shown on this card; your decision names it, so it applies to exactly this version' }, r.artifact_hash)),
    field('attempt', 'Attempt', r.attempt),
    field('task_kind', 'Task kind', r.task_kind),
    field('goal_id', 'Goal', el('code', {}, r.goal_id)),
    field('task_id', 'Task', el('code', {}, r.task_id)),
    field('agent_id', 'Agent id', el('code', {}, r.agent_id)),
  ];
  $('#card-meta').replaceChildren(...meta.filter(Boolean));
  $('#card-artifacts').replaceChildren(...r.artifacts.map(artifact));

  const p = r.proposal;
  const said = approves(r);
  $('#card-approves').hidden = !said;
  $('#approves-text').replaceChildren(...(said ? [said[0], said[1] !== null ? el('blockquote', {}, said[1]) : null] : []));
  $('#card-audit').replaceChildren();
  $('#card-history').open = false;
  $('#card-proposal').hidden = !p;
  $('#proposal-action').textContent = p?.action ?? '';
  $('#proposal-args tbody').replaceChildren(...Object.entries(p?.arguments ?? {}).map(([name, value]) =>
    el('tr', { 'data-arg': name }, el('th', { scope: 'row' }, name), el('td', {}, typeof value === 'string' ? value : JSON.stringify(value)))));

  const editable = Boolean(p) && (r.editable_fields ?? []).includes('text');
  $('#edit').hidden = !editable;
  $('#edit-text').value = editable ? String(p.arguments?.text ?? '') : '';
  $('#reject-reason').value = '';
  $('#reject-reason').removeAttribute('aria-invalid');
  for (const id of ['#approve', '#reject', '#reject-reason', '#edit-approve', '#edit-text']) {
    $(id).disabled = r.status !== 'pending' || !page.canDecide;
  }
  card.hidden = false;
  markOpenRow();
}

function closeCard() {
  page.review = null;
  $('#card').hidden = true;
  delete $('#card').dataset.reviewId;
  delete $('#card').dataset.status;
  markOpenRow();
}

/** Sends one decision on the open review, bound to the hash and policy version it showed. */
async function decide(verb, extra) {
  const r = page.review;
  if (!r || page.deciding) return;
  page.deciding = true;
  const path = `/reviews/${encodeURIComponent(r.id)}`;
  try {
    const res = await api('POST', `${path}/${verb}`, { artifact_hash: r.artifact_hash, policy_version: r.policy_version, ...extra });
    const goes = res.deferred_until ? ` It goes at ${stamp(res.deferred_until)}, when the platform quota has room.` : '';
    const edited = res.edited_artifact_hash ? ' (with your edit)' : '';
    say('ok', `${DECIDED[res.decision] ?? res.decision}${edited}: ${r.agent_name ?? r.agent_handle}'s ${r.task_kind}.${goes}`, res.decision);
    closeCard();
    await Promise.all([loadQueue(), loadFleet(), loadPublished()]);
  } catch (err) {
    if (err.status !== 409) throw err;
    // Someone else decided, or the artifact or policy moved on: say so, then show what is true now.
    fail(err);
    const [fresh] = await Promise.all([api('GET', path), loadQueue()]);
    showCard(fresh);
  } finally {
    page.deciding = false;
  }
}

// ---- bulk ---------------------------------------------------------------------------------

async function bulk(dryRun) {
  const rows = [...document.querySelectorAll('#queue input.select:checked')].map((box) => box.closest('tr').dataset);
  if (rows.length === 0) throw new Problem('no_selection', 'Select at least one review first.');
  const items = rows.map((d) => ({ id: d.reviewId, artifact_hash: d.artifactHash, policy_version: Number(d.policyVersion) }));
  const res = await api('POST', '/reviews/bulk-approve', { dry_run: dryRun, items });
  const counts = Object.entries(res.summary).map(([name, n]) => `${name} ${n}`).join(', ');
  const summary = `${res.dry_run ? 'Dry run' : 'Bulk approve'}: ${counts}`;
  $('#bulk-summary').textContent = summary;
  $('#bulk-result').replaceChildren(...res.items.map((i) =>
    el('li', { 'data-review-id': i.id, 'data-result': i.result }, el('code', {}, i.id), `: ${i.result}`, i.message ? ` (${i.message})` : null)));
  say('ok', summary, res.dry_run ? 'dry_run' : 'bulk_approve');
  if (!res.dry_run) await loadQueue();
}

// ---- goals --------------------------------------------------------------------------------

const SETTLED = ['completed', 'failed', 'cancelled'];

async function loadGoals() {
  const query = new URLSearchParams({ limit: 25 });
  const status = $('#goals-status').value;
  if (status) query.set('status', status);
  const data = await api('GET', `/goals?${query}`);
  $('#goals tbody').replaceChildren(...data.items.map((g) => el('tr', { 'data-goal-id': g.id, 'data-status': g.status },
    el('td', { class: 'when' }, when(g.created_at, age(g.created_at))),
    el('td', { class: 'agent', title: g.agent_id }, `@${g.agent_handle}`),
    el('td', {}, g.kind),
    el('td', {}, el('span', { class: `state ${g.status}` }, g.status.replace('_', ' '))),
    el('td', { class: 'preview' }, g.text),
    el('td', {}, el('button', { type: 'button', class: 'open-goal', 'data-goal-id': g.id, 'aria-label': `Open goal: ${g.text.slice(0, 60)}` }, 'Open')))));
  labelCells($('#goals'));
  $('#goals-empty').hidden = data.items.length > 0;
}

function closeGoal() {
  page.goalStream?.abort();
  page.goalStream = null;
  page.goal = null;
  const view = $('#goal');
  view.hidden = true;
  for (const name of ['goalId', 'status', 'live', 'updates']) delete view.dataset[name];
  if (location.hash.startsWith('#goal=')) history.replaceState(null, '', location.pathname + location.search);
}

/** Opens the goal view of `id` and follows it live until it settles. */
function openGoal(id) {
  closeGoal();
  page.goal = id;
  const view = $('#goal');
  view.dataset.goalId = id;
  view.dataset.updates = '0';
  view.hidden = false;
  $('#goal-title').textContent = 'Goal';
  $('#goal-meta').replaceChildren();
  $('#goal-tasks tbody').replaceChildren();
  $('#goal-audit').replaceChildren();
  $('#goal-history').open = false;
  history.replaceState(null, '', `#goal=${id}`);
  view.scrollIntoView({ block: 'start' });
  $('#goal-title').focus({ preventScroll: true });
  follow(id);
}

function live(state, words) {
  $('#goal').dataset.live = state;
  $('#goal-live').textContent = words;
}

/**
 * Follows `GET /goals/{id}/events` (server-sent events; fetch, not EventSource, so the token
 * goes in the Authorization header). The server ends a stream after a while ("timeout"): the
 * view reconnects and goes on; a dropped connection is retried after a pause.
 */
async function follow(id) {
  const controller = new AbortController();
  page.goalStream = controller;
  const { signal } = controller;
  // Between two streams: the server's `retry` (2 s behind API Gateway, where each stream is
  // one answer and the reconnection a poll), doubled after each failure up to 15 s.
  let retry = 2000;
  let pause = retry;
  live('connecting', 'connecting…');
  while (!signal.aborted) {
    let settled = false;
    try {
      const res = await fetch(`/goals/${encodeURIComponent(id)}/events`, {
        headers: { Accept: 'text/event-stream', Authorization: `Bearer ${page.token}` },
        signal,
      });
      if (res.status === 429 || res.status === 503) {
        // Too many streams or requests for now: wait and look again.
        throw new Problem(`http_${res.status}`, 'busy');
      }
      if (!res.ok) {
        const body = await res.json().catch(() => null);
        const error = body?.error ?? {};
        live('closed', 'not following');
        fail(new Problem(error.code ?? `http_${res.status}`, error.message ?? res.statusText, { status: res.status }));
        return;
      }
      live('live', 'live');
      pause = retry;
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, '\n');
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = { name: 'message', data: [] };
          for (const line of block.split('\n')) {
            if (line.startsWith('event:')) event.name = line.slice(6).trim();
            else if (line.startsWith('data:')) event.data.push(line.slice(5).replace(/^ /, ''));
            else if (line.startsWith('retry:') && Number(line.slice(6)) > 0) retry = Number(line.slice(6));
          }
          if ((event.name === 'goal' || event.name === 'settled') && page.goal === id && !signal.aborted) {
            showGoal(JSON.parse(event.data.join('\n')));
          }
          if (event.name === 'settled') settled = true;
        }
      }
      pause = retry;
    } catch (err) {
      if (signal.aborted) return;
      console.warn('goal events:', err);
      pause = Math.min(Math.max(pause, retry) * 2, 15000);
    }
    if (settled) {
      live('settled', 'settled');
      if (page.goal === id) {
        // What the goal's end changed elsewhere on the page: its row, the fleet, the queue.
        await Promise.all([loadAudit({ goal: id }, '#goal-audit'), loadGoals(), loadFleet(), loadQueue(), loadPublished()]).catch(fail);
      }
      return;
    }
    if (signal.aborted) return;
    // The stream ended (the server's time limit) or dropped: look again.
    live('reconnecting', 'reconnecting…');
    await new Promise((resolve) => setTimeout(resolve, pause));
  }
}

const ROUTED = {
  commit: 'committed',
  auto_approve: 'approved automatically',
  hold: 'held for a person',
  retry: 'sent back to redo',
  conflict: 'state moved: replanned',
  fail: 'failed',
};

function showGoal(g) {
  const view = $('#goal');
  view.dataset.status = g.status;
  view.dataset.updates = String(Number(view.dataset.updates ?? 0) + 1);
  $('#goal-title').textContent = `${g.agent_name ?? g.agent_handle} · ${g.kind}`;
  const plan = g.plan ?? {};
  $('#goal-meta').replaceChildren(
    field('status', 'Status', el('span', { class: `state ${g.status}` }, g.status.replace('_', ' '))),
    field('agent', 'Agent', agentName(g.agent_id, g.agent_handle, g.agent_name)),
    field('body', 'Goal', g.body),
    field('created_at', 'Submitted', when(g.created_at)),
    field('updated_at', 'Last change', when(g.updated_at)),
    field('planner', 'Planned by', plan.planner ? `${plan.planner}${plan.model ? ` (${plan.model})` : ''}` : '—'),
    field('id', 'Goal id', el('code', {}, g.id)),
  );
  const kinds = new Map(g.tasks.map((t, i) => [t.id, `${i + 1}. ${t.kind}`]));
  // A person's decision on the result of a task's current attempt: shown after the judge's routing.
  const attemptOf = new Map(g.tasks.map((t) => [t.id, t.attempt]));
  const current = new Map(g.results
    .filter((r) => r.attempt === attemptOf.get(r.task_id))
    .map((r) => [r.id, r.task_id]));
  const decided = new Map(g.decisions
    .filter((d) => d.decision && d.decided_by !== 'judge' && current.has(d.result_id))
    .map((d) => [current.get(d.result_id), d]));
  $('#goal-tasks tbody').replaceChildren(...g.tasks.map((t, i) => {
    const waits = t.deferred_until ? el('span', { class: 'muted' }, ' until ', when(t.deferred_until)) : null;
    const conflicts = t.conflicts ? el('span', { class: 'muted', title: 'attempts after a conflict, not counted against the limit' }, ` +${t.conflicts} conflicts`) : null;
    return el('tr', { 'data-task-id': t.id, 'data-kind': t.kind, 'data-status': t.status },
      el('th', { scope: 'row', title: t.id }, `${i + 1}. ${t.kind}`),
      cell('status', {}, el('span', { class: `state ${t.status}` }, t.status.replace('_', ' ')), waits),
      cell('attempt', { class: 'num' }, `${t.attempt}/${t.max_attempts}`, conflicts),
      cell('after', {}, t.depends_on.length ? t.depends_on.map((d) => kinds.get(d) ?? short(d)).join(', ') : '—'),
      cell('routing', {}, t.routing ? ROUTED[t.routing.outcome] ?? t.routing.outcome : '—',
        decided.has(t.id) ? el('span', { class: 'decided' }, ` → ${DECIDED[decided.get(t.id).decision] ?? decided.get(t.id).decision} by ${decided.get(t.id).decided_by}`) : null),
      cell('reasons', { class: 'reasons' }, t.routing?.reasons ?? t.feedback ?? ''));
  }));
  labelCells($('#goal-tasks'));
}

// ---- audit trail --------------------------------------------------------------------------

/** The goal or review a view shows now: an answer about another one is not shown there. */
function showing(subject) {
  return subject.goal ? page.goal === subject.goal : page.review?.id === subject.review;
}

/** Loads the audit trail of `{goal}` or `{review}` into the list `target`, oldest first. */
async function loadAudit(subject, target) {
  const query = new URLSearchParams(subject);
  const data = await api('GET', `/audit?${query}`);
  if (!showing(subject)) return;
  $(target).replaceChildren(...data.items.map((e) => el('li', { 'data-action': e.action },
    when(e.at), ' ', el('strong', {}, e.actor), ` ${e.action.replace('.', ': ').replace(/_/g, ' ')}`,
    e.reasoning ? el('span', { class: 'muted' }, ` — ${e.reasoning}`) : null,
    e.edited_artifact_hash ? el('span', { class: 'muted mono', title: 'SHA-256 of the edited artifact' }, ` edited ${short(e.edited_artifact_hash)}`) : null)));
  if (data.items.length === 0) $(target).replaceChildren(el('li', { class: 'muted' }, 'Nothing recorded yet.'));
}

// ---- published ----------------------------------------------------------------------------

const ACTIONS = { 'social.publish': 'post', 'social.reply': 'reply', 'wallet.transfer': 'transfer' };

async function loadPublished() {
  const query = new URLSearchParams({ limit: 50 });
  const search = $('#published-search').value.trim();
  if (search) query.set('agent_name', search);
  const data = await api('GET', `/published?${query}`);
  $('#published tbody').replaceChildren(...data.items.map((p) => {
    const a = p.approval;
    const what = p.action === 'wallet.transfer'
      ? `${money(p.arguments.amount_cents, p.arguments.currency ?? '')} to ${p.arguments.to ?? '?'}`
      : p.text ?? '';
    const by = a.decided_by === 'judge' ? 'the judge (automatically)' : a.decided_by ?? '—';
    return el('tr', { 'data-task-id': p.task_id, 'data-review-id': a.review_id, 'data-agent-handle': p.agent_handle },
      cell('published_at', { class: 'when' }, when(p.published_at, ago(p.published_at))),
      cell('agent', {}, agentName(p.agent_id, p.agent_handle, p.agent_name)),
      cell('where', {}, `${p.platform ?? '—'} ${ACTIONS[p.action] ?? p.action}`, p.in_reply_to ? el('span', { class: 'muted' }, ` to ${p.in_reply_to}`) : null),
      cell('text', { class: 'preview' }, what, p.media_sha256 ? el('span', { class: 'tag', title: `media sha256 ${p.media_sha256}` }, 'image') : null),
      cell('approval', { title: `review ${a.review_id}` }, `${DECIDED[a.decision] ?? a.decision ?? '—'} by ${by}`, a.decided_at ? el('span', { class: 'muted' }, ` ${ago(a.decided_at)}`) : null));
  }));
  labelCells($('#published'));
  $('#published-empty').hidden = data.items.length > 0;
}

// ---- wiring -------------------------------------------------------------------------------

/** Everything a signed-in page shows; a goal named in the address opens too. */
async function loadAll() {
  await Promise.all([loadQueue(), loadFleet(), loadGoals(), loadPublished()]);
  const linked = /^#goal=([0-9a-fA-F-]{36})$/.exec(location.hash);
  if (linked && page.goal !== linked[1]) openGoal(linked[1]);
}

function boot() {
  $('#login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    action(async () => {
      say('', '');
      signIn($('#token').value.trim());
      await loadAll();
    })();
  });
  $('#logout').addEventListener('click', () => {
    signOut();
    say('ok', 'Signed out.');
    settle();
  });

  const reload = action(loadQueue);
  $('#fleet-filter').addEventListener('submit', (ev) => {
    ev.preventDefault();
    action(loadFleet)();
  });
  $('#fleet-sort').addEventListener('change', (ev) => {
    page.fleetSort = ev.target.value;
    action(loadFleet)();
  });
  $('#fleet thead').addEventListener('click', (ev) => {
    const th = ev.target.closest('th[data-sort]');
    if (!th) return;
    page.fleetSort = th.dataset.sort;
    action(loadFleet)();
  });
  $('#goals-filter').addEventListener('submit', (ev) => {
    ev.preventDefault();
    action(loadGoals)();
  });
  $('#goals-status').addEventListener('change', action(loadGoals));
  $('#goals tbody').addEventListener('click', (ev) => {
    const row = ev.target.closest('tr[data-goal-id]');
    if (row) openGoal(row.dataset.goalId);
  });
  $('#close-goal').addEventListener('click', closeGoal);
  $('#goal-history').addEventListener('toggle', (ev) => {
    if (ev.target.open && page.goal) action(() => loadAudit({ goal: page.goal }, '#goal-audit'))();
  });
  $('#card-history').addEventListener('toggle', (ev) => {
    if (ev.target.open && page.review) action(() => loadAudit({ review: page.review.id }, '#card-audit'))();
  });
  $('#published-filter').addEventListener('submit', (ev) => {
    ev.preventDefault();
    action(loadPublished)();
  });
  $('#filters').addEventListener('submit', (ev) => {
    ev.preventDefault();
    reload();
  });
  for (const id of ['#filter-risk', '#sort', '#order']) $(id).addEventListener('change', reload);
  $('#prev').addEventListener('click', () => {
    page.offset = Math.max(0, page.offset - PAGE_SIZE);
    reload();
  });
  $('#next').addEventListener('click', () => {
    page.offset += PAGE_SIZE;
    reload();
  });
  $('#select-all').addEventListener('change', (ev) => {
    for (const box of document.querySelectorAll('#queue input.select')) box.checked = ev.target.checked;
  });
  $('#queue tbody').addEventListener('click', (ev) => {
    if (ev.target.closest('td.pick')) return; // the checkbox cell selects, it does not open
    const row = ev.target.closest('tr[data-review-id]');
    if (row) openReview(row.dataset.reviewId);
  });

  $('#close-card').addEventListener('click', closeCard);
  $('#approve').addEventListener('click', action(() => decide('approve', {})));
  $('#reject').addEventListener('click', action(() => {
    const input = $('#reject-reason');
    const reason = input.value.trim();
    if (!reason) {
      input.setAttribute('aria-invalid', 'true');
      input.focus();
      throw new Problem('reason_required', 'Give a reason to reject.');
    }
    input.removeAttribute('aria-invalid');
    return decide('reject', { reason });
  }));
  $('#edit-approve').addEventListener('click', action(() => decide('edit', { arguments: { text: $('#edit-text').value } })));
  $('#bulk-dry-run').addEventListener('click', action(() => bulk(true)));
  $('#bulk-approve').addEventListener('click', action(() => bulk(false)));

  $('#signin').addEventListener('click', action(() => startSignIn(page.signInConfig)));

  action(async () => {
    const config = await signInConfig();
    page.signInConfig = config;
    $('#signin').hidden = !issuerConfigured(config);
    $('#login-form').hidden = !config.token_form;
    const issued = issuerConfigured(config) ? await finishSignIn(config) : null;
    const token = issued || sessionStorage.getItem(TOKEN_KEY);
    if (!token) return;
    try {
      signIn(token);
    } catch (err) {
      sessionStorage.removeItem(TOKEN_KEY);
      throw err;
    }
    await loadAll();
  })();
  settle();
}

boot();
