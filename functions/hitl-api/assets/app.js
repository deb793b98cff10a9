/*
 * Mission Control: the human side of the HITL API. Sign in with a JWT, page through the
 * pending reviews, open one, and approve, reject or edit-and-approve it; or approve many
 * at once. Every request goes to this origin's API with `Authorization: Bearer <jwt>`;
 * nothing else is fetched. Every decision carries the artifact_hash and policy_version the
 * reviewer saw, so the API can refuse a decision on something that has since changed.
 *
 * Stable hooks for WebDriver tests:
 *   body[data-state]        "login" | "ready" | "busy"; wait for "ready" (or "login") before asserting
 *   #token #login #logout   sign in / out; the token lives in sessionStorage["chimera.jwt"]
 *   #whoami span[data-claim="sub"|"tenant"|"roles"]
 *   #status[data-kind="ok"|"error"][data-code]   role=status; data-code is the API error.code,
 *                           or the decision recorded on success
 *   #fleet-search #fleet-refresh #fleet-empty
 *   #fleet tbody tr[data-agent-id][data-handle][data-attention="held failing ..."] (tr.attention when
 *     it needs a person; rows come those first)   td[data-field="<name>"]
 *   #filters #filter-risk #filter-agent #filter-goal #sort #order #refresh #prev #next #page-info
 *   #queue tbody tr[data-review-id][data-artifact-hash][data-policy-version]   (tr.is-open: in the card)
 *     input.select[data-review-id]   button.open[data-review-id]   #select-all   #queue-empty
 *   #card[data-review-id][data-status]   #card-title   #close-card
 *     #card-meta [data-field="<name>"] dd    (status, decision, confidence, risk_tags, risk_types,
 *       disclosure_level, judge_reasoning, policy_version, artifact_hash, priority, escalated,
 *       created_at, due_at, final_deadline, attempt, task_kind, goal_id, task_id, agent_id)
 *     #card-artifacts li.artifact[data-sha256][data-media-type]  > pre | img | a
 *     #card-proposal #proposal-action #proposal-args tbody tr[data-arg="<name>"]
 *     #approve #reject-reason #reject #edit #edit-text #edit-approve
 *   #bulk-dry-run #bulk-approve #bulk-summary #bulk-result li[data-review-id][data-result]
 */
'use strict';

const PAGE_SIZE = 25;
const TOKEN_KEY = 'chimera.jwt';
const $ = (selector) => document.querySelector(selector);

const page = { token: null, busy: 0, offset: 0, filterKey: null, loadSeq: 0, review: null, deciding: false };

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

function fail(err) {
  if (!(err instanceof Problem)) {
    console.error(err);
    say('error', `client_error: ${err.message}`, 'client_error');
    return;
  }
  const w = err.winner;
  const winner = w ? ` (winner: ${w.decision} by ${w.decided_by} at ${w.decided_at})` : '';
  say('error', `${err.code}: ${err.message}${winner}`, err.code);
  if (err.status === 401) signOut();
}

// ---- formatting ---------------------------------------------------------------------------

const short = (id) => (id ? `${id.slice(0, 8)}…` : '—');
const confidence = (c) => (typeof c === 'number' ? c.toFixed(2) : '—');
const tags = (list, kind = 'tag') => el('span', { class: 'tags' }, ...(list ?? []).map((t) => el('span', { class: `tag ${kind}` }, t)));

function when(iso, text) {
  if (!iso) return '—';
  return el('time', { datetime: iso, title: iso }, text ?? new Date(iso).toLocaleString());
}

/** A span of time for a glance: "45m", "3h 5m", "2d 4h". */
function span(ms) {
  const minutes = Math.round(Math.abs(ms) / 60000);
  if (minutes < 60) return `${minutes}m`;
  if (minutes < 1440) return `${Math.floor(minutes / 60)}h ${minutes % 60}m`;
  return `${Math.floor(minutes / 1440)}d ${Math.floor((minutes % 1440) / 60)}h`;
}

const age = (iso) => span(Date.now() - new Date(iso).getTime());

function due(iso) {
  const ms = new Date(iso).getTime() - Date.now();
  return ms >= 0 ? `in ${span(ms)}` : `${span(ms)} overdue`;
}

