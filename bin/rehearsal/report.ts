import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { ChecklistItem } from '../../lambdas/core/checklist';
import type { LoadStats } from './load';

/**
 * The rollback a run saw: who asked (the alarm, `cli:<user>`; the audit log's `requestedBy`),
 * the execution that acted (the audit log's actor) and why.
 */
export interface RollbackFault {
  actor: string;
  execution: string;
  reason: string;
}

export interface PhaseTiming {
  phase: string;
  status: string;
  startedAt: string;
  finishedAt?: string;
  seconds: number | null;
}

export interface RehearsalReport {
  ok: boolean;
  outcome: 'COMPLETED' | 'ROLLED_BACK' | 'FAILED';
  startedAt: string;
  finishedAt: string;
  source: 'embedded' | 'given';
  phases: PhaseTiming[];
  trafficPercentage: number;
  verification: { clean: boolean; mismatchedWindows: number; runId: number | null };
  tables: Record<string, { v1: number; v2: number; v1Checksum: string; v2Checksum: string }>;
  throughput: {
    backfillRowsPerSecond: number | null;
    samples: { t: number; rowsPerSecond: number; rows: number }[];
  };
  checklist: ChecklistItem[];
  faults: { failAt?: string; killedWorkers: number; rollback?: RollbackFault };
  load?: LoadStats;
  error?: string;
  /** What interrupted the migration and how it went on: lock take-overs, resumed phases, requeued work. */
  interruptions: { at: string; action: string; actor: string; details: Record<string, unknown> }[];
  /** Each change of V2's traffic share (cutover steps, rollback), and the health gate at that level. */
  traffic: {
    at: string;
    percentage: number;
    why: string;
    gate?: { at: string; healthy: boolean; reason: string | null };
  }[];
  /** When the workers were held back (paused by ops, under a ceiling, V1 under pressure), and why. */
  throttlePeriods: { state: string; cause: string; startedAt: string; endedAt: string | null }[];
}

const escape = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
/** Bar colours follow the outcome: a failed or rolled-back phase is red, a finished one green. */
const STATUS_COLORS: Record<string, string> = {
  done: '#4f8f4f',
  failed: '#c0392b',
  'rolled-back': '#c0392b',
  running: '#d79b00',
};
const statusColor = (status: string) => STATUS_COLORS[status] ?? '#999999';

/**
 * The phases on one time axis, as SVG, and under them, on the same axis, the V2 traffic share
 * step by step with each health gate's result (✔ healthy, ✘ unhealthy, with its reason).
 */
