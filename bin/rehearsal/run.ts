import type { Pool } from 'pg';
import { startLocalPostgres, type LocalPostgres } from '../../lambdas/adapters/local/embedded-pg';
import { LocalAlarms } from '../../lambdas/adapters/local/local-alarms';
import { startLocalWorkers } from '../../lambdas/adapters/local/local-workers';
import {
  LocalStateMachines,
  type LocalExecution,
  type MachineName,
} from '../../lambdas/adapters/local/local-state-machines';
import { runVerificationLocally } from '../../lambdas/adapters/local/local-verify';
import { MemoryParameters } from '../../lambdas/adapters/local/memory-parameters';
import { LocalBackup } from '../../lambdas/adapters/local/pg-backup';
import { applyV1Schema, generateV1 } from '../../lambdas/adapters/local/v1-generator';
import { backfillProgress } from '../../lambdas/core/backfill';
import { migrationStatus } from '../../lambdas/core/checklist';
import { parseConfig, type MigrationConfig } from '../../lambdas/core/config';
import { APPLICATION_NAME, controlSchema, openPool } from '../../lambdas/core/db';
import { InvalidInputError } from '../../lambdas/core/errors';
import { phaseStates } from '../../lambdas/core/migration-state';
import type { OrchestratorDeps } from '../../lambdas/core/orchestrator';
import { countV1Rows } from '../../lambdas/core/v1-schema';
import { runTotals } from '../../lambdas/core/verify';
import type { BatchHandler } from '../../lambdas/ports/queue';
import { parameterNames } from '../../lambdas/ports/parameters';
import { synthesizeDefinitions } from '../../lib/local-definitions';
import { SyntheticBackend } from './load';
import { writeReport, type RehearsalReport } from './report';

export interface RehearsalOptions {
  v1Url?: string;
  v2Url?: string;
  devices: number;
  telemetry: number;
  seed: number;
  /** `cutover:<percentage>`: the health gate turns unhealthy at that traffic level. */
  failAt?: string;
  killWorkers: boolean;
  dualWriteLoad?: number;
  includeCleanup: boolean;
  bakeSeconds: number;
  concurrency: number;
  windowRows: number;
  reportDir: string;
  /** Where progress goes (stdout by default). */
  print: (line: string) => void;
  /** Whether progress may redraw one line (a terminal). */
  tty: boolean;
}

export interface RehearsalResult {
  report: RehearsalReport;
  paths: { json: string; html: string };
  /** 0: migrated; 3: rolled back (as rehearsed with --fail-at); 1: failed. */
  exitCode: number;
}

/** The `--json` summary line: the shape the README documents. */
export function summaryLine(result: RehearsalResult): Record<string, unknown> {
  const r = result.report;
  const phases = Object.fromEntries(
    r.phases.map((p) => [p.phase.toLowerCase(), p.status === 'done' ? 'done' : p.status]),
  );
  return {
    ok: r.ok,
    outcome: r.outcome,
    phases,
    trafficPercentage: r.trafficPercentage,
    verification: { clean: r.verification.clean, mismatchedWindows: r.verification.mismatchedWindows },
    tables: Object.fromEntries(Object.entries(r.tables).map(([name, t]) => [name, { v1: t.v1, v2: t.v2 }])),
    ...(r.load ? { load: r.load } : {}),
    report: result.paths,
  };
}

/** The rehearsal's cutover levels (the production schedule's default, with short bake times). */
export const REHEARSAL_LEVELS = [10, 25, 50, 100];

function parseFailAt(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const match = /^cutover:(\d{1,3})$/.exec(value);
  if (!match || !REHEARSAL_LEVELS.includes(Number(match[1]))) {
    throw new InvalidInputError('command-line flags', [
      {
        field: '--fail-at',
        problem: `must be cutover:<level>, a level being one of ${REHEARSAL_LEVELS.join(', ')} (e.g. cutover:25)`,
      },
    ]);
  }
  return Number(match[1]);
}

const bar = (done: number, total: number, width = 24) => {
  const filled = total > 0 ? Math.round((done / total) * width) : 0;
  return `${'█'.repeat(filled)}${'░'.repeat(width - filled)}`;
};

/**
 * The whole migration on one machine: embedded PostgreSQL (or given databases), V1 generated
 * when empty, then the synthesized Migration and Cutover state machines executed locally with
 * the real handlers, the local queue and a local parameter store, through all five phases.
 */