function size(n) {
  return n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1048576).toFixed(1)} MiB`;
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
  const roles = Array.isArray(c.roles) ? c.roles.join(', ') : String(c.roles ?? '');
  $('#whoami').replaceChildren(
    'Signed in as ', el('span', { 'data-claim': 'sub' }, c.sub ?? '?'),
    ', tenant ', el('span', { 'data-claim': 'tenant' }, c.tenant ?? '?'),
    ', roles ', el('span', { 'data-claim': 'roles' }, roles || 'none'),
  );
  $('#login-view').hidden = true;
  $('#app-view').hidden = false;
  $('#logout').hidden = false;
}

function signOut() {
  page.token = null;
  page.filterKey = null;
  sessionStorage.removeItem(TOKEN_KEY);
  closeCard();
  $('#whoami').replaceChildren();
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

async function loadFleet() {
  const query = new URLSearchParams({ limit: 200 });
  const search = $('#fleet-search').value.trim();
  if (search) query.set('search', search);
  const data = await api('GET', `/fleet?${query}`);
  $('#fleet tbody').replaceChildren(...data.items.map(fleetRow));
  $('#fleet-empty').hidden = data.items.length > 0;
}

function fleetRow(a) {
  const cell = (name, attrs, ...children) => el('td', { 'data-field': name, ...attrs }, ...children);
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
  for (const [name, input] of [['agent', '#filter-agent'], ['goal', '#filter-goal']]) {
    const value = $(input).value.trim();
    if (value) query.set(name, value);
  }
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
  el('td', { class: 'pick' }, el('input', { type: 'checkbox', class: 'select', 'data-review-id': r.id, 'aria-label': `Select review ${r.id}` })),
  el('td', { class: 'when' }, when(r.created_at, age(r.created_at))),
  el('td', {}, r.task_kind),
  el('td', { class: 'agent', title: r.agent_id }, r.agent_name ?? r.agent_handle ?? short(r.agent_id)),
  el('td', { class: 'num' }, confidence(r.confidence)),
  el('td', {}, tags(r.risk_types, 'type'), tags(r.risk_tags), financial),
  el('td', { class: 'num' }, r.priority, r.escalated ? el('span', { class: 'flag' }, ' escalated') : null),
  el('td', { class: 'when' }, r.due_at ? when(r.due_at, due(r.due_at)) : '—'),
  el('td', { class: 'preview' }, r.preview ?? ''),
  el('td', {}, el('button', { type: 'button', class: 'open', 'data-review-id': r.id, 'aria-label': `Open review ${r.id}` }, 'Open')));
}

function markOpenRow() {
  for (const tr of document.querySelectorAll('#queue tbody tr')) {
    tr.classList.toggle('is-open', tr.dataset.reviewId === page.review?.id);
  }
}

// ---- review card --------------------------------------------------------------------------

const openReview = action(async (id) => {
  showCard(await api('GET', `/reviews/${encodeURIComponent(id)}`));
  $('#card-title').focus();
});

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
  $('#card-title').textContent = `Review ${short(r.id)} · ${r.task_kind}`;
  const d = r.decision;
  const meta = [
    field('status', 'Status', r.status),
    d ? field('decision', 'Decision', `${d.decision} by ${d.decided_by} at ${d.decided_at}`) : null,
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
    field('artifact_hash', 'Artifact hash', el('code', {}, r.artifact_hash)),
    field('attempt', 'Attempt', r.attempt),
    field('task_kind', 'Task kind', r.task_kind),
    field('goal_id', 'Goal', el('code', {}, r.goal_id)),
    field('task_id', 'Task', el('code', {}, r.task_id)),
    field('agent_id', 'Agent', el('code', {}, r.agent_id)),
  ];
  $('#card-meta').replaceChildren(...meta.filter(Boolean));
  $('#card-artifacts').replaceChildren(...r.artifacts.map(artifact));

  const p = r.proposal;
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
    $(id).disabled = r.status !== 'pending';
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
    const execute = res.execute_task_id ? `; execution task ${res.execute_task_id}` : '';
    const edited = res.edited_artifact_hash ? `; edited artifact ${res.edited_artifact_hash}` : '';
    say('ok', `${res.decision} recorded for review ${res.review_id}${execute}${edited}`, res.decision);
    closeCard();
    await Promise.all([loadQueue(), loadFleet()]);
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

// ---- wiring -------------------------------------------------------------------------------

function boot() {
  $('#login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    action(async () => {
      say('', '');
      signIn($('#token').value.trim());
      await Promise.all([loadQueue(), loadFleet()]);
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

  const stored = sessionStorage.getItem(TOKEN_KEY);
  if (stored) {
    action(async () => {
      try {
        signIn(stored);
      } catch (err) {
        sessionStorage.removeItem(TOKEN_KEY);
        throw err;
      }
      await Promise.all([loadQueue(), loadFleet()]);
    })();
  }
  settle();
}

boot();