function timeline(report: RehearsalReport): string {
  const timed = report.phases.filter((p) => p.seconds !== null);
  if (timed.length === 0) return '<p>No phase ran.</p>';
  const traffic = report.traffic ?? [];
  const times = [
    ...timed.flatMap((p) => [Date.parse(p.startedAt), Date.parse(p.finishedAt ?? p.startedAt)]),
    ...traffic.flatMap((s) => [Date.parse(s.at), ...(s.gate ? [Date.parse(s.gate.at)] : [])]),
  ];
  const start = Math.min(...times);
  const end = Math.max(...times, start + 1);
  const width = 800;
  const x = (t: number) => 120 + ((t - start) / (end - start)) * (width - 140);
  const rows = timed
    .map((p, i) => {
      const x0 = x(Date.parse(p.startedAt));
      const x1 = Math.max(x0 + 2, x(Date.parse(p.finishedAt ?? p.startedAt)));
      const y = 10 + i * 30;
      return `<g class="phase"><text x="0" y="${y + 15}">${escape(p.phase)}</text>
        <rect class="phase-bar status-${escape(p.status)}" data-phase="${escape(p.phase)}" data-status="${escape(p.status)}" x="${x0.toFixed(1)}" y="${y}" width="${(x1 - x0).toFixed(1)}" height="20" fill="${statusColor(p.status)}"><title>${escape(p.phase)}: ${p.seconds?.toFixed(1)} s (${escape(p.status)})</title></rect>
        <text x="${(x1 + 4).toFixed(1)}" y="${y + 15}">${p.seconds?.toFixed(1)} s · ${escape(p.status)}</text></g>`;
    })
    .join('\n');
  const laneTop = 10 + timed.length * 30 + 10;
  const laneHeight = 80;
  const y = (pct: number) => laneTop + laneHeight - (pct / 100) * laneHeight;
  let lane = '';
  if (traffic.length > 0) {
    let path = `${x(start).toFixed(1)},${y(0).toFixed(1)}`;
    let level = 0;
    for (const step of traffic) {
      const sx = x(Date.parse(step.at)).toFixed(1);
      path += ` ${sx},${y(level).toFixed(1)} ${sx},${y(step.percentage).toFixed(1)}`;
      level = step.percentage;
    }
    path += ` ${x(end).toFixed(1)},${y(level).toFixed(1)}`;
    const marks = traffic
      .map((step) => {
        const sx = x(Date.parse(step.at));
        const label = `<text class="traffic-label" x="${(sx + 3).toFixed(1)}" y="${(y(step.percentage) - 4).toFixed(1)}">${step.percentage} %</text>`;
        if (!step.gate) return label;
        const gx = x(Date.parse(step.gate.at));
        const ok = step.gate.healthy;
        const title = `health gate at ${step.percentage} %: ${ok ? 'healthy' : `unhealthy (${step.gate.reason ?? 'no reason given'})`}`;
        return `${label}<g class="gate ${ok ? 'gate-healthy' : 'gate-unhealthy'}" data-level="${step.percentage}"><circle cx="${gx.toFixed(1)}" cy="${y(step.percentage).toFixed(1)}" r="6" fill="${ok ? STATUS_COLORS.done : STATUS_COLORS.failed}"><title>${escape(title)}</title></circle><text x="${(gx - 4).toFixed(1)}" y="${(y(step.percentage) + 4).toFixed(1)}" fill="#fff">${ok ? '✔' : '✘'}</text></g>`;
      })
      .join('');
    lane = `<g id="traffic"><text x="0" y="${laneTop + laneHeight / 2}">traffic to V2</text>
      <line x1="120" y1="${y(0)}" x2="${width - 20}" y2="${y(0)}" stroke="#ccc"/>
      <polyline class="traffic-steps" fill="none" stroke="#2a7ae2" stroke-width="2" points="${path}"/>${marks}</g>`;
  }
  const height = laneTop + (traffic.length > 0 ? laneHeight + 20 : 0);
  return `<svg id="timeline" role="img" aria-label="Phase timeline and traffic steps" width="${width + 100}" height="${height}" xmlns="http://www.w3.org/2000/svg">${rows}${lane}</svg>
<p class="legend"><span style="color:${STATUS_COLORS.done}">■ done</span> · <span style="color:${STATUS_COLORS.failed}">■ failed or rolled back</span> · <span style="color:${STATUS_COLORS.running}">■ interrupted or running</span> · gates: ✔ healthy, ✘ unhealthy</p>`;
}

/** The traffic steps as a list: when, to what share, why, and the gate's result. */
function trafficList(report: RehearsalReport): string {
  return listSection(
    'traffic-steps',
    'Traffic steps and health gates',
    (report.traffic ?? []).map(
      (s) =>
        `${s.at} · traffic to V2 ${s.percentage} % (${s.why})` +
        (s.gate
          ? ` · gate: ${s.gate.healthy ? 'healthy' : `UNHEALTHY (${s.gate.reason ?? 'no reason given'})`}`
          : ''),
    ),
  );
}

/** Backfill throughput over time, as an SVG line chart. */
function chart(report: RehearsalReport): string {
  const samples = report.throughput.samples;
  if (samples.length < 2) return '<p>Too few samples for a chart.</p>';
  const width = 800;
  const height = 240;
  const maxT = Math.max(...samples.map((s) => s.t), 1);
  const maxR = Math.max(...samples.map((s) => s.rowsPerSecond), 1);
  const px = (t: number) => 50 + (t / maxT) * (width - 70);
  const py = (r: number) => height - 30 - (r / maxR) * (height - 50);
  const points = samples.map((s) => `${px(s.t).toFixed(1)},${py(s.rowsPerSecond).toFixed(1)}`).join(' ');
  // Throttle periods as bands behind the line: the samples' t counts from the backfill's start.
  const backfill = report.phases.find((p) => p.phase === 'BACKFILL' && p.startedAt);
  const origin = backfill ? Date.parse(backfill.startedAt) : NaN;
  const end = backfill?.finishedAt ? Date.parse(backfill.finishedAt) : origin + maxT * 1000;
  const bands = Number.isNaN(origin)
    ? ''
    : report.throttlePeriods
        .map((p) => {
          const from = Math.max(0, (Date.parse(p.startedAt) - origin) / 1000);
          const to = Math.min(maxT, ((p.endedAt ? Date.parse(p.endedAt) : end) - origin) / 1000);
          if (!(to > from)) return '';
          return `<rect class="throttle" data-state="${escape(p.state)}" x="${px(from).toFixed(1)}" y="20" width="${(px(to) - px(from)).toFixed(1)}" height="${height - 50}" fill="#f0ad4e" fill-opacity="0.3"><title>${escape(`${p.state}: ${p.cause}`)}</title></rect>`;
        })
        .join('');
  return `<svg id="throughput" role="img" aria-label="Backfill throughput" width="${width}" height="${height}" xmlns="http://www.w3.org/2000/svg">${bands}
    <line x1="50" y1="${height - 30}" x2="${width - 20}" y2="${height - 30}" stroke="#333"/>
    <line x1="50" y1="20" x2="50" y2="${height - 30}" stroke="#333"/>
    <text x="55" y="15">${Math.round(maxR).toLocaleString('en-US')} rows/s</text>
    <text x="${width - 80}" y="${height - 10}">${maxT.toFixed(0)} s</text>
    <polyline class="series" fill="none" stroke="#2a7ae2" stroke-width="2" points="${points}"/>
  </svg>`;
}