export async function runRehearsal(options: RehearsalOptions): Promise<RehearsalResult> {
  const failAt = parseFailAt(options.failAt);
  if (Boolean(options.v1Url) !== Boolean(options.v2Url)) {
    throw new InvalidInputError('command-line flags', [
      { field: '--v1-url/--v2-url', problem: 'give both, or neither' },
    ]);
  }
  const startedAt = new Date();
  const print = options.print;
  let pg: LocalPostgres | undefined;
  let v1: Pool | undefined;
  let v2: Pool | undefined;
  let stopWorkers: (() => Promise<void>) | undefined;
  let backend: SyntheticBackend | undefined;
  const progressTimer: { t?: NodeJS.Timeout } = {};
  try {
    let v1Url = options.v1Url;
    let v2Url = options.v2Url;
    if (!v1Url || !v2Url) {
      print('starting embedded PostgreSQL…');
      pg = await startLocalPostgres();
      await pg.createDatabase('v1');
      await pg.createDatabase('v2');
      v1Url = pg.url('v1');
      v2Url = pg.url('v2');
    }
    v1 = await openPool({ url: v1Url }, 'V1', { max: 8 });
    v2 = await openPool({ url: v2Url }, 'V2', { max: 8 });
    const v1Pool = v1;
    const v2Pool = v2;

    const hasV1 = (await v1Pool.query(`SELECT to_regclass('public.device_data') AS t`)).rows[0].t;
    if (!hasV1) {
      print(
        `V1 is empty: generating ${options.devices.toLocaleString('en-US')} devices and ${options.telemetry.toLocaleString('en-US')} telemetry rows (seed ${options.seed})…`,
      );
      await applyV1Schema(v1Pool);
      const generated = await generateV1(v1Pool, {
        devices: options.devices,
        telemetry: options.telemetry,
        seed: options.seed,
        onProgress: (n) =>
          !options.tty &&
          n % 500_000 === 0 &&
          print(`  generated ${n.toLocaleString('en-US')} telemetry rows`),
      });
      print(
        `V1 generated in ${generated.seconds.toFixed(1)} s (${generated.telemetryRowsPerSec.toLocaleString('en-US')} telemetry rows/s)`,
      );
    }
    const v1Before = await countV1Rows(v1Pool, 'public');

    const config: MigrationConfig = parseConfig({
      v1: { url: v1Url },
      v2: { url: v2Url },
      batch: { concurrency: options.concurrency, telemetryWindowRows: options.windowRows },
      cutover: {
        schedule: REHEARSAL_LEVELS.map((percentage) => ({ percentage, bakeSeconds: options.bakeSeconds })),
        soakMinutes: 0,
      },
      backup: { mode: 'auto', directory: `${options.reportDir}/backups` },
    });
    print('synthesizing the CDK app’s state machines…');
    const definitions = synthesizeDefinitions();
    const names = parameterNames(config.ssmPrefix);
    const parameters = new MemoryParameters({ [names.trafficPercentage]: '0', [names.dualWrite]: 'off' });
    const alarms = new LocalAlarms();

    let killed = 0;
    let deliveries = 0;
    const killer =
      (handler: BatchHandler): BatchHandler =>
      async (records) => {
        const first = records.find((r) => r.receiveCount === 1 && r.body.includes('copy-window'));
        if (first && ++deliveries % 3 === 1) {
          // Crash this worker's session in the middle of its window, as a Lambda timeout would.
          const timer = setTimeout(() => {
            void v2Pool
              .query(
                `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                WHERE datname = current_database() AND application_name = $1 AND query LIKE 'COPY%' AND pid <> pg_backend_pid()`,
                [APPLICATION_NAME],
              )
              .then((r) => {
                killed += r.rowCount ?? 0;
              })
              .catch(() => undefined);
          }, 15);
          try {
            return await handler(records);
          } finally {
            clearTimeout(timer);
          }
        }
        return handler(records);
      };
    const workers = startLocalWorkers(
      { v1: v1Pool, v2: v2Pool, config },
      options.killWorkers ? { wrapHandler: killer } : {},
    );
    stopWorkers = workers.stop;

    const deps: OrchestratorDeps = {
      v1: v1Pool,
      v2: v2Pool,
      config,
      parameters,
      alarms,
      queue: workers.queue,
      backup: new LocalBackup({
        v1Url,
        v1Schema: 'public',
        mode: 'auto',
        directory: config.backup.directory,
      }),
    };

    let currentState = '';
    let lastPrinted = '';
    let machineRunning: MachineName | '' = '';
    const samples: RehearsalReport['throughput']['samples'] = [];
    let lastLine = '';
    const sample = async () => {
      const p = await backfillProgress(v2Pool, config).catch(() => undefined);
      if (!p?.planned) return undefined;
      const last = samples[samples.length - 1];
      if (!last || last.rows !== p.rowsCopied || !p.complete) {
        samples.push({ t: p.elapsedSeconds, rowsPerSecond: p.rowsPerSecond, rows: p.rowsCopied });
      }
      return p;
    };
    const show = async () => {
      let line = `[${machineRunning || 'rehearsal'}] ${currentState}`;
      if (/backfill/i.test(currentState)) {
        const p = await sample();
        if (p) {
          line = `[BACKFILL] ${bar(p.windowsDone, p.windowsTotal)} ${p.windowsDone}/${p.windowsTotal} windows · ${p.rowsCopied.toLocaleString('en-US')} rows · ${p.rowsPerSecond.toLocaleString('en-US')} rows/s · ETA ${p.etaSeconds ?? '?'} s`;
        }
      } else if (machineRunning === 'cutover') {
        line = `[CUTOVER] ${currentState} · traffic to V2 ${(await parameters.get(names.trafficPercentage)) ?? 0} %`;
      }
      if (options.tty) process.stdout.write(`\r${line.padEnd(110).slice(0, 140)}`);
      else if (line !== lastLine) print(line);
      lastLine = line;
    };
    let ticks = 0;
    // Samples for the throughput chart every 250 ms; a progress line every 2 s (0.5 s on a terminal).
    progressTimer.t = setInterval(() => {
      ticks++;
      if (options.tty ? ticks % 2 === 0 : ticks % 8 === 0) void show();
      else if (/backfill/i.test(currentState)) void sample();
    }, 250);

    const machines = new LocalStateMachines(definitions, deps, {
      waits: { '*': 150, Bake: options.bakeSeconds * 1000 },
      retryMs: 200,
      onState: (machine, state) => {
        machineRunning = machine;
        // The backfill's last figures, as it ends.
        if (/backfill/i.test(currentState) && !/backfill/i.test(state)) void sample();
        if (state !== currentState) {
          currentState = state;
          // Choices, waits and polls are plumbing: the progress line covers them.
          if (!/^(Wait|Check|Find|Which|Held: wait)|\?$/.test(state) && state !== lastPrinted) {
            if (options.tty) process.stdout.write('\n');
            print(`[${machine}] ${state}`);
            lastPrinted = state;
          }
        }
      },
      wrapTask: async (event, run) => {
        if (failAt !== undefined && event.task === 'health-gate') {
          const traffic = Number(await parameters.get(names.trafficPercentage));
          if (traffic === failAt) alarms.raise('RehearsalFault', `injected by --fail-at cutover:${failAt}`);
        }
        return run();
      },
    });

    const executions: LocalExecution[] = [];
    const execute = async (machine: MachineName, input: Record<string, unknown>) => {
      const run = await machines.run(machine, input);
      executions.push(run);
      print(`[${machine}] ${run.status}${run.error ? `: ${run.error}: ${run.cause}` : ''}`);
      return run;
    };

    let outcome: RehearsalReport['outcome'] = 'FAILED';
    let error: string | undefined;
    const first = await execute('migration', { action: 'advance', through: 'PREPARE' });
    if (first.status === 'SUCCEEDED') {
      if (options.dualWriteLoad) {
        backend = new SyntheticBackend(v1Pool, v2Pool, parameters, {
          perSecond: options.dualWriteLoad,
          prefix: config.ssmPrefix,
          tenantId: config.tenant.id,
          v1Schema: config.schemas.v1,
          v2Schema: config.schemas.v2,
        });
        await backend.start();
        print(
          `synthetic backend: ~${options.dualWriteLoad} operations/s through the TrafficRouter and DualWriter`,
        );
      }
      const migrated = await execute('migration', { action: 'advance', through: 'VERIFY' });
      if (migrated.status === 'SUCCEEDED') {
        const cut = await execute('cutover', { action: 'run' });
        outcome =
          cut.status === 'SUCCEEDED'
            ? 'COMPLETED'
            : cut.error === 'HealthGateFailed'
              ? 'ROLLED_BACK'
              : 'FAILED';
        if (outcome === 'FAILED') error = `${cut.error}: ${cut.cause}`;
      } else error = `${migrated.error}: ${migrated.cause}`;
    } else error = `${first.error}: ${first.cause}`;
    const load = backend ? await backend.stop() : undefined;
    backend = undefined;

    // The final comparison of every table, before cleanup renames V1.
    let verification: RehearsalReport['verification'] = { clean: false, mismatchedWindows: 0, runId: null };
    let tables: RehearsalReport['tables'] = {};
    if ((await backfillProgress(v2Pool, config)).complete) {
      const final = await runVerificationLocally({ v1: v1Pool, v2: v2Pool, config }, { repair: false });
      verification = { clean: final.clean, mismatchedWindows: final.mismatches.length, runId: final.runId };
      const totals = await runTotals(v2Pool, config, final.runId);
      tables = Object.fromEntries(
        Object.entries(totals).map(([name, t]) => [
          name,
          { v1: t.v1Rows, v2: t.v2Rows, v1Checksum: t.v1Checksum, v2Checksum: t.v2Checksum },
        ]),
      );
    }

    if (outcome === 'COMPLETED') {
      if (pg || options.includeCleanup) {
        const cleanup = await execute('migration', { action: 'advance' });
        if (cleanup.status !== 'SUCCEEDED') {
          outcome = 'FAILED';
          error = `${cleanup.error}: ${cleanup.cause}`;
        }
      } else {
        print('cleanup skipped: V1 was given by URL (pass --include-cleanup to rename its tables)');
      }
    }
    clearInterval(progressTimer.t);
    if (options.tty) process.stdout.write('\n');

    const status = await migrationStatus({ ...deps, actor: 'rehearsal' });
    const phases = (await phaseStates({ ...deps, actor: 'rehearsal' })).map((p) => ({
      phase: p.phase,
      status: p.status,
      startedAt: p.startedAt ?? '',
      finishedAt: p.finishedAt,
      seconds:
        p.startedAt && p.finishedAt ? (Date.parse(p.finishedAt) - Date.parse(p.startedAt)) / 1000 : null,
    }));
    const rollbackAudit = await v2Pool.query<{ actor: string; details: { reason: string } }>(
      `SELECT actor, details FROM ${controlSchema(config)}.audit_log WHERE action = 'rollback.done' ORDER BY id DESC LIMIT 1`,
    );
    const backfillRun = phases.find((p) => p.phase === 'BACKFILL');
    const v1After = outcome === 'ROLLED_BACK' ? await countV1Rows(v1Pool, 'public') : undefined;
    if (v1After && !load) {
      for (const [t, n] of Object.entries(v1Before)) {
        if (v1After[t as keyof typeof v1After] !== n)
          error = `V1 table ${t} changed from ${n} to ${v1After[t as keyof typeof v1After]} rows`;
      }
    }
    const report: RehearsalReport = {
      ok: outcome === 'COMPLETED' && verification.clean && !error && (load?.errors ?? 0) === 0,
      outcome,
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      source: pg ? 'embedded' : 'given',
      phases,
      trafficPercentage: Number((await parameters.get(names.trafficPercentage)) ?? 0),
      verification,
      tables,
      throughput: {
        backfillRowsPerSecond:
          backfillRun?.seconds && tables.telemetry
            ? Math.round(Object.values(tables).reduce((a, t) => a + t.v1, 0) / backfillRun.seconds)
            : null,
        samples,
      },
      checklist: status.checklist,
      faults: {
        failAt: options.failAt,
        killedWorkers: killed,
        ...(rollbackAudit.rows[0]
          ? { rollback: { actor: rollbackAudit.rows[0].actor, reason: rollbackAudit.rows[0].details.reason } }
          : {}),
      },
      ...(load ? { load } : {}),
      ...(error ? { error } : {}),
    };
    const paths = writeReport(report, options.reportDir);
    return { report, paths, exitCode: report.ok ? 0 : outcome === 'ROLLED_BACK' && !error ? 3 : 1 };
  } finally {
    clearInterval(progressTimer.t);
    await backend?.stop().catch(() => undefined);
    await stopWorkers?.().catch(() => undefined);
    await Promise.all([v1?.end(), v2?.end()].map((p) => p?.catch(() => undefined)));
    await pg?.stop();
  }
}
