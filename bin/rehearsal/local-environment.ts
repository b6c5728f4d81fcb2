import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Pool } from 'pg';
import { startLocalPostgres, type LocalPostgres } from '../../lambdas/adapters/local/embedded-pg';
import { FileParameters } from '../../lambdas/adapters/local/file-parameters';
import { LocalAlarms } from '../../lambdas/adapters/local/local-alarms';
import type { LocalQueue } from '../../lambdas/adapters/local/local-queue';
import { ControlSchemaParameters, requeueLostWork } from '../../lambdas/adapters/local/local-resume';
import {
  localRepairQueue,
  startLocalWorkers,
  type LocalWorkers,
} from '../../lambdas/adapters/local/local-workers';
import { MemoryParameters } from '../../lambdas/adapters/local/memory-parameters';
import { LocalBackup } from '../../lambdas/adapters/local/pg-backup';
import { applyV1Schema, generateV1 } from '../../lambdas/adapters/local/v1-generator';
import { DEFAULT_CUTOVER_SCHEDULE, parseConfig, type MigrationConfig } from '../../lambdas/core/config';
import { openPool } from '../../lambdas/core/db';
import { EmbeddedPostgresError, LocalMigrationInUseError, V1NotFoundError } from '../cli-errors';
import type { OrchestratorDeps } from '../../lambdas/core/orchestrator';
import type { BatchHandler } from '../../lambdas/ports/queue';
import { parameterNames, type ParameterPort } from '../../lambdas/ports/parameters';
import { removeOnExit } from './exit-cleanup';

export { DEFAULT_LOCAL_DIR } from './options';

/** V1's tables: a given V1 holding none of them is refused, not generated into. */
const V1_TABLE_NAMES = ['users', 'devices', 'device_data', 'alerts'];

/** The settings a local migration was created with, kept next to it for the next command. */
export interface LocalSettings {
  concurrency: number;
  windowRows: number;
  /** Bake time of each cutover level, in seconds. */
  bakeSeconds: number;
}

export interface LocalEnvironmentOptions extends LocalSettings {
  /** Your own databases (V1 is only read); without them, an embedded PostgreSQL. */
  v1Url?: string;
  v2Url?: string;
  /**
   * Keeps the local migration in this folder (created on first use, found again later): its
   * switches, its settings and, without given databases, its embedded database. Without it, the
   * switches live in memory and the database in a temporary folder removed on any exit.
   */
  keepIn?: string;
  /**
   * A given V1 (v1Url) is only read: when it has none of V1's tables, the environment refuses it
   * (V1NotFoundError), unless this names its database (`--generate-v1-in`), which is then
   * generated into. The embedded database is generated into whenever it is empty.
   */
  generateGivenV1In?: string;
  /** The V1 to generate when V1 is empty (and may be written, see generateGivenV1In). */
  generate: { devices: number; telemetry: number; seed: number };
  /** Where local backups (pg_dump files) go. */
  backupDirectory: string;
  /** Wraps the workers' batch handler (fault injection). */
  wrapHandler?: (handler: BatchHandler) => BatchHandler;
  print: (line: string) => void;
  /** Whether progress may be drawn on one line (a terminal): generation prints no steps then. */
  tty?: boolean;
}

/** A migration on this machine: its databases, configuration, switches, alarms and workers. */
export interface LocalEnvironment {
  source: 'embedded' | 'given';
  /** The folder of a kept local migration (its switches, settings and embedded database). */
  directory?: string;
  v1: Pool;
  v2: Pool;
  config: MigrationConfig;
  /** The settings in force (a kept migration keeps those it was created with). */
  settings: LocalSettings;
  parameters: ParameterPort;
  names: ReturnType<typeof parameterNames>;
  alarms: LocalAlarms;
  workers: LocalWorkers;
  /**
   * The backend's repair queue (its worker is started by the synthetic backend): the rollback
   * from the write switch waits for it to drain.
   */
  repairs: LocalQueue;
  /** What the orchestrator's tasks run with. */
  deps: OrchestratorDeps;
  /** Stops the workers, closes the pools, stops the server (removing a temporary folder). */
  close(): Promise<void>;
}