/** A titled list, or nothing when it is empty. */
function listSection(id: string, title: string, items: string[]): string {
  if (items.length === 0) return '';
  return `<h2>${escape(title)}</h2><ul id="${id}">${items.map((i) => `<li>${escape(i)}</li>`).join('')}</ul>`;
}

export function renderHtml(report: RehearsalReport): string {
  const tableRows = Object.entries(report.tables)
    .map(
      ([name, t]) =>
        `<tr><td>${escape(name)}</td><td>${t.v1.toLocaleString('en-US')}</td><td>${t.v2.toLocaleString('en-US')}</td><td><code>${escape(t.v1Checksum)}</code></td><td><code>${escape(t.v2Checksum)}</code></td><td>${t.v1 === t.v2 && t.v1Checksum === t.v2Checksum ? '✔' : '✘'}</td></tr>`,
    )
    .join('');
  const checklist = report.checklist
    .map(
      (c) =>
        `<li class="${c.done ? 'done' : 'todo'}">${c.done ? '☑' : '☐'} ${escape(c.item)}${c.at ? ` <small>${escape(c.at)}</small>` : ''}</li>`,
    )
    .join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Migration rehearsal ${escape(report.startedAt)}</title>
<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:960px}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}.done{color:#2a7a2a}.todo{color:#a33}svg text{font-size:12px}</style>
</head><body>
<h1>Migration rehearsal: ${escape(report.outcome)}</h1>
<p>${escape(report.startedAt)} → ${escape(report.finishedAt)} · traffic to V2: <b>${report.trafficPercentage} %</b> · verification: <b>${report.verification.clean ? 'clean' : `${report.verification.mismatchedWindows} mismatched window(s)`}</b>${report.error ? ` · error: ${escape(report.error)}` : ''}</p>
<h2>Timeline</h2>${timeline(report)}
${trafficList(report)}
<h2>Backfill throughput</h2>${chart(report)}
<p>Average: ${report.throughput.backfillRowsPerSecond?.toLocaleString('en-US') ?? '–'} rows/s</p>
<h2>Tables</h2><table><tr><th>table</th><th>V1 rows</th><th>V2 rows</th><th>V1 checksum</th><th>V2 checksum</th><th></th></tr>${tableRows}</table>
<h2>Checklist</h2><ul>${checklist}</ul>
${listSection(
  'interruptions',
  'Interruptions and resumes',
  report.interruptions.map((e) => `${e.at} · ${e.action} · ${e.actor} · ${JSON.stringify(e.details)}`),
)}
${listSection(
  'throttle',
  'Throttle periods',
  report.throttlePeriods.map(
    (p) => `${p.startedAt} → ${p.endedAt ?? 'still held back'} · ${p.state}: ${p.cause}`,
  ),
)}
${report.load ? `<h2>Synthetic backend</h2><p>${report.load.operations} operations, ${report.load.errors} errors seen by callers, ${report.load.v2Failures} V2 failures repaired later (${report.load.repaired} repairs).</p>` : ''}
<script type="application/json" id="report">${JSON.stringify(report).replace(/</g, '\\u003c')}</script>
</body></html>`;
}

/** Writes the report as JSON and as a self-contained HTML page; returns their paths. */
export function writeReport(report: RehearsalReport, directory: string): { json: string; html: string } {
  const dir = resolve(directory);
  mkdirSync(dir, { recursive: true });
  const stamp = report.startedAt.replace(/[-:]/g, '').replace(/\..*/, '');
  const json = join(dir, `rehearsal-${stamp}.json`);
  const html = join(dir, `rehearsal-${stamp}.html`);
  writeFileSync(json, JSON.stringify(report, null, 2));
  writeFileSync(html, renderHtml(report));
  return { json, html };
}
