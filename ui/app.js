// The dms dashboard: Preact + htm as plain ES modules served by the daemon (no build step).
// Every page reads the read-only /api/v1/ui/* data of its own daemon and reloads it when the
// event stream (/api/v1/events, Server-Sent Events) says something changed.
import { h, render } from '/ui/vendor/preact.mjs'
import { useEffect, useRef, useState } from '/ui/vendor/hooks.mjs'
import htm from '/ui/vendor/htm.mjs'

const html = htm.bind(h)

const PAGES = [
  ['overview', 'Overview'],
  ['peers', 'Peers'],
  ['workloads', 'Workloads'],
  ['deployments', 'Deployments'],
  ['trust', 'Trust']
]

/** A refusal the page answers by asking for a login (401: no session, or it expired). */
class NeedsLogin extends Error {}

async function getJson (path, signal) {
  const r = await fetch(path, { headers: { accept: 'application/json' }, signal })
  const body = await r.json()
  if (r.status === 401) throw new NeedsLogin(body.error?.message ?? 'login needed')
  if (!r.ok) throw new Error(body.error?.message ?? `HTTP ${r.status}`)
  return body
}

function bytes (n) {
  if (typeof n !== 'number') return '–'
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++ }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`
}

function duration (s) {
  const d = Math.floor(s / 86400); const hh = Math.floor(s / 3600) % 24; const m = Math.floor(s / 60) % 60
  return d > 0 ? `${d}d ${hh}h` : hh > 0 ? `${hh}h ${m}m` : m > 0 ? `${m}m ${s % 60}s` : `${s}s`
}

const when = (iso) => iso ? new Date(iso).toLocaleString() : '–'

/** `in 3h 5m` / `2m ago`: how far a time is from now. */
function relative (iso) {
  const t = Date.parse(iso)
  if (Number.isNaN(t)) return ''
  const s = Math.round((t - Date.now()) / 1000)
  return s >= 0 ? `in ${duration(s)}` : `${duration(-s)} ago`
}

/** The event stream: the number of events seen (pages reload on change) and whether it is open. */
function useEvents () {
  const [state, setState] = useState({ count: 0, live: false, last: null })
  useEffect(() => {
    const es = new EventSource('/api/v1/events?follow=1&since=now')
    es.onopen = () => setState(s => ({ ...s, live: true }))
    es.onerror = () => setState(s => ({ ...s, live: false, closed: es.readyState === EventSource.CLOSED }))
    es.onmessage = (m) => setState(s => ({ count: s.count + 1, live: true, last: JSON.parse(m.data) }))
    return () => es.close()
  }, [])
  return state
}

/** Loads `path`, again whenever `tick` changes (coalesced: one load at a time). */
function useData (path, tick) {
  const [data, setData] = useState({ value: undefined, error: undefined })
  useEffect(() => {
    const ac = new AbortController()
    const t = setTimeout(() => {
      getJson(path, ac.signal).then(value => setData({ value, error: undefined }), err => { if (!ac.signal.aborted) setData(d => ({ ...d, error: String(err.message ?? err), login: err instanceof NeedsLogin })) })
    }, tick === 0 ? 0 : 250)
    return () => { clearTimeout(t); ac.abort() }
  }, [path, tick])
  return data
}

/** What the page shows without a session: how to get one (the data stays behind the login). */
function Login () {
  return html`<div class="card login" data-testid="login">
    <h1>Log in to this dashboard</h1>
    <p>The dashboard shows this node's data to its owner only. On this machine, run</p>
    <pre>dms ui --open</pre>
    <p>and open the URL it prints: it works once, within 5 minutes, and this browser then stays logged in for 12 hours.</p>
  </div>`
}

function Loading ({ data, children }) {
  if (data.login === true) return html`<${Login} />`
  if (data.error !== undefined && data.value === undefined) return html`<p class="error">${data.error}</p>`
  if (data.value === undefined) return html`<p class="empty">Loading…</p>`
  return children(data.value)
}

function Gauge ({ label, testid, onboarded, allocated, free, format }) {
  const pct = onboarded > 0 ? Math.round(100 * (onboarded - free) / onboarded) : 0
  return html`<div class="card">
    <div class="label">${label}</div>
    <div class="value" data-testid=${testid} data-value=${onboarded}>${format(onboarded)}</div>
    <div class="gauge"><div style=${`width: ${pct}%`}></div></div>
    <div class="mono">allocated ${format(allocated)} · free ${format(free)}</div>
  </div>`
}

function Overview ({ tick }) {
  const data = useData('/api/v1/ui/overview', tick)
  return html`<${Loading} data=${data}>${(o) => {
    const r = o.status.resources
    const on = r.onboarded ?? { cpuCores: 0, ramBytes: 0, diskBytes: 0 }
    return html`<h1>Overview</h1>
      <div class="cards">
        <div class="card"><div class="label">DID</div><div class="mono" data-testid="did">${o.identity.did}</div></div>
        <div class="card"><div class="label">Peer ID</div><div class="mono" data-testid="peer-id">${o.identity.peerId}</div></div>
        <div class="card"><div class="label">State</div><div class="value"><span class=${`badge ${o.status.state}`} data-testid="state">${o.status.state}</span></div><div class="mono">since ${when(new Date(o.status.stateSince).toISOString())}</div></div>
        <div class="card"><div class="label">Version · uptime</div><div class="value" data-testid="version">${o.version}</div><div class="mono">up ${duration(o.uptimeS)}</div></div>
      </div>
      <h2>Resources ${r.onboarded === null ? html`<span class="badge" data-testid="not-onboarded">not onboarded</span>` : ''}</h2>
      <div class="cards">
        <${Gauge} label="CPU cores" testid="cpu-onboarded" onboarded=${on.cpuCores} allocated=${r.allocated.cpuCores} free=${r.free.cpuCores} format=${(n) => String(Math.round(n * 100) / 100)} />
        <${Gauge} label="RAM" testid="ram-onboarded" onboarded=${on.ramBytes} allocated=${r.allocated.ramBytes} free=${r.free.ramBytes} format=${bytes} />
        <${Gauge} label="Disk" testid="disk-onboarded" onboarded=${on.diskBytes} allocated=${r.allocated.diskBytes} free=${r.free.diskBytes} format=${bytes} />
      </div>
      <h2>Counts</h2>
      <div class="cards">
        <div class="card"><div class="label">Peers connected / known</div><div class="value" data-testid="peers-count">${o.counts.peersConnected} / ${o.counts.peersKnown}</div></div>
        <div class="card"><div class="label">Allocations running / all</div><div class="value" data-testid="allocations-count">${o.counts.allocationsRunning} / ${o.counts.allocations}</div></div>
        <div class="card"><div class="label">Deployments</div><div class="value">${o.counts.deployments}</div></div>
        <div class="card"><div class="label">Events</div><div class="value">${o.counts.events}</div></div>
      </div>
      <h2>Addresses</h2>
      <div class="card mono">${o.identity.addrs.map(a => html`<div>${a}</div>`)}</div>`
  }}<//>`
}