/** Claims a kept local migration for this process; refuses one that a live process holds. */
export function claim(directory: string): () => void {
  const file = join(directory, 'in-use.pid');
  if (existsSync(file)) {
    const pid = Number(readFileSync(file, 'utf8'));
    let alive = false;
    try {
      process.kill(pid, 0);
      alive = pid !== process.pid;
    } catch {
      // A command that ended without releasing it (killed): the claim is stale.
    }
    if (alive) throw new LocalMigrationInUseError(directory, pid);
  }
  writeFileSync(file, String(process.pid));
  return () => rmSync(file, { force: true });
}

async function createDatabaseOnce(pg: LocalPostgres, name: string): Promise<void> {
  try {
    await pg.createDatabase(name);
  } catch (error) {
    // 42P04 duplicate_database: a kept server already has it.
    if ((error as { code?: string }).code !== '42P04') throw error;
  }
}

/** The longest path of a Unix socket (sun_path, Linux); PostgreSQL puts its socket in the data folder. */
const MAX_SOCKET_PATH = 107;

/** Starts PostgreSQL on `dataDir`; a failure is an EmbeddedPostgresError saying why. */
async function startServer(dataDir: string, persistent: boolean): Promise<LocalPostgres> {
  const socket = join(dataDir, '.s.PGSQL.65535');
  if (socket.length > MAX_SOCKET_PATH) {
    throw new EmbeddedPostgresError(
      dataDir,
      `its socket path would have ${socket.length} characters, more than the ${MAX_SOCKET_PATH} a Unix ` +
        'socket allows: use a shorter folder (TMPDIR, or --local-dir)',
    );
  }
  const log: string[] = [];
  try {
    return await startLocalPostgres({
      dataDir,
      persistent,
      log: (line) => log.push(...line.trim().split('\n')),
    });
  } catch (cause) {
    const said = cause instanceof Error && cause.message ? cause.message : 'the server exited';
    throw new EmbeddedPostgresError(dataDir, [said, ...log.slice(-5)].join('\n  '), { cause });
  }
}

/**
 * Starts the embedded server: with its data in `directory/pg` (kept), or in a temporary folder
 * removed on any exit. Returns the server and what to do once it has stopped.
 */
async function startEmbedded(directory: string | undefined) {
  if (directory) {
    mkdirSync(join(directory, 'pg'), { recursive: true });
    return { pg: await startServer(join(directory, 'pg'), true), release: () => {} };
  }
  const temporary = mkdtempSync(join(tmpdir(), 'iot-rehearsal-'));
  // The server runs as the unprivileged postgres user when this runs as root: it must get in.
  chmodSync(temporary, 0o755);
  const dataDir = join(temporary, 'pg');
  mkdirSync(dataDir);
  const release = removeOnExit(temporary, join(dataDir, 'data'));
  try {
    return { pg: await startServer(dataDir, false), release };
  } catch (error) {
    release();
    throw error;
  }
}

/** Reads the settings a kept migration was made with, or records them on first use. */
function settingsOf(directory: string | undefined, wanted: LocalSettings): LocalSettings {
  if (!directory) return wanted;
  const file = join(directory, 'settings.json');
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as LocalSettings;
  writeFileSync(file, `${JSON.stringify(wanted, null, 2)}\n`);
  return wanted;
}

/**
 * Opens a local migration: the databases (given, or an embedded PostgreSQL), V1 generated when
 * it is empty, the configuration (the default schedule's levels with short bakes, no soak),
 * the switches (in memory, or in a file next to a kept database), alarms raised by hand, and
 * the real workers on an in-process queue.
 */
