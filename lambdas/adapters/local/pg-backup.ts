import { execFile, spawn } from 'node:child_process';
import { backupName } from './backup-name';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { Client } from 'pg';
import { ident } from '../../core/db';
import { BackupError } from '../../core/errors';
import type { BackupPort, BackupRef, BackupStatus, BackupVerification } from '../../ports/backup';
import {
  exportSchema,
  fingerprintTables,
  readManifest,
  restoreExport,
  schemaTables,
  STABLE_TEXT_SETTINGS,
  type TableFingerprint,
} from './snapshot-export';

const run = promisify(execFile);

export interface LocalBackupOptions {
  /** URL of the V1 database to back up. */
  v1Url: string;
  /** The schema backed up (V1's tables). */
  v1Schema: string;
  /**
   * `auto` uses pg_dump when one of the server's major version is found (on PATH or in
   * /usr/lib/postgresql/<major>/bin), else the built-in export; `pg_dump` insists on pg_dump.
   */
  mode: 'auto' | 'pg_dump' | 'export';
  /** Folder the backups go into, one sub-folder each. */
  directory: string;
  /**
   * URL of a database on the server where the restore check may create (and then drop) a
   * scratch database. Default: V1's server, through V1's own URL.
   */
  scratchUrl?: string;
  /** Folders searched for pg_dump / pg_restore before PATH (tests). */
  pgBinDirs?: string[];
}

/** What every backup folder holds besides its data: the snapshot's figures the check compares. */
interface BackupManifest {
  method: 'pg_dump' | 'export';
  schema: string;
  snapshotAt: string;
  serverVersion: string;
  fingerprints: Record<string, TableFingerprint>;
  /** pg_dump: the archive file in the folder. */
  archive?: string;
  tool?: string;
}

const MANIFEST = 'backup.json';