/** The last characters of a peer id: enough to tell peers apart on the graph. */
const short = (id) => `…${id.slice(-6)}`

/**
 * Who is connected to whom, as far as this node knows: itself in the middle, the peers it knows
 * around it, a line to each one it is connected to (labelled with the RTT). Peers' own
 * connections are not known here, so no line joins two peers.
 */
function PeerGraph ({ self, peers }) {
  const shown = peers.slice(0, 24)
  const w = 640; const hgt = 360; const cx = w / 2; const cy = hgt / 2; const r = 140
  const at = (i) => {
    const a = (2 * Math.PI * i) / Math.max(1, shown.length) - Math.PI / 2
    return [cx + r * Math.cos(a), cy + r * Math.sin(a)]
  }
  return html`<svg class="graph" data-testid="peer-graph" viewBox=${`0 0 ${w} ${hgt}`} width=${w} height=${hgt} role="img" aria-label="peers connected to this node">
    ${shown.map((p, i) => {
      const [x, y] = at(i)
      return p.connected ? html`<g data-edge=${p.id}><line x1=${cx} y1=${cy} x2=${x} y2=${y} class="edge" />
        ${typeof p.rttMs === 'number' ? html`<text x=${(cx + x) / 2 + 6} y=${(cy + y) / 2 - 4} class="rtt">${Math.round(p.rttMs)} ms</text>` : ''}</g>` : ''
    })}
    <g data-node=${self.id}><circle cx=${cx} cy=${cy} r="30" class="self" /><text x=${cx} y=${cy + 4} class="label">this node</text><title>${self.did}</title></g>
    ${shown.map((p, i) => {
      const [x, y] = at(i)
      return html`<g data-node=${p.id}><circle cx=${x} cy=${y} r="16" class=${p.connected ? 'peer' : 'peer gone'} /><text x=${x} y=${y + 30} class="label">${short(p.id)}</text><title>${p.did ?? p.id}</title></g>`
    })}
  </svg>${peers.length > shown.length ? html`<p class="empty">${peers.length - shown.length} more peers in the table, not drawn.</p>` : ''}`
}