export async function openLocalEnvironment(options: LocalEnvironmentOptions): Promise<LocalEnvironment> {
  const print = options.print;
  const directory = options.keepIn ? resolve(options.keepIn) : undefined;
  if (directory) mkdirSync(directory, { recursive: true });
  const unclaim = directory ? claim(directory) : () => {};
  let embedded: Awaited<ReturnType<typeof startEmbedded>> | undefined;
  let v1: Pool | undefined;
  let v2: Pool | undefined;
  try {
    let v1Url = options.v1Url;
    let v2Url = options.v2Url;
    if (!v1Url || !v2Url) {
      print(
        options.keepIn
          ? `starting the local migration’s PostgreSQL (${options.keepIn})…`
          : 'starting embedded PostgreSQL…',
      );
      embedded = await startEmbedded(directory);
      await createDatabaseOnce(embedded.pg, 'v1');
      await createDatabaseOnce(embedded.pg, 'v2');
      v1Url = embedded.pg.url('v1');
      v2Url = embedded.pg.url('v2');
    }
    v1 = await openPool({ url: v1Url }, 'V1', { max: 8 });
    v2 = await openPool({ url: v2Url }, 'V2', { max: 8 });
    if (!embedded) {
      await warnWhenUnencrypted(v1, 'V1', '--v1-url', print);
      await warnWhenUnencrypted(v2, 'V2', '--v2-url', print);
    }
    await generateWhenEmpty(v1, options, embedded ? 'embedded' : 'given');

    const wanted = {
      concurrency: options.concurrency,
      windowRows: options.windowRows,
      bakeSeconds: options.bakeSeconds,
    };
    const settings = settingsOf(directory, wanted);
    const config = parseConfig({
      v1: { url: v1Url },
      v2: { url: v2Url },
      batch: { concurrency: settings.concurrency, telemetryWindowRows: settings.windowRows },
      cutover: {
        schedule: DEFAULT_CUTOVER_SCHEDULE.map(({ percentage }) => ({
          percentage,
          bakeSeconds: settings.bakeSeconds,
        })),
        soakMinutes: 0,
      },
      backup: { mode: 'auto', directory: options.backupDirectory },
      // One machine runs V1, V2, the workers and the backend: a commit is slower than on a
      // production V1, so the automatic throttle waits only for what is slow even here.
      throttle: { commitLatencyMs: 500, probeTimeoutMs: 5000, maxWaitSeconds: 15, pressureHoldSeconds: 2 },
    });
    const names = parameterNames(config.ssmPrefix);
    const initial = {
      [names.trafficPercentage]: '0',
      [names.dualWrite]: 'off',
      [names.writePrimary]: 'v1',
    };
    // Kept with the migration: next to a kept database, or in given V2's control schema (a run
    // again after a crash finds the switches as the last one left them); else in memory.
    const parameters = directory
      ? new FileParameters(join(directory, 'parameters.json'), initial)
      : embedded
        ? new MemoryParameters(initial)
        : await ControlSchemaParameters.open({ v2, config }, initial);
    const requeued = await requeueLostWork({ v2, config });
    if (requeued.windows + requeued.slices > 0) {
      print(
        `resuming: ${requeued.windows} backfill windows and ${requeued.slices} verification slices the last run had queued go out again`,
      );
    }
    const alarms = new LocalAlarms();
    const pools = { v1, v2 };
    const workers = startLocalWorkers(
      { ...pools, config },
      options.wrapHandler ? { wrapHandler: options.wrapHandler } : {},
    );
    const repairs = localRepairQueue();
    const deps: OrchestratorDeps = {
      ...pools,
      config,
      parameters,
      alarms,
      queue: workers.queue,
      // In memory: a later command's redrive finds no message, and sets failed windows pending.
      deadLetters: workers.queue.deadLetterPort(),
      repairQueue: repairs,
      backup: new LocalBackup({
        v1Url,
        v1Schema: 'public',
        mode: 'auto',
        directory: config.backup.directory,
      }),
    };
    const opened = embedded;
    return {
      source: embedded ? 'embedded' : 'given',
      directory,
      ...pools,
      config,
      settings,
      parameters,
      names,
      alarms,
      workers,
      repairs,
      deps,
      close: async () => {
        await repairs.stop().catch(() => undefined);
        await workers.stop().catch(() => undefined);
        await Promise.all([pools.v1.end(), pools.v2.end()].map((p) => p.catch(() => undefined)));
        await opened?.pg.stop();
        opened?.release();
        unclaim();
      },
    };
  } catch (error) {
    await Promise.all([v1?.end(), v2?.end()].map((p) => p?.catch(() => undefined)));
    await embedded?.pg.stop().catch(() => undefined);
    embedded?.release();
    unclaim();
    throw error;
  }
}