/** The major version of a pg_dump binary, or undefined when it cannot be run. */
export async function pgDumpMajor(binary = 'pg_dump'): Promise<number | undefined> {
  try {
    const { stdout } = await run(binary, ['--version']);
    const match = /(\d+)(?:\.\d+)?/.exec(stdout);
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${encodeURIComponent(database)}`;
  return u.toString();
}

/** A URL without its password, and the password, so the password goes through the environment. */
function splitPassword(url: string): { url: string; env: NodeJS.ProcessEnv } {
  const u = new URL(url);
  const password = decodeURIComponent(u.password);
  u.password = '';
  return { url: u.toString(), env: { ...process.env, PGPASSWORD: password } };
}

async function connect(url: string): Promise<Client> {
  const client = new Client({ connectionString: url, application_name: 'iot-v2-migration-backup' });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

/** Runs a PostgreSQL client program; BackupError with its stderr when it fails. */
function runTool(binary: string, args: string[], env: NodeJS.ProcessEnv, what: string): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(binary, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString('utf8');
    });
    child.on('error', (cause) =>
      reject(new BackupError(`${what}: cannot run ${binary}: ${cause.message}`, {}, { cause })),
    );
    child.on('close', (code) => {
      if (code === 0) resolvePromise();
      else
        reject(
          new BackupError(`${what} failed (${binary} exited with ${code}): ${stderr.trim().slice(-2000)}`, {
            binary,
          }),
        );
    });
  });
}

/**
 * Local backups of a live V1, made while it keeps serving reads and writes. Both methods take
 * one snapshot (a REPEATABLE READ transaction whose snapshot is exported) and record every
 * table's row count and checksum in it:
 *  - `pg_dump` (custom format) of the V1 schema, through that snapshot (`--snapshot`), when a
 *    pg_dump of the server's major version is installed;
 *  - otherwise the built-in export (snapshot-export.ts): DDL from the catalogs and every
 *    table's rows copied out with COPY, in that transaction. It needs nothing installed.
 * Neither needs V1 idle. `verify` restores the backup into a scratch database and compares every
 * table's rows and checksum with the snapshot's (`npm run backup:restore` restores it anywhere).
 */
export class LocalBackup implements BackupPort {
  /** Why the last start chose its method (reported by Phase 1). */
  lastChoice = '';

  constructor(private readonly options: LocalBackupOptions) {}

  /** A pg_dump (and its pg_restore) of the given major version, if one is installed. */
  async findPgDump(major: number): Promise<{ pgDump: string; pgRestore: string } | undefined> {
    const dirs = [...(this.options.pgBinDirs ?? []), `/usr/lib/postgresql/${major}/bin`];
    const candidates = [
      ...dirs.map((d) => ({ pgDump: join(d, 'pg_dump'), pgRestore: join(d, 'pg_restore') })),
      { pgDump: 'pg_dump', pgRestore: 'pg_restore' },
    ];
    for (const c of candidates) {
      if (c.pgDump.includes('/') && !existsSync(c.pgDump)) continue;
      if ((await pgDumpMajor(c.pgDump)) === major && (await pgDumpMajor(c.pgRestore)) === major) return c;
    }
    return undefined;
  }

  async start(label: string): Promise<BackupRef> {
    const name = backupName(label);
    const folder = resolve(this.options.directory, name);
    const schema = this.options.v1Schema;
    const client = await connect(this.options.v1Url);
    try {
      const serverMajor = Math.floor(
        Number((await client.query('SHOW server_version_num')).rows[0].server_version_num) / 10000,
      );
      const tools = this.options.mode === 'export' ? undefined : await this.findPgDump(serverMajor);
      if (this.options.mode === 'pg_dump' && !tools) {
        throw new BackupError(
          `backup mode pg_dump needs pg_dump ${serverMajor} (the V1 server's major version) on PATH or in /usr/lib/postgresql/${serverMajor}/bin`,
          { serverMajor },
        );
      }
      this.lastChoice = tools
        ? `pg_dump ${serverMajor} matches the server`
        : this.options.mode === 'export'
          ? 'built-in export forced by config'
          : `no pg_dump ${serverMajor} installed: built-in export in one snapshot`;
      mkdirSync(folder, { recursive: true });
      // One snapshot for the figures and the copy: nothing written to V1 meanwhile enters either.
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      for (const statement of STABLE_TEXT_SETTINGS) await client.query(statement);
      const snapshot = (await client.query<{ s: string }>('SELECT pg_catalog.pg_export_snapshot() AS s'))
        .rows[0].s;
      const meta = (
        await client.query<{ at: Date; version: string }>(
          `SELECT now() AS at, current_setting('server_version') AS version`,
        )
      ).rows[0];
      const fingerprints = await fingerprintTables(client, schema, await schemaTables(client, schema));
      const manifest: BackupManifest = {
        method: tools ? 'pg_dump' : 'export',
        schema,
        snapshotAt: meta.at.toISOString(),
        serverVersion: meta.version,
        fingerprints,
      };
      if (tools) {
        const archive = 'v1.pgdump';
        const { url, env } = splitPassword(this.options.v1Url);
        await runTool(
          tools.pgDump,
          [
            '--format=custom',
            `--snapshot=${snapshot}`,
            `--schema=${schema}`,
            `--file=${join(folder, archive)}`,
            `--dbname=${url}`,
          ],
          env,
          'pg_dump of V1',
        );
        Object.assign(manifest, { archive, tool: tools.pgDump });
      } else {
        await exportSchema(client, schema, folder, fingerprints);
      }
      await client.query('COMMIT');
      // Written last: a folder with it holds a finished backup.
      writeFileSync(join(folder, MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
      return { id: name, kind: manifest.method, location: folder };
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      if (error instanceof BackupError) throw error;
      throw new BackupError(
        `backing up V1 failed: ${(error as Error).message}`,
        { folder },
        { cause: error },
      );
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  async status(ref: BackupRef): Promise<BackupStatus> {
    try {
      const manifest = readBackupFolder(ref.location);
      if (manifest.archive)
        return statSync(join(ref.location, manifest.archive)).size > 0 ? 'available' : 'failed';
      readManifest(ref.location);
      return 'available';
    } catch {
      return 'failed';
    }
  }

  /**
   * Restores the backup into a scratch database (created and dropped here, on the scratch
   * server) and compares every table's row count and checksum with V1's as of the backup's
   * snapshot. `expectedRowCounts` (V1 just before the backup) are not compared: V1 is live.
   */
  async verify(ref: BackupRef, expectedRowCounts: Record<string, number>): Promise<BackupVerification> {
    void expectedRowCounts;
    const started = Date.now();
    const manifest = readBackupFolder(ref.location);
    const adminUrl = this.options.scratchUrl ?? this.options.v1Url;
    const scratch = `${ref.id}_check`.slice(0, 63);
    const admin = await connect(adminUrl);
    try {
      try {
        await admin.query(`CREATE DATABASE ${ident(scratch)} TEMPLATE template0`);
      } catch (cause) {
        throw new BackupError(
          `the backup check cannot create its scratch database ${scratch}: ${(cause as Error).message}` +
            ((cause as { code?: string }).code === '42501'
              ? ' (the check needs a role that may create databases on that server)'
              : ''),
          { scratch },
          { cause },
        );
      }
      const scratchUrl = withDatabase(adminUrl, scratch);
      try {
        const { differing } = await restoreAndCheck(ref.location, scratchUrl, this.options.pgBinDirs).catch(
          (cause: unknown) => {
            if (cause instanceof BackupError) throw cause;
            throw new BackupError(
              `backup ${ref.location} cannot be restored: ${(cause as Error).message}`,
              { backup: ref.id },
              { cause },
            );
          },
        );
        if (differing.length > 0) {
          throw new BackupError(
            `backup ${ref.location} does not restore V1 as of its snapshot: ${differing.join('; ')}`,
            {
              backup: ref.id,
              differing,
            },
          );
        }
      } finally {
        await admin.query(`DROP DATABASE IF EXISTS ${ident(scratch)} WITH (FORCE)`).catch(() => undefined);
      }
    } finally {
      await admin.end().catch(() => undefined);
    }
    const rows = Object.values(manifest.fingerprints).reduce((a, f) => a + f.rows, 0);
    return {
      evidence: {
        method: manifest.method,
        location: ref.location,
        snapshotAt: manifest.snapshotAt,
        v1Server: manifest.serverVersion,
        tables: Object.fromEntries(Object.entries(manifest.fingerprints).map(([t, f]) => [t, f.rows])),
        restoreCheck: {
          passed: true,
          tablesCompared: Object.keys(manifest.fingerprints).length,
          rowsCompared: rows,
          comparedWith: 'V1 as of the backup snapshot (row counts and checksums of every table)',
          seconds: Math.round((Date.now() - started) / 100) / 10,
        },
        restoreCommand: `npm run backup:restore -- --backup ${ref.location} --target-url <url of an empty database>`,
      },
    };
  }
}

/** Tables whose rows or checksum differ, in words. */
export function compareFingerprints(
  expected: Record<string, TableFingerprint>,
  actual: Record<string, TableFingerprint>,
): string[] {
  const out: string[] = [];
  for (const [table, want] of Object.entries(expected)) {
    const got = actual[table];
    if (!got) out.push(`${table} is missing`);
    else if (got.rows !== want.rows) out.push(`${table} has ${got.rows} rows (V1 had ${want.rows})`);
    else if (got.checksum !== want.checksum) out.push(`${table} has ${got.rows} rows but different content`);
  }
  for (const table of Object.keys(actual)) if (!(table in expected)) out.push(`${table} was not in V1`);
  return out;
}

/**
 * Restores a backup folder into an existing, empty database, then compares every table's rows
 * and checksum there with the backup's snapshot of V1 (the restore command and Phase 1's check).
 */
export async function restoreAndCheck(
  folder: string,
  targetUrl: string,
  pgBinDirs: string[] = [],
): Promise<{ snapshotAt: string; tables: Record<string, TableFingerprint>; differing: string[] }> {
  const manifest = readBackupFolder(folder);
  await restoreBackup(folder, targetUrl, pgBinDirs);
  const restored = await connect(targetUrl);
  try {
    await restored.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    for (const statement of STABLE_TEXT_SETTINGS) await restored.query(statement);
    const tables = await fingerprintTables(
      restored,
      manifest.schema,
      await schemaTables(restored, manifest.schema),
    );
    await restored.query('COMMIT');
    return {
      snapshotAt: manifest.snapshotAt,
      tables,
      differing: compareFingerprints(manifest.fingerprints, tables),
    };
  } finally {
    await restored.end().catch(() => undefined);
  }
}

/** A backup folder's manifest; BackupError when the folder holds no finished backup. */
function readBackupFolder(folder: string): BackupManifest {
  try {
    return JSON.parse(readFileSync(join(folder, MANIFEST), 'utf8')) as BackupManifest;
  } catch (cause) {
    throw new BackupError(
      `${folder} is missing or holds no finished backup (no ${MANIFEST})`,
      { folder },
      { cause },
    );
  }
}

/**
 * Restores a backup folder (either method) into an existing, empty database. pg_dump archives
 * go through pg_restore of the archive's major version; exports need nothing installed.
 */
export async function restoreBackup(
  folder: string,
  targetUrl: string,
  pgBinDirs: string[] = [],
): Promise<void> {
  const manifest = readBackupFolder(folder);
  if (manifest.method === 'export') {
    const client = await connect(targetUrl);
    try {
      await restoreExport(client, folder);
    } finally {
      await client.end().catch(() => undefined);
    }
    return;
  }
  const major = Number(/^(\d+)/.exec(manifest.serverVersion)?.[1]);
  const tools = await new LocalBackup({
    v1Url: targetUrl,
    v1Schema: manifest.schema,
    mode: 'pg_dump',
    directory: folder,
    pgBinDirs,
  }).findPgDump(major);
  if (!tools) throw new BackupError(`restoring ${folder} needs pg_restore ${major}`, { folder, major });
  const { url, env } = splitPassword(targetUrl);
  const client = await connect(targetUrl);
  let schemaExists: boolean;
  try {
    const existing = await client.query(
      `SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 LIMIT 1`,
      [manifest.schema],
    );
    if (existing.rows.length > 0)
      throw new BackupError(
        `the target database already has relations in schema ${manifest.schema}; restore into an empty database`,
      );
    schemaExists =
      (await client.query(`SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1`, [manifest.schema])).rows
        .length > 0;
  } finally {
    await client.end().catch(() => undefined);
  }
  const archive = join(folder, manifest.archive!);
  const args = [
    '--no-owner',
    '--no-privileges',
    '--exit-on-error',
    '--single-transaction',
    `--dbname=${url}`,
  ];
  if (schemaExists) {
    // The archive creates its schema (`public` too, when dumped alone); an empty one that is
    // already there (every new database's `public`) is kept: its entries are left out.
    const { stdout } = await run(tools.pgRestore, ['--list', archive], { maxBuffer: 256 * 1024 * 1024 });
    const own = new RegExp(
      `^\\d+; \\d+ \\d+ (SCHEMA|COMMENT) - (SCHEMA )?${manifest.schema.replace(/[^A-Za-z0-9_]/g, '.')} `,
    );
    const list = join(folder, '.restore-list');
    writeFileSync(
      list,
      stdout
        .split('\n')
        .filter((line) => !own.test(line))
        .join('\n'),
    );
    args.push(`--use-list=${list}`);
  }
  await runTool(tools.pgRestore, [...args, archive], env, `restoring ${folder}`);
}
