import { runVerificationLocally } from '../../lambdas/adapters/local/local-verify';
import { backfillProgress } from '../../lambdas/core/backfill';
import { throttlePeriods } from '../../lambdas/core/backfill/control';
import { migrationStatus } from '../../lambdas/core/checklist';
import { controlSchema } from '../../lambdas/core/db';
import { phaseStates } from '../../lambdas/core/migration-state';
import { countV1Rows } from '../../lambdas/core/v1-schema';
import { runTotals } from '../../lambdas/core/verify';
import type { LoadStats } from './load';
import type { LocalEnvironment } from './local-environment';
import type { PhaseTiming, RehearsalReport } from './report';

type Env = Pick<LocalEnvironment, 'v1' | 'v2' | 'config' | 'deps' | 'parameters' | 'names' | 'source'>;

/**
 * The final comparison of every table, V1 against V2 (run before cleanup renames V1): row
 * counts and checksums per table, without repairing anything. Nothing to compare before the
 * backfill is complete.
 */
export async function finalComparison(env: Env): Promise<Pick<RehearsalReport, 'verification' | 'tables'>> {
  if (!(await backfillProgress(env.v2, env.config)).complete) {
    return { verification: { clean: false, mismatchedWindows: 0, runId: null }, tables: {} };
  }
  const final = await runVerificationLocally(
    { v1: env.v1, v2: env.v2, config: env.config },
    { repair: false },
  );
  const totals = await runTotals(env.v2, env.config, final.runId);
  return {
    verification: { clean: final.clean, mismatchedWindows: final.mismatches.length, runId: final.runId },
    tables: Object.fromEntries(
      Object.entries(totals).map(([name, t]) => [
        name,
        { v1: t.v1Rows, v2: t.v2Rows, v1Checksum: t.v1Checksum, v2Checksum: t.v2Checksum },
      ]),
    ),
  };
}

/** V1's row counts, when a rollback must have left V1 as it was (no synthetic writes). */
export async function v1Changes(env: Env, before: Record<string, number>): Promise<string | undefined> {
  const after: Record<string, number> = await countV1Rows(env.v1, 'public');
  for (const [table, n] of Object.entries(before)) {
    if (after[table] !== n) return `V1 table ${table} changed from ${n} to ${after[table]} rows`;
  }
  return undefined;
}

/**
 * The write switch as a step of the timeline, between CUTOVER and CLEANUP: from the writes
 * switching to V2 until they were switched back (`rolled-back`) or cleanup started (`done`).
 */
async function writeSwitchTiming(env: Env, cleanupStartedAt?: string): Promise<PhaseTiming> {
  const last = async (action: string) =>
    (
      await env.v2.query<{ at: Date }>(
        `SELECT at FROM ${controlSchema(env.config)}.audit_log WHERE action = $1 ORDER BY id DESC LIMIT 1`,
        [action],
      )
    ).rows[0]?.at;
  const switched = await last('writes.switched');
  if (!switched) return { phase: WRITE_SWITCH, status: 'pending', startedAt: '', seconds: null };
  const back = await last('writes.switched-back');
  const rolledBack = back !== undefined && back >= switched;
  const end = rolledBack ? back : cleanupStartedAt ? new Date(cleanupStartedAt) : undefined;
  return {
    phase: WRITE_SWITCH,
    status: rolledBack ? 'rolled-back' : 'done',
    startedAt: switched.toISOString(),
    ...(end ? { finishedAt: end.toISOString() } : {}),
    seconds: end ? (end.getTime() - switched.getTime()) / 1000 : null,
  };
}

/** The write switch's name among the phases of the report (and `write_switch` in the summary). */
export const WRITE_SWITCH = 'WRITE_SWITCH';

/** The audit events that tell how the migration was interrupted and went on. */
const INTERRUPTION_EVENTS = [
  'execution.ended',
  'lock.taken-over',
  'local.work-requeued',
  'phase.resumed',
  'verification.resumed',
  'cutover.continued',
];

/**
 * Each change of the V2 traffic parameter (cutover steps, rollback), from the audit log, with the
 * health gate that checked that level (the last `gate.checked` before the next change).
 */