/**
 * Whether the pool's connections are encrypted (TLS), as the server sees one of them.
 * A URL's `sslmode` decides it (pg honours `disable`, `require`, `verify-full`, …).
 */
export async function connectionEncrypted(pool: Pool): Promise<boolean> {
  const { rows } = await pool.query<{ ssl: boolean | null }>(
    'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()',
  );
  return rows[0]?.ssl === true;
}

/** Says, in the rehearsal's output, when a given database's connection is not encrypted. */
async function warnWhenUnencrypted(
  pool: Pool,
  target: string,
  flag: string,
  print: (line: string) => void,
): Promise<void> {
  if (await connectionEncrypted(pool)) return;
  print(
    `warning: the ${target} connection (${flag}) is not encrypted: add sslmode=verify-full (or require) to the ` +
      'URL to use TLS',
  );
}

/**
 * Generates V1 when it has none of its tables: always in the embedded database; in a given one
 * only when `generateGivenV1In` names it (V1NotFoundError otherwise, nothing written).
 */
async function generateWhenEmpty(
  v1: Pool,
  options: LocalEnvironmentOptions,
  source: 'embedded' | 'given',
): Promise<void> {
  const hasV1 = (await v1.query(`SELECT to_regclass('public.device_data') AS t`)).rows[0].t;
  // A V1 already migrated and archived by cleanup is not empty either.
  const archived = (await v1.query(`SELECT to_regclass('public.device_data_v1_archived') AS t`)).rows[0].t;
  if (hasV1 || archived) return;
  if (source === 'given') {
    const { rows } = await v1.query<{ database: string; tables: string[] | null }>(
      `SELECT current_database() AS database,
              (SELECT array_agg(table_name::text ORDER BY table_name) FROM information_schema.tables
                WHERE table_schema = 'public') AS tables`,
    );
    const { database, tables } = rows[0];
    const present = (tables ?? []).filter((t) => V1_TABLE_NAMES.includes(t));
    // Some of V1's tables: Phase 1's schema check names what is missing, before any write.
    if (present.length > 0) return;
    if (options.generateGivenV1In !== database) throw new V1NotFoundError(database, 'public', tables ?? []);
    options.print(`V1 database "${database}" has none of V1's tables: generating into it (--generate-v1-in)`);
  }
  const { devices, telemetry, seed } = options.generate;
  options.print(
    `V1 is empty: generating ${devices.toLocaleString('en-US')} devices and ${telemetry.toLocaleString('en-US')} telemetry rows (seed ${seed})…`,
  );
  await applyV1Schema(v1);
  const generated = await generateV1(v1, {
    devices,
    telemetry,
    seed,
    onProgress: (n) =>
      !options.tty &&
      n % 500_000 === 0 &&
      options.print(`  generated ${n.toLocaleString('en-US')} telemetry rows`),
  });
  options.print(
    `V1 generated in ${generated.seconds.toFixed(1)} s (${generated.telemetryRowsPerSec.toLocaleString('en-US')} telemetry rows/s)`,
  );
}