function Peers ({ tick }) {
  const data = useData('/api/v1/ui/peers', tick)
  return html`<${Loading} data=${data}>${({ self, peers }) => html`<h1>Peers</h1>
    ${peers.length === 0 ? html`<p class="empty">No peers known yet.</p>` : html`<table data-testid="peers">
      <thead><tr><th>DID</th><th>Addresses</th><th>Connected</th><th>Last hello</th><th>Score</th><th>RTT</th></tr></thead>
      <tbody>${peers.map(p => html`<tr data-peer=${p.id}>
        <td class="mono">${p.did ?? p.id}</td>
        <td class="mono">${p.addrs.slice(0, 3).map(a => html`<div>${a}</div>`)}</td>
        <td><span class=${`badge ${p.connected ? 'yes' : ''}`}>${p.connected ? 'yes' : 'no'}</span></td>
        <td>${when(p.lastHelloAt)}</td>
        <td>${typeof p.score === 'number' ? p.score.toFixed(2) : '–'}</td>
        <td data-testid="rtt" data-value=${typeof p.rttMs === 'number' ? p.rttMs : ''}>${typeof p.rttMs === 'number' ? `${p.rttMs < 10 ? p.rttMs.toFixed(1) : Math.round(p.rttMs)} ms` : '–'}</td>
      </tr>`)}</tbody></table>`}
    <h2>Connections</h2>
    <${PeerGraph} self=${self} peers=${peers} />`}<//>`
}

/** An allocation's output, following it live (long polls) while the view is open. */
function LogView ({ id }) {
  const [text, setText] = useState('')
  const [ended, setEnded] = useState(false)
  const pre = useRef(null)
  useEffect(() => {
    const ac = new AbortController()
    setText(''); setEnded(false)
    ;(async () => {
      let offset = 0
      // ends when the view closes (abort) or the allocation ended; each poll waits at most 20 s
      for (let i = 0; i < 100000 && !ac.signal.aborted; i++) {
        const c = await getJson(`/api/v1/ui/logs?id=${encodeURIComponent(id)}&offset=${offset}&wait=${i === 0 ? 0 : 1}`, ac.signal)
        if (c.data !== '') setText(t => (t + c.data).slice(-200000))
        offset = c.nextOffset
        if (c.ended) { setEnded(true); return }
      }
    })().catch(err => { if (!ac.signal.aborted) setText(t => t + `\n[${err.message}]`) })
    return () => ac.abort()
  }, [id])
  useEffect(() => { if (pre.current) pre.current.scrollTop = pre.current.scrollHeight }, [text])
  return html`<h2>Output of ${id} ${ended ? html`<span class="badge">ended</span>` : html`<span class="badge running">following</span>`}</h2>
    <pre class="logs" ref=${pre} data-testid="logs">${text}</pre>`
}

function Workloads ({ tick }) {
  const data = useData('/api/v1/ui/workloads', tick)
  const [selected, setSelected] = useState(undefined)
  return html`<${Loading} data=${data}>${({ allocations }) => html`<h1>Workloads</h1>
    ${allocations.length === 0 ? html`<p class="empty">No allocations on this node.</p>` : html`<table data-testid="allocations">
      <thead><tr><th>ID</th><th>Type</th><th>Executor</th><th>Status</th><th>CPU</th><th>RAM</th><th>Restarts</th><th>Started</th></tr></thead>
      <tbody>${allocations.map(a => html`<tr class=${`clickable ${selected === a.id ? 'selected' : ''}`} data-allocation=${a.id} onClick=${() => setSelected(a.id)}>
        <td class="mono">${a.id}</td><td>${a.type}</td><td>${a.executor}</td>
        <td><span class=${`badge ${a.status}`}>${a.status}</span></td>
        <td>${a.resources.cpuCores}</td><td>${bytes(a.resources.ramBytes)}</td><td>${a.restarts}</td><td>${when(a.startedAt)}</td>
      </tr>`)}</tbody></table>`}
    ${selected !== undefined ? html`<${LogView} id=${selected} />` : allocations.length > 0 ? html`<p class="empty">Select an allocation to follow its output.</p>` : ''}`}<//>`
}

