// The ckpt dashboard page: plain DOM, no framework, no build step. Every value from the log is
// put in the page as text (textContent, attributes), never as HTML: a command line holding
// `<script>` is shown, not run. Charts are a few lines of inline SVG.
const token = new URLSearchParams(location.search).get('token');
const SVG = 'http://www.w3.org/2000/svg';

/** What the tests (and the curious) can read: the last position seen, and when each change was drawn. */
const dash = (window.ckptDashboard = { position: 0, rendered: [] });

const api = async (path) => {
  const r = await fetch(path, token ? { headers: { authorization: `Bearer ${token}` } } : {});
  const body = await r.json();
  if (!r.ok) throw new Error(body.error ?? `${r.status}`);
  return body;
};

/** An element with attributes and children (strings become text nodes). */
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null && v !== false) e.setAttribute(k, String(v));
  e.append(...children.flat().filter((c) => c !== undefined && c !== null));
  return e;
};
const svg = (tag, attrs = {}, ...children) => {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  e.append(...children.flat());
  return e;
};
const ms = (n) => (n === null || n === undefined ? '-' : `${Math.round(n)} ms`);
const bytes = (n) => (!n ? '-' : n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`);
const who = (a) => (a?.kind === 'user' ? (a.user ?? `uid ${a.uid}`) : (a?.kind ?? '-'));
const why = (reason, failure) => (failure ? `${failure.class}: ${failure.message}${failure.hint ? ` — ${failure.hint}` : ''}` : (reason ?? ''));
const table = (header, rows) => el('table', {}, el('tr', {}, header.map((h) => el('th', {}, h))), rows);
const main = document.getElementById('main');

// ---- jobs ----------------------------------------------------------------------------------
const jobsView = () => {
  const state = el('select', { id: 'state-filter' }, ['', 'running', 'ended'].map((s) => el('option', { value: s }, s || 'any state')));
  const failed = el('input', { type: 'checkbox', id: 'failed-only' });
  const list = el('div', { id: 'jobs' });
  const refresh = async () => {
    const q = new URLSearchParams();
    if (state.value) q.set('state', state.value);
    if (failed.checked) q.set('failed', '1');
    const jobs = await api(`/api/jobs?${q}`);
    list.replaceChildren(
      jobs.length === 0 ? el('p', { class: 'muted' }, 'no jobs match') :
      table(['JOB', 'STATE', 'OWNER', 'UNITS', 'RUNNING/ALL', 'SUBMITTED', 'COMMAND'], jobs.map((j) =>
        el('tr', { 'data-job': j.job },
          el('td', {}, el('a', { href: `#/job/${encodeURIComponent(j.job)}` }, j.job)), el('td', {}, j.state), el('td', {}, j.owner ? `uid ${j.owner.uid}` : '-'),
          el('td', {}, j.units.map((u) => `${u.unit}@${u.node}`).join(', ')), el('td', {}, `${j.processes.running}/${j.processes.total}`),
          el('td', {}, j.submittedAt ?? '-'), el('td', { class: 'mono command' }, j.units.map((u) => u.command.join(' ')).join(' | '))))),
    );
  };
  state.onchange = failed.onchange = () => refresh().catch(showError);
  main.replaceChildren(el('h2', {}, 'Jobs'), el('div', { class: 'filters' }, el('label', {}, 'state ', state), el('label', {}, failed, ' failed only')), list);
  return { refresh, wants: () => true };
};

// ---- one job -------------------------------------------------------------------------------
const stateText = (m) => (m.state === 'running' ? 'running' : m.state === 'vanished' ? 'vanished' : m.signal !== null ? `killed (signal ${m.signal})` : `exited (${m.exitStatus})`);

/** The members of a unit as a tree by who forked whom (an unknown parent starts a branch). */
const tree = (members) => {
  const keys = new Set(members.map((m) => m.key));
  const kids = new Map();
  for (const m of members) {
    const at = m.parent !== null && keys.has(m.parent) ? m.parent : null;
    kids.set(at, [...(kids.get(at) ?? []), m]);
  }
  const branch = (at) => el('ul', {}, (kids.get(at) ?? []).map((m) =>
    el('li', {},
      el('div', { class: `member ${m.state} ${m.reason}`, 'data-pid': m.pid, 'data-state': m.state, 'data-reason': m.reason },
        `${m.pid} `, el('span', { class: 'comm' }, m.comm), ` — ${stateText(m)}`, el('span', { class: 'why' }, m.why),
        m.restoredFrom ? el('span', { class: 'muted' }, ` (restored; was pid ${m.restoredFrom.pid})`) : null),
      kids.has(m.key) ? branch(m.key) : null)));
  return branch(null);
};