async function trafficSteps(env: Env): Promise<RehearsalReport['traffic']> {
  const { rows } = await env.v2.query<{ at: Date; action: string; details: Record<string, unknown> }>(
    `SELECT at, action, details FROM ${controlSchema(env.config)}.audit_log
      WHERE (action = 'parameter.set' AND details->>'name' = $1) OR action = 'gate.checked' ORDER BY id`,
    [env.names.trafficPercentage],
  );
  const steps: RehearsalReport['traffic'] = [];
  for (const r of rows) {
    if (r.action === 'parameter.set') {
      steps.push({
        at: r.at.toISOString(),
        percentage: Number(r.details.to),
        why: String(r.details.why ?? ''),
      });
    } else if (steps.length > 0) {
      steps[steps.length - 1].gate = {
        at: r.at.toISOString(),
        healthy: r.details.healthy === true,
        reason: (r.details.reason as string | null) ?? null,
      };
    }
  }
  return steps;
}

/** What the run produced, gathered into the report (the checklist from the control schema). */
export async function buildReport(
  env: Env,
  run: {
    startedAt: Date;
    outcome: RehearsalReport['outcome'];
    error?: string;
    comparison: Pick<RehearsalReport, 'verification' | 'tables'>;
    samples: RehearsalReport['throughput']['samples'];
    failAt?: string;
    killedWorkers: number;
    load?: LoadStats;
  },
): Promise<RehearsalReport> {
  const ctx = { ...env.deps, actor: 'rehearsal' };
  const status = await migrationStatus(ctx);
  const phases: PhaseTiming[] = (await phaseStates(ctx)).map((p) => ({
    phase: p.phase,
    status: p.status,
    startedAt: p.startedAt ?? '',
    finishedAt: p.finishedAt,
    seconds: p.startedAt && p.finishedAt ? (Date.parse(p.finishedAt) - Date.parse(p.startedAt)) / 1000 : null,
  }));
  const cleanupStart = phases.find((p) => p.phase === 'CLEANUP')?.startedAt || undefined;
  phases.splice(
    phases.findIndex((p) => p.phase === 'CLEANUP'),
    0,
    await writeSwitchTiming(env, cleanupStart),
  );
  const rollback = (
    await env.v2.query<{ actor: string; details: { reason: string; requestedBy?: string } }>(
      `SELECT actor, details FROM ${controlSchema(env.config)}.audit_log WHERE action = 'rollback.done' ORDER BY id DESC LIMIT 1`,
    )
  ).rows[0];
  const interruptions = (
    await env.v2.query<{ at: Date; action: string; actor: string; details: Record<string, unknown> }>(
      `SELECT at, action, actor, details FROM ${controlSchema(env.config)}.audit_log
        WHERE action = ANY($1::text[]) ORDER BY id`,
      [INTERRUPTION_EVENTS],
    )
  ).rows.map((r) => ({ at: r.at.toISOString(), action: r.action, actor: r.actor, details: r.details }));
  const { tables, verification } = run.comparison;
  const backfill = phases.find((p) => p.phase === 'BACKFILL');
  const rows = Object.values(tables).reduce((a, t) => a + t.v1, 0);
  return {
    ok: run.outcome === 'COMPLETED' && verification.clean && !run.error && (run.load?.errors ?? 0) === 0,
    outcome: run.outcome,
    startedAt: run.startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    source: env.source,
    phases,
    trafficPercentage: Number((await env.parameters.get(env.names.trafficPercentage)) ?? 0),
    verification,
    tables,
    throughput: {
      backfillRowsPerSecond:
        backfill?.seconds && tables.telemetry ? Math.round(rows / backfill.seconds) : null,
      samples: run.samples,
    },
    checklist: status.checklist,
    faults: {
      failAt: run.failAt,
      killedWorkers: run.killedWorkers,
      ...(rollback
        ? {
            rollback: {
              // The alarm rule asks as `alarm` and names the alarm in the reason (`alarm:<name>`).
              actor:
                rollback.details.requestedBy === 'alarm' && rollback.details.reason.startsWith('alarm:')
                  ? rollback.details.reason
                  : (rollback.details.requestedBy ?? rollback.actor),
              execution: rollback.actor,
              reason: rollback.details.reason,
            },
          }
        : {}),
    },
    interruptions,
    traffic: await trafficSteps(env),
    throttlePeriods: await throttlePeriods(env.v2, env.config),
    ...(run.load ? { load: run.load } : {}),
    ...(run.error ? { error: run.error } : {}),
  };
}