function Deployments ({ tick }) {
  const data = useData('/api/v1/ui/deployments', tick)
  return html`<${Loading} data=${data}>${({ deployments }) => html`<h1>Deployments</h1>
    ${deployments.length === 0 ? html`<p class="empty">No deployments orchestrated by this node.</p>` : deployments.map(d => html`<div class="card" data-ensemble=${d.ensembleId}>
      <div class="label">Ensemble</div><div class="mono">${d.ensembleId}</div>
      <p><span class=${`badge ${d.status}`}>${d.status}</span> ${d.reason}</p>
      <h2>Timeline</h2>
      <ul class="timeline">${d.transitions.map(t => html`<li><span class="at">${when(t.at)}</span><span class=${`badge ${t.status}`}>${t.status}</span> ${t.reason}</li>`)}</ul>
      <h2>Allocations</h2>
      <table><thead><tr><th>Name</th><th>Node</th><th>Status</th><th>Restarts</th></tr></thead>
      <tbody>${Object.entries(d.allocations).map(([name, a]) => html`<tr><td>${name}</td><td class="mono">${a.peer ?? a.node}</td><td><span class=${`badge ${a.status}`}>${a.status}</span></td><td>${a.restarts}</td></tr>`)}</tbody></table>
    </div>`)}`}<//>`
}

/** Tokens by id (never their text), with their expiry. */
function Tokens ({ title, tokens, testid }) {
  return html`<h2>${title}</h2>${tokens.length === 0 ? html`<p class="empty">None.</p>` : html`<table data-testid=${testid}>
    <thead><tr><th>Token ID</th><th>Issuer → subject</th><th>Capabilities</th><th>Expiry</th></tr></thead>
    <tbody>${tokens.map(t => html`<tr data-token=${t.id}><td class="mono">${t.id}</td><td class="mono">${t.issuer}<br/>→ ${t.subject}</td><td class="mono">${t.capabilities.join(', ')}</td>
      <td data-expiry=${t.expiry}>${t.expiry} <span class="muted">(${relative(t.expiry)})</span> ${t.expired ? html`<span class="badge expired">expired</span>` : ''} ${t.revoked ? html`<span class="badge revoked">revoked</span>` : ''}</td></tr>`)}</tbody></table>`}`
}

function Trust ({ tick }) {
  const data = useData('/api/v1/ui/trust', tick)
  return html`<${Loading} data=${data}>${(c) => html`<h1>Trust</h1>
    <div class="card"><div class="label">Context</div><div class="mono">${c.context} ${c.did ?? ''}</div></div>
    <h2>Roots</h2>${c.roots.length === 0 ? html`<p class="empty">None.</p>` : html`<ul data-testid="roots">${c.roots.map(r => html`<li class="mono">${r}</li>`)}</ul>`}
    <${Tokens} title="Held (provide: granted to this node, presented when it calls others)" tokens=${c.provide} testid="provide" />
    <${Tokens} title="Issued (require: granted by this node's roots to others, accepted here)" tokens=${c.require} testid="require" />
    <${Tokens} title="Revoked" tokens=${c.revoked} testid="revoked" />
    <p class="mono">revocation records held: ${c.revocations ?? 0}</p>`}<//>`
}

const VIEWS = { overview: Overview, peers: Peers, workloads: Workloads, deployments: Deployments, trust: Trust }

function pageOf () {
  const p = location.hash.replace(/^#\/?/, '')
  return VIEWS[p] !== undefined ? p : 'overview'
}

function App () {
  const [page, setPage] = useState(pageOf())
  const events = useEvents()
  useEffect(() => {
    const on = () => setPage(pageOf())
    window.addEventListener('hashchange', on)
    return () => window.removeEventListener('hashchange', on)
  }, [])
  const View = VIEWS[page]
  return html`<header>
      <span class="brand">dms</span>
      <nav>${PAGES.map(([id, label]) => html`<a href=${`#/${id}`} class=${page === id ? 'active' : ''} data-page=${id}>${label}</a>`)}</nav>
      <span class=${`live ${events.live ? 'on' : ''}`} data-testid="live">${events.live ? 'live' : events.closed ? 'not live' : 'connecting…'}${events.last ? ` · ${events.last.type}` : ''}</span>
    </header>
    <main data-page=${page}><${View} tick=${events.count} /></main>`
}

// preact renders beside what the container holds: drop the static placeholder first
const root = document.getElementById('app')
root.textContent = ''
render(html`<${App} />`, root)