const membership = (j) =>
  el('div', { class: 'tree' }, j.units.map((u) => el('div', { class: 'unit', 'data-unit': u.unit },
    el('p', {}, el('strong', {}, `unit ${u.unit} on ${u.node}`), `: ${u.phase}, cgroup ${u.cgroup ?? '-'}, `, el('code', { class: 'command' }, u.command.join(' '))),
    tree(u.members),
    u.hidden > 0 ? el('p', { class: 'muted' }, `${u.hidden} exited process${u.hidden === 1 ? '' : 'es'} not shown`) : null)));

/** One operation as a Gantt chart: a lane per unit, a bar per step from its request to its answer. */
const gantt = (units, commit) => {
  const steps = units.flatMap((u) => Object.entries(u.steps ?? {}).map(([step, t]) => ({ lane: u.unit, step, ...t })));
  if (commit) steps.push({ lane: 'commit', step: 'commit', ...commit });
  if (steps.length === 0) return el('p', { class: 'muted' }, 'no step asked yet');
  const t = (iso) => Date.parse(iso);
  const t0 = Math.min(...steps.map((s) => t(s.requestedAt)));
  const t1 = Math.max(...steps.map((s) => t(s.endedAt ?? s.requestedAt)), t0 + 1);
  const lanes = [...new Set(steps.map((s) => s.lane))];
  const [left, width, lane] = [110, 620, 20];
  const x = (iso) => left + ((t(iso) - t0) / (t1 - t0)) * width;
  const ordered = [...steps].sort((a, b) => a.requested - b.requested);
  return svg('svg', { width: left + width + 60, height: lanes.length * lane + 18, class: 'gantt', 'data-steps': ordered.map((s) => `${s.lane}:${s.step}`).join(' ') },
    lanes.map((l, i) => svg('text', { x: 0, y: i * lane + 14 }, l)),
    ordered.map((s) => {
      const from = x(s.requestedAt);
      const to = s.endedAt ? x(s.endedAt) : left + width;
      return svg('rect', { x: from, y: lanes.indexOf(s.lane) * lane + 3, width: Math.max(2, to - from), height: lane - 6, class: `step-${s.result === 'failed' ? 'failed' : s.step}`, 'data-step': s.step, 'data-unit': s.lane, 'data-result': s.result ?? 'open' },
        svg('title', {}, `${s.lane} ${s.step}: ${s.result ?? 'waiting'}${s.endedAt ? `, ${t(s.endedAt) - t(s.requestedAt)} ms` : ''} (#${s.requested}${s.ended ? `–#${s.ended}` : ''})`));
    }),
    svg('text', { x: left + width + 4, y: 14 }, `${t1 - t0} ms`));
};

const timeline = (ops) => {
  const items = [
    ...ops.checkpoints.filter((c) => c.version !== null).map((c) => ({ id: `checkpoint-${c.version}`, at: c.requestedAt, title: `checkpoint v${c.version}: ${c.outcome === 'in progress' ? c.phase : c.outcome}`, c, outcome: c.outcome, units: c.units, commit: c.commit })),
    ...ops.restarts.filter((r) => r.restart !== null).map((r) => ({ id: `restart-${r.restart}`, at: r.requestedAt, title: `restart r${r.restart} of v${r.version}: ${r.outcome === 'in progress' ? r.phase : r.outcome}`, c: r, outcome: r.outcome, units: r.units })),
  ].sort((a, b) => a.at.localeCompare(b.at));
  if (items.length === 0) return [el('p', { class: 'muted' }, 'no checkpoint or restart yet')];
  const shown = [...new Set(items.flatMap((o) => [...o.units.flatMap((u) => Object.keys(u.steps ?? {})), ...(o.commit ? ['commit'] : [])]))];
  const legend = el('p', { class: 'legend' }, [...shown, 'failed'].map((step) => el('span', {}, svg('svg', { width: 12, height: 12 }, svg('rect', { width: 12, height: 12, class: `step-${step}` })), ` ${step} `)));
  return [legend, ...items.map((o) => el('div', { class: `op ${o.outcome.replace(' ', '-')}`, 'data-op': o.id, 'data-outcome': o.outcome },
    el('div', { class: 'op-title' }, o.title, el('span', { class: 'muted' }, ` — requested ${o.at} by ${who(o.c.requestedBy)}, ${ms(o.c.durationMs)}${o.c.frozenMs !== undefined ? `, frozen ${ms(o.c.frozenMs)}` : ''}`)),
    gantt(o.units, o.commit)))];
};

/** A bar chart of one figure over the versions. */
const bars = (title, points, format) => {
  if (points.length === 0) return null;
  const max = Math.max(...points.map((p) => p.value), 1);
  const [w, h] = [64, 110];
  return el('figure', { class: 'chart', 'data-chart': title }, el('figcaption', {}, title),
    svg('svg', { width: points.length * w + 20, height: h + 30 },
      points.map((p, i) => {
        const bh = Math.max(1, (p.value / max) * h);
        return svg('g', {}, svg('rect', { x: i * w + 10, y: h - bh + 12, width: w - 8, height: bh, class: `bar ${p.outcome}` }, svg('title', {}, `${p.label}: ${format(p.value)}`)),
          svg('text', { x: i * w + 10, y: h + 26 }, p.label), svg('text', { x: i * w + 10, y: h - bh + 9 }, format(p.value)));
      })));
};

const charts = (ops) => {
  const rows = ops.rows.filter((r) => r.kind === 'checkpoint' && r.number !== null);
  // A version without the figure (never frozen, not finished) has no bar rather than a zero one.
  const series = (value, of = rows) => of.filter((r) => value(r) !== null && value(r) !== undefined).map((r) => ({ label: `v${r.number}`, value: value(r), outcome: r.outcome }));
  return el('div', { class: 'charts' },
    bars('bytes by version', series((r) => r.bytes, rows.filter((r) => r.outcome === 'committed')), bytes),
    bars('duration by version (ms)', series((r) => r.durationMs), ms),
    bars('frozen by version (ms)', series((r) => r.frozenMs), ms));
};

const auditTable = (audit) => audit.entries.length === 0 ? el('p', { class: 'muted' }, 'nothing audited yet') :
  table(['REQUESTED', 'BY', 'WHAT', 'VERSION', 'OUTCOME', 'DURATION', 'SIZE', 'UNITS', 'PROCS', 'REASON'], audit.entries.map((e) => el('tr', { 'data-kind': e.kind },
    el('td', {}, e.requestedAt), el('td', {}, who(e.requestedBy)),
    el('td', {}, e.kind === 'restart' ? `restart${e.restart === null ? '' : ` r${e.restart}`}` : e.kind === 'prune' ? `prune --keep ${e.keep}` : 'checkpoint'),
    el('td', {}, e.kind === 'prune' ? e.pruned.map((p) => `v${p.version}`).join(',') : e.version === null ? '-' : `v${e.version}`),
    el('td', {}, e.outcome), el('td', {}, ms(e.durationMs)), el('td', {}, bytes(e.bytes)), el('td', {}, e.units?.length ?? '-'), el('td', {}, e.membership?.length ?? '-'),
    el('td', {}, why(e.reason, e.failure)))));

/** The cause of each failed operation, as `ckpt explain` gives it. */
const failures = async (job, ops) => {
  const failed = [
    ...ops.checkpoints.filter((c) => c.outcome === 'aborted' && c.version !== null).map((c) => `version=${c.version}`),
    ...ops.restarts.filter((r) => r.outcome === 'failed' && r.restart !== null).map((r) => `restart=${r.restart}`),
  ];
  if (failed.length === 0) return [el('p', { class: 'muted' }, 'no failed operation')];
  const explained = await Promise.all(failed.map((q) => api(`/api/jobs/${encodeURIComponent(job)}/explain?${q}`)));
  return explained.map((x) => el('div', { class: 'failure', 'data-op': x.kind === 'checkpoint' ? `checkpoint-${x.version}` : `restart-${x.restart}` },
    el('strong', {}, `${x.kind === 'checkpoint' ? `checkpoint v${x.version}` : `restart r${x.restart}`} ${x.outcome}`), `: ${why(x.reason, x.failure)}`,
    el('ul', {},
      (x.cause?.failures ?? []).map((f) => el('li', { class: 'cause' }, `unit ${f.unit} on ${f.node}: ${f.step} failed at #${f.position} ${f.type}${f.command ? `, answering #${f.command.position} ${f.command.type}` : ''}: ${why(f.reason, f.failure)}`)),
      (x.cause?.waitingFor ?? []).map((w) => el('li', {}, `still waiting for unit ${w.unit} on ${w.node}: ${w.step}`)),
      x.cause?.chain?.length ? el('li', { class: 'muted' }, `chain: ${x.cause.chain.map((c) => `#${c.position} ${c.type}`).join(' ← ')}`) : null)));
};

const jobView = (job) => {
  const title = el('h2', {}, `job ${job}`);
  const slider = el('input', { type: 'range', id: 'at', min: 1, max: 1, value: 1 });
  const sliderLabel = el('span', { id: 'at-label' }, 'live');
  const live = el('button', { id: 'at-live', type: 'button' }, 'live');
  const tree = el('div', { id: 'membership' });
  const ops = el('div', { id: 'timeline' });
  const chartBox = el('div', { id: 'charts' });
  const audit = el('div', { id: 'audit' });
  const failed = el('div', { id: 'failures' });
  let at = null; // null: live
  const base = `/api/jobs/${encodeURIComponent(job)}`;
  const drawMembership = async () => {
    const j = await api(at === null ? base : `${base}?at=${at}`);
    title.textContent = `job ${job}: ${j.phase}${j.outcome ? ` (${j.outcome})` : ''}`;
    slider.min = j.first ?? 1;
    if (at === null && (j.last ?? 0) > dash.position) setPosition(j.last); // drawn from further on than the feed has said yet
    slider.max = Math.max(dash.position, j.last ?? 1);
    if (at === null) slider.value = slider.max;
    sliderLabel.textContent = at === null ? `live (position ${slider.max})` : `at log position ${at}`;
    tree.replaceChildren(membership(j));
  };
  slider.oninput = () => (sliderLabel.textContent = `at log position ${slider.value}`);
  slider.onchange = () => {
    at = Number(slider.value) >= Number(slider.max) ? null : Number(slider.value);
    drawMembership().catch(showError);
  };
  live.onclick = () => {
    at = null;
    drawMembership().catch(showError);
  };
  const refresh = async () => {
    const [o, a] = await Promise.all([api(`${base}/operations`), api(`${base}/audit`), drawMembership()]);
    ops.replaceChildren(...timeline(o));
    chartBox.replaceChildren(charts(o));
    audit.replaceChildren(auditTable(a));
    failed.replaceChildren(...(await failures(job, o)));
  };
  main.replaceChildren(title,
    el('h3', {}, 'Membership'), el('div', { class: 'slider' }, el('span', {}, 'time travel'), slider, sliderLabel, live), tree,
    el('h3', {}, 'Checkpoints and restarts'), ops, chartBox,
    el('h3', {}, 'Failures'), failed,
    el('h3', {}, 'Audit'), audit);
  return { refresh, wants: (change) => job in change.jobs };
};

// ---- nodes ---------------------------------------------------------------------------------
const nodesView = () => {
  const list = el('div', { id: 'nodes' });
  main.replaceChildren(el('h2', {}, 'Nodes'), list);
  const refresh = async () => {
    const nodes = await api('/api/nodes');
    list.replaceChildren(nodes.length === 0 ? el('p', { class: 'muted' }, 'no nodes yet') :
      table(['NODE', 'STATE', 'AGENT', 'LAST SEEN', 'CHECKPOINTER', 'KERNEL', 'UNITS RUNNING'], nodes.map((n) => el('tr', { 'data-node': n.node },
        el('td', {}, n.node), el('td', {}, n.stopped ? `stopped (${n.stopped.reason})` : n.state), el('td', {}, n.agent ? `pid ${n.agent.pid}, ${n.agent.version}` : '-'),
        el('td', {}, n.lastSeen), el('td', {}, n.checkpointer ? `${n.checkpointer.name} ${n.checkpointer.version ?? '?'}${n.checkpointer.usable ? '' : ' (unusable)'}` : '-'),
        el('td', {}, n.kernel ?? '-'), el('td', {}, n.units.join(', ') || '-')))));
  };
  return { refresh, wants: (change) => change.nodes || Object.keys(change.jobs).length > 0 };
};

// ---- routing and the live feed -------------------------------------------------------------
const showError = (error) => main.prepend(el('p', { class: 'error' }, String(error.message ?? error)));
let view;
let running = null;
let again = false;

/** Refreshes the view; a change arriving meanwhile refreshes once more after (never two at once). */
const refresh = async (position) => {
  if (running) return void (again = true);
  running = view.refresh().then(() => dash.rendered.push({ position, at: Date.now() }), showError);
  await running;
  running = null;
  if (again) {
    again = false;
    await refresh(dash.position);
  }
};

const route = () => {
  const m = /^#\/job\/(.+)$/.exec(location.hash);
  view = m ? jobView(decodeURIComponent(m[1])) : location.hash === '#/nodes' ? nodesView() : jobsView();
  refresh(dash.position);
};

const setPosition = (p) => {
  dash.position = p;
  document.getElementById('position').textContent = `log position ${p}`;
};

const connect = () => {
  const status = document.getElementById('status');
  const events = new EventSource(`/api/events${token ? `?token=${encodeURIComponent(token)}` : ''}`);
  events.addEventListener('position', (e) => setPosition(JSON.parse(e.data).position));
  events.addEventListener('change', (e) => {
    const change = JSON.parse(e.data);
    setPosition(change.position);
    if (view.wants(change)) refresh(change.position);
  });
  events.onopen = () => ((status.textContent = 'live'), (status.className = 'live'));
  events.onerror = () => ((status.textContent = 'reconnecting…'), (status.className = 'down'));
};

window.addEventListener('hashchange', route);
api('/api/head').then((h) => setPosition(h.position)).catch(showError).finally(() => (route(), connect()));
