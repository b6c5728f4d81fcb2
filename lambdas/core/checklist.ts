import { controlSchema } from './db';
import { TABLE_ORDER } from './mapping';
import { backfillProgress } from './backfill';
import { cutoverStatus } from './cutover';
import { phaseStates, readParameter, type MigrationContext, type PhaseState } from './migration-state';
import { parameterNames } from '../ports/parameters';

/** One item of the migration guide's checklist, with the evidence the control schema holds. */
export interface ChecklistItem {
  item: string;
  done: boolean;
  at?: string;
  evidence: Record<string, unknown>;
}

export interface MigrationStatus {
  phases: PhaseState[];
  trafficPercentage: string | null;
  dualWrite: string | null;
  /** Which side the backend writes first (`v1` until the write switch). */
  writePrimary: string | null;
  lock: { holder: string | null; since: string | null };
  checklist: ChecklistItem[];
}

const iso = (d: Date | null | undefined) => (d ? d.toISOString() : undefined);

/** The status the CLI, the Migration state machine's `status` action and the rehearsal report. */
export async function migrationStatus(ctx: MigrationContext): Promise<MigrationStatus> {
  const c = controlSchema(ctx.config);
  const one = async <T extends Record<string, unknown>>(sql: string, params: unknown[] = []) =>
    (await ctx.v2.query<T>(sql, params)).rows[0] as T | undefined;
  const exists = await one<{ t: string | null }>(`SELECT to_regclass($1) AS t`, [
    `${ctx.config.schemas.control}.phase_runs`,
  ]);
  const phases = exists?.t ? await phaseStates(ctx) : [];
  const traffic = (await readParameter(ctx, 'trafficPercentage')) ?? null;
  const dualWrite = (await readParameter(ctx, 'dualWrite')) ?? null;
  if (!exists?.t) {
    return {
      phases,
      trafficPercentage: traffic,
      dualWrite,
      writePrimary: (await readParameter(ctx, 'writePrimary')) ?? null,
      lock: { holder: null, since: null },
      checklist: [],
    };
  }
  const backup = await one<{ id: string; kind: string; location: string; verified_at: Date }>(
    `SELECT id, kind, location, verified_at FROM ${c}.backups WHERE verified_at IS NOT NULL ORDER BY verified_at LIMIT 1`,
  );
  // The check of the backup (restored and compared, locally) as Phase 1 recorded it.
  const backupCheck = await one<{ details: { restoreCheck?: unknown; snapshotAt?: string } }>(
    `SELECT details FROM ${c}.audit_log WHERE action = 'backup.created' ORDER BY at LIMIT 1`,
  );
  // V2's own migration files, and the tables they and the storage choice create: the control
  // schema's migrations alone (which run first) do not make a V2.
  const schema = await one<{ n: string; last: Date }>(
    `SELECT count(*) AS n, max(applied_at) AS last FROM ${c}.schema_migrations WHERE migration_set = 'v2'`,
  );
  const v2Tables = ['tenants', ...TABLE_ORDER];
  const present = await one<{ tables: string[] }>(
    `SELECT coalesce(array_agg(t ORDER BY t), '{}') AS tables
       FROM unnest($1::text[]) AS t WHERE to_regclass(format('%I.%I', $2::text, t)) IS NOT NULL`,
    [v2Tables, ctx.config.schemas.v2],
  );
  const missingV2Tables = v2Tables.filter((t) => !present?.tables.includes(t));
  const storage = await one<{ kind: string; reason: string; chosen_at: Date }>(
    `SELECT kind, reason, chosen_at FROM ${c}.telemetry_storage`,
  );
  const tenant = await one<{ at: Date; details: Record<string, unknown> }>(
    `SELECT at, details FROM ${c}.audit_log WHERE action = 'tenant.created' ORDER BY at LIMIT 1`,
  );
  const dualOn = await one<{ at: Date }>(
    `SELECT at FROM ${c}.audit_log WHERE action = 'parameter.set' AND details->>'name' = $1 AND details->>'to' = 'on' ORDER BY at DESC LIMIT 1`,
    [`${ctx.config.ssmPrefix}/dual-write`],
  );
  const progress = await backfillProgress(ctx.v2, ctx.config);
  const backfillRun = phases.find((p) => p.phase === 'BACKFILL');
  const backfillResult = await one<{
    result: { rows?: number; rowsPerSecond?: number; seconds?: number } | null;
    finished_at: Date;
  }>(
    `SELECT result, finished_at FROM ${c}.phase_runs WHERE phase = 'BACKFILL' AND status = 'done' ORDER BY finished_at DESC LIMIT 1`,
  );
  const verification = await one<{
    id: string;
    finished_at: Date;
    report: { tables?: Record<string, unknown> };
  }>(
    `SELECT id, finished_at, report FROM ${c}.verification_runs WHERE status = 'passed' AND scope = 'full' ORDER BY finished_at DESC LIMIT 1`,
  );
  const cutover = await cutoverStatus(ctx);
  const gate = await one<{ at: Date; details: Record<string, unknown> }>(
    `SELECT at, details FROM ${c}.audit_log WHERE action = 'gate.checked' ORDER BY at DESC LIMIT 1`,
  );
  const rolledBack = await one<{ at: Date; actor: string; details: Record<string, unknown> }>(
    `SELECT at, actor, details FROM ${c}.audit_log WHERE action = 'rollback.done' ORDER BY at DESC LIMIT 1`,
  );
  const writesSwitched = await one<{ at: Date; details: Record<string, unknown> }>(
    `SELECT at, details FROM ${c}.audit_log WHERE action = 'writes.switched' ORDER BY id DESC LIMIT 1`,
  );
  const writePrimary = (await readParameter(ctx, 'writePrimary')) ?? null;
  const lock = await one<{ holder: string | null; acquired_at: Date | null }>(
    `SELECT holder, acquired_at FROM ${c}.migration_lock`,
  );
  const cutoverRan = phases.find((p) => p.phase === 'CUTOVER')?.status !== 'pending';
  // The schedule Phase 4 recorded when it started (the configured one alone is only a plan).
  const cutoverStarted = await one<{ at: Date }>(
    `SELECT at FROM ${c}.audit_log WHERE action = 'cutover.started' ORDER BY id DESC LIMIT 1`,
  );
  // The latest health gate that found V2 healthy (alarms on error rate and latency quiet, no
  // drift) while V2 served traffic: the traffic level last set before it was above 0 %.
  const healthyUnderTraffic = await one<{ at: Date; percentage: number }>(
    `SELECT g.at, (t.details->>'to')::int AS percentage
       FROM ${c}.audit_log g
       CROSS JOIN LATERAL (
         SELECT details FROM ${c}.audit_log p
          WHERE p.action = 'parameter.set' AND p.details->>'name' = $1 AND p.id < g.id
          ORDER BY p.id DESC LIMIT 1) t
      WHERE g.action = 'gate.checked' AND g.details->>'healthy' = 'true'
        AND t.details->>'to' ~ '^[0-9]+$' AND (t.details->>'to')::int > 0
      ORDER BY g.id DESC LIMIT 1`,
    [parameterNames(ctx.config.ssmPrefix).trafficPercentage],
  );
  const rowsPerSecond = backfillResult?.result?.rowsPerSecond ?? 0;

  const checklist: ChecklistItem[] = [
    {
      item: 'backup created',
      done: Boolean(backup),
      at: iso(backup?.verified_at),
      evidence: backup
        ? {
            kind: backup.kind,
            location: backup.location,
            ...(backupCheck?.details.snapshotAt ? { snapshotAt: backupCheck.details.snapshotAt } : {}),
            ...(backupCheck?.details.restoreCheck ? { restoreCheck: backupCheck.details.restoreCheck } : {}),
          }
        : {},
    },
    {
      item: 'V2 schema deployed',
      done: Number(schema?.n ?? 0) > 0 && missingV2Tables.length === 0,
      at: iso(schema?.last),
      evidence: {
        migrationFiles: Number(schema?.n ?? 0),
        schema: ctx.config.schemas.v2,
        ...(missingV2Tables.length > 0 ? { missingTables: missingV2Tables } : {}),
      },
    },
    {
      item: 'TimescaleDB or fallback configured',
      done: Boolean(storage),
      at: iso(storage?.chosen_at),
      evidence: storage ? { kind: storage.kind, reason: storage.reason } : {},
    },
    {
      item: 'default tenant created',
      done: Boolean(tenant),
      at: iso(tenant?.at),
      evidence: tenant?.details ?? {},
    },
    {
      item: 'dual-write on',
      done: dualWrite === 'on' || Boolean(dualOn && cutoverRan),
      at: iso(dualOn?.at),
      evidence: { value: dualWrite },
    },
    {
      item: 'history migrated',
      done: progress.complete && backfillRun?.status === 'done',
      at: iso(backfillResult?.finished_at),
      evidence: {
        windows: progress.windowsTotal,
        windowsDone: progress.windowsDone,
        rows: progress.rowsCopied,
      },
    },
    {
      item: 'verification passed',
      done: Boolean(verification),
      at: iso(verification?.finished_at),
      evidence: verification
        ? { run: Number(verification.id), tables: verification.report?.tables ?? {} }
        : {},
    },
    {
      // The backfill's measured rate, and V2 found healthy by the gate while serving traffic.
      item: 'performance checked',
      done: rowsPerSecond > 0 && Boolean(healthyUnderTraffic),
      at: iso(healthyUnderTraffic?.at),
      evidence: {
        ...(backfillResult?.result
          ? { rowsPerSecond: backfillResult.result.rowsPerSecond, seconds: backfillResult.result.seconds }
          : {}),
        ...(healthyUnderTraffic
          ? { healthyGate: { at: iso(healthyUnderTraffic.at), percentage: healthyUnderTraffic.percentage } }
          : {}),
      },
    },
    {
      item: 'rollout schedule set',
      done: cutover.status !== 'idle' && Boolean(cutoverStarted),
      at: iso(cutoverStarted?.at),
      evidence: {
        schedule: cutover.schedule,
        source: cutover.status === 'idle' ? 'configuration (not yet recorded by Phase 4)' : 'cutover_state',
      },
    },
    {
      item: 'alarms configured',
      done: Boolean(gate),
      at: iso(gate?.at),
      evidence: gate ? { lastGate: gate.details } : {},
    },
    {
      item: 'writes switched to V2 (V1 mirrored)',
      done: Boolean(writesSwitched),
      at: iso(writesSwitched?.at),
      evidence: {
        writePrimary,
        ...(writesSwitched ? { verification: writesSwitched.details.verification } : {}),
      },
    },
    {
      item: 'rollback rehearsed',
      done: Boolean(rolledBack),
      at: iso(rolledBack?.at),
      evidence: rolledBack ? { actor: rolledBack.actor, ...rolledBack.details } : {},
    },
  ];
  return {
    phases,
    trafficPercentage: traffic,
    dualWrite,
    writePrimary,
    lock: { holder: lock?.holder ?? null, since: iso(lock?.acquired_at) ?? null },
    checklist,
  };
}
