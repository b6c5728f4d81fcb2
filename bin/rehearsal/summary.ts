import { resolve } from 'node:path';
import { DEFAULT_LOCAL_DIR } from './options';
import type { RehearsalReport } from './report';

/** What a rehearsal returns: its report, where the report was written, and its exit status. */
export interface RehearsalResult {
  report: RehearsalReport;
  paths: { json: string; html: string };
  /** 0: migrated; 3: rolled back (as rehearsed with --fail-at); 1: failed. */
  exitCode: number;
  /** Where the embedded database was kept (`--keep-db`). */
  keptIn?: string;
}

/** The `--json` summary line: the shape the README documents. */
export function summaryLine(result: RehearsalResult): Record<string, unknown> {
  const r = result.report;
  return {
    ok: r.ok,
    outcome: r.outcome,
    phases: Object.fromEntries(r.phases.map((p) => [p.phase.toLowerCase(), p.status])),
    trafficPercentage: r.trafficPercentage,
    verification: { clean: r.verification.clean, mismatchedWindows: r.verification.mismatchedWindows },
    tables: Object.fromEntries(Object.entries(r.tables).map(([name, t]) => [name, { v1: t.v1, v2: t.v2 }])),
    ...(r.load ? { load: r.load } : {}),
    report: result.paths,
  };
}

/**
 * Why an unticked checklist item is expected in this run, so a clean run does not read as an
 * incomplete one.
 */
function expectedUnticked(item: string, report: RehearsalReport): string | undefined {
  if (item === 'rollback rehearsed' && !report.faults.rollback) {
    return 'expected: this run did not roll back; rehearse one with --fail-at cutover:25';
  }
  return undefined;
}

/** The summary a rehearsal prints when it ends: outcome, phases, tables, checklist, report path. */
export function summaryLines(result: RehearsalResult): string[] {
  const r = result.report;
  const verification = r.verification.clean
    ? 'clean'
    : `${r.verification.mismatchedWindows} mismatched window(s)`;
  const lines = [
    '',
    `Rehearsal ${r.outcome}${r.error ? ` (${r.error})` : ''}: traffic to V2 ${r.trafficPercentage} %, verification ${verification}`,
    'Phases:',
    ...r.phases.map((p) =>
      `  ${p.phase.padEnd(12)} ${p.status.padEnd(11)} ${p.seconds === null ? '' : `${p.seconds.toFixed(1)} s`}`.trimEnd(),
    ),
    'Tables (V1 → V2, rows and checksums):',
    ...Object.entries(r.tables).map(
      ([name, t]) =>
        `  ${name.padEnd(10)} ${String(t.v1).padStart(9)} → ${String(t.v2).padEnd(9)} ` +
        (t.v1Checksum === t.v2Checksum
          ? 'checksums equal'
          : `checksums differ (${t.v1Checksum} / ${t.v2Checksum})`),
    ),
  ];
  if (r.throughput.backfillRowsPerSecond)
    lines.push(`Backfill throughput: ${r.throughput.backfillRowsPerSecond.toLocaleString('en-US')} rows/s`);
  if (r.faults.killedWorkers) lines.push(`Workers killed mid-window: ${r.faults.killedWorkers}`);
  if (r.faults.rollback) lines.push(`Rollback by ${r.faults.rollback.actor}: ${r.faults.rollback.reason}`);
  if (r.load)
    lines.push(
      `Synthetic backend: ${r.load.operations} operations, ${r.load.errors} caller errors, ${r.load.v2Failures} V2 failures repaired`,
    );
  lines.push('Checklist:');
  for (const c of r.checklist) {
    const note = c.done ? undefined : expectedUnticked(c.item, r);
    lines.push(`  ${c.done ? '[x]' : '[ ]'} ${c.item}${note ? ` — ${note}` : ''}`);
  }
  lines.push(`Report: ${result.paths.html}`);
  if (result.keptIn) {
    const local =
      resolve(result.keptIn) === resolve(DEFAULT_LOCAL_DIR)
        ? '--local'
        : `--local --local-dir ${result.keptIn}`;
    lines.push(
      `Database kept in ${result.keptIn}: continue with \`npm run migrate -- status ${local}\` ` +
        `(remove it with \`npm run migrate -- reset ${local}\`)`,
    );
  }
  return lines;
}
